#!/usr/bin/env python
"""Seconds per iteration and peak memory of both ESC-Real training stages at the published
configuration (options/train_ESC_Real_x4_{MSE,GAN}.yml unchanged except data paths and the
number of iterations): ESC-Real, batch 12, HR patches 256, on-the-fly degradations, and for
the GAN stage the VGG19 perceptual loss and the UNet discriminator.

  python benchmarks/real_train_speed.py --iters 4
  python benchmarks/real_train_speed.py --hr path/to/HR --vgg experiments/pretrained_models/vgg19-dcbb9e9d.pth

HR images default to ../shared/traindata/BSDS200. Without --vgg, a random stand-in with
VGG19's shapes is written (the timing is the same; the loss values are meaningless).
Iteration time = the gap between consecutive iteration log lines (print_freq 1), median over
the iterations after the first; peak memory = the training process's peak RSS.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import shutil
import statistics
import subprocess
import sys
from datetime import datetime
from os import path as osp

import yaml

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SHARED = osp.join(osp.dirname(ROOT), "shared")
_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO: \[.*iter:\s*([\d,]+)", re.M)


def iteration_times(log: str) -> list[float]:
    stamps = [datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f") for m in _LINE.finditer(log)]
    return [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:], strict=False)]


def stage_options(stage: str, data: str, meta: str, iters: int, workers: int, batch: int | None = None) -> dict:
    opt = copy.deepcopy(yaml.safe_load(open(osp.join(ROOT, "options", f"train_ESC_Real_x4_{stage}.yml"))))
    opt["name"] = f"speed_ESC_Real_x4_{stage}"
    opt["datasets"]["train"].update(dataroot_gt=data, meta_info=meta, num_worker_per_gpu=workers)
    if batch:  # the published 12 needs more than 24 GiB on a CPU (math-SDPA backward)
        opt["datasets"]["train"]["batch_size_per_gpu"] = batch
    opt["train"]["total_iter"] = iters
    opt["logger"].update(print_freq=1, save_checkpoint_freq=10**9, use_tb_logger=False)
    if stage == "GAN":
        opt["path"]["pretrain_network_g"] = None  # fresh weights: the speed is the same
    return opt


def write_vgg_stand_in(path: str) -> None:
    import torch
    from torchvision.models import vgg19

    state = {
        key: torch.zeros(1).expand(value.shape) if key.startswith("classifier") else value
        for key, value in vgg19().state_dict().items()
    }
    os.makedirs(osp.dirname(path), exist_ok=True)
    torch.save(state, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hr", default=osp.join(SHARED, "traindata", "BSDS200"), help="folder of HR images")
    parser.add_argument("--iters", type=int, default=4, help="iterations per stage (the first is not timed)")
    parser.add_argument("--vgg", help="torchvision's vgg19-dcbb9e9d.pth (default: a random stand-in)")
    parser.add_argument("--stages", nargs="+", choices=["MSE", "GAN"], default=["MSE", "GAN"])
    parser.add_argument("--workers", type=int, default=1, help="data-loader workers")
    parser.add_argument("--batch", type=int, help="override the published batch of 12 (a divisor of 180)")
    parser.add_argument("--root", default="real_train_speed", help="working folder")
    args = parser.parse_args(argv)
    root = osp.abspath(args.root)
    os.makedirs(root, exist_ok=True)

    data = osp.join(root, "data")
    prepare = [sys.executable, osp.join(ROOT, "datasets", "prepare_realesrgan_data.py"), "--hr", args.hr,
               "--name", "HR", "--out", data, "--factors", "1", "--workers", "2"]  # fmt: skip
    subprocess.run(prepare, check=True, capture_output=True)
    meta = osp.join(data, "meta_info_HR_multiscale_sub.txt")
    vgg_target = osp.join(root, "experiments", "pretrained_models", "vgg19-dcbb9e9d.pth")
    if args.vgg:
        os.makedirs(osp.dirname(vgg_target), exist_ok=True)
        shutil.copyfile(args.vgg, vgg_target)
    elif not osp.isfile(vgg_target):
        write_vgg_stand_in(vgg_target)

    import torch

    print(f"ESC-Real x4 training at the published configuration on this machine: torch {torch.__version__}, "
          f"{os.cpu_count()} cores, {args.iters} iterations per stage (first untimed), batch {args.batch or 12}, "
          "HR 256")  # fmt: skip
    print("| stage | s / iteration | peak memory (GiB) | iterations timed |\n|---|---|---|---|")
    for stage in args.stages:
        opt = stage_options(stage, data, meta, args.iters, args.workers, args.batch)
        opt_path = osp.join(root, f"{stage}.yml")
        with open(opt_path, "w") as f:
            yaml.safe_dump(opt, f)
        shutil.rmtree(osp.join(root, "experiments", opt["name"]), ignore_errors=True)
        # a wrapper process per stage, so the peak RSS is this stage's own
        wrapper = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
                   "print('PEAK', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")  # fmt: skip
        command = [sys.executable, "-c", wrapper, sys.executable, "-m", "esc_arch.cli", "train", "-opt", opt_path]
        result = subprocess.run(command, cwd=root, capture_output=True, text=True)
        if result.returncode:
            died = f"killed by signal {-result.returncode}" if result.returncode < 0 else "failed"
            peak = re.findall(r"^PEAK (\d+)", result.stdout, re.M)
            peak = f"{int(peak[-1]) / 2**20:.2f}" if peak else ""
            print(f"| {stage} | {died} (exit {result.returncode}): {result.stderr.strip().splitlines()[-1][-120:]} "
                  f"| {peak} | |")  # fmt: skip
            continue
        peak_kib = int(re.findall(r"^PEAK (\d+)", result.stdout, re.M)[-1])
        log = "".join(open(p).read() for p in sorted(glob_logs(root, opt["name"])))
        times = iteration_times(log)
        print(f"| {stage} | {statistics.median(times):.1f} | {peak_kib / 2**20:.2f} | {len(times)} |", flush=True)
    return 0


def glob_logs(root: str, name: str) -> list[str]:
    import glob

    return glob.glob(osp.join(root, "experiments", name, "train_*.log"))


if __name__ == "__main__":
    sys.exit(main())
