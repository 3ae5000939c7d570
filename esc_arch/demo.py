"""``esc demo``: the embedded default job, on a fresh machine without downloads.

1. Takes real photographs bundled with scikit-image (a declared dependency), splits them
   into training and held-out validation images, and prepares them exactly as the
   ``datasets/`` scripts prepare DIV2K: HR sub-images, MATLAB-bicubic LR, BasicSR LMDBs.
2. Trains ESC-light x2 on the CPU with ``basicsr train`` (BasicSR's own pipeline and
   ``ESCModel``; AdamW, L1, EMA) for a few minutes, logging progress.
3. Evaluates the EMA weights on the held-out photographs with the paper's protocol
   (whole-image reflect padding to the window, PSNR/SSIM on Y, border = scale) beside
   MATLAB-bicubic upscaling, prints the table, and exits 1 unless ESC beats bicubic.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from os import path as osp

import cv2
import numpy as np

__all__ = ["add_parser", "run_demo"]

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


def prepare_data(root: str, *, workers: int) -> dict[str, str]:
    """Write the photographs and build the training LMDBs and the validation set under ``root``."""
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
    return {
        "gt_lmdb": hr_sub + ".lmdb",
        "lq_lmdb": lr_sub + ".lmdb",
        "val_gt": osp.join(root, "val", "HR"),
        "val_lq": osp.join(root, "val", "LR_bicubic", f"X{SCALE}"),
    }


def demo_options(data: dict[str, str], *, iters: int, batch: int, workers: int, lr: float = 2e-3) -> str:
    """The training option file of the demo (BasicSR YAML)."""
    return f"""name: ESC_light_x2_demo
model_type: ESCModel
scale: {SCALE}
num_gpu: 0
manual_seed: 0

datasets:
  train:
    name: skimage_photos
    type: PairedImageDataset
    dataroot_gt: {data["gt_lmdb"]}
    dataroot_lq: {data["lq_lmdb"]}
    io_backend:
      type: lmdb
    gt_size: 64
    use_hflip: true
    use_rot: true
    num_worker_per_gpu: {workers}
    batch_size_per_gpu: {batch}
    dataset_enlarge_ratio: 100
    prefetch_mode: ~
  val:
    name: heldout_photos
    type: PairedImageDataset
    dataroot_gt: {data["val_gt"]}
    dataroot_lq: {data["val_lq"]}
    filename_tmpl: '{{}}x{SCALE}'
    io_backend:
      type: disk

network_g:
  type: ESC
  dim: 64
  pdim: 16
  kernel_size: 13
  n_blocks: 3
  conv_blocks: 5
  window_size: 32
  num_heads: 4
  exp_ratio: 1.25
  upscaling_factor: {SCALE}
  attn_type: auto

path:
  pretrain_network_g: ~
  strict_load_g: true
  resume_state: ~

train:
  ema_decay: 0.9
  optim_g:
    type: AdamW
    lr: !!float {lr:g}
    weight_decay: 0
    betas: [0.9, 0.99]
  scheduler:
    type: MultiStepLR
    milestones: [{int(iters * 0.7)}]
    gamma: 0.5
  total_iter: {iters}
  warmup_iter: -1
  pixel_opt:
    type: L1Loss
    loss_weight: 1.0
    reduction: mean

val:
  val_freq: {iters + 1}  # BasicSR validates once more at the end anyway
  save_img: false
  suffix: ~
  metrics:
    psnr:
      type: calculate_psnr
      crop_border: {SCALE}
      test_y_channel: true

logger:
  print_freq: 10
  save_checkpoint_freq: {iters}
  use_tb_logger: false
  wandb:
    project: ~
    resume_id: ~
"""


def evaluate(weights: str, data: dict[str, str]) -> list[dict]:
    """Per held-out image: PSNR/SSIM (Y, border = scale) of bicubic and of ESC (EMA weights)."""
    from basicsr.metrics import calculate_psnr, calculate_ssim
    from basicsr.utils import img2tensor, tensor2img
    from basicsr.utils.matlab_functions import imresize

    from .inference import upscale
    from .loading import load_model

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
    from basicsr.train import train_pipeline

    import esc_arch  # noqa: F401  (adapts BasicSR, registers ESC)

    start = time.time()
    workdir = osp.abspath(workdir)
    data = prepare_data(osp.join(workdir, "data"), workers=workers)
    option_file = osp.join(workdir, "train_ESC_light_x2_demo.yml")
    with open(option_file, "w") as f:
        f.write(demo_options(data, iters=iters, batch=batch, workers=min(workers, 2), lr=lr))
    print(
        f"[esc demo] data ready in {time.time() - start:.0f} s; training ESC-light x2 for {iters} iterations "
        f"(batch {batch}, HR patches 64) with {option_file}",
        flush=True,
    )

    models = osp.join(workdir, "experiments", "ESC_light_x2_demo", "models")
    weights = osp.join(models, f"net_g_{iters}.pth")  # a re-run with more --iters resumes from the last state
    if not osp.isfile(weights):
        argv, sys.argv = sys.argv, ["basicsr train", "-opt", option_file, "--auto_resume"]
        try:
            train_pipeline(workdir)
        finally:
            sys.argv = argv
    trained = time.time()
    rows = evaluate(weights, data)

    print(
        f"\nESC-light x2 after {iters} iterations on {len(TRAIN_IMAGES)} scikit-image photographs "
        f"(CPU, {trained - start:.0f} s in all); held-out photographs, Y channel, border {SCALE}:"
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


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "demo",
        help="train ESC-light x2 on bundled photographs and compare with bicubic (no downloads)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--workdir", default="esc_demo", help="where data, experiment and weights go (default: esc_demo)"
    )
    parser.add_argument("--iters", type=int, default=500, help="training iterations (default: 500)")
    parser.add_argument("--batch", type=int, default=4, help="batch size (default: 4)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="data-preparation processes")
    parser.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate (default: 2e-3)")
    parser.set_defaults(
        func=lambda args: run_demo(args.workdir, iters=args.iters, batch=args.batch, workers=args.workers, lr=args.lr)
    )
