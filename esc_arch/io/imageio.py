"""Reading and writing images as ``esc upscale`` and the data scripts need them.

8- and 16-bit files keep their depth; palette images are expanded to colour; gray + alpha
becomes BGRA (or stays 2-channel with ``gray_alpha=True``, written back as a gray + alpha
PNG); the EXIF orientation is applied; unreadable, truncated or empty files, and images over
the pixel limit (PIL's decompression-bomb guard by default), raise ``ValueError`` before
their pixels are decoded. Writes are atomic (:mod:`esc_arch.io.fileio`).
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import logging
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from os import path as osp

import cv2
import numpy as np

from ..text import listed
from .fileio import atomic_path, is_temporary

__all__ = [
    "IMAGE_EXTENSIONS",
    "can_write",
    "check_complete",
    "collect_inputs",
    "decode_file",
    "encode_file",
    "folder_images",
    "image_info",
    "image_paths",
    "read_image",
    "truncated",
    "walk_files",
    "write_image",
]

#: The image files this project reads (lower case; matched case-insensitively), the same for
#: files named one by one and for the files of a folder.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".pbm", ".pnm")

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


#: The bytes every complete file of a format ends with (JPEG's EOI marker, PNG's IEND chunk).
_TRAILERS = {".jpg": b"\xff\xd9", ".jpeg": b"\xff\xd9", ".png": b"IEND\xaeB`\x82"}


def truncated(path: str) -> bool:
    """Whether a JPEG or PNG file is cut short (a crash, a partial download). OpenCV decodes
    such a JPEG's first rows and fills the rest with grey, without a word. Cheap for complete
    files: only their last bytes are read; a file without its end marker there (which some
    cameras' JPEGs lack too, with data appended) is decoded in full to decide. Other formats:
    ``False``."""
    trailer = _TRAILERS.get(osp.splitext(path)[1].lower())
    if trailer is None:
        return False
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(f.tell() - 64, 0))
        if trailer in f.read():  # JPEGs may carry a few bytes of padding after EOI
            return False
    try:
        check_complete(path)
    except ValueError:
        return True
    return False


def check_complete(path: str) -> None:
    """Decode ``path`` fully with PIL, which refuses truncated files of any format; a
    ``ValueError`` says why."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        raise ValueError(f"unreadable or truncated image ({error})") from error


@contextlib.contextmanager
def _pil_pixel_limit(limit: int | None) -> Iterator[None]:
    """PIL's decompression-bomb limit set to ``limit`` for the block (the callers check sizes
    themselves, from the header, before decoding)."""
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limit
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _open_error(error: Exception) -> ValueError:
    text = str(error).strip().splitlines()
    return ValueError(f"unreadable image: {text[0] if text else type(error).__name__}")


def image_info(path: str) -> tuple[int, int, int]:
    """``(width, height, frames)`` of ``path`` as stored, from its header only (nothing is
    decoded, whatever size it claims). ``ValueError`` for empty or unreadable files."""
    from PIL import Image, UnidentifiedImageError

    if osp.getsize(path) == 0:
        raise ValueError("empty file")
    try:
        with _pil_pixel_limit(None), Image.open(path) as pil:
            return pil.width, pil.height, int(getattr(pil, "n_frames", 1))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise _open_error(error) from error


def _raw_mode(pil) -> str:
    """The decoder's raw mode of the first tile (``LA;16B`` for a 16-bit gray + alpha PNG)."""
    try:
        args = pil.tile[0][3]
    except (IndexError, TypeError, AttributeError):
        return ""
    if isinstance(args, tuple):
        args = args[0] if args else ""
    return args if isinstance(args, str) else ""


def read_image(path: str, *, gray_alpha: bool = False, max_pixels: int | None = None) -> np.ndarray:
    """Pixels of ``path`` as stored (uint8/uint16; HxW, HxWx3 BGR or HxWx4 BGRA), upright.

    Gray + alpha is returned as BGRA, or as HxWx2 (gray, alpha) with ``gray_alpha=True``.
    Raises ``ValueError`` for unreadable, truncated or empty files, and, before decoding, for
    images of more than ``max_pixels`` pixels (default: PIL's decompression-bomb limit).
    """
    from PIL import Image, UnidentifiedImageError

    if osp.getsize(path) == 0:
        raise ValueError("empty file")
    limit = max_pixels
    if limit is None and Image.MAX_IMAGE_PIXELS is not None:
        limit = 2 * Image.MAX_IMAGE_PIXELS  # where PIL itself refuses
    try:
        with _pil_pixel_limit(None), Image.open(path) as pil:
            if limit is not None and pil.width * pil.height > limit:
                raise ValueError(f"{pil.width}x{pil.height} image: more than {limit:,} pixels, not decoded")
            source_gray_alpha = pil.mode in ("LA", "La") or _raw_mode(pil).startswith("LA")
            pil.load()  # a full decode catches truncated files OpenCV would half-read
            orientation = pil.getexif().get(0x0112, 1)
            palette = pil.mode == "P"
            palette_alpha = palette and "transparency" in pil.info
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise _open_error(error) from error
    img = decode_file(path)
    if img is None or img.size == 0:
        raise ValueError("unreadable image")
    if palette and img.ndim == 2:  # some decoders hand back palette indices
        with Image.open(path) as pil:
            rgb = np.asarray(pil.convert("RGBA" if palette_alpha else "RGB"))
        img = cv2.cvtColor(rgb, cv2.COLOR_RGBA2BGRA if palette_alpha else cv2.COLOR_RGB2BGR)
    if img.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"unsupported pixel type {img.dtype} (8- or 16-bit images only)")
    if img.ndim == 3 and img.shape[2] == 4 and source_gray_alpha and gray_alpha:  # OpenCV expands it to BGRA
        img = np.dstack([img[..., 0], img[..., 3]])
    if img.ndim == 3 and img.shape[2] == 2 and not gray_alpha:
        img = np.dstack([img[..., 0]] * 3 + [img[..., 1]])
    return np.ascontiguousarray(_ORIENTATION.get(orientation, lambda a: a)(img))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _gray_alpha_png(img: np.ndarray) -> bytes:
    """A gray + alpha PNG (colour type 4, 8 or 16 bits) of an HxWx2 array; OpenCV writes 1, 3
    or 4 channels only."""
    height, width, _ = img.shape
    depth = 16 if img.dtype == np.uint16 else 8
    rows = img.astype(">u2" if depth == 16 else np.uint8).reshape(height, -1).view(np.uint8)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1)  # filter type 0 on every row
    header = struct.pack(">IIBBBBB", width, height, depth, 4, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
            + _png_chunk(b"IEND", b""))  # fmt: skip


def write_image(path: str, img: np.ndarray, *, replace: bool = True) -> None:
    """Write ``img`` (as returned by :func:`read_image`) to ``path`` atomically; 16-bit images
    are reduced to 8 bits for formats that cannot hold them (JPEG, WebP, BMP); gray + alpha
    (HxWx2) is written as such to PNG, as BGRA to other formats. ``replace``: as
    :func:`esc_arch.io.fileio.atomic_path`'s."""
    ext = osp.splitext(path)[1].lower()
    if img.ndim == 3 and img.shape[2] == 2:
        if ext == ".png":
            with atomic_path(path, suffix=ext, replace=replace) as tmp, open(tmp, "wb") as f:
                f.write(_gray_alpha_png(img))
            return
        img = np.dstack([img[..., 0]] * 3 + [img[..., 1]])
    if img.dtype == np.uint16 and ext not in (".png", ".tif", ".tiff"):
        img = (img.astype(np.float32) / 257.0).round().astype(np.uint8)
    encode_file(path, img, replace=replace)


def decode_file(path: str, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray | None:
    """``cv2.imread`` through the file's bytes: OpenCV is never handed the path (OpenCV 5.1
    crashes on a file name that is not valid UTF-8). ``None`` when OpenCV cannot decode it."""
    data = np.fromfile(path, dtype=np.uint8)
    return cv2.imdecode(data, flags) if data.size else None


def can_write(ext: str) -> bool:
    """Whether OpenCV writes files of the extension ``ext`` (``.png``); asked with a made-up
    ASCII name, never the real path."""
    return ext.isascii() and bool(cv2.haveImageWriter("x" + ext))


def encode_file(path: str, img: np.ndarray, params: tuple[int, ...] = (), *, replace: bool = True) -> None:
    """``cv2.imwrite`` atomically, through bytes (OpenCV is never handed the path); the format
    is the path's extension. ``replace``: as :func:`esc_arch.io.fileio.atomic_path`'s."""
    ext = osp.splitext(path)[1].lower()
    ok, data = cv2.imencode(ext, img, list(params)) if can_write(ext) else (False, None)
    if not ok:
        raise OSError(f"cannot write {path} (OpenCV cannot encode {ext or 'files without an extension'})")
    with atomic_path(path, suffix=ext, replace=replace) as tmp, open(tmp, "wb") as f:
        f.write(data.tobytes())


def _warn(message: str) -> None:
    logging.getLogger("basicsr.esc").warning(message)


def walk_files(folder: str, *, warn: Callable[[str], None] = _warn) -> Iterator[str]:
    """Every file under ``folder``, recursively, following links to folders (datasets are often
    linked in), each real folder entered once: a link to a folder already entered (a loop, or a
    second way into the same folder) is skipped with one ``warn`` line."""
    seen: dict[str, str] = {osp.realpath(folder): folder}
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError as error:
            warn(f"{current}: cannot be listed ({error.strerror or error}); skipped")
            continue
        folders = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()  # follows links
            except OSError:
                continue
            if not is_dir:
                if entry.is_file():
                    yield entry.path
                continue
            real = osp.realpath(entry.path)
            if real in seen:
                here = osp.realpath(current)
                loop = here == real or here.startswith(real.rstrip(os.sep) + os.sep)  # leads to an ancestor
                kind = "a symlink loop" if loop else "a second way into it"
                warn(f"{entry.path} leads back to {seen[real]} ({kind}); its images are listed once")
                continue
            seen[real] = entry.path
            folders.append(entry.path)
        pending.extend(reversed(folders))


def image_paths(folder: str, *, warn: Callable[[str], None] = _warn) -> list[str]:
    """Every image under ``folder`` (recursively, each real folder once: :func:`walk_files`), sorted."""
    return sorted(path for path in walk_files(folder, warn=warn) if path.lower().endswith(IMAGE_EXTENSIONS))


def _matches(parts: list[str], pattern: list[str]) -> bool:
    """Whether path components ``parts`` match the glob pattern's components (``**``: any
    number of folders; names starting with a dot only when the pattern's do, as glob does)."""
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_matches(parts[i:], rest) for i in range(len(parts) + 1) if not any(
            p.startswith(".") for p in parts[:i]))  # fmt: skip
    if not parts or (parts[0].startswith(".") and not head.startswith(".")):
        return False
    return fnmatch.fnmatchcase(parts[0], head) and _matches(parts[1:], rest)


def _recursive_glob(pattern: str, warn: Callable[[str], None]) -> list[str]:
    """The files a ``**`` pattern matches, walking each real folder once (:func:`walk_files`):
    ``glob.glob`` follows a symlink loop until the path is too long, or forever with two."""
    parts = pattern.split(os.sep)
    fixed = 0
    while fixed < len(parts) - 1 and not glob.has_magic(parts[fixed]):
        fixed += 1
    base = os.sep.join(parts[:fixed]) or ("." if not pattern.startswith(os.sep) else os.sep)
    if pattern.startswith(os.sep) and fixed == 1:
        base = os.sep
    if not osp.isdir(base):
        return []
    found = []
    for path in walk_files(base, warn=warn):
        relative = osp.relpath(path, base).split(os.sep)
        if _matches(relative, parts[fixed:]):
            found.append(path if base != "." or pattern.startswith(".") else osp.relpath(path, base))
    return sorted(found)


def folder_images(folder: str, *, warn: Callable[[str], None] = _warn, videos: tuple[str, ...] = ()) -> list[str]:
    """The image files of ``folder`` (not its subfolders), sorted: those of
    :data:`IMAGE_EXTENSIONS` (and of ``videos``, video extensions); the other files are named
    in one ``warn`` line, files being written (:func:`esc_arch.io.fileio.is_temporary`) left
    out. ``ValueError`` when the folder cannot be listed."""
    try:
        names = sorted(name for name in os.listdir(folder) if not is_temporary(name))
    except OSError as error:
        raise ValueError(f"{folder}: the folder cannot be listed ({error.strerror or error})") from error
    files = [name for name in names if osp.isfile(osp.join(folder, name))]
    known = IMAGE_EXTENSIONS + tuple(videos)
    others = [name for name in files if not name.lower().endswith(known)]
    if others:
        also = f"; videos are {' '.join(videos)}" if videos else ""
        warn(f"{folder}: skipped {len(others)} file(s) of other formats ({listed(others)}); images are "
             f"{' '.join(IMAGE_EXTENSIONS)}{also}")  # fmt: skip
    return [osp.join(folder, name) for name in files if name.lower().endswith(known)]


def collect_inputs(
    inputs: list[str],
    *,
    warn: Callable[[str], None] = _warn,
    exclude: Callable[[str], bool] | None = None,
    videos: tuple[str, ...] = (),
) -> list[str]:
    """Files from paths, folders (their images, sorted: :func:`folder_images`) and glob
    patterns (``**`` walks each real folder once); a file named twice (by any spelling) is
    listed once. ``exclude(path)``: a file of a folder or a pattern that is left out (a file
    named itself never is). ``videos``: video extensions a folder lists too."""
    files = []
    for item in inputs:
        if osp.isdir(item):
            found = folder_images(item, warn=warn, videos=videos)
        elif osp.isfile(item):
            files.append(item)
            continue
        else:
            if "**" in item:
                found = _recursive_glob(item, warn)
            else:
                found = sorted(p for p in glob.glob(item) if osp.isfile(p))
            if not found:
                raise FileNotFoundError(f"no input matches {item!r}")
        files += [path for path in found if exclude is None or not exclude(path)]
    unique: dict[str, str] = {}
    for path in files:
        unique.setdefault(osp.realpath(path), path)
    return list(unique.values())
