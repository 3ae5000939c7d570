"""Data and evaluation of arbitrary-scale super-resolution with the LIIF protocol (plain numpy,
PIL and torch; the BasicSR dataset and model of ESC-LTE and ``benchmarks/lte_small.py`` use it).

Degradation (LIIF's ``sr-implicit-downsampled``): an HR image of ``H x W`` pixels is reduced for
scale ``s`` to ``h = floor(H / s)`` x ``w = floor(W / s)`` LR pixels, the HR cropped to
``round(h * s) x round(w * s)`` (top left), and the LR made from the 8-bit HR by PIL's bicubic
filter (:func:`downsample`). Training crops are square: ``round(inp_size * s)`` HR pixels to
``inp_size`` LR pixels.

PSNR (LIIF's ``calc_psnr``, :func:`liif_psnr`) on images in [0, 1], not quantised:

=============  ==============================================================================
``benchmark``  Set5, Set14, B100, Urban100, Manga109: the difference on Y (weights 65.738,
               129.057, 25.064 over 256 on R, G, B), ``ceil(s)`` border pixels cropped
``div2k``      DIV2K validation: the difference on RGB, ``ceil(s) + 6`` border pixels cropped
=============  ==============================================================================

(LIIF crops ``s`` and ``s + 6`` at its integer scales; ``ceil`` extends that to any scale.)
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["PROTOCOLS", "bicubic_resize", "downsample", "liif_psnr", "lr_size", "shave", "to_tensor"]

#: protocol -> (on Y, extra border pixels beyond ceil(s))
PROTOCOLS: dict[str, tuple[bool, int]] = {"benchmark": (True, 0), "div2k": (False, 6)}

_Y_WEIGHTS = (65.738 / 256, 129.057 / 256, 25.064 / 256)


def bicubic_resize(bgr: np.ndarray, width: int, height: int) -> np.ndarray:
    """An 8-bit BGR image resized to ``width`` x ``height`` by PIL's bicubic filter (as LIIF's
    ``resize_fn`` and the authors' data do), 8-bit BGR out."""
    from PIL import Image

    rgb = Image.fromarray(np.ascontiguousarray(bgr[..., ::-1]))
    out = rgb.resize((width, height), Image.Resampling.BICUBIC)
    return np.ascontiguousarray(np.asarray(out)[..., ::-1])


def lr_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """The LR ``(h, w)`` of an ``height`` x ``width`` HR image at ``scale`` (LIIF's floor)."""
    return math.floor(height / scale + 1e-9), math.floor(width / scale + 1e-9)


def downsample(hr: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """``(lr, hr)``: the 8-bit HR image cropped to ``round(h * s) x round(w * s)`` and its LR of
    ``h x w`` (:func:`lr_size`) by PIL's bicubic filter. ``ValueError`` when the image is smaller
    than ``scale`` pixels."""
    h, w = lr_size(hr.shape[0], hr.shape[1], scale)
    if h < 1 or w < 1:
        raise ValueError(f"an image of {hr.shape[0]}x{hr.shape[1]} pixels has no LR at scale {scale:g}")
    hr = np.ascontiguousarray(hr[: round(h * scale), : round(w * scale)])
    return bicubic_resize(hr, w, h), hr


def shave(scale: float, protocol: str) -> int:
    """The border cropped before PSNR: ``ceil(scale)`` (+ 6 for ``div2k``)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}; got {protocol!r}")
    return math.ceil(scale - 1e-9) + PROTOCOLS[protocol][1]


def liif_psnr(sr: Tensor, hr: Tensor, *, scale: float, protocol: str = "benchmark") -> float:
    """PSNR (dB) of ``sr`` against ``hr``, ``(3, H, W)`` or ``(1, 3, H, W)`` RGB in [0, 1], by
    LIIF's protocol (module docstring)."""
    if sr.shape != hr.shape:
        raise ValueError(f"sizes differ: {tuple(sr.shape)} and {tuple(hr.shape)}")
    border = shave(scale, protocol)
    diff = (sr.double() - hr.double()).reshape(-1, *sr.shape[-3:])
    if PROTOCOLS[protocol][0]:
        diff = (diff * diff.new_tensor(_Y_WEIGHTS).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    valid = diff[..., border:-border, border:-border]
    if valid.numel() == 0:
        raise ValueError(f"an image of {sr.shape[-2]}x{sr.shape[-1]} pixels is all border at scale {scale:g}")
    mse = valid.pow(2).mean().item()
    return float("inf") if mse == 0 else -10 * math.log10(mse)


def to_tensor(bgr: np.ndarray) -> Tensor:
    """8-bit BGR ``(H, W, 3)`` -> RGB ``(3, H, W)`` float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1].transpose(2, 0, 1))).float().div_(255)
