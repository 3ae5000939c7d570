"""FlashBias: the bias as rank-r factors, run as extra query/key channels of a bias-free kernel.

With a bias matrix ``B ~ U V^T`` (per head, ``U, V`` of shape ``(N, r)``),
``[q c^-1/2, U] . [k, V]^T = q k^T c^-1/2 + U V^T``, so ``softmax(q k^T c^-1/2 + B) v`` is an
unbiased attention on ``c + r`` channels with scale 1 (v zero-padded to the same width, the
extra output channels cropped). :func:`factor_channels` builds those operands; two kernels use
them:

- ``sdpa_factors`` (:mod:`esc_arch.archs.attention`): an unbiased
  ``F.scaled_dot_product_attention``, ESC-RIB's ``sdpa`` and ``auto``;
- ``flash`` (:func:`flash`): flash-attn (CUDA, fp16/bf16), head dims a multiple of 8 and at most
  ``FLASH_MAX_HEAD_DIM``. A relative-position table is factored first
  (:func:`fold_relative_position_bias`, rank ``FLASH_MAX_HEAD_DIM - c``); FlashBias factors are
  used as they are.

:func:`low_rank_factors` is the one truncated factorisation of a bias matrix: the ``flash`` fold
and the checkpoint conversion table -> FlashBias (:func:`esc_arch.convert_state_dict`) use it.

Module state: ``_fold_cache`` (the factors of each table, per table version; weakly keyed) and
``_logged_fold`` (the (rank, window) pairs whose fold error has been logged).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary

from ..config import FLASH_MAX_HEAD_DIM, default_flashbias_rank
from .position_bias import BiasParameters, relative_position_bias

__all__ = [
    "factor_channels",
    "flash",
    "flash_rank",
    "fold_relative_position_bias",
    "folded_attention",
    "low_rank_factors",
]

logger = logging.getLogger("basicsr.esc")

#: inference cache: table -> ((version, window, rank), (U, V, max error))
_fold_cache: WeakIdKeyDictionary = WeakIdKeyDictionary()
#: (rank, window) pairs whose fold error has been logged
_logged_fold: set[tuple[int, int]] = set()

#: subspace iterations of :func:`low_rank_factors` (each one product with B and one with B^T)
POWER_ITERATIONS = 4
#: matrices of at most this many rows take the full SVD in :func:`low_rank_factors` (it is cheap
#: there, and exact for any spectrum)
FULL_SVD_MAX_SIZE = 512


def low_rank_factors(bias: Tensor, rank: int) -> tuple[Tensor, Tensor, float]:
    """``(U, V, max_error)``: rank-``rank`` factors of each ``(N, N)`` matrix of ``bias``
    ``(heads, N, N)``, ``U = u_r sqrt(s_r)``, ``V = v_r sqrt(s_r)`` from its leading singular
    triplets, and the largest absolute entry of ``bias - U V^T``. Computed in float64, returned in
    ``bias``'s dtype.

    A randomized truncated SVD: a fixed-seed Gaussian sketch of ``2 * rank`` columns, refined by
    ``POWER_ITERATIONS`` subspace iterations, then the SVD of the small projected matrix (Halko,
    Martinsson, Tropp, arXiv:0909.4061). Deterministic; on trained tables its error is within 1% of
    the full SVD's and its product within 5% of that error (``tests/test_convert.py``). Small
    matrices (at most ``FULL_SVD_MAX_SIZE`` rows) and sketches of half the columns or more (where
    the iterations cost as much as the full SVD) take the full SVD."""
    matrix = bias.detach().double().cpu()
    heads, n, _ = matrix.shape
    width = 2 * rank
    if 2 * width >= n or n <= FULL_SVD_MAX_SIZE:
        u, s, vh = torch.linalg.svd(matrix)
    else:
        generator = torch.Generator().manual_seed(0)
        sketch = torch.randn(heads, n, width, generator=generator, dtype=matrix.dtype)
        basis = torch.linalg.qr(matrix @ sketch).Q
        for _ in range(POWER_ITERATIONS):
            basis = torch.linalg.qr(matrix.transpose(1, 2) @ basis).Q
            basis = torch.linalg.qr(matrix @ basis).Q
        # the SVD of the tall (N, 2r) transpose: LAPACK's wide-matrix path is far slower
        small_v, s, small_uh = torch.linalg.svd(matrix.transpose(1, 2) @ basis, full_matrices=False)
        u, vh = basis @ small_uh.transpose(1, 2), small_v.transpose(1, 2)
    root = s[:, :rank].sqrt().unsqueeze(1)
    left, right = u[:, :, :rank] * root, vh[:, :rank, :].transpose(1, 2) * root
    error = (matrix - left @ right.transpose(1, 2)).abs().max().item()
    return left.to(bias.dtype).to(bias.device), right.to(bias.dtype).to(bias.device), error


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
        bias = relative_position_bias(table.detach().float(), window_size)
        cached = _fold_cache[table] = (key, low_rank_factors(bias, rank))
    return cached[1]


def flash_rank(head_dim: int) -> int:
    """The largest bias rank that fits flash-attn's head-dim limit beside ``head_dim``
    channels, keeping the total a multiple of 8."""
    return default_flashbias_rank(head_dim)


def factor_channels(
    q: Tensor, k: Tensor, v: Tensor, left: Tensor, right: Tensor, *, multiple: int = 1
) -> tuple[Tensor, Tensor, Tensor]:
    """The operands of the unbiased attention equal to the biased one with bias ``left right^T``:
    ``[q c^-1/2, left]``, ``[k, right]`` and ``[v, 0]``, ``(windows, heads, N, c + r)`` zero-padded
    to a multiple of ``multiple`` channels; run with scale 1 and crop the output to ``c``."""
    windows, _, _, c = q.shape
    left, right = (t.to(q.dtype).unsqueeze(0).expand(windows, -1, -1, -1) for t in (left, right))
    dim = c + left.shape[-1]
    padding = -dim % multiple
    q_ext = F.pad(torch.cat([q * c**-0.5, left], dim=-1), (0, padding))
    k_ext = F.pad(torch.cat([k, right], dim=-1), (0, padding))
    return q_ext, k_ext, F.pad(v, (0, dim + padding - c))


def folded_attention(
    q: Tensor, k: Tensor, v: Tensor, table: BiasParameters, window_size: int, *, rank: int, kernel: Callable
) -> Tensor:
    """Windowed biased attention through a bias-free kernel with flash-attn's interface:
    ``kernel(q, k, v, softmax_scale=...)`` on ``(batch, seq, heads, dim)`` tensors, head dims in
    multiples of 8."""
    c = q.shape[-1]
    left, right, error = fold_relative_position_bias(table, window_size, rank)
    if not isinstance(table, tuple):
        _log_fold_error(rank, window_size, error)
    operands = factor_channels(q, k, v, left, right, multiple=8)
    layout = [t.transpose(1, 2).contiguous() for t in operands]  # (windows, N, heads, dim)
    out = kernel(*layout, softmax_scale=1.0)
    return out.transpose(1, 2)[..., :c]


def _log_fold_error(rank: int, window_size: int, error: float) -> None:
    if (rank, window_size) not in _logged_fold:
        _logged_fold.add((rank, window_size))
        exact = "exact" if rank == window_size**2 else "truncated SVD"
        logger.info(f"flash: relative position bias folded at rank {rank} ({exact}), max abs error {error:.2e}")


def flash(q: Tensor, k: Tensor, v: Tensor, table: BiasParameters, window_size: int) -> Tensor:
    """flash-attn's ``flash_attn_func`` in fp16/bf16 (bf16 for float32 inputs), the bias folded
    into extra query/key channels."""
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
