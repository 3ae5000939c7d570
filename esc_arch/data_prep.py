"""Data preparation in BasicSR's layouts (used by the scripts in ``datasets/``).

- :func:`extract_subimages`: cut HR (and official LR) images into overlapping sub-images,
  DIV2K style (HR 480 px, step 240; LR crops scaled by the factor), names ``{stem}_s001.png``.
- :func:`make_bicubic_lr`: LR images from HR images with BasicSR's MATLAB-style ``imresize``
  (after a mod-crop), when no official LR images are given.
- :func:`make_lmdb`: a folder of PNGs to an LMDB with ``meta_info.txt``, exactly what
  BasicSR's ``PairedImageDataset`` reads with ``io_backend: {type: lmdb}``.
- :func:`prepare_benchmark`: a benchmark set's HR folder to ``HR/`` plus
  ``LR_bicubic/X{s}/{name}x{s}.png``, the layout of the test option files.

Every step is multi-process with a progress bar, idempotent (finished outputs are kept;
an LMDB is built in a temporary folder and renamed into place when complete), and reports
images it could not read instead of stopping silently: a :class:`PreparationError` lists them
at the end.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable
from multiprocessing import Pool
from os import path as osp

import cv2
import numpy as np
from tqdm import tqdm as _tqdm

__all__ = [
    "IMAGE_EXTENSIONS",
    "PreparationError",
    "extract_subimages",
    "list_images",
    "make_bicubic_lr",
    "make_lmdb",
    "prepare_benchmark",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class PreparationError(RuntimeError):
    """Some inputs could not be processed; ``failures`` maps each path to its reason."""

    def __init__(self, step: str, failures: dict[str, str]) -> None:
        self.failures = failures
        lines = "\n".join(f"  {path}: {reason}" for path, reason in sorted(failures.items()))
        super().__init__(f"{step}: {len(failures)} image(s) failed:\n{lines}")


def tqdm(*args, **kwargs):
    """tqdm that refreshes rarely when its output is a log file rather than a terminal."""
    return _tqdm(*args, mininterval=0.1 if sys.stderr.isatty() else 5.0, **kwargs)


def list_images(folder: str) -> list[str]:
    """Image files directly in ``folder``, sorted."""
    if not osp.isdir(folder):
        raise FileNotFoundError(f"folder {folder!r} does not exist")
    return sorted(osp.join(folder, n) for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))


def _read(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ValueError("unreadable or empty image")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.dtype != np.uint8:
        raise ValueError(f"expected an 8-bit image, got {img.dtype}")
    return img


def _write_png(path: str, img: np.ndarray, compression: int = 3) -> None:
    tmp = f"{path}.tmp.png"
    if not cv2.imwrite(tmp, img, [cv2.IMWRITE_PNG_COMPRESSION, compression]):
        raise OSError(f"cannot write {path}")
    os.replace(tmp, path)


def _run(step: str, work: Callable, items: list, workers: int) -> None:
    failures: dict[str, str] = {}
    with Pool(max(1, workers)) if workers > 1 else _Serial() as pool:
        for path, error in tqdm(pool.imap_unordered(work, items), total=len(items), desc=step, unit="img"):
            if error:
                failures[path] = error
    if failures:
        raise PreparationError(step, failures)


class _Serial:
    """The part of ``multiprocessing.Pool`` that :func:`_run` uses, in this process."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def imap_unordered(func, items):
        return map(func, items)


def _strip_scale_suffix(stem: str) -> str:
    return re.sub(r"x[0-9]+$", "", stem)  # DIV2K's LR files are named 0001x2.png


# --------------------------------------------------------------------------- sub-images


def _starts(size: int, crop: int, step: int, thresh: int) -> list[int]:
    starts = list(range(0, size - crop + 1, step))
    if size - (starts[-1] + crop) > thresh:
        starts.append(size - crop)
    return starts


def _crop_one(args: tuple) -> tuple[str, str | None]:
    path, save_folder, crop, step, thresh = args
    stem = _strip_scale_suffix(osp.splitext(osp.basename(path))[0])
    try:
        img = _read(path)
        height, width = img.shape[:2]
        if height < crop or width < crop:
            raise ValueError(f"smaller ({width}x{height}) than the crop size {crop}")
        index = 0
        for y in _starts(height, crop, step, thresh):
            for x in _starts(width, crop, step, thresh):
                index += 1
                out = osp.join(save_folder, f"{stem}_s{index:03d}.png")
                if not osp.exists(out):
                    _write_png(out, np.ascontiguousarray(img[y : y + crop, x : x + crop]))
        return path, None
    except (ValueError, OSError, cv2.error) as error:
        return path, str(error)


def extract_subimages(
    input_folder: str,
    save_folder: str,
    *,
    crop_size: int = 480,
    step: int = 240,
    thresh_size: int = 0,
    workers: int = 4,
) -> None:
    """Cut every image of ``input_folder`` into ``crop_size`` squares every ``step`` pixels
    (plus a last one flush with the border when more than ``thresh_size`` pixels are left)."""
    if crop_size <= 0 or step <= 0:
        raise ValueError(f"crop_size and step must be positive; got {crop_size}, {step}")
    os.makedirs(save_folder, exist_ok=True)
    items = [(p, save_folder, crop_size, step, thresh_size) for p in list_images(input_folder)]
    _run(f"sub-images -> {save_folder}", _crop_one, items, workers)


# --------------------------------------------------------------------------- LR images


def bicubic_downsample(img: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB-style bicubic downsampling (BasicSR's ``imresize``) of a mod-cropped uint8 image."""
    from basicsr.utils.matlab_functions import imresize

    height, width = img.shape[:2]
    img = img[: height - height % scale, : width - width % scale]
    lr = imresize(img.astype(np.float32) / 255.0, 1 / scale)
    return (np.clip(lr, 0, 1) * 255.0).round().astype(np.uint8)


def _downsample_one(args: tuple) -> tuple[str, str | None]:
    path, save_folder, scale, suffix = args
    stem = osp.splitext(osp.basename(path))[0]
    out = osp.join(save_folder, f"{stem}{suffix}.png")
    try:
        if not osp.exists(out):
            _write_png(out, bicubic_downsample(_read(path), scale))
        return path, None
    except (ValueError, OSError, cv2.error) as error:
        return path, str(error)


def make_bicubic_lr(hr_folder: str, lr_folder: str, scale: int, *, suffix: str = "", workers: int = 4) -> None:
    """``lr_folder/{stem}{suffix}.png`` = bicubic x1/``scale`` of each mod-cropped HR image."""
    if scale not in (2, 3, 4, 8):
        raise ValueError(f"scale must be 2, 3, 4 or 8; got {scale}")
    os.makedirs(lr_folder, exist_ok=True)
    items = [(p, lr_folder, scale, suffix) for p in list_images(hr_folder)]
    _run(f"bicubic x{scale} -> {lr_folder}", _downsample_one, items, workers)


# --------------------------------------------------------------------------- LMDB


def _encode(path: str, compress_level: int) -> tuple[bytes, tuple[int, int, int]]:
    img = _read(path)
    ok, buffer = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, compress_level])
    if not ok:
        raise ValueError("cannot encode")
    return buffer.tobytes(), img.shape


def _lmdb_is_complete(lmdb_path: str, keys: Iterable[str]) -> bool:
    meta = osp.join(lmdb_path, "meta_info.txt")
    if not (osp.isfile(osp.join(lmdb_path, "data.mdb")) and osp.isfile(meta)):
        return False
    with open(meta) as f:
        stored = {line.split(" ", 1)[0].rsplit(".", 1)[0] for line in f if line.strip()}
    return stored == set(keys)


def make_lmdb(folder: str, lmdb_path: str, *, compress_level: int = 1, batch: int = 5000) -> bool:
    """Pack every image of ``folder`` into ``lmdb_path`` (keys = file stems without dots).

    Returns ``False`` when an identical LMDB already exists (nothing done). The LMDB is
    written to ``{name}.partial.lmdb`` and renamed when complete, so an interrupted run
    leaves no half-written LMDB under the final name.
    """
    from basicsr.utils.lmdb_util import LmdbMaker

    lmdb_path = lmdb_path.rstrip("/")
    if not lmdb_path.endswith(".lmdb"):
        raise ValueError(f"an LMDB path must end with '.lmdb' (BasicSR's convention); got {lmdb_path!r}")
    paths = list_images(folder)
    keys = [osp.splitext(osp.basename(p))[0] for p in paths]
    bad = [k for k in keys if "." in k]
    if bad:
        raise ValueError(f"LMDB keys must not contain dots (BasicSR strips extensions): {bad[0]!r}")
    if _lmdb_is_complete(lmdb_path, keys):
        return False
    partial = lmdb_path[: -len(".lmdb")] + ".partial.lmdb"
    shutil.rmtree(partial, ignore_errors=True)
    maker = LmdbMaker(partial, map_size=1 << 40, batch=batch, compress_level=compress_level)
    failures = {}
    try:
        for path, key in tqdm(zip(paths, keys, strict=True), total=len(paths), desc=f"lmdb -> {lmdb_path}", unit="img"):
            try:
                data, shape = _encode(path, compress_level)
            except (ValueError, cv2.error) as error:
                failures[path] = str(error)
                continue
            maker.put(data, key, shape)
    finally:
        maker.close()
    if failures:
        shutil.rmtree(partial, ignore_errors=True)
        raise PreparationError(f"lmdb {lmdb_path}", failures)
    shutil.rmtree(lmdb_path, ignore_errors=True)
    os.replace(partial, lmdb_path)
    return True


# --------------------------------------------------------------------------- benchmarks


def _benchmark_one(args: tuple) -> tuple[str, str | None]:
    path, out_root, scales = args
    stem = osp.splitext(osp.basename(path))[0]
    try:
        img = _read(path)
        hr_out = osp.join(out_root, "HR", f"{stem}.png")
        if not osp.exists(hr_out):
            _write_png(hr_out, img)
        for scale in scales:
            out = osp.join(out_root, "LR_bicubic", f"X{scale}", f"{stem}x{scale}.png")
            if not osp.exists(out):
                _write_png(out, bicubic_downsample(img, scale))
        return path, None
    except (ValueError, OSError, cv2.error) as error:
        return path, str(error)


def prepare_benchmark(hr_folder: str, out_root: str, *, scales: Iterable[int] = (2, 3, 4), workers: int = 4) -> None:
    """``out_root/HR/{name}.png`` and ``out_root/LR_bicubic/X{s}/{name}x{s}.png`` (mod-crop, then
    MATLAB bicubic). BasicSR's paired dataset crops each HR to ``s`` x its LR at test time."""
    scales = tuple(scales)
    for scale in scales:
        os.makedirs(osp.join(out_root, "LR_bicubic", f"X{scale}"), exist_ok=True)
    os.makedirs(osp.join(out_root, "HR"), exist_ok=True)
    items = [(p, out_root, scales) for p in list_images(hr_folder)]
    _run(f"benchmark -> {out_root}", _benchmark_one, items, workers)
