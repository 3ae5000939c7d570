"""The ``chunked`` attention backend (esc_arch/archs/chunked_attention.py): a custom autograd function
whose backward recomputes the probabilities tile by tile and returns the bias gradient. Every
result is compared with the explicit math (``naive``): forward, q/k/v gradients, the gradients of
the relative-position table and of FlashBias factors, tile boundaries, the whole network."""

import logging

import pytest
import torch

from esc_arch.archs import attention
from esc_arch.archs import chunked_attention as chunked_module
from esc_arch.archs.attention import relative_position_bias, resolve_backend
from esc_arch.archs.chunked_attention import ChunkedAttention, _tile_shape, chunked_attention


def naive(q, k, v, bias):
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1) + bias.to(q.dtype)
    return scores.softmax(-1) @ v


def make(window=8, heads=2, c=8, windows=5, dtype=torch.float32, flashbias_rank=None):
    """q, k, v of ``(windows, heads, N, c)`` and bias parameters (a table of strong, trained-like
    magnitude, or a FlashBias factor pair), all requiring gradients."""
    n = window * window
    q, k, v = (torch.randn(windows, heads, n, c, dtype=dtype, requires_grad=True) for _ in range(3))
    if flashbias_rank is None:
        params = torch.nn.Parameter(torch.randn(heads, (2 * window - 1) ** 2, dtype=dtype))
    else:
        params = tuple(torch.nn.Parameter(0.3 * torch.randn(heads, n, flashbias_rank, dtype=dtype)) for _ in "qk")
    return q, k, v, params


def grads(backend, q, k, v, params, window, grad_out, budget=None):
    """Output and gradients of q, k, v and the bias parameters through ``backend``."""
    bias = relative_position_bias(params, window)
    if backend == "naive":
        out = naive(q, k, v, bias)
    else:
        out = chunked_attention(q, k, v, bias, *([budget] if budget else []))
    leaves = (q, k, v, *(params if isinstance(params, tuple) else (params,)))
    return out, torch.autograd.grad(out, leaves, grad_out)


def assert_same(params_layout, window, windows, budget, dtype, atol):
    q, k, v, params = make(window=window, windows=windows, dtype=dtype, flashbias_rank=params_layout)
    grad_out = torch.randn(q.shape, dtype=dtype)
    expected, expected_grads = grads("naive", q, k, v, params, window, grad_out)
    out, got = grads("chunked", q, k, v, params, window, grad_out, budget)
    torch.testing.assert_close(out, expected, atol=atol, rtol=0)
    names = ["q", "k", "v", *(["flashbias_q", "flashbias_k"] if params_layout else ["table"])]
    for name, mine, reference in zip(names, got, expected_grads, strict=True):
        assert reference.abs().max() > 100 * atol, f"{name}: gradient too small to test"
        torch.testing.assert_close(mine, reference, atol=atol, rtol=0, msg=lambda m, name=name: f"{name}: {m}")


# --------------------------------------------------------------------------- tiles


def test_tile_shape_is_bounded_by_the_budget():
    assert _tile_shape(heads=4, n=1024, budget=1 << 20) == (1, 256)  # ESC: one window, 256 query rows
    assert _tile_shape(heads=2, n=64, budget=3 * 2 * 64 * 64) == (3, 64)  # whole windows
    assert _tile_shape(heads=4, n=1024, budget=1000) == (1, 1)  # at least one row
    for heads, n, budget in [(4, 1024, 1 << 20), (2, 64, 3 * 2 * 64 * 64 + 5), (3, 1024, 5 * 3 * 1024 + 7)]:
        span, rows = _tile_shape(heads, n, budget)
        assert span * heads * rows * n <= budget


@pytest.mark.parametrize("layout", [None, 4], ids=["table", "flashbias"])
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.float64, 1e-10)], ids=["fp32", "fp64"])
def test_chunked_equals_naive_in_tiles_of_whole_windows(layout, dtype, atol):
    """7 windows in tiles of 3: the last tile holds one window."""
    span, rows = _tile_shape(2, 64, 3 * 2 * 64 * 64)
    assert (span, rows) == (3, 64) and 7 % span
    assert_same(layout, window=8, windows=7, budget=3 * 2 * 64 * 64, dtype=dtype, atol=atol)


@pytest.mark.parametrize("layout", [None, 4], ids=["table", "flashbias"])
def test_chunked_equals_naive_in_tiles_of_query_rows(layout):
    """Tiles of 24 query rows over 64: the last tile holds 16 rows."""
    budget = 24 * 2 * 64
    assert _tile_shape(2, 64, budget) == (1, 24)
    assert_same(layout, window=8, windows=3, budget=budget, dtype=torch.float64, atol=1e-10)


@pytest.mark.parametrize("layout", [None, 16], ids=["table", "flashbias"])
def test_chunked_equals_naive_at_the_published_window(layout):
    """ESC's 32x32 windows (N = 1024), head dim 16, the default budget (tiles of 256 rows of one
    window, all heads), and one budget whose last tile is short (300 rows, then 124)."""
    torch.manual_seed(1)
    q, k, v, params = make(window=32, heads=4, c=16, windows=2, flashbias_rank=layout)
    grad_out = torch.randn(q.shape)
    expected, expected_grads = grads("naive", q, k, v, params, 32, grad_out)
    for budget in (None, 300 * 4 * 1024):
        out, got = grads("chunked", q, k, v, params, 32, grad_out, budget)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
        for mine, reference in zip(got, expected_grads, strict=True):
            assert reference.abs().max() > 1e-3
            torch.testing.assert_close(mine, reference, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- the function itself


def test_backward_keeps_no_scores():
    """What the function saves for backward grows with windows x N x c, never windows x N^2."""
    q, k, v, table = make(window=8, windows=6)
    out = chunked_attention(q, k, v, relative_position_bias(table, 8))
    windows, heads, n, c = q.shape
    saved = sum(t.numel() for t in out.grad_fn.saved_tensors)
    assert saved == 4 * q.numel() + windows * heads * n + heads * n * n  # q, k, v, out, lse, bias


def test_explicit_forward_equals_the_fused_one(monkeypatch):
    """Devices without torch's fused CPU kernel compute the forward (and the logsumexp the
    backward needs) tile by tile."""
    q, k, v, table = make(windows=5)
    grad_out = torch.randn(q.shape)
    fused, fused_grads = grads("chunked", q, k, v, table, 8, grad_out, budget=2 * 2 * 64 * 64)
    monkeypatch.setattr(chunked_module, "_cpu_flash", None)
    explicit, explicit_grads = grads("chunked", q, k, v, table, 8, grad_out, budget=2 * 2 * 64 * 64)
    torch.testing.assert_close(explicit, fused, atol=1e-6, rtol=0)
    for mine, reference in zip(explicit_grads, fused_grads, strict=True):
        torch.testing.assert_close(mine, reference, atol=1e-5, rtol=0)


def test_frozen_bias_uses_the_fused_backward(monkeypatch):
    q, k, v, table = make(windows=3)
    bias = relative_position_bias(table, 8).detach()
    grad_out = torch.randn(q.shape)
    expected = torch.autograd.grad(naive(q, k, v, bias), (q, k, v), grad_out)
    monkeypatch.setattr(chunked_module, "_chunked_backward", None)  # would fail if called
    got = torch.autograd.grad(chunked_attention(q, k, v, bias), (q, k, v), grad_out)
    for mine, reference in zip(got, expected, strict=True):
        torch.testing.assert_close(mine, reference, atol=1e-5, rtol=0)


def test_bf16_autocast_keeps_the_bias_gradient_in_fp32():
    q, k, v, table = make(windows=3)
    bias = relative_position_bias(table, 8)
    grad_out = torch.randn(q.shape)
    expected = torch.autograd.grad(naive(q, k, v, bias), (q, table), grad_out)
    with torch.autocast("cpu", torch.bfloat16):
        qb, kb, vb = (t.to(torch.bfloat16) for t in (q, k, v))
        out = ChunkedAttention.apply(qb, kb, vb, bias)
    assert out.dtype == torch.bfloat16
    dq, dtable = torch.autograd.grad(out, (q, table), grad_out.to(torch.bfloat16))
    assert dtable.dtype == torch.float32
    for mine, reference in ((dq, expected[0]), (dtable, expected[1])):
        assert (mine - reference).abs().max() < 0.05 * reference.abs().max()


def test_bf16_forward_takes_the_float32_bias_unrounded():
    """Under bf16 the chunked forward passes the float32 bias to the fused kernel as it is (the
    float32 backward recomputes the probabilities from that same bias): its output equals the
    inference sdpa's, which does the same, and differs from a bf16-rounded bias's."""
    q, k, v, table = make(windows=3)
    qb, kb, vb = (t.detach().to(torch.bfloat16) for t in (q, k, v))
    bias = relative_position_bias(table, 8).detach() * 7  # large enough that rounding to bf16 shows
    with torch.no_grad():
        out = ChunkedAttention.apply(qb, kb, vb, bias)
        sdpa = torch.nn.functional.scaled_dot_product_attention(qb, kb, vb, attn_mask=bias.unsqueeze(0))
        rounded = torch.nn.functional.scaled_dot_product_attention(qb, kb, vb, attn_mask=bias.bfloat16().unsqueeze(0))
    assert torch.equal(out, sdpa)
    assert not torch.equal(out, rounded)


# --------------------------------------------------------------------------- choice and network


def test_auto_trains_with_chunked_on_cpu_and_infers_with_sdpa(caplog):
    attention._logged_backends.clear()
    cpu = torch.device("cpu")
    with caplog.at_level(logging.INFO, logger="basicsr.esc"):
        assert resolve_backend("auto", cpu, training=True) == "chunked"
        assert resolve_backend("auto", cpu) == "sdpa"
        assert resolve_backend("flex", cpu, training=True) == "chunked"
        assert resolve_backend("sdpa", cpu, training=True) == "sdpa"  # asked for by name: kept
    assert "backend: chunked (auto on cpu, training)" in caplog.text
    with torch.autocast("cpu", torch.bfloat16):  # bf16 training: chunked too (0.60 s vs sdpa 1.3 s)
        assert resolve_backend("auto", cpu, training=True) == "chunked"
        assert resolve_backend("auto", cpu) == "sdpa"


def test_network_training_step_equals_naive(tiny_net, monkeypatch):
    """The tiny network (window 8, 2 heads, odd input size so windows are padded), one backward
    with ``auto`` (chunked on the CPU in training) and with ``naive``: the same gradient for
    every parameter, the bias tables included."""
    calls = []
    chunked = attention.ATTENTION_BACKENDS["chunked"]
    monkeypatch.setitem(attention.ATTENTION_BACKENDS, "chunked", lambda *a: calls.append(1) or chunked(*a))
    x = torch.rand(3, 3, 13, 19)
    net = tiny_net(attn_type="naive").train()
    with torch.no_grad():  # a strong bias, so its gradient matters
        for name, p in net.named_parameters():
            if "relative_position_bias" in name:
                p.normal_(0, 0.5)
    results = {}
    for attn_type in ("naive", "auto"):
        net.set_attn_type(attn_type)
        net.zero_grad(set_to_none=True)
        net(x).square().mean().backward()
        results[attn_type] = {n: p.grad for n, p in net.named_parameters()}
    assert calls, "the chunked backend did not run"
    assert any("relative_position_bias" in n for n in results["naive"])
    for name, reference in results["naive"].items():
        assert reference.abs().max() > 0, name
        torch.testing.assert_close(
            results["auto"][name], reference, atol=1e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}"
        )


def test_flashbias_network_training_step_equals_naive(tiny_net):
    x = torch.rand(2, 3, 16, 9)
    net = tiny_net(attn_type="naive", flashbias_rank=4).train()
    with torch.no_grad():  # the factors start at zero
        for name, p in net.named_parameters():
            if "flashbias" in name:
                p.normal_(0, 0.3)
    results = {}
    for attn_type in ("naive", "auto"):
        net.set_attn_type(attn_type)
        net.zero_grad(set_to_none=True)
        net(x).square().mean().backward()
        results[attn_type] = {n: p.grad for n, p in net.named_parameters()}
    assert any("flashbias_q" in n for n in results["naive"])
    for name, reference in results["naive"].items():
        torch.testing.assert_close(
            results["auto"][name], reference, atol=1e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}"
        )
