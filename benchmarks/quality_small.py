#!/usr/bin/env python
"""Small-set quality experiment: ESC-light (or ESC-RIB, ``--network``) trained on T91 +
General100 + BSDS200 within a CPU budget, evaluated on Set5 and Set14 with the paper's protocol,
beside published numbers.

    python benchmarks/quality_small.py --root quality_small --budget-min 90
    python benchmarks/quality_small.py --root quality_small_rib --network ESC-RIB --budget-min 90

Steps (``--steps``, all by default; each one can be re-run on its own):

  prepare  HR folders -> sub-images -> LMDBs (datasets/prepare_sr_lmdb.py), and the benchmark
           sets -> HR + MATLAB-bicubic LR (datasets/prepare_benchmark.py)
  train    ``basicsr train --auto_resume`` on the network's recipe, ``RECIPES`` (a copy
           with this experiment's paths). Training wall time is summed across runs in
           {root}/train_wall.json; when the budget is spent the run is stopped (the last
           checkpoint is kept). Interrupted? Run the same command again: it resumes.
  eval     exports the EMA weights (esc export layout), then ``basicsr test`` on the
           benchmarks: whole-image reflect padding, PSNR/SSIM on Y, border = scale, and a crop
           strip (LR nearest | bicubic | ESC | HR) per image
  report   {root}/results.md (table beside published numbers) and {root}/psnr_vs_iter.png

``--toy`` runs the whole pipeline at toy size (a few iterations) for the test suite.
"""

from __future__ import annotations

import argparse
import copy
import glob
import json
import os
import re
import subprocess
import sys
import time
from os import path as osp

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
SHARED = osp.join(osp.dirname(ROOT), "shared")

#: Published Set5 / Set14 x2 PSNR (Y), as tabulated by VDSR, LapSRN and EDSR, and the ESC paper.
PUBLISHED = [
    ("Bicubic", "-", 33.66, 30.24),
    ("SRCNN", "91 images", 36.66, 32.42),
    ("FSRCNN", "91 images + General100", 37.00, 32.63),
    ("VDSR", "291 images", 37.53, 33.03),
    ("ESC-light (the paper)", "DIV2K, 500k iterations, 4 GPUs", 38.24, 33.98),
]
STEPS = ("prepare", "train", "eval", "report")
#: The networks of the experiment (``--network``): the recipe in options/ ({scale} filled in).
RECIPES = {"ESC-light": "train_ESC_light_x{scale}_small.yml", "ESC-RIB": "train_ESC_RIB_x{scale}_small.yml"}


def log(message: str) -> None:
    print(f"[quality_small {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------- options
def load_yaml(path: str) -> dict:
    from esc_arch.basicsr_plugin.option_yaml import read_option_file

    return read_option_file(path)


def dump_yaml(opt: dict, path: str) -> None:
    import yaml

    with open(path, "w") as f:
        yaml.safe_dump(opt, f, default_flow_style=False, sort_keys=False)


def benchmark_dataset(name: str, data_root: str, scale: int) -> dict:
    return {
        "name": name,
        "type": "PairedImageDataset",
        "dataroot_gt": osp.join(data_root, name, "HR"),
        "dataroot_lq": osp.join(data_root, name, "LR_bicubic", f"X{scale}"),
        "filename_tmpl": f"{{}}x{scale}",
        "io_backend": {"type": "disk"},
    }


def recipe(network: str, scale: int) -> str:
    return osp.join(ROOT, "options", RECIPES[network].format(scale=scale))


def train_options(args, paths: dict) -> dict:
    """The network's recipe (``RECIPES``) with this experiment's data and overrides (a copy)."""
    opt = copy.deepcopy(load_yaml(recipe(args.network, args.scale)))
    datasets = {"train": dict(opt["datasets"]["train"], dataroot_gt=paths["gt_lmdb"], dataroot_lq=paths["lq_lmdb"])}
    for i, name in enumerate(args.bench, 1):
        datasets[f"val_{i}"] = benchmark_dataset(name, paths["bench_root"], args.scale)
    opt["datasets"] = datasets
    train, val, logger = dict(opt["train"]), dict(opt["val"]), dict(opt["logger"])
    if args.iters:
        train["total_iter"] = args.iters
        train["scheduler"] = dict(train["scheduler"], periods=[args.iters])
        train["warmup_iter"] = min(train["warmup_iter"], args.iters // 10)
    if args.batch:
        datasets["train"]["batch_size_per_gpu"] = args.batch
    if args.gt_size:
        datasets["train"]["gt_size"] = args.gt_size
    if args.val_freq:
        val["val_freq"] = logger["save_checkpoint_freq"] = logger["print_freq"] = args.val_freq
    opt.update(train=train, val=val, logger=logger)
    return opt


def test_options(opt_train: dict, weights: str, paths: dict, args) -> dict:
    val = dict(opt_train["val"], save_img=True, suffix=None, crop_strip={"size": args.strip_size, "zoom": 2})
    val.pop("val_freq", None)
    return {
        "name": f"{opt_train['name']}_eval",
        "model_type": opt_train["model_type"],
        "scale": args.scale,
        "num_gpu": opt_train["num_gpu"],
        "manual_seed": 0,
        "datasets": {
            f"test_{i}": benchmark_dataset(name, paths["bench_root"], args.scale)
            for i, name in enumerate(args.bench, 1)
        },
        "network_g": copy.deepcopy(opt_train["network_g"]),
        "path": {"pretrain_network_g": weights, "param_key_g": "params_ema", "strict_load_g": True},
        "val": val,
    }


# --------------------------------------------------------------------------- steps
def experiment_paths(args) -> dict:
    data = osp.join(args.root, "data")
    return {
        "data": data,
        "gt_lmdb": osp.join(data, "small_train_HR_sub.lmdb"),
        "lq_lmdb": osp.join(data, f"small_train_LR_bicubic_X{args.scale}_sub.lmdb"),
        "bench_root": osp.join(data, "benchmarks"),
        "options": osp.join(args.root, "options"),
        "wall": osp.join(args.root, "train_wall.json"),
    }


def _dataset_script(name: str):
    """A script of datasets/ as a module (the folder is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, osp.join(ROOT, "datasets", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def step_prepare(args, paths: dict) -> None:
    prepare_sr_lmdb, prepare_benchmark = _dataset_script("prepare_sr_lmdb"), _dataset_script("prepare_benchmark")
    gt_size = train_options(args, paths)["datasets"]["train"]["gt_size"]  # no sub-image smaller than a patch
    argv = ["--hr", *args.hr, "--name", "small_train", "--out", paths["data"], "--scales", str(args.scale)]
    argv += ["--crop-size", str(args.crop_size), "--step", str(args.crop_size // 2), "--min-size", str(gt_size)]
    argv += ["--workers", str(args.workers)]
    if prepare_sr_lmdb.main(argv):
        raise SystemExit("data preparation failed (see above)")
    bench = [f"{name}={folder}" for name, folder in zip(args.bench, args.bench_hr, strict=True)]
    argv = ["--hr", *bench, "--out", paths["bench_root"], "--scales", str(args.scale), "--workers", str(args.workers)]
    if prepare_benchmark.main(argv):
        raise SystemExit("benchmark preparation failed (see above)")


def _read_wall(path: str) -> dict:
    if osp.isfile(path):
        with open(path) as f:
            return json.load(f)
    return {"seconds": 0.0, "runs": 0, "finished": False}


def _write_wall(path: str, wall: dict) -> None:
    from esc_arch.io.fileio import atomic_write_text

    atomic_write_text(path, json.dumps(wall, indent=1))


def step_train(args, paths: dict) -> None:
    os.makedirs(paths["options"], exist_ok=True)
    opt = train_options(args, paths)
    opt_path = osp.join(paths["options"], "train.yml")
    dump_yaml(opt, opt_path)
    wall = _read_wall(paths["wall"])
    if wall["finished"]:
        log(f"training already finished ({wall['seconds'] / 60:.1f} min in {wall['runs']} run(s))")
        return
    left = args.budget_min * 60 - wall["seconds"]
    if left <= 0:
        log(f"budget of {args.budget_min} min spent; evaluating the last checkpoint")
        return
    log(f"training for up to {left / 60:.1f} more minutes ({opt['train']['total_iter']} iterations in all)")
    command = [sys.executable, "-m", "esc_arch.cli", "train", "-opt", opt_path, "--auto_resume", "--root", args.root]
    start = time.monotonic()
    process = subprocess.Popen(command)
    try:
        code = process.wait(timeout=left)
        wall["finished"] = code == 0
        if code:
            raise SystemExit(f"training stopped with exit status {code}; re-run to resume")
    except subprocess.TimeoutExpired:
        process.terminate()
        process.wait()
        wall["stopped_by_budget"] = True
        log("budget spent: training stopped; the last checkpoint is evaluated")
    finally:
        if process.poll() is None:  # interrupted ourselves: stop the child, keep the time
            process.terminate()
            process.wait()
        wall["seconds"] += time.monotonic() - start
        wall["runs"] += 1
        _write_wall(paths["wall"], wall)


def latest_weights(experiment: str) -> tuple[str, int | None]:
    """The newest net_g checkpoint of a run and its iteration (None for 'latest')."""
    models = osp.join(experiment, "models")
    latest = osp.join(models, "net_g_latest.pth")
    if osp.isfile(latest):
        return latest, None
    found = sorted(
        (int(m.group(1)), p)
        for p in glob.glob(osp.join(models, "net_g_*.pth"))
        if (m := re.search(r"net_g_(\d+)\.pth$", p))
    )
    if not found:
        raise SystemExit(f"no checkpoint in {models}; run the train step first")
    return found[-1][1], found[-1][0]


_VALIDATION = re.compile(r"Validation (\S+)\s*\n\s*# psnr: ([\d.]+).*\n\s*# ssim: ([\d.]+)")
_ITER = re.compile(r"iter:\s*([\d,]+)")


def parse_validations(text: str, val_freq: int = 1) -> list[tuple[int, str, float, float]]:
    """(iteration, dataset, psnr, ssim) of every validation in a BasicSR log. BasicSR does not
    print the iteration of a validation: it is the first multiple of ``val_freq`` from the last
    iteration the log printed before it."""
    rows, last_iter, pos = [], 0, 0
    for match in _VALIDATION.finditer(text):
        iters = _ITER.findall(text, pos, match.start())
        if iters:
            last_iter = -(-int(iters[-1].replace(",", "")) // val_freq) * val_freq
        pos = match.end()
        rows.append((last_iter, match.group(1), float(match.group(2)), float(match.group(3))))
    return rows


def step_eval(args, paths: dict) -> dict:
    from esc_arch.commands.export import export_checkpoint
    from esc_arch.weights import load_model

    opt_train = load_yaml(osp.join(paths["options"], "train.yml"))
    experiment = osp.join(args.root, "experiments", opt_train["name"])
    weights, iteration = latest_weights(experiment)
    name = f"{args.network}_x{args.scale}_small"
    release, row = export_checkpoint(weights, osp.join(args.root, "release"), name=name)
    load_model(release)  # the release file loads through the public loader
    log(f"exported {release}: {row}")

    opt = test_options(opt_train, release, paths, args)
    opt_path = osp.join(paths["options"], "test.yml")
    dump_yaml(opt, opt_path)
    command = [sys.executable, "-m", "esc_arch.cli", "test", "-opt", opt_path, "--root", args.root]
    result = subprocess.run(command, capture_output=True, text=True)
    sys.stdout.write(result.stdout[-4000:])
    if result.returncode:
        sys.stderr.write(result.stderr[-4000:])
        raise SystemExit(f"basicsr test failed with exit status {result.returncode}")
    scores = {name: (psnr, ssim) for _, name, psnr, ssim in parse_validations(result.stdout + result.stderr)}
    if set(scores) != set(args.bench):
        raise SystemExit(f"could not read the test results for {sorted(set(args.bench) - set(scores))}")
    evaluation = {
        "weights": release,
        "iteration": iteration or opt_train["train"]["total_iter"],
        "scores": scores,
        "bicubic": {name: bicubic_scores(paths["bench_root"], name, args.scale) for name in args.bench},
        "strips": osp.join(args.root, "results", opt["name"], "visualization"),
    }
    with open(osp.join(args.root, "evaluation.json"), "w") as f:
        json.dump(evaluation, f, indent=1)
    return evaluation


def bicubic_scores(bench_root: str, name: str, scale: int) -> tuple[float, float]:
    """MATLAB-bicubic upscaling of the prepared LR images, scored like the network."""
    import cv2
    import numpy as np

    from esc_arch.basicsr_plugin import activate

    activate()  # BasicSR adapted before its first import
    from basicsr.metrics import calculate_psnr, calculate_ssim
    from basicsr.utils.matlab_functions import imresize

    psnrs, ssims = [], []
    for hr_path in sorted(glob.glob(osp.join(bench_root, name, "HR", "*.png"))):
        stem = osp.splitext(osp.basename(hr_path))[0]
        lr = cv2.imread(osp.join(bench_root, name, "LR_bicubic", f"X{scale}", f"{stem}x{scale}.png"))
        hr = cv2.imread(hr_path)[: lr.shape[0] * scale, : lr.shape[1] * scale]
        sr = (np.clip(imresize(lr.astype(np.float32) / 255.0, scale), 0, 1) * 255.0).round()
        psnrs.append(calculate_psnr(sr, hr, crop_border=scale, test_y_channel=True))
        ssims.append(calculate_ssim(sr, hr, crop_border=scale, test_y_channel=True))
    return float(np.mean(psnrs)), float(np.mean(ssims))


def step_report(args, paths: dict) -> str:
    with open(osp.join(args.root, "evaluation.json")) as f:
        evaluation = json.load(f)
    wall = _read_wall(paths["wall"])
    opt_train = load_yaml(osp.join(paths["options"], "train.yml"))
    logs = sorted(glob.glob(osp.join(args.root, "experiments", opt_train["name"], "train_*.log")))
    val_freq = opt_train["val"]["val_freq"]
    curve = [row for path in logs for row in parse_validations(open(path).read(), val_freq)]
    names = list(evaluation["scores"])

    def cells(values: dict, bold: bool = False) -> str:
        mark = "**" if bold else ""
        return " | ".join(f"{mark}{values[n][0]:.2f} / {values[n][1]:.4f}{mark}" for n in names)

    batch = opt_train["datasets"]["train"]["batch_size_per_gpu"]
    gt = opt_train["datasets"]["train"]["gt_size"]
    lines = [
        f"| x{args.scale}, PSNR / SSIM (Y) | training data | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
        f"| bicubic (measured) | - | {cells(evaluation['bicubic'])} |",
        f"| **{args.network}, ours** | {' + '.join(osp.basename(h.rstrip('/')) for h in args.hr)}; "
        f"{evaluation['iteration']} iterations of {batch} x {gt}px HR patches, "
        f"{wall['seconds'] / 60:.0f} min on this CPU | {cells(evaluation['scores'], bold=True)} |",
    ]
    if args.scale == 2 and names == ["Set5", "Set14"]:
        lines += [f"| {m}, published | {data} | {s5:.2f} | {s14:.2f} |" for m, data, s5, s14 in PUBLISHED]
    table = "\n".join(lines)
    with open(osp.join(args.root, "results.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    if curve:
        plot_curve(curve, evaluation, osp.join(args.root, "psnr_vs_iter.png"), args.scale, args.network)
    return table


def plot_curve(curve, evaluation: dict, path: str, scale: int, network: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for name in dict.fromkeys(n for _, n, _, _ in curve):
        points = sorted({i: p for i, n, p, _ in curve if n == name}.items())
        line = ax.plot([i for i, _ in points], [p for _, p in points], marker="o", ms=3, label=f"{network} {name}")
        color = line[0].get_color()
        ax.axhline(evaluation["bicubic"][name][0], color=color, ls=":", lw=1, label=f"bicubic {name}")
    if scale == 2:
        for label, s5 in (("SRCNN Set5", 36.66), ("FSRCNN Set5", 37.00)):
            ax.axhline(s5, color="gray", ls="--", lw=0.8)
            ax.text(0.01, s5, label, transform=ax.get_yaxis_transform(), fontsize=7, color="gray", va="bottom")
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"PSNR (Y, x{scale}) [dB]")
    ax.set_title(f"{network} on T91 + General100 + BSDS200, EMA weights")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="quality_small", help="experiment folder (default: quality_small)")
    parser.add_argument("--network", choices=list(RECIPES), default="ESC-light", help="default: ESC-light")
    parser.add_argument("--scale", type=int, choices=(2, 4), default=2)
    parser.add_argument(
        "--hr",
        nargs="+",
        default=[osp.join(SHARED, "traindata", n) for n in ("T91", "General100", "BSDS200")],
        help="HR training folders (default: ../shared/traindata/{T91,General100,BSDS200})",
    )
    parser.add_argument(
        "--bench-hr",
        nargs="+",
        default=[osp.join(SHARED, "benchmarks", n, "HR") for n in ("Set5", "Set14")],
        help="benchmark HR folders (default: ../shared/benchmarks/{Set5,Set14}/HR)",
    )
    parser.add_argument("--bench", nargs="+", default=["Set5", "Set14"], help="names of the benchmark folders")
    parser.add_argument("--budget-min", type=float, default=90.0, help="training wall-time budget in minutes")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--iters", type=int, help="override the option file's total_iter")
    parser.add_argument("--batch", type=int, help="override batch_size_per_gpu")
    parser.add_argument("--gt-size", type=int, help="override gt_size (HR patch)")
    parser.add_argument("--val-freq", type=int, help="override val_freq (also the checkpoint and print frequency)")
    parser.add_argument("--crop-size", type=int, default=192, help="HR sub-image size (default 192)")
    parser.add_argument("--strip-size", type=int, default=96, help="HR crop of the visual strips (default 96)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--toy", action="store_true", help="a few iterations on tiny patches (for tests)")
    args = parser.parse_args(argv)
    if not osp.isfile(recipe(args.network, args.scale)):
        parser.error(f"no {args.network} x{args.scale} recipe: {recipe(args.network, args.scale)} does not exist")
    if len(args.bench) != len(args.bench_hr):
        parser.error("--bench and --bench-hr need the same number of entries")
    if args.toy:
        args.iters, args.batch, args.val_freq = args.iters or 4, args.batch or 2, args.val_freq or 2
        args.gt_size = args.gt_size or 16 * args.scale
        args.crop_size, args.strip_size = 96, 32
    args.root = osp.abspath(args.root)

    from esc_arch.basicsr_plugin import activate

    activate()  # BasicSR adapted, ESC registered

    paths = experiment_paths(args)
    steps = {"prepare": step_prepare, "train": step_train, "eval": step_eval, "report": step_report}
    for name in args.steps:
        log(f"step {name}")
        steps[name](args, paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
