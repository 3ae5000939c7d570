"""``esc upscale``: run ESC weights on images.

Before any work: the options (tile and overlap, device, precision, attention backend, output
folder, suffix) are checked before the model is read, then the model, then the inputs, and
two inputs whose outputs would have the same name are refused. Each is one line
(``esc: error: ...``, exit status 2).

Image handling: 8- and 16-bit files keep their depth where the output format allows it;
grayscale is run through the network as three equal channels and written back as one;
gray + alpha is written back as gray + alpha (a 2-channel PNG; BGRA in other formats); an
alpha channel is upscaled separately (bicubic), never fed to the network; palette images are
expanded to colour; the EXIF orientation is applied. A file that fails (not of the formats
:data:`esc_arch.io.imageio.IMAGE_EXTENSIONS`, which folders list too; unreadable, truncated,
empty, animated or multi-page, over the size limits, out of memory; a network output holding
NaN or Inf, the tile or query chunk named) is reported and skipped and the batch goes on; the
exit status is the number of failed files (at most 125). Inputs are never overwritten; an
output file that exists already is replaced only with ``--overwrite`` (without it, every such
file is refused before any work, and one that appears later, another run's, is kept: the
file fails). With ``-o`` a folder that is also an input, the files there named as this run's
outputs are left out, in one line. Ctrl-C: one line, the finished outputs kept, exit status
130.

Videos (:data:`esc_arch.io.video.VIDEO_EXTENSIONS`, with PyAV): :mod:`esc_arch.commands.video`,
the same limits on each frame, ``--codec``, ``--crf``, ``--pix-fmt``, ``--container`` checked
before any work when an input is a video. Under torchrun each process takes every N-th file
(:mod:`esc_arch.runtime.ranks`); rank 0 prints the header, a refusal and the summary, which
counts across the processes; every process exits with the failures of all of them.

Size limits, on the output, checked from the file's header before decoding: at most
:data:`WHOLE_IMAGE_LIMIT` pixels without ``--tile`` (a whole-image run holds the network's
activations for the whole image), at most :data:`TILED_LIMIT` pixels with it (the input and
the output are still held whole).

Scales: a fixed-scale network runs at its own scale (``--scale`` other than it, or ``--size``,
is refused). An arbitrary-scale network (ESC-LTE) needs ``--scale S`` (any positive number up
to :data:`MAX_SCALE`; output ``round(s*H) x round(s*W)``) or ``--size WxH`` (exactly that
size); its encoder runs on the whole input (at most :data:`LTE_INPUT_LIMIT` pixels) and its
output is queried in chunks, so the output may be as large as :data:`TILED_LIMIT`.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
from os import path as osp

import cv2
import numpy as np
import torch

from ..families import Upscaler, describe
from ..io.imageio import IMAGE_EXTENSIONS, can_write, collect_inputs, image_info, read_image, write_image
from ..io.video import VIDEO_EXTENSIONS, VideoSettings, check_settings, pyav_missing
from ..runtime.hardware import cpu_precision
from ..runtime.inference import LTE_QUERY_CHUNK, TILE_OVERLAP
from .common import INTERRUPTED, check_output_folder, first_line, guarded, listed

__all__ = [
    "LTE_INPUT_LIMIT",
    "MAX_SCALE",
    "TILED_LIMIT",
    "WHOLE_IMAGE_LIMIT",
    "Target",
    "parse_size",
    "run",
    "upscale_image",
]

#: The largest output, in pixels, of a whole-image run (4096 x 4096); larger needs ``--tile``.
WHOLE_IMAGE_LIMIT = 4096 * 4096
#: The largest output, in pixels, of any run (16384 x 16384).
TILED_LIMIT = 16384 * 16384
#: The largest input, in pixels, of an arbitrary-scale network (1024 x 1024: the encoder's
#: activations for the whole input are those of a whole-image x4 run at the limit above).
LTE_INPUT_LIMIT = WHOLE_IMAGE_LIMIT // 16
#: The largest ``--scale``.
MAX_SCALE = 64


@contextlib.contextmanager
def _query_progress(size: tuple[int, int]):
    """A progress bar of the queried output pixels (an arbitrary-scale network's output is
    queried in chunks of :data:`LTE_QUERY_CHUNK`; a large one takes minutes)."""
    from tqdm import tqdm

    total = size[0] * size[1]
    if total <= LTE_QUERY_CHUNK:
        yield None
        return
    with tqdm(total=total, unit="px", unit_scale=True, desc="  queries", leave=False) as bar:
        yield lambda done, _: bar.update(done - bar.n)


def _check_chunks(precision: str, total: int):
    """``check(rgb, start)`` of an arbitrary-scale network's query chunks: each output through
    :func:`check_finite_output`, the chunk named when it fails."""
    from ..runtime.inference import NonFiniteOutput, check_finite_output

    count = -(-total // LTE_QUERY_CHUNK)

    def check(rgb: torch.Tensor, start: int) -> None:
        try:
            check_finite_output(rgb, precision)
        except NonFiniteOutput as error:
            end = min(start + LTE_QUERY_CHUNK, total)
            raise NonFiniteOutput(
                f"query chunk {start // LTE_QUERY_CHUNK + 1} of {count} (output pixels {start:,}-{end - 1:,}): {error}"
            ) from None

    return check


def upscale_image(
    net, img: np.ndarray, *, tile: int | None, overlap: int, precision: str, device, size: tuple[int, int] | None = None
) -> np.ndarray:
    """Super-resolve an image as returned by :func:`read_image` (HxW, HxWx2 gray + alpha,
    HxWx3 BGR, HxWx4 BGRA); same channels and depth. ``size`` ``(height, width)``: the output
    size of an arbitrary-scale network. Every output (the whole
    image's, each tile's, each query chunk's) is checked for NaN and Inf
    (:class:`esc_arch.runtime.inference.NonFiniteOutput`, naming the tile or chunk)."""
    from ..runtime.inference import autocast, query_upscale, upscale

    peak = 65535.0 if img.dtype == np.uint16 else 255.0
    channels = 1 if img.ndim == 2 else img.shape[2]
    gray = channels in (1, 2)
    if gray:
        luma = img if channels == 1 else img[..., 0]
        color = np.stack([luma] * 3, axis=-1)
    else:
        color = img[..., :3]
    x = torch.from_numpy(np.ascontiguousarray(color[..., ::-1].transpose(2, 0, 1))).float().div_(peak)
    if describe(net).arbitrary_scale:  # the whole input through the encoder, the output queried in chunks
        with autocast(precision, device), _query_progress(size) as progress:
            check = _check_chunks(precision, size[0] * size[1])
            lq = x.unsqueeze(0).to(device)
            sr = query_upscale(net, lq, size=size, progress=progress, check=check)[0].float()
    else:
        sr = upscale(net, x.unsqueeze(0).to(device), tile=tile, overlap=overlap, precision=precision,
                     check_finite=True)[0]  # fmt: skip
    out = sr.clamp_(0, 1).mul_(peak).round_().cpu().numpy().transpose(1, 2, 0)[..., ::-1]
    out = out.mean(axis=-1) if gray else out
    if channels in (2, 4):
        height, width = out.shape[:2]
        alpha = cv2.resize(img[..., -1].astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
        out = np.dstack([out, np.clip(alpha, 0, peak)])
    return np.ascontiguousarray(out.round().astype(img.dtype))


# --------------------------------------------------------------------------- checks before any work


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"--device {name!r}: not a device; use auto, cpu, cuda or cuda:N") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name!r}: no CUDA device is available")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"--device {name!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"--device {name!r}: no MPS device is available")
    elif device.type != "cpu":
        raise ValueError(f"--device {name!r}: not supported; use auto, cpu, cuda or cuda:N")
    return device


def _tiling(args) -> tuple[int | None, int]:
    """The ``--tile`` and ``--tile-overlap`` to run, checked."""
    tile, overlap = args.tile, args.tile_overlap
    if tile is None:
        if overlap is not None:
            raise ValueError(f"--tile-overlap {overlap} has no effect without --tile")
        return None, TILE_OVERLAP
    if tile <= 0:
        raise ValueError(f"--tile {tile}: must be a positive number of input pixels")
    overlap = min(TILE_OVERLAP, tile) if overlap is None else overlap
    if overlap < 0:
        raise ValueError(f"--tile-overlap {overlap}: must be 0 or more")
    if overlap > tile:
        side = tile + 2 * overlap
        raise ValueError(
            f"--tile-overlap {overlap} is larger than --tile {tile} (each {tile}x{tile} tile would run on up to "
            f"{side}x{side} input pixels); use an overlap of at most the tile"
        )
    return tile, overlap


def parse_size(text: str) -> tuple[int, int]:
    """``--size WxH`` -> ``(width, height)`` (ASCII digits); ``ValueError`` for anything else."""
    match = re.fullmatch(r"\s*([0-9]+)\s*[xX]\s*([0-9]+)\s*", text)
    if not match or not int(match.group(1)) or not int(match.group(2)):
        raise ValueError(f"--size {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 1920x1080")
    return int(match.group(1)), int(match.group(2))


def _number(value: float) -> str:
    """``value`` as given (``2.0000001`` stays so, ``2.0`` is ``2``)."""
    return f"{value:.15g}"


class Target:
    """The output size of each image: a fixed network's own scale, or (arbitrary-scale
    networks) ``--scale`` or ``--size``; ``label`` names it in output files."""

    def __init__(self, net: Upscaler, scale: float | None, size: str | None) -> None:
        self.net = net
        self.scale, self.size = scale, parse_size(size) if size is not None else None
        if not net.arbitrary_scale:
            if size is not None:
                raise ValueError(f"--size: {net.variant} is a fixed x{net.scale} network; --size needs an "
                                 "arbitrary-scale model (ESC-LTE)")  # fmt: skip
            if scale is not None and scale != net.scale:
                raise ValueError(f"--scale {_number(scale)}: {net.variant} is a fixed x{net.scale} network; other "
                                 "scales need an arbitrary-scale model (ESC-LTE)")  # fmt: skip
            self.scale, self.label = net.scale, f"x{net.scale}"
        elif (scale is None) == (size is None):
            which = "not both" if scale is not None else "one of them"
            raise ValueError(f"{net.variant} upscales by any factor: give --scale (e.g. --scale 3.5) or --size WxH, "
                             f"{which}")  # fmt: skip
        else:
            self.label = f"x{scale:g}" if scale is not None else f"{self.size[0]}x{self.size[1]}"

    def of(self, width: int, height: int) -> tuple[int, int]:
        """The output ``(width, height)`` of a ``width`` x ``height`` input."""
        if self.size is not None:
            return self.size
        if float(self.scale).is_integer():
            return width * int(self.scale), height * int(self.scale)
        return max(1, round(width * self.scale)), max(1, round(height * self.scale))


def _check_scale(args) -> None:
    if args.scale is not None and not (math.isfinite(args.scale) and args.scale > 0):
        raise ValueError(f"--scale {_number(args.scale)}: must be a positive number")
    if args.scale is not None and args.scale > MAX_SCALE:
        raise ValueError(f"--scale {_number(args.scale)}: at most {MAX_SCALE} (the output size limit is checked per "
                         "image)")  # fmt: skip
    if args.size is not None:
        parse_size(args.size)


def _check_options(args) -> tuple[torch.device, str, str, int | None, int]:
    """Every option checked before the model is read: device, attention (the canonical
    ``attn_type``, the one spelling passed on, and the backend it runs), tile, overlap."""
    from ..archs.attention import resolve_backend
    from ..config import ATTN_TYPES, canonical_attn_type

    tile, overlap = _tiling(args)
    _check_scale(args)
    if args.suffix is not None and any(sep and sep in args.suffix for sep in ("/", os.sep, os.altsep)):
        raise ValueError(f"--suffix {args.suffix!r}: must not contain a path separator")
    device = _device(args.device)
    if args.precision == "fp16" and device.type != "cuda":
        raise ValueError(f"--precision fp16 needs a CUDA device; the device is {device.type} (use bf16 or fp32)")
    if args.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"--precision bf16: {device} does not support bfloat16 (use fp16 or fp32)")
    try:
        attn_type = canonical_attn_type(args.attn_type)
    except ValueError as error:
        raise ValueError(f"--attn-type {args.attn_type!r}: must be one of {', '.join(ATTN_TYPES)}") from error
    try:  # fail before the model and the first image when the backend cannot run here
        backend = resolve_backend(attn_type, device)
    except RuntimeError as error:
        raise ValueError(f"--attn-type {args.attn_type}: {error}") from error
    check_output_folder(args.output)
    return device, attn_type, backend, tile, overlap


class _EarlierOutputs:
    """``exclude`` of :func:`collect_inputs`: the files of the output folder whose names end in
    this run's suffix (outputs of an earlier run into a folder that is also an input), kept in
    ``names``; none with an empty suffix."""

    def __init__(self, folder: str, suffix: str) -> None:
        self.folder, self.suffix, self.names = folder, suffix, []
        self.real = osp.realpath(folder)

    def __call__(self, path: str) -> bool:
        name = osp.basename(path)
        if not self.suffix or osp.realpath(osp.dirname(path)) != self.real:
            return False
        if not osp.splitext(name)[0].endswith(self.suffix):
            return False
        if name not in self.names:
            self.names.append(name)
        return True

    def __str__(self) -> str:
        return (f"left out {len(self.names)} file(s) of the output folder {self.folder} named as this run's outputs "
                f"(ending in {self.suffix}): {listed(self.names)}")  # fmt: skip


def _is_video(path: str) -> bool:
    return osp.splitext(path)[1].lower() in VIDEO_EXTENSIONS


def _outputs(files: list[str], folder: str, suffix: str, output_format: str, container: str) -> dict[str, str]:
    """Input -> output path (a video's in ``container``); ``ValueError`` naming both inputs when
    two would share an output."""
    outputs: dict[str, str] = {}
    owners: dict[str, str] = {}
    for path in files:
        stem, ext = osp.splitext(osp.basename(path))
        if _is_video(path):
            ext = "." + container
        else:
            ext = ".png" if output_format == "png" else ext.lower()
        out = osp.join(folder, f"{stem}{suffix}{ext}")
        key = osp.normcase(osp.realpath(out))
        if key in owners:
            raise ValueError(
                f"inputs {owners[key]} and {path} would both be written to {out}; rename one, or upscale them "
                "in separate runs"
            )
        owners[key], outputs[path] = path, out
    return outputs


def _video_settings(args, files: list[str]) -> VideoSettings | None:
    """The video options, checked when an input is a video (``None`` otherwise); ``--batch``
    always."""
    if args.batch <= 0:
        raise ValueError(f"--batch {args.batch}: must be a positive number of frames")
    if not any(_is_video(path) for path in files):
        return None
    missing = pyav_missing()
    if missing:
        raise ValueError(missing)
    settings = VideoSettings(codec=args.codec, crf=args.crf, pix_fmt=args.pix_fmt, container=args.container)
    check_settings(settings)
    return settings


# --------------------------------------------------------------------------- one file


def _limit_text(limit: int) -> str:
    side = math.isqrt(limit)
    return f"{limit:,} ({side}x{side})" if side * side == limit else f"{limit:,}"


def _output_size(width: int, height: int, target: Target, tile: int | None) -> tuple[int, int]:
    """The output ``(width, height)`` of a ``width`` x ``height`` input (an image, or a video's
    frames), ``ValueError`` over the limits."""
    out_width, out_height = target.of(width, height)
    pixels = out_width * out_height
    arbitrary = target.net.arbitrary_scale
    if arbitrary and width * height > LTE_INPUT_LIMIT:
        raise ValueError(
            f"the input is {width}x{height} pixels, more than {_limit_text(LTE_INPUT_LIMIT)}: {target.net.variant} "
            "runs its encoder on the whole input (its queries are chunked); downscale or crop the input"
        )
    if pixels > TILED_LIMIT:
        raise ValueError(
            f"the output would be {out_width}x{out_height} pixels, more than the limit of "
            f"{_limit_text(TILED_LIMIT)} even with --tile"
        )
    if tile is None and not arbitrary and pixels > WHOLE_IMAGE_LIMIT:
        raise ValueError(
            f"the output would be {out_width}x{out_height} pixels, more than the whole-image limit of "
            f"{_limit_text(WHOLE_IMAGE_LIMIT)}; use --tile (e.g. --tile 256)"
        )
    return out_width, out_height


def _upscale_file(
    path: str, out: str, net, target: Target, *, tile: int | None, overlap: int, precision: str, device, replace: bool
) -> None:
    ext = osp.splitext(path)[1].lower()
    if ext not in IMAGE_EXTENSIONS:
        raise ValueError(f"not an image or video format esc upscale reads ({ext or 'no extension'}; it reads "
                         f"{' '.join(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)})")  # fmt: skip
    if not can_write(osp.splitext(out)[1].lower()):
        raise ValueError(f"cannot write {osp.splitext(out)[1]} files; use --format png")
    width, height, frames = image_info(path)  # the header only: nothing is decoded yet
    if frames > 1:
        raise ValueError(f"animated or multi-page image ({frames} frames); only still images are upscaled")
    out_width, out_height = _output_size(width, height, target, tile)
    pixels = out_width * out_height
    img = read_image(path, gray_alpha=True, max_pixels=width * height)
    size = (out_height, out_width)
    if target.net.arbitrary_scale and pixels > LTE_QUERY_CHUNK:
        chunks = -(-pixels // LTE_QUERY_CHUNK)
        from tqdm import tqdm

        # above the progress bar of the images, on a line of its own
        tqdm.write(f"{path}: {width}x{height} -> {out_width}x{out_height} ({pixels:,} pixels, queried in "
                   f"{chunks:,} chunks of {LTE_QUERY_CHUNK:,})", file=sys.stderr)  # fmt: skip
    sr = upscale_image(net, img, tile=tile, overlap=overlap, precision=precision, device=device, size=size)
    write_image(out, sr, replace=replace)


def _upscale_video_file(path: str, out: str, net, target: Target, *, settings: VideoSettings, batch: int,
                        **options) -> None:  # fmt: skip
    from tqdm import tqdm

    from ..io.video import probe
    from .video import upscale_video

    info = probe(path)  # the header only: not a video, no video stream, no decoder
    size = _output_size(info.width, info.height, target, options["tile"])
    tqdm.write(upscale_video(path, out, net, size, settings=settings, batch=batch, **options), file=sys.stderr)


@guarded
def run(args) -> int:
    """``esc upscale`` (arguments: :mod:`esc_arch.cli`). Under torchrun each process takes its
    share of the inputs (:mod:`esc_arch.runtime.ranks`)."""
    from ..runtime.ranks import ranks

    group = ranks()
    if not group.distributed:
        return _run(args, group)
    group.start(_group_device(args.device))
    try:
        return _run(args, group)
    finally:
        group.stop()


def _from_compiler(error: BaseException) -> bool:
    """Whether ``error`` comes from ``torch.compile`` (dynamo or inductor), not from the file."""
    return type(error).__module__.startswith(("torch._dynamo", "torch._inductor"))


def _group_device(name: str) -> torch.device:
    """The device the process group communicates on: CUDA (NCCL) when the run is on CUDA."""
    cuda = name.startswith("cuda") or (name == "auto" and torch.cuda.is_available())
    return torch.device("cuda") if cuda and torch.cuda.is_available() else torch.device("cpu")


class _Plan:
    """What every check before any work settled."""

    def __init__(self, **values) -> None:
        self.__dict__.update(values)


def _prepare(args, group) -> _Plan:
    """Every check before any work (options, model, inputs, output names), one ``ValueError``."""
    from ..runtime.allocator import keep_freed_memory
    from ..runtime.inference import compile_network, for_precision, round_tiling
    from ..weights import load_model

    device, attn_type, backend, tile, overlap = _check_options(args)
    device = group.device(device)
    precision, note = cpu_precision(args.precision, device)
    if note and group.main:
        print(f"esc: note: --precision bf16: {note}", file=sys.stderr)
    if device.type == "cpu":  # activations are reused from pass to pass, not faulted in again
        keep_freed_memory()
    net = load_model(
        args.model,
        attn_type=attn_type,
        device=device,
        allow_pickle=args.allow_pickle,
        window_size=args.window_size,
    )
    for_precision(net, precision, device)  # bf16 on a CPU: the weights converted once
    described = describe(net)
    target = Target(described, args.scale, args.size)
    if args.compile:
        try:
            compile_network(net)
        except ValueError as error:
            raise ValueError(f"--compile: {error}") from None
    if described.tiling == "none" and tile is not None:
        raise ValueError(f"--tile: {described.variant} runs its encoder on the whole input and queries the output in "
                         "chunks (memory bounded by the chunk); it is not tiled")  # fmt: skip
    suffix = args.suffix if args.suffix is not None else f"_{described.variant}_{target.label}"
    earlier = _EarlierOutputs(args.output, suffix)

    def warn(message: str) -> None:
        if group.main:
            print(f"esc: warning: {message}", file=sys.stderr)

    files = collect_inputs(args.input, warn=warn, exclude=earlier, videos=VIDEO_EXTENSIONS)
    if earlier.names and group.main:
        print(f"esc: note: {earlier}", file=sys.stderr)
    settings = _video_settings(args, files)
    outputs = _outputs(files, args.output, suffix, args.format, args.container)
    inputs = {osp.realpath(f) for f in files}
    existing = [out for out in outputs.values() if osp.lexists(out) and osp.realpath(out) not in inputs]
    if existing and not args.overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise ValueError(
            f"{len(existing)} output(s) exist already: {existing[0]}{more}; pass --overwrite to replace them, or "
            "choose another -o or --suffix"
        )
    try:
        os.makedirs(args.output, exist_ok=True)
    except OSError as error:
        raise ValueError(f"-o {args.output}: cannot create the output folder: {error.strerror or error}") from error
    params = sum(p.numel() for p in net.parameters())
    attention = backend if net.attn_type == backend else f"{backend} ({net.attn_type})"
    tiling = "tile none"
    if tile is not None:
        window = described.size_multiple
        runs = round_tiling(tile, overlap, window)
        tiling = f"tile {runs[0]}, overlap {runs[1]}"
        if runs != (tile, overlap):
            tiling += f" (--tile {tile} --tile-overlap {overlap} rounded up to multiples of the window, {window})"
    videos = sum(map(_is_video, files))
    count = f"{len(files) - videos} image(s)" + (f" and {videos} video(s)" if videos else "")
    on = f"on {device}" if not group.distributed else f"on {group.world} processes ({device.type}, split by file)"
    compiled = ", compiled" if args.compile else ""
    header = (f"{described.variant} {target.label} ({params:,} parameters) {on}, {precision or 'fp32'}{compiled}, "
              f"attention {attention}, {tiling}; {count} -> {args.output}")  # fmt: skip
    return _Plan(net=net, target=target, device=device, precision=precision, tile=tile, overlap=overlap,
                 files=files, outputs=outputs, inputs=inputs, settings=settings, header=header)  # fmt: skip


def _run(args, group) -> int:
    from tqdm import tqdm

    try:
        plan, error = _prepare(args, group), None
    except (ValueError, FileNotFoundError) as raised:
        if not group.distributed:
            raise
        plan, error = None, first_line(raised)
    errors = group.gather(error)
    if any(errors):  # every process stops: one line each distinct reason, from rank 0
        if group.main:
            for reason in dict.fromkeys(e for e in errors if e):
                print(f"esc: error: {reason}", file=sys.stderr)
        return 2
    if group.main:
        print(plan.header, file=sys.stderr)
    mine = group.share(plan.files)
    failures: dict[str, str] = {}
    done, current = 0, None
    tile, device = plan.tile, plan.device
    options = dict(tile=tile, overlap=plan.overlap, precision=plan.precision, device=device, replace=args.overwrite)
    try:
        for path in tqdm(mine, unit="file", desc="upscale", disable=not group.main):
            current, out = path, plan.outputs[path]
            if osp.realpath(out) in plan.inputs:
                failures[path] = f"output {out} would overwrite an input; choose another -o or --suffix"
                continue
            try:
                if _is_video(path):
                    _upscale_video_file(path, out, plan.net, plan.target, settings=plan.settings, batch=args.batch,
                                        **options)  # fmt: skip
                else:
                    _upscale_file(path, out, plan.net, plan.target, **options)
                done += 1
            except (ValueError, OSError, cv2.error) as error:
                failures[path] = first_line(error)
            except (MemoryError, torch.OutOfMemoryError) as error:  # this file only: free what it held
                hint = "a smaller --tile" if tile is not None else "--tile (e.g. --tile 256)"
                if _is_video(path):
                    hint += " or a smaller --batch"
                failures[path] = f"out of memory: {first_line(error)}; try {hint}"
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            except Exception as error:
                if args.compile and _from_compiler(error):  # it would fail on every file: stop here
                    failures[path] = f"--compile: {first_line(error)}; run without --compile"
                    for rest in mine[mine.index(path) + 1 :]:
                        failures[rest] = f"not run: --compile failed on {path}"
                    break
                if not isinstance(error, RuntimeError):
                    raise
                failures[path] = first_line(error)  # anything else torch raises for this file
            current = None
    except KeyboardInterrupt:
        _report(failures)
        where = f" while upscaling {current} (not written)" if current is not None else ""
        print(f"esc: interrupted{where}; {done} upscaled, {len(failures)} failed", file=sys.stderr)
        return INTERRUPTED
    _report(failures)
    counts = group.total(done, len(failures))
    total_done, total_failed = sum(c[0] for c in counts), sum(c[1] for c in counts)
    if group.main:
        split = ""
        if group.distributed:
            split = f" by {group.world} processes ({', '.join(str(a + b) for a, b in counts)} files)"
        print(f"{total_done} upscaled, {total_failed} failed{split}", file=sys.stderr)
    return min(total_failed, 125)


def _report(failures: dict[str, str]) -> None:
    for path, reason in failures.items():
        print(f"failed: {path}: {reason}", file=sys.stderr)
