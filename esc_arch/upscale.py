"""``esc upscale``: run ESC weights on images.

Image handling of ``esc upscale``: 8- and 16-bit files keep their depth where the output
format allows it; grayscale is run through the network as three equal channels and
written back as one; an alpha channel is upscaled separately (bicubic), never fed to the
network; palette images are expanded to colour; the EXIF orientation is applied. A file
that cannot be read (unreadable, truncated, empty) is reported and skipped, and the exit
status is the number of failed files (at most 125). Inputs are never overwritten.
"""

from __future__ import annotations

import os
import sys
from os import path as osp

import cv2
import numpy as np
import torch

from .cli_util import guarded
from .imageio import collect_inputs, read_image, write_image

__all__ = ["run", "upscale_image"]


def upscale_image(net, img: np.ndarray, *, tile: int | None, overlap: int, precision: str, device) -> np.ndarray:
    """Super-resolve an image as returned by :func:`read_image`; same channels and depth."""
    from .inference import upscale

    peak = 65535.0 if img.dtype == np.uint16 else 255.0
    gray = img.ndim == 2
    color = np.stack([img] * 3, axis=-1) if gray else img[..., :3]
    x = torch.from_numpy(np.ascontiguousarray(color[..., ::-1].transpose(2, 0, 1))).float().div_(peak)
    sr = upscale(net, x.unsqueeze(0).to(device), tile=tile, overlap=overlap, precision=precision)[0]
    out = sr.clamp_(0, 1).mul_(peak).round_().cpu().numpy().transpose(1, 2, 0)[..., ::-1]
    out = out.mean(axis=-1) if gray else out
    if not gray and img.shape[2] == 4:
        height, width = out.shape[:2]
        alpha = cv2.resize(img[..., 3].astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
        out = np.dstack([out, np.clip(alpha, 0, peak)])
    return np.ascontiguousarray(out.round().astype(img.dtype))


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return device


@guarded
def run(args) -> int:
    """``esc upscale`` (arguments: :mod:`esc_arch.cli`)."""
    from tqdm import tqdm

    from .archs.attention import resolve_backend
    from .loading import load_model

    device = _device(args.device)
    net = load_model(args.model, attn_type=args.attn_type, device=device, allow_pickle=args.allow_pickle)
    try:  # fail before the first image when the backend cannot run here
        backend = resolve_backend(net.attn_type, device)
    except RuntimeError as error:
        raise ValueError(str(error)) from error
    files = collect_inputs(args.input)
    os.makedirs(args.output, exist_ok=True)
    inputs = {osp.realpath(f) for f in files}
    suffix = args.suffix if args.suffix is not None else f"_{net.variant}_x{net.scale}"
    params = sum(p.numel() for p in net.parameters())
    attention = backend if net.attn_type == backend else f"{backend} ({net.attn_type})"
    print(f"{net.variant} x{net.scale} ({params:,} parameters) on {device}, {args.precision}, "
          f"attention {attention}, tile {args.tile or 'none'}; {len(files)} image(s) -> {args.output}",
          file=sys.stderr)  # fmt: skip
    failures = {}
    for path in tqdm(files, unit="img", desc="upscale"):
        stem, ext = osp.splitext(osp.basename(path))
        ext = ".png" if args.format == "png" else ext.lower()
        out = osp.join(args.output, f"{stem}{suffix}{ext}")
        if osp.realpath(out) in inputs:
            failures[path] = f"output {out} would overwrite an input; choose another -o or --suffix"
            continue
        try:
            img = read_image(path)
            sr = upscale_image(net, img, tile=args.tile, overlap=args.tile_overlap, precision=args.precision,
                               device=device)  # fmt: skip
            write_image(out, sr)
        except (ValueError, OSError, cv2.error) as error:
            failures[path] = str(error)
    for path, reason in failures.items():
        print(f"failed: {path}: {reason}", file=sys.stderr)
    print(f"{len(files) - len(failures)} upscaled, {len(failures)} failed", file=sys.stderr)
    return min(len(failures), 125)
