"""Windowed multi-head self-attention with a relative-position bias: the backends and their dispatch.

ESC runs one self-attention per block over large (32x32) windows. The attention itself,
``softmax(q k^T / sqrt(c) + bias) v``, can be computed by several kernels that give the
same result; ``attn_type`` (vocabulary: :data:`esc_arch.config.ATTN_TYPES`) picks one:

==========  ==================================================================================
``naive``   explicit scores and softmax (the reference; memory grows with ``windows * N^2``)
``sdpa``    ``torch.nn.functional.scaled_dot_product_attention`` with the bias as a float mask
            (fused kernels on CPU and CUDA)
``flex``    FlexAttention, compiled once per shape family (fixed groups of windows), the bias
            added by a score modification computed from the token indices (no ``N x N`` bias
            matrix is ever built)
``flash``   flash-attn (CUDA, fp16/bf16) with the bias folded into extra query/key channels
            (:mod:`esc_arch.archs.flashbias`; inference only for a table)
``chunked`` training on the CPU (:mod:`esc_arch.archs.chunked_attention`): torch's fused CPU
            kernel forward, a backward that recomputes the probabilities tile by tile (bounded
            memory) and returns the bias gradient
``auto``    the fastest exact backend on the input's device (``sdpa`` on CPU and CUDA; ``chunked``
            on the CPU when gradients are needed)
==========  ==================================================================================

One more backend is not an ``attn_type``: ``sdpa_factors``, FlashBias factors as extra channels of
an unbiased sdpa (:func:`sdpa_factors`), which ESC-RIB's ``sdpa`` and ``auto`` run.

The bias parameters (:mod:`esc_arch.archs.position_bias`) are the relative-position table or
the FlashBias factor pair; every backend takes either, in training too.

Module state: ``_logged_backends``, the (attn_type, backend, device type) combinations already
logged.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .chunked_attention import chunked_attention
from .flashbias import factor_channels, flash
from .position_bias import BiasParameters, relative_position_bias, relative_position_index

__all__ = [
    "ATTENTION_BACKENDS",
    "BiasParameters",
    "attention",
    "backend_kernel",
    "relative_position_bias",
    "relative_position_index",
    "resolve_backend",
    "sdpa_factors",
]

logger = logging.getLogger("basicsr.esc")

#: (attn_type, backend, device type) combinations already logged by :func:`resolve_backend`
_logged_backends: set[tuple[str, str, str]] = set()


# --------------------------------------------------------------------------- backends
# Every backend takes q, k, v of shape (windows, heads, N, c), the bias parameters (table or
# FlashBias factors) and the window size, and returns (windows, heads, N, c).


def _naive(q: Tensor, k: Tensor, v: Tensor, table: BiasParameters, window_size: int) -> Tensor:
    scale = q.shape[-1] ** -0.5
    scores = (q * scale) @ k.transpose(-2, -1)
    scores = scores + relative_position_bias(table, window_size).to(scores.dtype)
    return scores.softmax(dim=-1) @ v


def _sdpa(q: Tensor, k: Tensor, v: Tensor, table: BiasParameters, window_size: int) -> Tensor:
    # A 4-D mask lets torch's fused CPU kernel run; a 3-D one sends it to the unfused math path
    # (scores materialised). bf16 q, k, v on the CPU take a float32 mask as it is: torch's fused
    # CPU kernel accepts it, and the bias is not rounded to bf16.
    bias = relative_position_bias(table, window_size)
    if not (q.device.type == "cpu" and q.dtype == torch.bfloat16):
        bias = bias.to(q.dtype)
    if q.device.type == "cpu" and not torch.compiler.is_exporting():
        # Heads first (views, no copy): the fused CPU kernel walks its batch axis outermost, so
        # each head's N x N mask is read for all windows in a row while it is in the cache,
        # instead of the whole (heads, N, N) mask once per window. Same values, same rounding.
        # An export (ONNX) keeps the plain layout: its graph runs on other devices and kernels.
        q, k, v = (t.transpose(0, 1) for t in (q, k, v))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(1)).transpose(0, 1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0))


def sdpa_factors(q: Tensor, k: Tensor, v: Tensor, table: BiasParameters, window_size: int) -> Tensor:
    """FlashBias factors as ``r`` extra channels of an UNBIASED sdpa on ``c + r`` channels
    (:func:`esc_arch.archs.flashbias.factor_channels`; no mask, no ``N x N`` bias matrix). Exact up
    to rounding; a relative-position table goes through the masked sdpa."""
    if not isinstance(table, tuple):
        return _sdpa(q, k, v, table, window_size)
    c = q.shape[-1]
    return F.scaled_dot_product_attention(*factor_channels(q, k, v, *table), scale=1.0)[..., :c]


#: Windows per FlexAttention call, by device type. Every call gets exactly this many windows
#: (the last group zero-padded, its output dropped), so the compiled kernel's shapes depend only
#: on the shape family -- heads, tokens per window, head dim, dtype, device -- and one compile
#: serves every image size and batch. (Dynamic shapes would do the same without padding, but
#: torch 2.14's inductor emits C++ that does not build for FlexAttention on CPU with them.)
FLEX_WINDOWS_PER_CALL = {"cpu": 4, "cuda": 16}


@functools.cache
def _compiled_flex_attention() -> Callable:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _flex(q: Tensor, k: Tensor, v: Tensor, table: Tensor, window_size: int) -> Tensor:
    parameters = table if isinstance(table, tuple) else (table,)
    if q.device.type == "cpu" and torch.is_grad_enabled() and any(t.requires_grad for t in (q, *parameters)):
        raise RuntimeError(
            f"attn_type='flex' has no backward pass on CPU in torch {torch.__version__}; "
            "train on CPU with attn_type='sdpa' (or 'auto'), or run flex under torch.no_grad()"
        )
    w = window_size
    span = 2 * w - 1

    if isinstance(table, tuple):  # FlashBias factors: index their product
        matrix = relative_position_bias(table, w)

        def add_relative_position_bias(score, b, h, q_idx, kv_idx):
            return score + matrix[h, q_idx, kv_idx].to(score.dtype)

    else:

        def add_relative_position_bias(score, b, h, q_idx, kv_idx):
            dy = kv_idx // w - q_idx // w + (w - 1)
            dx = kv_idx % w - q_idx % w + (w - 1)
            return score + table[h, dy * span + dx].to(score.dtype)

    windows = q.shape[0]
    group = FLEX_WINDOWS_PER_CALL.get(q.device.type, 16)
    padding = -windows % group
    if padding:  # zero windows attend to zeros: their output is zero and is dropped below
        q, k, v = (F.pad(t, (0, 0, 0, 0, 0, 0, 0, padding)) for t in (q, k, v))
    flex_attention = _compiled_flex_attention()
    out = [
        flex_attention(q[i : i + group], k[i : i + group], v[i : i + group], score_mod=add_relative_position_bias)
        for i in range(0, windows + padding, group)
    ]
    return torch.cat(out)[:windows]


def _chunked(q: Tensor, k: Tensor, v: Tensor, table: BiasParameters, window_size: int) -> Tensor:
    return chunked_attention(q, k, v, relative_position_bias(table, window_size))


#: backend name -> kernel. ``auto`` is resolved per device by :func:`resolve_backend`.
ATTENTION_BACKENDS: dict[str, Callable[[Tensor, Tensor, Tensor, BiasParameters, int], Tensor]] = {
    "naive": _naive,
    "sdpa": _sdpa,
    "flex": _flex,
    "flash": flash,
    "chunked": _chunked,
    "sdpa_factors": sdpa_factors,
}

#: The backend ``auto`` picks on each device type: the fastest one that is exact there, in
#: inference and when gradients are needed (docs/attention-backends.md, docs/performance.md).
_AUTO = {"cpu": "sdpa", "cuda": "sdpa"}
_AUTO_TRAINING = {"cpu": "chunked", "cuda": "sdpa"}


def _check_available(name: str, device: torch.device) -> None:
    if name == "flash":
        if importlib.util.find_spec("flash_attn") is None:
            raise RuntimeError(
                "attn_type='flash' needs the flash-attn package (pip install 'esc_arch[flash]', "
                "CUDA only); use attn_type='sdpa' or 'auto' instead."
            )
        if device.type != "cuda":
            raise RuntimeError(f"attn_type='flash' runs on CUDA only; the input is on {device.type}.")
    if name == "flex":
        try:
            from torch.nn.attention import flex_attention  # noqa: F401
        except ImportError as error:  # pragma: no cover - torch < 2.5
            raise RuntimeError(
                f"attn_type='flex' needs torch >= 2.5 with FlexAttention; torch {torch.__version__} "
                "has none. Use attn_type='sdpa'."
            ) from error


def resolve_backend(attn_type: str, device: torch.device, *, training: bool = False) -> str:
    """The backend that runs for ``attn_type`` on ``device``; logged once per combination.

    When gradients are needed on the CPU (``training``), ``auto`` is ``chunked`` (fp32 and bf16
    autocast): sdpa's backward there is torch's unfused math path, which keeps every window's
    ``N x N`` probabilities.
    ``flex`` has no backward pass on the CPU: ``chunked`` computes the same attention instead, and
    the log says so (the authors' ESC-Real option files ask for ``Flex``, written for GPUs)."""
    auto = _AUTO_TRAINING if training else _AUTO
    name = auto.get(device.type, "naive") if attn_type == "auto" else attn_type
    how = f"auto on {device.type}" if attn_type == "auto" else f"requested, on {device.type}"
    if training and attn_type == "auto":
        how += ", training"
    if name == "flex" and device.type == "cpu" and training:
        name, how = "chunked", "flex requested; FlexAttention has no backward pass on CPU, same math with chunked"
    _check_available(name, device)
    key = (attn_type, name, device.type)
    if key not in _logged_backends:
        _logged_backends.add(key)
        logger.info(f"ESC window attention backend: {name} ({how})")
    return name


@contextlib.contextmanager
def backend_kernel(backend: str, kernel: Callable[[Tensor, Tensor, Tensor, BiasParameters, int], Tensor]):
    """Within the block, the backend named ``backend`` runs ``kernel`` (same arguments as the
    entries of :data:`ATTENTION_BACKENDS`), e.g. ``with backend_kernel("sdpa", sdpa_factors):``
    for a FlashBias network on the factor kernel, or a reference kernel in a benchmark. The
    table's own entry is back when the block ends, however it ends."""
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(ATTENTION_BACKENDS)}; got {backend!r}")
    saved = ATTENTION_BACKENDS[backend]
    ATTENTION_BACKENDS[backend] = kernel
    try:
        yield
    finally:
        ATTENTION_BACKENDS[backend] = saved


def attention(q: Tensor, k: Tensor, v: Tensor, table: BiasParameters, window_size: int, backend: str) -> Tensor:
    """``softmax(q k^T / sqrt(c) + bias) v`` per window and head with the named backend; ``table``
    is the relative-position table or the FlashBias factor pair."""
    return ATTENTION_BACKENDS[backend](q, k, v, table, window_size)
