"""Reading and writing images as ``esc upscale`` and the data scripts need them.

8- and 16-bit files keep their depth; palette images are expanded to colour; gray + alpha
becomes BGRA; the EXIF orientation is applied; unreadable, truncated or empty files raise
``ValueError``. Writes are atomic (:mod:`esc_arch.fileio`).
"""

from __future__ import annotations

import glob
import os
from os import path as osp

import cv2
import numpy as np

from .fileio import atomic_path

__all__ = ["IMAGE_EXTENSIONS", "collect_inputs", "read_image", "write_image"]

#: The image files this project reads (lower case; matched case-insensitively).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")

#: EXIF orientation -> operations on an (H, W, ...) array that undo it.
_ORIENTATION = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: np.swapaxes(a, 0, 1),
    6: lambda a: np.swapaxes(a, 0, 1)[:, ::-1],
    7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
    8: lambda a: np.swapaxes(a, 0, 1)[::-1],
}


def read_image(path: str) -> np.ndarray:
    """Pixels of ``path`` as stored (uint8/uint16; HxW, HxWx3 BGR or HxWx4 BGRA), upright.

    Raises ``ValueError`` for unreadable, truncated or empty files.
    """
    from PIL import Image, UnidentifiedImageError

    if osp.getsize(path) == 0:
        raise ValueError("empty file")
    try:
        with Image.open(path) as pil:  # a full decode catches truncated files OpenCV would half-read
            pil.load()
            orientation = pil.getexif().get(0x0112, 1)
            palette = pil.mode == "P"
            palette_alpha = palette and "transparency" in pil.info
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"unreadable image: {error}") from error
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ValueError("unreadable image")
    if palette and img.ndim == 2:  # some decoders hand back palette indices
        with Image.open(path) as pil:
            rgb = np.asarray(pil.convert("RGBA" if palette_alpha else "RGB"))
        img = cv2.cvtColor(rgb, cv2.COLOR_RGBA2BGRA if palette_alpha else cv2.COLOR_RGB2BGR)
    if img.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"unsupported pixel type {img.dtype} (8- or 16-bit images only)")
    if img.ndim == 3 and img.shape[2] == 2:  # gray + alpha
        img = np.dstack([img[..., 0]] * 3 + [img[..., 1]])
    return np.ascontiguousarray(_ORIENTATION.get(orientation, lambda a: a)(img))


def write_image(path: str, img: np.ndarray) -> None:
    """Write ``img`` (as returned by :func:`read_image`) to ``path`` atomically; 16-bit images
    are reduced to 8 bits for formats that cannot hold them (JPEG, WebP, BMP)."""
    ext = osp.splitext(path)[1].lower()
    if img.dtype == np.uint16 and ext not in (".png", ".tif", ".tiff"):
        img = (img.astype(np.float32) / 257.0).round().astype(np.uint8)
    with atomic_path(path, suffix=ext) as tmp:
        if not cv2.imwrite(tmp, img):
            raise OSError(f"cannot write {path}")


def collect_inputs(inputs: list[str]) -> list[str]:
    """Files from paths, folders (their images, sorted) and glob patterns."""
    files = []
    for item in inputs:
        if osp.isdir(item):
            files += sorted(osp.join(item, n) for n in os.listdir(item) if n.lower().endswith(IMAGE_EXTENSIONS))
        elif osp.isfile(item):
            files.append(item)
        else:
            matches = sorted(p for p in glob.glob(item, recursive=True) if osp.isfile(p))
            if not matches:
                raise FileNotFoundError(f"no input matches {item!r}")
            files += matches
    return list(dict.fromkeys(files))
