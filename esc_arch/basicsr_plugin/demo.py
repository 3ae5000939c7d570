"""``esc demo``: the embedded default job, on a fresh machine without downloads.

1. Takes real photographs bundled with scikit-image (a declared dependency), splits them
   into training and held-out validation images, and prepares them exactly as the
   ``datasets/`` scripts prepare DIV2K: HR sub-images, MATLAB-bicubic LR, BasicSR LMDBs.
2. Trains ESC-light x2 on the CPU through ``basicsr train`` itself (its option checks, then
   BasicSR's own pipeline and ``ESCModel``; AdamW, L1, EMA) for a few minutes, logging progress. The options are the
   shipped ``options/train_ESC_light_x2_demo.yml`` with this run's data paths and flags,
   written to ``<workdir>/train_ESC_light_x2_demo.yml``.
3. Evaluates the EMA weights on the held-out photographs with the paper's protocol
   (whole-image reflect padding to the window, PSNR/SSIM on Y, border = scale) beside
   MATLAB-bicubic upscaling, prints the table, and exits 1 unless ESC beats bicubic.

A second run reuses the prepared data and, for the same ``--iters``, the trained weights
(it says so); delete the work folder, or its ``experiments`` folder, to start again.
"""

from __future__ import annotations

import os
import sys
import time
from os import path as osp

import cv2
import numpy as np
import yaml

from ..commands.common import guarded

__all__ = ["demo_options", "run", "run_demo", "write_options"]

DEMO_OPTIONS_NAME = "options/train_ESC_light_x2_demo.yml"
DEMO_OPTIONS = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), *DEMO_OPTIONS_NAME.split("/"))

TRAIN_IMAGES = [
    "astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
    "camera", "moon", "brick", "grass", "gravel", "clock", "coins",
]  # fmt: skip
VAL_IMAGES = ["chelsea", "coffee"]
SCALE = 2


def _skimage_photo(name: str) -> np.ndarray:
    """A bundled scikit-image photograph as 8-bit BGR."""
    from skimage import data

    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return cv2.cvtColor(np.ascontiguousarray(img[..., :3]), cv2.COLOR_RGB2BGR)


def data_paths(root: str) -> dict[str, str]:
    """Where :func:`prepare_data` puts the training LMDBs and the validation set."""
    hr_sub, lr_sub = osp.join(root, "train_HR_sub"), osp.join(root, f"train_LR_bicubic_X{SCALE}_sub")
    return {
        "gt_lmdb": hr_sub + ".lmdb",
        "lq_lmdb": lr_sub + ".lmdb",
        "val_gt": osp.join(root, "val", "HR"),
        "val_lq": osp.join(root, "val", "LR_bicubic", f"X{SCALE}"),
    }


def prepare_data(root: str, *, workers: int) -> dict[str, str]:
    """Write the photographs and build the training LMDBs and the validation set under ``root``
    (each step skips finished work)."""
    from .data_prep import extract_subimages, make_bicubic_lr, make_lmdb, prepare_benchmark

    folders = {"train_hr": osp.join(root, "train_HR"), "val_hr": osp.join(root, "val_HR")}
    for key, names in (("train_hr", TRAIN_IMAGES), ("val_hr", VAL_IMAGES)):
        os.makedirs(folders[key], exist_ok=True)
        for name in names:
            path = osp.join(folders[key], f"{name}.png")
            if not osp.exists(path):
                cv2.imwrite(path, _skimage_photo(name))
    hr_sub, lr_sub = osp.join(root, "train_HR_sub"), osp.join(root, f"train_LR_bicubic_X{SCALE}_sub")
    extract_subimages(folders["train_hr"], hr_sub, crop_size=128, step=64, workers=workers)
    make_bicubic_lr(hr_sub, lr_sub, SCALE, workers=workers)
    make_lmdb(hr_sub, hr_sub + ".lmdb")
    make_lmdb(lr_sub, lr_sub + ".lmdb")
    prepare_benchmark(folders["val_hr"], osp.join(root, "val"), scales=(SCALE,), workers=workers)
    return data_paths(root)


def demo_options(data: dict[str, str], *, iters: int, batch: int, workers: int, lr: float = 2e-3) -> dict:
    """The shipped ``options/train_ESC_light_x2_demo.yml`` with this run's data paths and flags
    (a new dict; the milestone, validation and checkpoint steps follow ``iters``)."""
    if not osp.isfile(DEMO_OPTIONS):
        raise FileNotFoundError(f"esc demo: its option file {DEMO_OPTIONS} is missing (run from a checkout)")
    with open(DEMO_OPTIONS) as f:
        opt = yaml.safe_load(f)
    train_set, val_set, train = opt["datasets"]["train"], opt["datasets"]["val"], opt["train"]
    train_set["dataroot_gt"], train_set["dataroot_lq"] = data["gt_lmdb"], data["lq_lmdb"]
    val_set["dataroot_gt"], val_set["dataroot_lq"] = data["val_gt"], data["val_lq"]
    train_set["batch_size_per_gpu"] = batch
    train_set["num_worker_per_gpu"] = workers
    train["optim_g"]["lr"] = lr
    shipped = train["total_iter"]
    train["scheduler"]["milestones"] = [m * iters // shipped for m in train["scheduler"]["milestones"]]
    train["total_iter"] = iters
    opt["val"]["val_freq"] = iters + 1  # past the last iteration: BasicSR validates once at the end
    opt["logger"]["save_checkpoint_freq"] = iters
    return opt


def write_options(opt: dict, path: str) -> None:
    """Write ``opt`` as a BasicSR option file."""
    header = f"# Written by esc demo: {DEMO_OPTIONS_NAME} (commented there) with this run's paths and flags.\n"
    with open(path, "w") as f:
        f.write(header + yaml.safe_dump(opt, sort_keys=False, default_flow_style=None))


def _shown(path: str) -> str:
    """``path`` relative to the current directory when it lies below it."""
    rel = osp.relpath(path)
    return path if rel.startswith("..") else rel


def _data_ready(data: dict[str, str]) -> bool:
    """Whether an earlier run prepared everything (LMDBs are renamed into place when complete,
    images are written atomically)."""
    lmdbs = [osp.join(data[k], name) for k in ("gt_lmdb", "lq_lmdb") for name in ("data.mdb", "meta_info.txt")]
    val = [osp.join(data["val_gt"], f"{n}.png") for n in VAL_IMAGES]
    val += [osp.join(data["val_lq"], f"{n}x{SCALE}.png") for n in VAL_IMAGES]
    return all(osp.isfile(p) for p in lmdbs + val)


def evaluate(weights: str, data: dict[str, str]) -> list[dict]:
    """Per held-out image: PSNR/SSIM (Y, border = scale) of bicubic and of ESC (EMA weights)."""
    from basicsr.metrics import calculate_psnr, calculate_ssim
    from basicsr.utils import img2tensor, tensor2img
    from basicsr.utils.matlab_functions import imresize

    from ..runtime.inference import upscale
    from ..weights import load_model

    net = load_model(weights)  # params_ema
    rows = []
    for name in VAL_IMAGES:
        hr = cv2.imread(osp.join(data["val_gt"], f"{name}.png"))
        lr = cv2.imread(osp.join(data["val_lq"], f"{name}x{SCALE}.png"))
        hr = hr[: lr.shape[0] * SCALE, : lr.shape[1] * SCALE]
        bicubic = (np.clip(imresize(lr.astype(np.float32) / 255.0, SCALE), 0, 1) * 255.0).round().astype(np.uint8)
        lq = img2tensor(lr.astype(np.float32) / 255.0, bgr2rgb=True, float32=True).unsqueeze(0)
        sr = tensor2img(upscale(net, lq).clamp(0, 1))
        row = {"image": name}
        for label, img in (("bicubic", bicubic), ("ESC", sr)):
            row[f"{label}_psnr"] = calculate_psnr(img, hr, crop_border=SCALE, test_y_channel=True)
            row[f"{label}_ssim"] = calculate_ssim(img, hr, crop_border=SCALE, test_y_channel=True)
        rows.append(row)
    return rows


def run_demo(workdir: str, *, iters: int, batch: int, workers: int, lr: float = 2e-3) -> int:
    from ..cli import basicsr_main

    start = time.time()
    workdir = osp.abspath(workdir)
    root = osp.join(workdir, "data")
    data = data_paths(root)
    if _data_ready(data):
        print(f"[esc demo] reusing prepared data in {_shown(root)}", flush=True)
    else:
        data = prepare_data(root, workers=workers)
        print(f"[esc demo] data ready in {_shown(root)} ({time.time() - start:.0f} s)", flush=True)
    opt = demo_options(data, iters=iters, batch=batch, workers=min(workers, 2), lr=lr)
    option_file = osp.join(workdir, osp.basename(DEMO_OPTIONS))
    write_options(opt, option_file)

    experiment = osp.join(workdir, "experiments", opt["name"])
    weights = osp.join(experiment, "models", f"net_g_{iters}.pth")  # more --iters resume from the last state
    if osp.isfile(weights):
        print(
            f"[esc demo] reusing trained weights {_shown(weights)} ({iters} iterations; "
            f"delete {_shown(experiment)} to retrain)",
            flush=True,
        )
        how = "weights trained by an earlier run"
    else:
        print(
            f"[esc demo] training ESC-light x2 for {iters} iterations (batch {batch}, HR patches "
            f"{opt['datasets']['train']['gt_size']}) with {_shown(option_file)}",
            flush=True,
        )
        began = time.time()
        status = basicsr_main(["train", "-opt", option_file, "--auto_resume", "--root", workdir])
        if status:
            print(f"[esc demo] basicsr train -opt {_shown(option_file)} failed (exit status {status})", file=sys.stderr)
            return status
        how = f"trained on the CPU in {time.time() - began:.0f} s"
    rows = evaluate(weights, data)

    print(
        f"\nESC-light x2 after {iters} iterations on {len(TRAIN_IMAGES)} scikit-image photographs "
        f"({how}); held-out photographs, Y channel, border {SCALE}:"
    )
    print("| image | bicubic PSNR / SSIM | ESC-light PSNR / SSIM |\n|---|---|---|")
    for row in rows:
        print(
            f"| {row['image']} | {row['bicubic_psnr']:.2f} / {row['bicubic_ssim']:.4f} "
            f"| {row['ESC_psnr']:.2f} / {row['ESC_ssim']:.4f} |"
        )
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "image"}
    print(
        f"| mean | {mean['bicubic_psnr']:.2f} / {mean['bicubic_ssim']:.4f} "
        f"| {mean['ESC_psnr']:.2f} / {mean['ESC_ssim']:.4f} |"
    )
    gain = mean["ESC_psnr"] - mean["bicubic_psnr"]
    print(f"\nESC-light - bicubic: {gain:+.2f} dB PSNR (weights: {weights})")
    if gain <= 0:
        print("[esc demo] ESC did not beat bicubic: train longer (--iters)", file=sys.stderr)
        return 1
    return 0


@guarded
def run(args) -> int:
    """``esc demo`` (arguments: :mod:`esc_arch.cli`); ``--workdir`` is checked before any work."""
    from ..commands.common import check_output_folder

    check_output_folder(args.workdir, "--workdir")
    return run_demo(args.workdir, iters=args.iters, batch=args.batch, workers=args.workers, lr=args.lr)
