"""``esc upscale`` and ``esc export``: run ESC weights on images, and publish them.

Image handling of ``esc upscale``: 8- and 16-bit files keep their depth where the output
format allows it; grayscale is run through the network as three equal channels and
written back as one; an alpha channel is upscaled separately (bicubic), never fed to the
network; palette images are expanded to colour; the EXIF orientation is applied. A file
that cannot be read (unreadable, truncated, empty) is reported and skipped, and the exit
status is the number of failed files (at most 125). Inputs are never overwritten.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import sys
import tempfile
from os import path as osp

import cv2
import numpy as np
import torch

__all__ = ["export_checkpoint", "read_image", "upscale_image", "write_image"]

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")

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
    """Write ``img`` (as returned by :func:`upscale_image`) to ``path`` atomically; 16-bit images
    are reduced to 8 bits for formats that cannot hold them (JPEG, WebP, BMP)."""
    ext = osp.splitext(path)[1].lower()
    if img.dtype == np.uint16 and ext not in (".png", ".tif", ".tiff"):
        img = (img.astype(np.float32) / 257.0).round().astype(np.uint8)
    handle, tmp = tempfile.mkstemp(dir=osp.dirname(osp.abspath(path)), suffix=ext)
    os.close(handle)
    try:
        if not cv2.imwrite(tmp, img):
            raise OSError(f"cannot write {path}")
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


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


def collect_inputs(inputs: list[str]) -> list[str]:
    """Files from paths, folders (their images, sorted) and glob patterns."""
    files = []
    for item in inputs:
        if osp.isdir(item):
            files += sorted(osp.join(item, n) for n in os.listdir(item) if n.lower().endswith(EXTENSIONS))
        elif osp.isfile(item):
            files.append(item)
        else:
            matches = sorted(p for p in glob.glob(item, recursive=True) if osp.isfile(p))
            if not matches:
                raise FileNotFoundError(f"no input matches {item!r}")
            files += matches
    return list(dict.fromkeys(files))


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return device


def run_upscale(args) -> int:
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


# --------------------------------------------------------------------------- export


def export_checkpoint(checkpoint: str, out_dir: str, *, name: str | None = None, fp16: bool = False,
                      safetensors: bool = False, allow_pickle: bool = False) -> tuple[str, str]:  # fmt: skip
    """Write a release file (``params_ema`` only) named ``{name}-{sha256[:8]}.{pth|safetensors}``.

    Returns the file's path and its model-zoo table row.
    """
    from .loading import detect_variant, infer_config, read_state_dict

    state_dict = read_state_dict(checkpoint, allow_pickle=allow_pickle)
    arch, config = infer_config(state_dict)
    arch(**config).load_state_dict(state_dict, strict=True)  # refuse anything that does not load
    variant = detect_variant(arch, config)
    scale = config["upscaling_factor"]
    name = name or f"{variant}_x{scale}"
    state_dict = {k: (v.half() if fp16 and v.is_floating_point() else v).contiguous() for k, v in state_dict.items()}
    os.makedirs(out_dir, exist_ok=True)
    ext = ".safetensors" if safetensors else ".pth"
    handle, tmp = tempfile.mkstemp(dir=out_dir, suffix=ext)
    os.close(handle)
    try:
        if safetensors:
            from safetensors.torch import save_file

            save_file(state_dict, tmp, metadata={"format": "pt", "arch": arch.__name__, "variant": variant})
        else:
            torch.save({"params_ema": state_dict}, tmp)
        with open(tmp, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        path = osp.join(out_dir, f"{name}-{digest[:8]}{ext}")
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    params = sum(v.numel() for v in state_dict.values())
    row = f"| {variant} | x{scale} | {params:,} | {'fp16' if fp16 else 'fp32'} | `{osp.basename(path)}` | `{digest}` |"
    return path, row


def run_export(args) -> int:
    path, row = export_checkpoint(args.checkpoint, args.output, name=args.name, fp16=args.fp16,
                                  safetensors=args.safetensors, allow_pickle=args.allow_pickle)  # fmt: skip
    print(path)
    print("| model | scale | parameters | precision | file | sha256 |\n|---|---|---|---|---|---|")
    print(row)
    return 0


def run_onnx(args) -> int:
    from .loading import load_model
    from .onnx_export import OPSET, export_onnx

    net = load_model(args.model, allow_pickle=args.allow_pickle)
    export_onnx(net, args.output)
    print(f"{args.output}: {net.variant} x{net.scale}, opset {OPSET}, input 'lq' (1, 3, H, W) with H and W "
          f"multiples of {net.size_multiple}, output 'sr' (1, 3, {net.scale}H, {net.scale}W)")  # fmt: skip
    return 0


def _guarded(func):
    def run(args) -> int:
        try:
            return func(args)
        except (ValueError, FileNotFoundError) as error:
            print(f"esc: error: {error}", file=sys.stderr)
            return 2

    return run


def add_parsers(commands) -> None:
    up = commands.add_parser(
        "upscale",
        help="super-resolve images with ESC weights",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__,
        epilog="""examples:
  esc upscale -i photo.jpg -o out/ -m ESC_x4.pth
  esc upscale -i 'shots/**/*.png' -o out/ -m ESC-Real_x4.pth --tile 256 --precision bf16
  esc upscale -i folder/ -o out/ -m net_g_latest.pth --format png --device cuda --precision fp16""",
    )
    up.add_argument("-i", "--input", nargs="+", required=True, help="image files, folders or glob patterns")
    up.add_argument("-o", "--output", required=True, help="output folder")
    up.add_argument("-m", "--model", required=True, help="ESC checkpoint (.pth or .safetensors)")
    up.add_argument("--tile", type=int, default=None, help="tile size in input pixels (default: whole image)")
    up.add_argument("--tile-overlap", type=int, default=64, help="tile overlap in input pixels (default: 64)")
    up.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    up.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    up.add_argument("--format", choices=["keep", "png"], default="keep", help="output format (default: keep)")
    up.add_argument("--suffix", default=None, help="added to output names (default: _{variant}_x{scale})")
    up.add_argument("--attn-type", default="auto", help="attention backend (default: auto)")
    up.add_argument("--allow-pickle", action="store_true", help="load checkpoints holding pickled code (trusted only)")
    up.set_defaults(func=_guarded(run_upscale))

    ex = commands.add_parser(
        "export",
        help="turn a training checkpoint into a model-zoo release file",
        description="Write params_ema only, named {name}-{sha256[:8]}, and print a model-zoo table row.",
    )
    ex.add_argument("checkpoint", help="net_g_*.pth, a training state, a bare state dict or .safetensors")
    ex.add_argument("-o", "--output", default=".", help="output folder (default: .)")
    ex.add_argument("--name", default=None, help="file name stem (default: {variant}_x{scale})")
    ex.add_argument("--fp16", action="store_true", help="store half-precision tensors")
    ex.add_argument("--safetensors", action="store_true", help="write .safetensors instead of .pth")
    ex.add_argument("--allow-pickle", action="store_true", help="load checkpoints holding pickled code (trusted only)")
    ex.set_defaults(func=_guarded(run_export))

    onnx = commands.add_parser(
        "onnx",
        help="export ESC weights to ONNX (dynamic height and width)",
        description="Export to ONNX (opset 18): input (1, 3, H, W), H and W multiples of the window.",
    )
    onnx.add_argument("-m", "--model", required=True, help="ESC checkpoint")
    onnx.add_argument("-o", "--output", required=True, help="output .onnx file")
    onnx.add_argument(
        "--allow-pickle", action="store_true", help="load checkpoints holding pickled code (trusted only)"
    )
    onnx.set_defaults(func=_guarded(run_onnx))
