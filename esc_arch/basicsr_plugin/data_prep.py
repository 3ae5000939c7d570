"""Data preparation in BasicSR's layouts (used by the scripts in ``datasets/``).

- :func:`extract_subimages`: cut HR (and official LR) images into overlapping sub-images,
  DIV2K style (HR 480 px, step 240; LR crops scaled by the factor), names ``{stem}_s001.png``.
- :func:`collect_images`: gather several HR folders (T91 + General100 + BSDS200, DF2K + OST)
  into one, optionally adding downscaled copies of every image (multiscale, DF2K-OST style).
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

from ..io.fileio import atomic_write_text
from ..io.imageio import IMAGE_EXTENSIONS, check_complete, decode_file, encode_file

__all__ = [
    "IMAGE_EXTENSIONS",
    "PreparationError",
    "collect_images",
    "extract_subimages",
    "list_images",
    "make_bicubic_lr",
    "make_lmdb",
    "prepare_benchmark",
    "write_meta_info",
]


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
    check_complete(path)  # OpenCV would decode a truncated JPEG half grey, silently
    img = decode_file(path)
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
    encode_file(path, img, (cv2.IMWRITE_PNG_COMPRESSION, compression))


def _run(step: str, work: Callable, items: list, workers: int, *, notes_prefix: str | None = None) -> list[str]:
    """Run ``work`` over ``items``; errors raise :class:`PreparationError` at the end, results
    starting with ``notes_prefix`` are notes (returned paths, e.g. skipped images)."""
    failures: dict[str, str] = {}
    notes: list[str] = []
    with Pool(max(1, workers)) if workers > 1 else _Serial() as pool:
        for path, error in tqdm(pool.imap_unordered(work, items), total=len(items), desc=step, unit="img"):
            if error and notes_prefix and error.startswith(notes_prefix):
                notes.append(path)
            elif error:
                failures[path] = error
    if failures:
        raise PreparationError(step, failures)
    return notes


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
    path, save_folder, crop, step, thresh, min_size, multiple = args
    stem = _strip_scale_suffix(osp.splitext(osp.basename(path))[0])
    try:
        img = _read(path)
        height, width = img.shape[:2]
        # a side shorter than the crop is kept whole (cut to the multiple) when min_size allows
        crop_h, crop_w = (min(crop, size - size % multiple) for size in (height, width))
        if min(crop_h, crop_w) < (crop if min_size is None else min_size):
            if min_size is None:
                raise ValueError(f"smaller ({width}x{height}) than the crop size {crop}")
            return path, f"skipped: smaller ({width}x{height}) than --min-size {min_size}"
        index = 0
        # a side kept whole has one start: what is left over is less than `multiple`
        ys = _starts(height, crop_h, step, thresh) if crop_h == crop else [0]
        xs = _starts(width, crop_w, step, thresh) if crop_w == crop else [0]
        for y in ys:
            for x in xs:
                index += 1
                out = osp.join(save_folder, f"{stem}_s{index:03d}.png")
                if not osp.exists(out):
                    _write_png(out, np.ascontiguousarray(img[y : y + crop_h, x : x + crop_w]))
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
    min_size: int | None = None,
    multiple: int = 1,
    workers: int = 4,
) -> list[str]:
    """Cut every image of ``input_folder`` into ``crop_size`` squares every ``step`` pixels
    (plus a last one flush with the border when more than ``thresh_size`` pixels are left).

    Images with a side shorter than ``crop_size`` are an error, unless ``min_size`` is given:
    then such a side is kept whole (cut down to a multiple of ``multiple``, e.g. 12 so that
    HR sub-images divide by 2, 3 and 4) and images with a side under ``min_size`` are skipped.
    Returns the skipped images' paths.
    """
    if crop_size <= 0 or step <= 0 or multiple <= 0:
        raise ValueError(f"crop_size, step and multiple must be positive; got {crop_size}, {step}, {multiple}")
    if crop_size % multiple:
        raise ValueError(f"crop_size {crop_size} must be a multiple of {multiple}")
    os.makedirs(save_folder, exist_ok=True)
    items = [(p, save_folder, crop_size, step, thresh_size, min_size, multiple) for p in list_images(input_folder)]
    notes = _run(f"sub-images -> {save_folder}", _crop_one, items, workers, notes_prefix="skipped: ")
    return sorted(notes)


# --------------------------------------------------------------------------- collecting


def _resize_one(args: tuple) -> tuple[str, str | None]:
    path, save_folder, stem, factors = args
    try:
        img = None
        for factor in factors:
            out = osp.join(save_folder, stem + _factor_suffix(factor) + ".png")
            if osp.exists(out):
                continue
            img = _read(path) if img is None else img
            _write_png(out, img if factor == 1 else downscale(img, factor))
        return path, None
    except (ValueError, OSError, cv2.error) as error:
        return path, str(error)


def _factor_suffix(factor: float) -> str:
    return "" if factor == 1 else f"T{round(factor * 100):03d}"  # no dots: names become LMDB keys


def downscale(img: np.ndarray, factor: float) -> np.ndarray:
    """``img`` resized by ``factor`` < 1 with BasicSR's MATLAB-style (antialiased) bicubic."""
    from basicsr.utils.matlab_functions import imresize

    out = imresize(img.astype(np.float32) / 255.0, factor)
    return (np.clip(out, 0, 1) * 255.0).round().astype(np.uint8)


def collect_images(
    folders: Iterable[str], save_folder: str, *, factors: Iterable[float] = (1.0,), workers: int = 4
) -> int:
    """Write every image of ``folders`` to ``save_folder`` as PNG, once per factor in ``factors``
    (``1`` = unchanged, ``0.5`` = half size, named ``{stem}T050.png``): the union of small
    training sets (T91 + General100 + BSDS200), or DF2K-OST's multiscale HR folder
    (factors 1, 0.75, 0.5, 1/3). Two inputs with the same file stem are an error.
    Returns the number of images written or kept."""
    factors = tuple(factors)
    if not factors or any(not 0 < f <= 1 for f in factors):
        raise ValueError(f"factors must be in (0, 1]; got {factors}")
    sources: dict[str, str] = {}
    for folder in folders:
        for path in list_images(folder):
            stem = osp.splitext(osp.basename(path))[0].replace(".", "_")
            if stem in sources:
                raise ValueError(f"two inputs named {stem!r}: {sources[stem]} and {path}; rename one")
            sources[stem] = path
    os.makedirs(save_folder, exist_ok=True)
    items = [(path, save_folder, stem, factors) for stem, path in sources.items()]
    _run(f"collect x{len(factors)} scales -> {save_folder}", _resize_one, items, workers)
    return len(items) * len(factors)


# --------------------------------------------------------------------------- LR images


def bicubic_downsample(img: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB-style bicubic downsampling (BasicSR's ``imresize``) of a mod-cropped uint8 image."""
    height, width = img.shape[:2]
    return downscale(img[: height - height % scale, : width - width % scale], 1 / scale)


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


def _check_free_space(paths: list[str], folder: str, what: str) -> None:
    """The LMDB holds the images re-encoded as PNG: refuse to start when the disk clearly
    cannot hold them (the inputs' size is the estimate), instead of failing near the end with
    LMDB's bare 'Input/output error'."""
    need = sum(osp.getsize(p) for p in paths)
    free = shutil.disk_usage(folder).free
    if need > free:
        raise PreparationError(
            f"lmdb {what}", {folder: f"about {need / 2**30:.1f} GiB needed, {free / 2**30:.1f} GiB free on the disk"}
        )


def make_lmdb(folder: str, lmdb_path: str, *, compress_level: int = 1, batch: int = 5000) -> bool:
    """Pack every image of ``folder`` into ``lmdb_path`` (keys = file stems without dots).

    Returns ``False`` when an identical LMDB already exists (nothing done). The LMDB is
    written to ``{name}.partial.lmdb`` and renamed when complete, so an interrupted run
    leaves no half-written LMDB under the final name.
    """
    import lmdb
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
    _check_free_space(paths, osp.dirname(osp.abspath(lmdb_path)), lmdb_path)
    maker = LmdbMaker(partial, map_size=1 << 40, batch=batch, compress_level=compress_level)
    failures = {}
    write_error = None
    try:
        for path, key in tqdm(zip(paths, keys, strict=True), total=len(paths), desc=f"lmdb -> {lmdb_path}", unit="img"):
            try:
                data, shape = _encode(path, compress_level)
            except (ValueError, cv2.error) as error:
                failures[path] = str(error)
                continue
            maker.put(data, key, shape)
    except lmdb.Error as error:  # e.g. the disk filled up after all
        write_error = error
    finally:
        try:
            maker.close()
        except lmdb.Error as error:
            write_error = write_error or error
    if write_error is not None:
        shutil.rmtree(partial, ignore_errors=True)
        free = shutil.disk_usage(osp.dirname(osp.abspath(lmdb_path))).free
        reason = f"LMDB write failed ({write_error}); {free / 2**30:.1f} GiB free on the disk"
        raise PreparationError(f"lmdb {lmdb_path}", {partial: reason}) from write_error
    if failures:
        shutil.rmtree(partial, ignore_errors=True)
        raise PreparationError(f"lmdb {lmdb_path}", failures)
    shutil.rmtree(lmdb_path, ignore_errors=True)
    os.replace(partial, lmdb_path)
    return True


def write_meta_info(folder: str, meta_path: str, *, relative_to: str) -> int:
    """List every image of ``folder`` (paths relative to ``relative_to``, the dataset's
    ``dataroot_gt``) in ``meta_path``: the ``meta_info`` file of BasicSR's RealESRGANDataset.
    Written atomically; returns the number of images."""
    lines = [osp.relpath(p, relative_to) for p in list_images(folder)]
    if not lines:
        raise ValueError(f"{folder} holds no images")
    os.makedirs(osp.dirname(osp.abspath(meta_path)), exist_ok=True)
    atomic_write_text(meta_path, "\n".join(lines) + "\n")
    return len(lines)


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
