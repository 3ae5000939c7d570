"""Whole-image and tiled inference with the paper's test protocol.

The paper evaluates by reflect-padding the whole low-resolution image on the bottom and
right to a multiple of the network's window, running the network once, and cropping the
output to ``scale * H x scale * W``. :func:`upscale` does that, optionally tile by tile so
that peak memory is bounded by the tile instead of the image.

Tiling and the dynamic kernels: ESC predicts each ConvAttn's 3x3 kernels from a global
average of the features, so a tile sees its own statistics, not the whole image's. Tiles
are aligned to the window grid and overlap by a margin that is discarded, which keeps the
tiled result close to the whole-image one but not bit-identical. The receptive field is
large (13x13 shared kernels in every block), so the margin matters: on a real image with the
reference ESC x2 weights, tiles of 64 give 57.5 dB PSNR against the whole-image output with
the default overlap of 64 and 41.8 dB with an overlap of 32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from ..archs.esc_arch import pad_to_multiple
from ..archs.esc_lte_arch import make_coord
from ..families import describe

__all__ = [
    "LTE_QUERY_CHUNK",
    "PRECISIONS",
    "TILE_OVERLAP",
    "NonFiniteOutput",
    "autocast",
    "check_finite_output",
    "compile_network",
    "DTYPE_PRECISIONS",
    "FLOAT32_TENSORS",
    "for_precision",
    "network_dtype",
    "precision_context",
    "query_upscale",
    "round_tiling",
    "tile_spans",
    "upscale",
]

#: Input pixels a tile of the tiled inference overlaps its neighbours by (at most the tile).
TILE_OVERLAP = 64
#: Output pixels an arbitrary-scale network (ESC-LTE) queries at a time (the authors' ``eval_bsize``).
LTE_QUERY_CHUNK = 30_000

#: precision name -> autocast dtype (None: plain float32).
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteOutput(ValueError):
    """A network output holding NaN or Inf (one line: how many values, and the likely cause)."""


def check_finite_output(sr: Tensor, precision: str | None = None) -> None:
    """:class:`NonFiniteOutput` when ``sr`` holds NaN or Inf. One reduction over the output
    (a sum is finite exactly when every value is, unless finite values overflow it, which the
    exact count then tells apart), so the check costs a small fraction of the forward pass
    (benchmarks/output_check.py)."""
    if bool(torch.isfinite(sr.sum(dtype=torch.float32))):
        return
    bad = int((~torch.isfinite(sr)).sum())
    if not bad:
        return
    name = precision or "fp32"
    if name == "fp32":
        cause = "the weights drive the activations beyond float32's range (finite, but far too large?)"
    else:
        article = {"fp16": "an", "bf16": "a"}.get(name, "a")
        cause = f"likely {article} {name} overflow in the activations; try --precision fp32"
    raise NonFiniteOutput(
        f"the network's output holds {bad:,} non-finite value(s) (NaN or Inf) of {sr.numel():,}: {cause}"
    )


def autocast(precision: str | None, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``precision`` (``fp32``/``bf16``/``fp16``; ``None`` = fp32) on ``device``."""
    name = precision or "fp32"
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    dtype = PRECISIONS[name]
    if dtype is None:
        return contextlib.nullcontext()
    if dtype is torch.float16 and device.type != "cuda":
        raise ValueError(f"precision 'fp16' needs a CUDA device; got {device.type} (use 'bf16' on CPUs)")
    return torch.autocast(device.type, dtype=dtype)


#: tensors :func:`for_precision` leaves float32, by name: the window attention's relative-position
#: table and FlashBias factors (the fused CPU attention adds the bias unrounded) and DySample's
#: sub-pixel positions (coordinates). ESC-RIB's bias MLP and the LDA upsampler's table convert.
FLOAT32_TENSORS = ("relative_position_bias", "flashbias_q", "flashbias_k", "init_pos")
#: a network's dtype -> the precision it runs (:func:`network_dtype`)
DTYPE_PRECISIONS = {dtype or torch.float32: name for name, dtype in PRECISIONS.items()}


def for_precision(net: nn.Module, precision: str | None, device: torch.device | str) -> nn.Module:
    """``net`` made ready, in place, to run ``precision`` on ``device``; returns it.

    On a CPU, ``bf16`` converts the floating-point parameters and buffers to bfloat16 once
    (except :data:`FLOAT32_TENSORS`): every pass then runs in bf16 from its input on, without
    the casts ``torch.autocast`` makes in every call (weights, and activations between its fp32
    and bf16 operators). :func:`upscale` and :func:`precision_context` run a converted network
    in its own dtype. Any other precision or device leaves ``net`` as it is (CUDA's fp16 and
    bf16 run under autocast), and so does an arbitrary-scale network (ESC-LTE: its queries
    compute coordinates, which need float32; it runs under autocast)."""
    if precision != "bf16" or torch.device(device).type != "cpu" or describe(net).arbitrary_scale:
        return net
    for module in net.modules():
        for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            if tensor.is_floating_point() and name not in FLOAT32_TENSORS:
                tensor.data = tensor.data.to(torch.bfloat16)
    return net


def compile_network(net: nn.Module) -> nn.Module:
    """``net``'s forward compiled in place with ``torch.compile`` (inductor's defaults: fused
    elementwise kernels around the convolutions and the attention); returns ``net``. The first
    pass at each input size compiles (tens of seconds on a CPU; after two sizes the sizes become
    dynamic); later passes run the compiled code. Pays off only on long runs of one size, such as
    videos and folders of frames: benchmarks/inference_bounds.py prints the speed-up and the
    break-even number of images (docs/performance.md)."""
    described = describe(net)
    if described.arbitrary_scale:
        raise ValueError(f"{described.variant} runs its encoder and queries outside forward; it is not compiled")
    net.compile()
    return net


def network_dtype(net: nn.Module) -> torch.dtype:
    """The dtype a network computes in: that of its convolution weights (float32 unless
    :func:`for_precision` converted them)."""
    for module in net.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            return module.weight.dtype
    return torch.float32


def precision_context(net: nn.Module, precision: str | None, device: torch.device) -> contextlib.AbstractContextManager:
    """What a pass of ``net`` runs under: :func:`autocast` for ``precision`` when the network is
    float32, nothing for one :func:`for_precision` converted (it runs in its own dtype; its
    inputs are cast to it). ``precision`` is checked either way (:func:`autocast`)."""
    context = autocast(precision, device)
    return context if network_dtype(net) == torch.float32 else contextlib.nullcontext()


def _whole(net: nn.Module, lq: Tensor, window: int, scale: int) -> Tensor:
    height, width = lq.shape[-2:]
    padded = pad_to_multiple(lq, window)
    return net(padded)[..., : scale * height, : scale * width]


def round_tiling(tile: int, overlap: int, window: int) -> tuple[int, int]:
    """The tile and overlap that :func:`upscale` runs: ``tile`` and ``overlap`` rounded up to
    multiples of ``window``, so that tiles share the whole image's window grid."""
    if tile <= 0 or overlap < 0:
        raise ValueError(f"tile must be positive and tile_overlap non-negative; got tile={tile}, overlap={overlap}")
    return -(-tile // window) * window, -(-overlap // window) * window


def tile_spans(size: int, tile: int, overlap: int) -> Iterator[tuple[int, int, int, int]]:
    """Spans along one axis: ``(core_start, core_end, input_start, input_end)``.

    Cores of ``tile`` pixels cover the axis without overlap; each input extends its core by
    ``overlap`` pixels on both sides (clipped to the axis).
    """
    for start in range(0, size, tile):
        end = min(start + tile, size)
        yield start, end, max(start - overlap, 0), min(end + overlap, size)


@torch.no_grad()
def upscale(
    net: nn.Module,
    lq: Tensor,
    *,
    tile: int | None = None,
    overlap: int = TILE_OVERLAP,
    precision: str | None = None,
    check_finite: bool = False,
) -> Tensor:
    """Super-resolve ``lq`` ``(B, 3, H, W)`` with the paper's protocol, optionally in tiles.

    ``tile`` and ``overlap`` are in input pixels and are rounded up to multiples of the
    network's window so that tiles share the whole image's window grid. The result is
    float32 on ``lq``'s device; a network :func:`for_precision` converted runs in its own dtype.
    ``check_finite``: each output (the whole image's, or each
    tile's as it is made, the tile named) goes through :func:`check_finite_output`.
    """
    description = describe(net)
    if description.arbitrary_scale:
        raise ValueError(f"{description.variant} upscales by any factor: use query_upscale with a scale or a size")
    window, scale = description.size_multiple, description.scale
    if tile is not None:
        rounded_tile, overlap = round_tiling(tile, overlap, window)
    dtype = network_dtype(net)
    lq, precision = lq.to(dtype), precision or DTYPE_PRECISIONS.get(dtype)
    with precision_context(net, precision, lq.device):
        if tile is None or (lq.shape[-2] <= tile and lq.shape[-1] <= tile):
            sr = _whole(net, lq, window, scale).float()
            if check_finite:
                check_finite_output(sr, precision)
            return sr
        tile = rounded_tile
        batch, channels, height, width = lq.shape
        out = lq.new_zeros(batch, channels, scale * height, scale * width, dtype=torch.float32)
        rows, columns = list(tile_spans(height, tile, overlap)), list(tile_spans(width, tile, overlap))
        for row, (y0, y1, iy0, iy1) in enumerate(rows):
            for column, (x0, x1, ix0, ix1) in enumerate(columns):
                sr = _whole(net, lq[..., iy0:iy1, ix0:ix1], window, scale).float()
                oy, ox = scale * (y0 - iy0), scale * (x0 - ix0)
                core = sr[..., oy : oy + scale * (y1 - y0), ox : ox + scale * (x1 - x0)]
                if check_finite:
                    try:
                        check_finite_output(core, precision)
                    except NonFiniteOutput as error:
                        number = row * len(columns) + column + 1
                        raise NonFiniteOutput(
                            f"tile {number} of {len(rows) * len(columns)} (input rows {y0}-{y1 - 1}, columns "
                            f"{x0}-{x1 - 1}): {error}"
                        ) from None
                out[..., scale * y0 : scale * y1, scale * x0 : scale * x1] = core
        return out


@torch.no_grad()
def query_upscale(
    net: nn.Module,
    image: Tensor,
    *,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    chunk: int = LTE_QUERY_CHUNK,
    progress: Callable[[int, int], None] | None = None,
    check: Callable[[Tensor, int], None] | None = None,
) -> Tensor:
    """Super-resolve ``image`` ``(B, 3, h, w)`` in [0, 1] with an arbitrary-scale network
    (ESC-LTE) by ``scale`` (any positive number) or to ``size`` ``(H, W)``: the encoder runs on
    the whole input, the output is queried ``chunk`` pixels at a time (the authors'
    ``eval_bsize``) so that memory is bounded by the chunk. ``progress(done, total)`` is called
    after each chunk with the output pixels queried so far, ``check(rgb, start)`` with each
    chunk's output ``(B, Q, 3)`` and its first output pixel before the next chunk is queried (an
    exception it raises ends the run). Returns ``(B, 3, H, W)``, not clamped."""
    batch, _, height, width = image.shape
    if (scale is None) == (size is None):
        raise ValueError("give either scale or size")
    if size is None:
        if not scale > 0:
            raise ValueError(f"scale must be positive; got {scale!r}")
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
    out_h, out_w = size
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"size must be positive; got {size!r}")
    lq = (image - 0.5) / 0.5
    features = net.features(lq)
    coord = make_coord(out_h, out_w, device=image.device).to(lq.dtype).expand(batch, -1, -1)
    cell = coord.new_tensor([2 / out_h, 2 / out_w]).expand_as(coord)
    total, parts = coord.shape[1], []
    for start in range(0, total, chunk):
        parts.append(net.query(lq, features, coord[:, start : start + chunk], cell[:, start : start + chunk]))
        if check is not None:
            check(parts[-1], start)
        if progress is not None:
            progress(min(start + chunk, total), total)
    rgb = torch.cat(parts, dim=1) * 0.5 + 0.5
    return rgb.view(batch, out_h, out_w, 3).permute(0, 3, 1, 2)
