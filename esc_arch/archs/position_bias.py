"""The relative-position bias of ESC's window attention, built from its parameters.

The bias has two parameter layouts: the relative-position table ``(heads, (2w-1)^2)`` of the
paper, or FlashBias factors ``(flashbias_q, flashbias_k)``, each ``(heads, N, r)``, whose
product is the ``(heads, N, N)`` bias matrix (the authors' FlashBias checkpoints).

Module state: ``_bias_cache``, the bias matrices built in inference, one per parameter tensor
(weakly keyed: an entry goes with its tensor).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary

__all__ = ["BiasParameters", "relative_position_bias", "relative_position_index"]

#: A window attention's bias parameters: the relative-position table, or the FlashBias
#: factor pair ``(flashbias_q, flashbias_k)``.
BiasParameters = Tensor | tuple[Tensor, Tensor]

#: inference cache: first parameter tensor -> ((versions, window), the bias matrix)
_bias_cache: WeakIdKeyDictionary = WeakIdKeyDictionary()


@functools.lru_cache(maxsize=8)
def _relative_position_index_cpu(window_size: int) -> Tensor:
    w = window_size
    tokens = torch.arange(w * w, device="cpu")  # explicit: never a meta tensor in the cache
    rows, cols = tokens // w, tokens % w
    dy = rows[None, :] - rows[:, None]  # (query, key): key minus query
    dx = cols[None, :] - cols[:, None]
    return (dy + w - 1) * (2 * w - 1) + (dx + w - 1)


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
    faster than the gather."""
    w = window_size
    grid = table.view(table.shape[0], 2 * w - 1, 2 * w - 1)
    windows = grid.unfold(1, w, 1).unfold(2, w, 1)  # (heads, w-1-qy, w-1-qx, ky, kx)
    return windows.flip(1, 2).reshape(table.shape[0], w * w, w * w)


def _bias_matrix(bias: BiasParameters, window_size: int) -> Tensor:
    if isinstance(bias, tuple):
        left, right = bias
        return left @ right.transpose(-2, -1)
    return _expand_table(bias, window_size)


def _tracing() -> bool:
    return torch.compiler.is_compiling() or torch.compiler.is_exporting()


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
