#!/usr/bin/env python
"""Arbitrary-scale ESC on a CPU budget: ESC-LTE (ESC-light encoder) trained on T91 + General100 +
BSDS200, evaluated on Set5 and Set14 at x2, x3, x4 (training range), x2.5 and x6 with the LIIF
protocol beside bicubic, and the memory of a chunked 512x512 x3.7 upscale.

    python benchmarks/lte_small.py --root lte_small \\
        --hr ../shared/traindata/T91 ../shared/traindata/General100 ../shared/traindata/BSDS200 \\
        --bench Set5=../shared/benchmarks/Set5/HR Set14=../shared/benchmarks/Set14/HR

Steps (``--steps``, all by default; re-running resumes):

  prepare  links the HR folders into {root}/datasets/ (no copies)
  train    ``basicsr train --auto_resume`` on options/train_ESC_LTE_small.yml (its budget is
           its total_iter: 800 iterations of batch 16), run from {root}
  eval     the EMA weights (net_g_latest.pth) on every benchmark image at every scale: the LR
           made by PIL's bicubic filter (LIIF's downsampling), the whole image through the
           encoder, the output queried in chunks, clamped, and LIIF's PSNR (Y, border ceil(s))
           on the float output; bicubic (PIL, from the same LR) scored the same way
  memory   peak RSS of upscaling a 512x512 crop of a real photo by 3.7 with the authors'
           ESC-LTE (1.4M parameters), for two query chunk sizes, each in its own process
  report   {root}/results.md: the table, time per iteration (from the training log), memory

``--toy``: two iterations on tests/data/images, for the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from os import path as osp

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks._common import cpu_model, rss_mib  # noqa: E402

SCALES = (2, 3, 4, 2.5, 6)
STEPS = ("prepare", "train", "eval", "memory", "report")
CHUNKS = (30_000, 4_096)


def log(message: str) -> None:
    print(f"[lte_small {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _link(source: str, link: str) -> None:
    os.makedirs(osp.dirname(link), exist_ok=True)
    if osp.islink(link):
        os.remove(link)
    os.symlink(osp.abspath(source), link)


def step_prepare(args) -> None:
    for folder in args.hr:
        if not osp.isdir(folder):
            raise SystemExit(f"--hr {folder}: not a folder")
        _link(folder, osp.join(args.root, "datasets", "small_HR", osp.basename(osp.normpath(folder))))
    for name, folder in args.bench:
        if not osp.isdir(folder):
            raise SystemExit(f"--bench {name}={folder}: not a folder")
        _link(folder, osp.join(args.root, "datasets", name, "HR"))
    log(f"linked {len(args.hr)} training folder(s) and {len(args.bench)} benchmark set(s) into {args.root}/datasets")


def _experiment(args) -> str:
    return osp.join(args.root, "experiments", "ESC_LTE_light_small")


def step_train(args) -> None:
    pretrain = osp.abspath(args.encoder)
    first = args.bench[0][0]  # validated on the first benchmark set (Set5)
    force = [f"path:pretrain_network_g={pretrain}", f"datasets:val_1:dataroot_gt=datasets/{first}/HR",
             f"datasets:val_2:dataroot_gt=datasets/{first}/HR"]  # fmt: skip
    if args.toy:
        force += ["train:total_iter=2", "train:warmup_iter=0", "logger:print_freq=1", "val:val_freq=2",
                  "logger:save_checkpoint_freq=2", "datasets:train:batch_size_per_gpu=2",
                  "datasets:train:dataset_enlarge_ratio=1", "datasets:train:num_worker_per_gpu=0"]  # fmt: skip
    option = osp.join(ROOT, "options", "train_ESC_LTE_small.yml")
    command = [sys.executable, "-m", "esc_arch.cli", "train", "-opt", option, "--auto_resume", "--root", args.root,
               "--force_yml", *force]  # fmt: skip
    log("training: " + " ".join(command[2:]))
    code = subprocess.call(command, cwd=args.root)
    if code:
        raise SystemExit(f"training stopped with exit status {code}; re-run to resume")


def evaluate(weights: str, bench: list[tuple[str, str]], scales=SCALES) -> dict:
    """{set: {scale: (esc_lte, bicubic)}}: mean LIIF PSNR over the set's images."""
    import cv2
    import torch

    from esc_arch import load_model
    from esc_arch.io.arbitrary_scale import bicubic_resize, downsample, liif_psnr, to_tensor
    from esc_arch.io.imageio import image_paths
    from esc_arch.runtime.inference import query_upscale

    net = load_model(weights)
    results: dict = {}
    for name, folder in bench:
        scores = {s: ([], []) for s in scales}
        for path in image_paths(folder):
            hr = cv2.imread(path, cv2.IMREAD_COLOR)
            for scale in scales:
                lr, hr_crop = downsample(hr, scale)
                target = to_tensor(hr_crop)
                with torch.no_grad():
                    sr = query_upscale(net, to_tensor(lr)[None], size=tuple(target.shape[-2:]))[0].clamp(0, 1)
                bicubic = to_tensor(bicubic_resize(lr, target.shape[-1], target.shape[-2]))
                scores[scale][0].append(liif_psnr(sr, target, scale=scale))
                scores[scale][1].append(liif_psnr(bicubic, target, scale=scale))
        results[name] = {f"{s:g}": (statistics.mean(a), statistics.mean(b)) for s, (a, b) in scores.items()}
        log(f"{name}: " + ", ".join(f"x{s}: {v[0]:.2f} ({v[1]:.2f})" for s, v in results[name].items()))
    return results


def step_eval(args) -> None:
    weights = osp.join(_experiment(args), "models", "net_g_latest.pth")
    if not osp.isfile(weights):
        raise SystemExit(f"{weights}: no trained weights; run the train step first")
    bench = [(name, osp.join(args.root, "datasets", name, "HR")) for name, _ in args.bench]
    results = evaluate(weights, bench)
    with open(osp.join(args.root, "eval.json"), "w") as f:
        json.dump(results, f, indent=1)


class _PeakRSS:
    """The largest RSS (MiB) of this process while inside, sampled every 5 ms by a thread
    (``ru_maxrss`` also counts the peaks of the imports before)."""

    def __enter__(self):
        import threading

        self.peak, self._stop = rss_mib(), threading.Event()

        def sample() -> None:
            while not self._stop.wait(0.005):
                self.peak = max(self.peak, rss_mib())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mib())


def measure_memory(chunk: int, image: str) -> dict:
    """In this process: peak RSS (MiB) above the start of one 512x512 -> x3.7 upscale."""
    import cv2
    import torch

    from esc_arch import ESCLTE
    from esc_arch.io.arbitrary_scale import to_tensor
    from esc_arch.runtime.inference import query_upscale

    torch.manual_seed(0)
    net = ESCLTE().eval()
    photo = cv2.imread(image, cv2.IMREAD_COLOR)
    top, left = (photo.shape[0] - 512) // 2, (photo.shape[1] - 512) // 2
    x = to_tensor(photo[top : top + 512, left : left + 512])[None]
    before = rss_mib()
    start = time.perf_counter()
    with torch.no_grad(), _PeakRSS() as peak:
        out = query_upscale(net, x, scale=3.7, chunk=chunk)
    seconds = time.perf_counter() - start
    return {"chunk": chunk, "output": list(out.shape[-2:]), "peak_mib": peak.peak - before, "seconds": seconds}


def step_memory(args) -> None:
    image = args.memory_image
    rows = []
    for chunk in args.chunks:
        code = f"import json, sys; sys.path.insert(0, {ROOT!r}); from benchmarks.lte_small import measure_memory; " \
               f"print(json.dumps(measure_memory({chunk}, {image!r})))"  # fmt: skip
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        log(f"512x512 x3.7, chunk {chunk}: peak {rows[-1]['peak_mib']:.0f} MiB, {rows[-1]['seconds']:.1f} s")
    with open(osp.join(args.root, "memory.json"), "w") as f:
        json.dump(rows, f, indent=1)


def _iteration_times(experiment: str) -> list[float]:
    times = []
    for name in sorted(os.listdir(experiment)):
        if name.startswith("train_") and name.endswith(".log"):
            with open(osp.join(experiment, name)) as f:
                times += [float(t) for t in re.findall(r"time \(data\): ([\d.]+)", f.read())]
    return times


def step_report(args) -> str:
    import platform

    with open(osp.join(args.root, "eval.json")) as f:
        results = json.load(f)
    lines = [
        "# ESC-LTE on a CPU budget (benchmarks/lte_small.py)",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}.",
        "ESC-LTE with an ESC-light encoder (3 blocks) started from the released ESC-light x2 small-set weights,",
        "trained by options/train_ESC_LTE_small.yml on T91 + General100 + BSDS200. PSNR (dB) with the LIIF",
        "protocol: LR by PIL bicubic from the HR, Y channel, border ceil(scale), float output clamped to [0, 1];",
        "bicubic: PIL bicubic from the same LR. x2.5 and x6 were never a training scale as such (scales are",
        "drawn uniformly in [1, 4]; x6 is outside the range).",
        "",
        "| set | " + " | ".join(f"x{s:g}" for s in SCALES) + " |",
        "|---|" + "---|" * len(SCALES),
    ]
    for name, scores in results.items():
        lines.append(f"| {name} ESC-LTE | " + " | ".join(f"**{scores[f'{s:g}'][0]:.2f}**" for s in SCALES) + " |")
        lines.append(f"| {name} bicubic | " + " | ".join(f"{scores[f'{s:g}'][1]:.2f}" for s in SCALES) + " |")
    times = _iteration_times(_experiment(args))
    if times:
        lines += ["", f"Training: {len(times)} logged intervals, median {statistics.median(times):.2f} s per "
                  "iteration (batch 16, LR 32x32, 1024 queries per crop, bf16)."]  # fmt: skip
    memory = osp.join(args.root, "memory.json")
    if osp.isfile(memory):
        with open(memory) as f:
            rows = json.load(f)
        lines += ["", "Upscaling a 512x512 photo by 3.7 (output 1894x1894) with the authors' ESC-LTE, fp32, random",
                  "weights (memory does not depend on them); peak RSS sampled every 5 ms, above the RSS before:", "",
                  "| query chunk | peak RSS above start | time |", "|---|---|---|"]  # fmt: skip
        lines += [f"| {r['chunk']:,} | {r['peak_mib']:.0f} MiB | {r['seconds']:.1f} s |" for r in rows]
    text = "\n".join(lines) + "\n"
    with open(osp.join(args.root, "results.md"), "w") as f:
        f.write(text)
    print(text)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="experiment folder (data links, runs, results)")
    parser.add_argument("--hr", nargs="+", default=[], help="training HR folders (T91, General100, BSDS200)")
    parser.add_argument("--bench", nargs="+", default=[], metavar="NAME=FOLDER", help="benchmark HR folders")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--memory-image", default=None, help="a photo of at least 512x512 (default: Set14's first)")
    parser.add_argument("--chunks", type=int, nargs="+", default=list(CHUNKS), help="query chunks of the memory step")
    parser.add_argument(
        "--encoder",
        default=osp.join(ROOT, "tests", "data", "ESC-light_x2_small.pth"),
        help="the ESC-light x2 whose body starts the encoder (default: the bundled small-set weights)",
    )
    parser.add_argument("--toy", action="store_true", help="two iterations on tests/data/images (the test suite)")
    args = parser.parse_args(argv)
    if args.toy:
        images = osp.join(ROOT, "tests", "data", "images")
        args.hr, args.bench = args.hr or [osp.join(images, "train")], args.bench or [f"Val={osp.join(images, 'val')}"]
    args.bench = [tuple(item.split("=", 1)) for item in args.bench]
    if any(len(item) != 2 for item in args.bench):
        parser.error("--bench takes NAME=FOLDER")
    args.root = osp.abspath(args.root)
    os.makedirs(args.root, exist_ok=True)
    if args.memory_image is None and "memory" in args.steps:
        from esc_arch.io.imageio import image_paths

        candidates = [p for _, folder in args.bench for p in image_paths(folder)]
        import cv2

        large = [p for p in candidates if min(cv2.imread(p).shape[:2]) >= 512]
        if not large:
            args.steps = [s for s in args.steps if s != "memory"]
            log("no benchmark image of 512x512 or more: skipping the memory step")
        else:
            args.memory_image = large[0]
    for step in args.steps:
        {"prepare": step_prepare, "train": step_train, "eval": step_eval, "memory": step_memory,
         "report": step_report}[step](args)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
