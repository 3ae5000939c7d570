"""``chunked``: biased window attention for training on the CPU, with a memory-bounded backward.

torch has no fused CPU backward for an attention whose float mask needs a gradient: sdpa falls
back to its unfused math path, which materialises (and keeps for backward) the N x N
probabilities of every window and head at once. :class:`ChunkedAttention` keeps q, k, v, the
output and the per-row logsumexp only; its backward recomputes the probabilities tile by tile (a
tile is a few windows, all heads and a band of query rows) and accumulates dq, dk, dv and the
(heads, N, N) bias gradient, the sum over windows of dS. Autograd carries the bias gradient on
to the table (through the expansion) or to the FlashBias factors (through their product).

No module state.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["CHUNK_SCORE_ELEMENTS", "ChunkedAttention", "chunked_attention"]

#: Score elements (windows x heads x query rows x keys) in one tile of the ``chunked`` backward.
#: The backward holds two tile buffers (probabilities, score gradients) of this many elements in
#: the compute dtype (float32 for fp32/bf16/fp16 inputs: 2 x 4 MiB), plus the (heads, N, N) bias
#: gradient (16 MiB at ESC's 4 heads and 32x32 windows), whatever the number of windows. 1M
#: elements (all 4 heads, 256 query rows of one 32x32 window) keeps a tile in the L3 cache; 128K to
#: 32M were measured and 1M was the fastest (docs/performance.md).
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
#: logsumexp and the bias add (torch's CPU ``exp2`` is faster than ``exp``).
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
