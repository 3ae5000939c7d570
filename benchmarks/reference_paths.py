"""Reference implementations that benchmarks compare the shipped code with, kept out of the package.

- :func:`fused_large_and_dynamic` / :func:`fused_convattn`: ConvAttn's large and per-sample
  dynamic kernels as ONE convolution per layer (the sample's depthwise 3x3 kernels, written as a
  diagonal ``(C, C, 3, 3)`` kernel zero-padded to the large kernel's size, added to the shared
  kernel; exact up to rounding). The package runs the authors' two convolutions.
- :func:`bf16_rounded_mask`: under CPU bf16 autocast, the bias mask rounded to bf16 before the
  sdpa call. The package passes the float32 mask as it is.
- :func:`windows_first_sdpa` (kernel :func:`windows_first_attention`): the fused CPU attention
  walking windows first (q, k, v as ``(windows, heads, N, c)``, mask ``(1, heads, N, N)``). The
  package passes heads first (views), so each head's mask is reused across the windows while in
  the cache.
- :func:`grouped_naive_attention`: scores, softmax and product in the input's dtype (a bf16
  softmax under bf16), a few windows at a time: an attention that does not go through the fused
  kernel, tried for bf16 on the CPU.
- :func:`full_svd_factors`: the FlashBias factors of a bias matrix from a full float64 SVD. The
  package uses a randomized truncated SVD (``esc_arch.archs.flashbias.low_rank_factors``).

The context managers patch the package for the duration of a measurement and restore it.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor


def fused_large_and_dynamic(x: Tensor, shared_kernel: Tensor, dynamic: Tensor) -> Tensor:
    """``conv(x, shared_kernel) + depthwise(x, dynamic)`` as one convolution per layer: one
    sample, one dense convolution with the summed kernel; several, a grouped convolution over
    the batch (one group per sample)."""
    batch, channels, height, width = x.shape
    size = shared_kernel.shape[-1]
    border = (size - 3) // 2
    diagonal = torch.diag_embed(dynamic.permute(0, 2, 3, 1)).permute(0, 3, 4, 1, 2)  # (B, C, C, 3, 3)
    kernels = F.pad(diagonal, (border, border, border, border)) + shared_kernel
    if batch == 1:
        return F.conv2d(x, kernels[0], padding=size // 2)
    out = F.conv2d(
        x.reshape(1, batch * channels, height, width),
        kernels.reshape(batch * channels, channels, size, size),
        padding=size // 2,
        groups=batch,
    )
    return out.view(batch, channels, height, width)


@contextlib.contextmanager
def fused_convattn():
    """ESC's ``PLKConv`` runs :func:`fused_large_and_dynamic` while inside."""
    from esc_arch.archs.esc_arch import PLKConv

    def forward(self, x: Tensor, shared_kernel: Tensor) -> Tensor:
        dynamic = self.dwc_proj(x).view(x.shape[0], self.pdim, 3, 3)
        return fused_large_and_dynamic(x, shared_kernel, dynamic)

    saved = PLKConv.forward
    PLKConv.forward = forward
    try:
        yield
    finally:
        PLKConv.forward = saved


@contextlib.contextmanager
def bf16_rounded_mask():
    """The ``sdpa`` backend casts the bias mask to the query's dtype (bf16 under CPU autocast) while inside."""
    from esc_arch.archs import attention

    def sdpa(q, k, v, table, window_size):
        bias = attention.relative_position_bias(table, window_size).to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0))

    with attention.backend_kernel("sdpa", sdpa):
        yield


def windows_first_attention(q: Tensor, k: Tensor, v: Tensor, table, window_size: int) -> Tensor:
    """The fused sdpa on ``(windows, heads, N, c)`` as given, mask ``(1, heads, N, N)``."""
    from esc_arch.archs.attention import relative_position_bias

    bias = relative_position_bias(table, window_size)
    if not (q.device.type == "cpu" and q.dtype == torch.bfloat16):
        bias = bias.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0))


@contextlib.contextmanager
def windows_first_sdpa():
    """The ``sdpa`` backend walks windows first (one whole ``(heads, N, N)`` mask per window) while inside."""
    from esc_arch.archs import attention

    with attention.backend_kernel("sdpa", windows_first_attention):
        yield


def grouped_naive_attention(q: Tensor, k: Tensor, v: Tensor, table, window_size: int, group: int = 4) -> Tensor:
    """``softmax(q k^T c^-1/2 + bias) v`` in the inputs' dtype, ``group`` windows at a time."""
    from esc_arch.archs.attention import relative_position_bias

    bias = relative_position_bias(table, window_size).to(q.dtype)
    scale = q.shape[-1] ** -0.5
    parts = []
    for i in range(0, q.shape[0], group):
        scores = (q[i : i + group] * scale) @ k[i : i + group].transpose(-2, -1) + bias
        parts.append(scores.softmax(dim=-1) @ v[i : i + group])
    return torch.cat(parts)


@contextlib.contextmanager
def reference_inference():
    """Both inference references above at once (the "before" of benchmarks/inference_bounds.py)."""
    with fused_convattn(), bf16_rounded_mask():
        yield


def full_svd_factors(bias: Tensor, rank: int) -> tuple[Tensor, Tensor, float]:
    """``(U, V, max_error)`` of ``bias`` ``(heads, N, N)`` from the full float64 SVD (all ``N``
    singular triplets), truncated to ``rank``."""
    matrix = bias.detach().double()
    u, s, vh = torch.linalg.svd(matrix)
    root = s[:, :rank].sqrt().unsqueeze(1)
    left, right = u[:, :, :rank] * root, vh[:, :rank, :].transpose(1, 2) * root
    error = (matrix - left @ right.transpose(1, 2)).abs().max().item()
    return left.to(bias.dtype), right.to(bias.dtype), error
