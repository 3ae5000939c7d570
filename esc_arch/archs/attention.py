"""Windowed multi-head self-attention with a relative position bias, and its backends.

ESC runs one self-attention per block over large (32x32) windows. The attention itself,
``softmax(q k^T / sqrt(c) + bias) v``, can be computed by several kernels that give the
same result; ``attn_type`` picks one:

==========  ==================================================================================
``naive``   explicit scores and softmax (the reference; memory grows with ``windows * N^2``)
``sdpa``    ``torch.nn.functional.scaled_dot_product_attention`` with the bias as a float mask
            (fused kernels on CPU and CUDA)
``flex``    FlexAttention, compiled once per shape family (fixed groups of windows), the bias
            added by a score modification computed from the token indices (no ``N x N`` bias
            matrix is ever built)
``flash``   flash-attn (CUDA, fp16/bf16) with the bias folded into extra query/key channels
            (rank-240 truncated SVD at ESC's head dim 16; inference only)
``chunked`` training on the CPU: a custom autograd function, torch's fused CPU kernel forward
            (keeping only the per-row logsumexp), a backward that recomputes the probabilities
            tile by tile (bounded memory) and returns the bias gradient
``auto``    the fastest exact backend on the input's device (``sdpa`` on CPU and CUDA; ``chunked``
            on the CPU when gradients are needed)
==========  ==================================================================================

The authors' spellings ``Naive``, ``SDPA`` and ``Flex`` are accepted too.

The bias has two parameter layouts, independent of the backend: the relative-position table
``(heads, (2w-1)^2)`` of the paper, or FlashBias factors ``(flashbias_q, flashbias_k)``, each
``(heads, N, r)``, whose product ``flashbias_q @ flashbias_k^T`` is the bias matrix (the
authors' FlashBias checkpoints). Every backend takes either (``bias`` below), in training
too; ``flash`` uses the factors directly as its extra query/key channels.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary

__all__ = [
    "ATTENTION_BACKENDS",
    "BiasParameters",
    "ChunkedAttention",
    "attention",
    "chunked_attention",
    "fold_relative_position_bias",
    "folded_attention",
    "relative_position_index",
    "resolve_backend",
]

logger = logging.getLogger("basicsr.esc")


@functools.lru_cache(maxsize=8)
def _relative_position_index_cpu(window_size: int) -> Tensor:
    w = window_size
    tokens = torch.arange(w * w, device="cpu")  # explicit: never a meta tensor in the cache
    rows, cols = tokens // w, tokens % w
    dy = rows[None, :] - rows[:, None]  # (query, key): key minus query
    dx = cols[None, :] - cols[:, None]
    return (dy + w - 1) * (2 * w - 1) + (dx + w - 1)


def _tracing() -> bool:
    return torch.compiler.is_compiling() or torch.compiler.is_exporting()


def relative_position_index(window_size: int, device: torch.device | str = "cpu") -> Tensor:
    """The ``(w*w, w*w)`` map from (query token, key token) to a bias-table column: the
    definition of the bias matrix, ``bias = table[:, index]``. Entry ``[q, k]`` is
    ``(ky - qy + w - 1) * (2w - 1) + (kx - qx + w - 1)``. Built vectorised once per window
    size; derived data, never part of a state dict. The network builds the bias without it
    (``relative_position_bias``); tests check the two agree."""
    return _relative_position_index_cpu(window_size).to(device)


def _expand_table(table: Tensor, window_size: int) -> Tensor:
    """``table[:, relative_position_index(w)]`` without the index: viewed as a
    ``(heads, 2w-1, 2w-1)`` grid, entry ``[q, k]`` is ``grid[ky - qy + w - 1, kx - qx + w - 1]``,
    the ``w x w`` window of the grid that starts at ``(w-1-qy, w-1-qx)``. Two unfolds give
    every window, a flip orders them by query: one strided copy, forward and backward both
    about 2.5x faster than the gather on this project's CPU."""
    w = window_size
    grid = table.view(table.shape[0], 2 * w - 1, 2 * w - 1)
    windows = grid.unfold(1, w, 1).unfold(2, w, 1)  # (heads, w-1-qy, w-1-qx, ky, kx)
    return windows.flip(1, 2).reshape(table.shape[0], w * w, w * w)


#: inference cache: bias table -> (its version, the bias matrix); entries go with their tables
_bias_cache: WeakIdKeyDictionary = WeakIdKeyDictionary()


#: A window attention's bias parameters: the relative-position table, or the FlashBias
#: factor pair ``(flashbias_q, flashbias_k)``.
BiasParameters = Tensor | tuple[Tensor, Tensor]


def _bias_matrix(bias: BiasParameters, window_size: int) -> Tensor:
    if isinstance(bias, tuple):
        left, right = bias
        return left @ right.transpose(-2, -1)
    return _expand_table(bias, window_size)


def relative_position_bias(table: BiasParameters, window_size: int) -> Tensor:
    """The ``(heads, w*w, w*w)`` bias matrix: a ``(heads, (2w-1)^2)`` table expanded, or the
    product of a FlashBias factor pair.

    In inference (no gradient to the parameters) the matrix is built once per parameter
    version and reused; in training, while tracing, or when the parameters change it is rebuilt."""
    tensors = table if isinstance(table, tuple) else (table,)
    training = any(t.requires_grad for t in tensors) and torch.is_grad_enabled()
    if training or _tracing():
        return _bias_matrix(table, window_size)
    key = (*(t._version for t in tensors), window_size)
    cached = _bias_cache.get(tensors[0])
    if cached is not None and cached[0] == key:
        return cached[1]
    with torch.no_grad():
        matrix = _bias_matrix(table, window_size)
    _bias_cache[tensors[0]] = (key, matrix)
    return matrix


# --------------------------------------------------------------------------- backends
# Every backend takes q, k, v of shape (windows, heads, N, c), the bias parameters (table or
# FlashBias factors) and the window size, and returns (windows, heads, N, c).


def _naive(q: Tensor, k: Tensor, v: Tensor, table: Tensor, window_size: int) -> Tensor:
    scale = q.shape[-1] ** -0.5
    scores = (q * scale) @ k.transpose(-2, -1)
    scores = scores + relative_position_bias(table, window_size).to(scores.dtype)
    return scores.softmax(dim=-1) @ v


def _sdpa(q: Tensor, k: Tensor, v: Tensor, table: Tensor, window_size: int) -> Tensor:
    # A 4-D (1, heads, N, N) mask lets torch's fused CPU kernel run; a 3-D one sends it to the
    # unfused math path (5x slower at 32x32 windows, scores materialised).
    bias = relative_position_bias(table, window_size)
    if not (q.device.type == "cpu" and q.dtype == torch.bfloat16 and _BF16_Q_FP32_MASK):
        bias = bias.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0))


#: bf16 q, k, v on the CPU take the float32 mask as it is: torch's fused CPU kernel accepts it,
#: skips rounding the bias to bf16 (closer to fp32), and ran faster than with a bf16 mask on
#: this project's CPU (docs/performance.md, target 2).
_BF16_Q_FP32_MASK = True


def _sdpa_factors(q: Tensor, k: Tensor, v: Tensor, table: BiasParameters, window_size: int) -> Tensor:
    """FlashBias factors folded into the channels of an UNBIASED sdpa: with ``bias = fq fk^T``,
    ``[q c^-1/2, fq] . [k, fk]^T = q k^T c^-1/2 + bias``, so the kernel runs on ``c + r``
    channels with ``scale=1`` and no mask (v zero-padded to ``c + r``: torch's fused CPU kernel
    needs equal head dims; the extra output channels are cropped). Exact up to rounding; a
    relative-position table goes through the masked :func:`_sdpa`. ``auto`` picks this in
    inference where it measured faster (``_AUTO_FACTORS``)."""
    if not isinstance(table, tuple):
        return _sdpa(q, k, v, table, window_size)
    windows, heads, n, c = q.shape
    left, right = (t.to(q.dtype).unsqueeze(0).expand(windows, -1, -1, -1) for t in table)
    q_ext = torch.cat([q * c**-0.5, left], dim=-1)
    k_ext = torch.cat([k, right], dim=-1)
    v_ext = F.pad(v, (0, left.shape[-1]))
    return F.scaled_dot_product_attention(q_ext, k_ext, v_ext, scale=1.0)[..., :c]


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


# --------------------------------------------------------------------------- flash folding
# flash-attn takes no additive bias. A bias matrix B (N x N, per head) factored as B ~ U V^T
# with U, V of rank r is folded into r extra query/key channels: [q*s, U] . [k, V]^T =
# s q k^T + U V^T, so softmax(s q k^T + B) v = softmax([q*s, U] [k, V]^T) v. flash-attn needs
# equal head dims for q, k and v (a multiple of 8, at most 256): v is zero-padded to match and
# the extra output channels are cropped. Exact when r = rank(B); otherwise the best rank-r
# approximation (truncated SVD), whose error is reported.

FLASH_MAX_HEAD_DIM = 256


_fold_cache: WeakIdKeyDictionary = WeakIdKeyDictionary()


def _fold(table: Tensor, window_size: int, rank: int) -> tuple[Tensor, Tensor, float]:
    bias = relative_position_bias(table.detach().float(), window_size)  # (heads, N, N)
    u, s, vh = torch.linalg.svd(bias.cpu().double())
    root = s[:, :rank].sqrt()
    left = (u[:, :, :rank] * root[:, None, :]).float()  # (heads, N, r)
    right = (vh[:, :rank, :].transpose(1, 2) * root[:, None, :]).float()
    error = (bias.cpu() - left @ right.transpose(1, 2)).abs().max().item()
    return left.to(table.device), right.to(table.device), error


def fold_relative_position_bias(table: BiasParameters, window_size: int, rank: int) -> tuple[Tensor, Tensor, float]:
    """``(U, V, max_error)``: per-head factors of the bias matrix, ``B ~ U @ V^T`` with
    ``U, V`` of shape ``(heads, N, rank)``, and the largest absolute entry of ``B - U V^T``
    (zero up to rounding when ``rank`` reaches the rank of ``B``). Cached per table version
    in inference. FlashBias factors are returned as they are (exact, trainable)."""
    if isinstance(table, tuple):
        if table[0].shape[-1] != rank:
            raise ValueError(f"the FlashBias factors have rank {table[0].shape[-1]}, not {rank}")
        return table[0], table[1], 0.0
    n = window_size * window_size
    if not 1 <= rank <= n:
        raise ValueError(f"rank must be in [1, {n}] for window {window_size}; got {rank}")
    if table.requires_grad and torch.is_grad_enabled():
        raise RuntimeError("the folded bias is for inference; attn_type='flash' has no backward for the bias table")
    key = (table._version, window_size, rank)
    cached = _fold_cache.get(table)
    if cached is None or cached[0] != key:
        cached = _fold_cache[table] = (key, _fold(table, window_size, rank))
    return cached[1]


def flash_rank(head_dim: int) -> int:
    """The largest bias rank that fits flash-attn's head-dim limit beside ``head_dim``
    channels, keeping the total a multiple of 8."""
    return FLASH_MAX_HEAD_DIM - head_dim


def folded_attention(
    q: Tensor, k: Tensor, v: Tensor, table: BiasParameters, window_size: int, *, rank: int, kernel: Callable
) -> Tensor:
    """Windowed biased attention through a bias-free kernel with flash-attn's interface:
    ``kernel(q, k, v, softmax_scale=...)`` on ``(batch, seq, heads, dim)`` tensors."""
    windows, heads, n, c = q.shape
    left, right, error = fold_relative_position_bias(table, window_size, rank)
    if not isinstance(table, tuple):
        _log_fold_error(rank, window_size, error)
    dim = c + rank
    padded = -(-dim // 8) * 8  # head dims in multiples of 8
    dtype = q.dtype
    q_ext = torch.cat([q * c**-0.5, left.to(dtype).expand(windows, -1, -1, -1)], dim=-1)
    k_ext = torch.cat([k, right.to(dtype).expand(windows, -1, -1, -1)], dim=-1)
    q_ext, k_ext = (F.pad(t, (0, padded - dim)) for t in (q_ext, k_ext))
    v_ext = F.pad(v, (0, padded - c))
    layout = [t.transpose(1, 2).contiguous() for t in (q_ext, k_ext, v_ext)]  # (windows, N, heads, dim)
    out = kernel(*layout, softmax_scale=1.0)
    return out.transpose(1, 2)[..., :c]


_logged_fold: set[tuple[int, int]] = set()


def _log_fold_error(rank: int, window_size: int, error: float) -> None:
    if (rank, window_size) not in _logged_fold:
        _logged_fold.add((rank, window_size))
        exact = "exact" if rank == window_size**2 else "truncated SVD"
        logger.info(f"flash: relative position bias folded at rank {rank} ({exact}), max abs error {error:.2e}")


def _flash(q: Tensor, k: Tensor, v: Tensor, table: BiasParameters, window_size: int) -> Tensor:
    from flash_attn import flash_attn_func

    if isinstance(table, tuple):
        rank = table[0].shape[-1]
        if q.shape[-1] + rank > FLASH_MAX_HEAD_DIM:
            raise ValueError(
                f"attn_type='flash': head dim {q.shape[-1]} + FlashBias rank {rank} exceeds flash-attn's "
                f"{FLASH_MAX_HEAD_DIM}; use attn_type='sdpa'"
            )
    else:
        rank = min(flash_rank(q.shape[-1]), window_size * window_size)
    dtype = q.dtype if q.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
    out = folded_attention(q.to(dtype), k.to(dtype), v.to(dtype), table, window_size, rank=rank, kernel=flash_attn_func)
    return out.to(q.dtype)


# --------------------------------------------------------------------------- chunked (training)
# torch has no fused CPU backward for an attention whose float mask needs a gradient: sdpa falls
# back to its unfused math path, which materialises (and keeps for backward) the N x N
# probabilities of every window and head at once. ``chunked`` keeps q, k, v, the output and the
# per-row logsumexp only; its backward recomputes the probabilities tile by tile (a tile is a few
# windows, all heads and a band of query rows) and accumulates dq, dk, dv and the (heads, N, N)
# bias gradient, the sum over windows of dS. Autograd carries the bias gradient on to the table
# (through the expansion) or to the FlashBias factors (through their product).

#: Score elements (windows x heads x query rows x keys) in one tile of the ``chunked`` backward.
#: The backward holds two tile buffers (probabilities, score gradients) of this many elements in
#: the compute dtype (float32 for fp32/bf16/fp16 inputs: 2 x 4 MiB), plus the (heads, N, N) bias
#: gradient (16 MiB at ESC's 4 heads and 32x32 windows), whatever the number of windows. 1M
#: elements (all 4 heads, 256 query rows of one 32x32 window) keeps a tile in the L3 cache and was
#: the fastest size on this project's CPU (128K to 32M measured).
CHUNK_SCORE_ELEMENTS = 1 << 20

_cpu_flash = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_cpu_flash_backward = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)


def _tile_shape(heads: int, n: int, budget: int) -> tuple[int, int]:
    """(windows, query rows) per tile: whole windows while a window fits the budget, else one
    window and as many query rows as fit (at least one)."""
    per_window = heads * n * n
    if per_window <= budget:
        return budget // per_window, n
    return 1, max(1, budget // (heads * n))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _chunked_forward(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, budget: int) -> tuple[Tensor, Tensor]:
    """``(out, lse)``: the attention and the per-row logsumexp of its scores, ``(windows, heads, N)``."""
    if q.device.type == "cpu" and _cpu_flash is not None:  # fused, never materialises the scores
        # bf16 q, k, v take the float32 bias unrounded, as the float32 backward recomputes it
        mask = bias if q.dtype == torch.bfloat16 and bias.dtype == torch.float32 else bias.to(q.dtype)
        return _cpu_flash(q, k, v, attn_mask=mask.unsqueeze(0))
    windows, heads, n, c = q.shape
    dtype = _compute_dtype(q.dtype)
    span, rows = _tile_shape(heads, n, budget)
    out = torch.empty_like(q)
    lse = torch.empty(windows, heads, n, dtype=dtype, device=q.device)
    bias = bias.to(dtype)
    for w0 in range(0, windows, span):
        kt = k[w0 : w0 + span].to(dtype).transpose(-2, -1)
        vt = v[w0 : w0 + span].to(dtype)
        for r0 in range(0, n, rows):
            scores = (q[w0 : w0 + span, :, r0 : r0 + rows].to(dtype) * c**-0.5) @ kt
            scores += bias[:, r0 : r0 + rows]
            row_lse = scores.logsumexp(-1, keepdim=True)
            lse[w0 : w0 + span, :, r0 : r0 + rows] = row_lse.squeeze(-1)
            out[w0 : w0 + span, :, r0 : r0 + rows] = (scores.sub_(row_lse).exp_() @ vt).to(q.dtype)
    return out, lse


#: log2(e): the backward computes ``exp(x)`` as ``exp2(x log2 e)``, the factor folded into q, the
#: logsumexp and the bias add; torch's CPU ``exp2`` ran about 4x faster than ``exp`` here.
_LOG2E = 1.4426950408889634


def _chunked_backward(
    grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, bias: Tensor, out: Tensor, lse: Tensor, budget: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(dq, dk, dv, dbias)`` of ``softmax(q k^T c^-1/2 + bias) v``, tile by tile.

    Per tile, with ``P = exp(S - lse)`` recomputed: ``dv += P^T dO``, ``dS = P (dO v^T - D)``
    (``D`` = row sums of ``dO * out``), ``dq = dS k c^-1/2``, ``dk += dS^T q c^-1/2``,
    ``dbias += sum over windows of dS``. ``- lse`` and ``- D`` ride in the matrix products as one
    extra channel (``[q c^-1/2, -lse] . [k, 1]``, ``[dO, -D] . [v, 1]``), saving two passes
    over each tile; dk and dv are accumulated transposed (``dO^T P``, ``q^T dS``: twice as fast
    as ``P^T dO`` with MKL at these shapes)."""
    windows, heads, n, c = q.shape
    dtype = _compute_dtype(q.dtype)
    scale = c**-0.5
    span, rows = _tile_shape(heads, n, budget)
    q, k, v, grad_out, out = (t.to(dtype) for t in (q, k, v, grad_out, out))
    ones = torch.ones_like(k[..., :1])
    delta = (grad_out * out).sum(-1, keepdim=True)
    # (windows * heads, ...): windows and heads merged so that every product is one bmm
    q_ext = torch.cat([q * (scale * _LOG2E), lse.to(dtype).unsqueeze(-1) * -_LOG2E], -1).flatten(0, 1)
    k_ext = torch.cat([k, ones], -1).flatten(0, 1).transpose(1, 2).contiguous()  # (.., c + 1, N)
    g_ext = torch.cat([grad_out, -delta], -1).flatten(0, 1)
    v_ext = torch.cat([v, ones], -1).flatten(0, 1).transpose(1, 2).contiguous()
    q, k, grad_out = (t.flatten(0, 1) for t in (q, k, grad_out))
    bias = bias.to(dtype)
    dq = torch.empty_like(q)
    dk_t = torch.zeros(windows * heads, c, n, dtype=dtype, device=q.device)
    dv_t = torch.zeros_like(dk_t)
    dbias = torch.zeros(heads, n, n, dtype=dtype, device=q.device)
    size = span * heads * rows * n
    probs_buffer = torch.empty(size, dtype=dtype, device=q.device)
    grads_buffer = torch.empty(size, dtype=dtype, device=q.device)
    for w0 in range(0, windows, span):
        w1 = min(w0 + span, windows)
        t0, t1 = w0 * heads, w1 * heads  # rows of the merged (windows * heads) dimension
        for r0 in range(0, n, rows):
            r1 = min(r0 + rows, n)
            shape = (t1 - t0, r1 - r0, n)
            count = shape[0] * shape[1] * n
            probs = torch.bmm(q_ext[t0:t1, r0:r1], k_ext[t0:t1], out=probs_buffer[:count].view(shape))
            probs.view(w1 - w0, heads, r1 - r0, n).add_(bias[:, r0:r1], alpha=_LOG2E)
            probs.exp2_()  # P = exp(S - lse)
            dv_t[t0:t1].baddbmm_(grad_out[t0:t1, r0:r1].transpose(1, 2), probs)
            dscores = torch.bmm(g_ext[t0:t1, r0:r1], v_ext[t0:t1], out=grads_buffer[:count].view(shape))
            dscores.mul_(probs)  # dS = P (dP - D)
            if w1 - w0 == 1:
                dbias[:, r0:r1] += dscores
            else:
                dbias[:, r0:r1] += dscores.view(w1 - w0, heads, r1 - r0, n).sum(0)
            dq[t0:t1, r0:r1] = torch.bmm(dscores, k[t0:t1])
            dk_t[t0:t1].baddbmm_(q[t0:t1, r0:r1].transpose(1, 2), dscores)
    shape = (windows, heads, n, c)
    dk = (dk_t.transpose(1, 2) * scale).reshape(shape)
    return (dq * scale).view(shape), dk, dv_t.transpose(1, 2).reshape(shape), dbias


class ChunkedAttention(torch.autograd.Function):
    """``softmax(q k^T / sqrt(c) + bias) v`` for ``(windows, heads, N, c)`` tensors and an
    ``(heads, N, N)`` bias, with a memory-bounded backward that also returns the bias gradient
    (see ``CHUNK_SCORE_ELEMENTS``). Saved for backward: q, k, v, the bias, the output and the
    ``(windows, heads, N)`` logsumexp. The bias keeps its dtype (and its gradient is returned in
    it) when q, k, v are bf16 or fp16; the backward computes in float32 then."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, bias: Tensor, budget: int = CHUNK_SCORE_ELEMENTS) -> Tensor:
        # torch's CPU flash kernel, called directly, reads its operands as if their last axis were
        # contiguous: one window's q, k, v are views of the projection (no copy) and must be copied
        q, k, v = (t.contiguous() for t in (q, k, v))
        with torch.autocast(q.device.type, enabled=False):
            out, lse = _chunked_forward(q, k, v, bias, budget)
        ctx.save_for_backward(q, k, v, bias, out, lse)
        ctx.budget = budget
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        q, k, v, bias, out, lse = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        with torch.autocast(q.device.type, enabled=False):
            if not ctx.needs_input_grad[3] and q.device.type == "cpu" and _cpu_flash_backward is not None:
                mask = bias.to(q.dtype).unsqueeze(0)  # no bias gradient: torch's fused backward
                dq, dk, dv = _cpu_flash_backward(grad_out, q, k, v, out, lse, 0.0, False, attn_mask=mask)
                return dq, dk, dv, None, None
            dq, dk, dv, dbias = _chunked_backward(grad_out, q, k, v, bias, out, lse, ctx.budget)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dbias.to(bias.dtype), None


def chunked_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, budget: int = CHUNK_SCORE_ELEMENTS) -> Tensor:
    """``softmax(q k^T / sqrt(c) + bias) v`` through :class:`ChunkedAttention`; ``bias`` is the
    ``(heads, N, N)`` bias matrix (its gradient flows back to whatever built it)."""
    return ChunkedAttention.apply(q, k, v, bias, budget)


def _chunked(q: Tensor, k: Tensor, v: Tensor, table: BiasParameters, window_size: int) -> Tensor:
    return chunked_attention(q, k, v, relative_position_bias(table, window_size))


#: name -> kernel. ``auto`` is resolved per device by :func:`resolve_backend`.
ATTENTION_BACKENDS: dict[str, Callable[[Tensor, Tensor, Tensor, Tensor, int], Tensor]] = {
    "naive": _naive,
    "sdpa": _sdpa,
    "flex": _flex,
    "flash": _flash,
    "chunked": _chunked,
    "sdpa_factors": _sdpa_factors,
}

#: The backend ``auto`` picks on each device type: the fastest one that is exact there, in
#: inference and when gradients are needed.
_AUTO = {"cpu": "sdpa", "cuda": "sdpa"}
_AUTO_TRAINING = {"cpu": "chunked", "cuda": "sdpa"}

#: FlashBias factors in inference: ``auto`` runs the unbiased sdpa on ``c + r`` channels
#: (:func:`_sdpa_factors`) instead of sdpa with the ``(heads, N, N)`` float mask when the rank r is
#: at most this, per (device type, precision); absent: always the mask. Measured on this
#: project's CPU (AMD EPYC, 2 cores, no AMX; benchmarks/inference_bounds.py, one ESC x4 block: 60
#: windows x 4 heads x N=1024, head dim 16): masked 0.43 s vs unbiased 1.20 s (r=48) and 4.00 s
#: (r=240) in fp32, 0.51 vs 1.01 s and 0.61 vs 3.32 s in bf16 -- the mask wins at every rank (the
#: unbiased kernel does (16+r)/16 times the work), so no CPU entry. CUDA: not measured here.
_AUTO_FACTORS_MAX_RANK: dict[tuple[str, str], int] = {}


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


_logged: set[tuple[str, str, str]] = set()


def resolve_backend(
    attn_type: str, device: torch.device, *, training: bool = False, factor_rank: int | None = None
) -> str:
    """The backend that runs for ``attn_type`` on ``device``; logged once per combination.

    When gradients are needed on the CPU (``training``), ``auto`` is ``chunked`` (fp32 and bf16
    autocast): sdpa's backward there is torch's unfused math path, which keeps every window's
    ``N x N`` probabilities.
    ``flex`` has no backward pass on the CPU: ``chunked`` computes the same attention instead, and
    the log says so (the authors' ESC-Real option files ask for ``Flex``, written for GPUs)."""
    autocast = device.type == "cpu" and torch.is_autocast_enabled("cpu")
    auto = _AUTO_TRAINING if training else _AUTO
    name = auto.get(device.type, "naive") if attn_type == "auto" else attn_type
    if attn_type == "auto" and name == "sdpa" and not training and factor_rank is not None:
        precision = "bf16" if autocast and torch.get_autocast_dtype("cpu") == torch.bfloat16 else "fp32"
        if factor_rank <= _AUTO_FACTORS_MAX_RANK.get((device.type, precision), 0):
            name = "sdpa_factors"
    how = f"auto on {device.type}" if attn_type == "auto" else f"requested, on {device.type}"
    if training and attn_type == "auto":
        how += ", training"
    if name == "flex" and device.type == "cpu" and training:
        name, how = "chunked", "flex requested; FlexAttention has no backward pass on CPU, same math with chunked"
    _check_available(name, device)
    key = (attn_type, name, device.type)
    if key not in _logged:
        _logged.add(key)
        logger.info(f"ESC window attention backend: {name} ({how})")
    return name


def attention(q: Tensor, k: Tensor, v: Tensor, table: BiasParameters, window_size: int, backend: str) -> Tensor:
    """``softmax(q k^T / sqrt(c) + bias) v`` per window and head with the named backend; ``table``
    is the relative-position table or the FlashBias factor pair."""
    return ATTENTION_BACKENDS[backend](q, k, v, table, window_size)
