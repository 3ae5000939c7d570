"""Side-by-side crop strips for visual comparison: LR (nearest) | bicubic | ESC | HR.

``basicsr test`` writes one per image when the option file asks for it::

    val:
      crop_strip: {size: 96, zoom: 2}   # HR-pixel crop, enlarged 2x (nearest) for display

The crop is placed where the HR image (the output when there is no HR) has the most detail
(largest local gradient energy), so strips show edges and texture rather than flat sky.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["crop_strip", "detail_window"]

_LABELS = ("LR (nearest)", "bicubic", "ESC", "HR")


def detail_window(img: np.ndarray, size: int, step: int) -> tuple[int, int]:
    """Top-left corner (multiple of ``step``) of the ``size`` x ``size`` window of ``img`` with the
    largest summed gradient magnitude."""
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
    energy = np.abs(cv2.Sobel(gray, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    summed = cv2.boxFilter(energy, -1, (size, size), normalize=False, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)
    height, width = img.shape[:2]
    valid = summed[: height - size + 1 : step, : width - size + 1 : step]
    y, x = np.unravel_index(int(np.argmax(valid)), valid.shape)
    return int(y) * step, int(x) * step


def _labelled(panel: np.ndarray, label: str) -> np.ndarray:
    band = np.full((18, panel.shape[1], 3), 255, np.uint8)
    cv2.putText(band, label, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([band, panel], axis=0)


def crop_strip(
    lq: np.ndarray, output: np.ndarray, gt: np.ndarray | None, *, scale: int, size: int = 96, zoom: int = 2
) -> np.ndarray:
    """The strip for one image (uint8 BGR arrays: ``lq`` at LR size, ``output``/``gt`` at HR size).

    ``size`` is the HR crop (rounded down to a multiple of ``scale``, at most the image), the
    bicubic panel is MATLAB-style bicubic (BasicSR's ``imresize``) of ``lq``.
    """
    from basicsr.utils.matlab_functions import imresize

    if output.shape[:2] != (lq.shape[0] * scale, lq.shape[1] * scale):
        raise ValueError(f"output {output.shape[:2]} is not {scale}x the LR image {lq.shape[:2]}")
    size = min(size, *output.shape[:2])
    size -= size % scale
    if size <= 0:
        raise ValueError(f"image too small for a crop strip at scale {scale}")
    reference = gt[: output.shape[0], : output.shape[1]] if gt is not None else output
    y, x = detail_window(reference, size, scale)
    ly, lx, lsize = y // scale, x // scale, size // scale
    lr_crop = lq[ly : ly + lsize, lx : lx + lsize]
    # bicubic of a crop with a margin, so the panel has no border effects of its own
    margin = 4
    y0, x0 = max(ly - margin, 0), max(lx - margin, 0)
    context = lq[y0 : ly + lsize + margin, x0 : lx + lsize + margin].astype(np.float32) / 255.0
    bicubic = (np.clip(imresize(context, scale), 0, 1) * 255.0).round().astype(np.uint8)
    by, bx = (ly - y0) * scale, (lx - x0) * scale
    panels = [
        cv2.resize(lr_crop, (size, size), interpolation=cv2.INTER_NEAREST),
        bicubic[by : by + size, bx : bx + size],
        output[y : y + size, x : x + size],
    ]
    labels = list(_LABELS[:3])
    if gt is not None:
        panels.append(reference[y : y + size, x : x + size])
        labels.append(_LABELS[3])
    gap = np.full((size * zoom + 18, 4, 3), 255, np.uint8)
    columns = []
    for panel, label in zip(panels, labels, strict=True):
        big = cv2.resize(panel, (size * zoom, size * zoom), interpolation=cv2.INTER_NEAREST)
        columns += [_labelled(big, label), gap]
    return np.concatenate(columns[:-1], axis=1)
