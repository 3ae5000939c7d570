"""attn_type='flash' folds the relative position bias into extra query/key channels. The CUDA
kernel cannot run here; its math runs on the CPU with SDPA standing in for flash_attn_func
(same (batch, seq, heads, dim) layout and softmax_scale argument) and is compared with naive."""

import logging

import pytest
import torch
import torch.nn.functional as F

from esc_arch import ESC
from esc_arch.archs import attention
from esc_arch.archs.attention import fold_relative_position_bias, folded_attention, relative_position_bias

TINY = dict(dim=16, pdim=8, kernel_size=5, n_blocks=1, conv_blocks=2, window_size=8, num_heads=2, exp_ratio=1.25)


def sdpa_stand_in(q, k, v, softmax_scale):
    """flash_attn_func's interface on the CPU."""
    out = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)), scale=softmax_scale)
    return out.transpose(1, 2)


def inputs(window=8, heads=2, c=8, windows=3, dtype=torch.float32):
    n = window * window
    q, k, v = (torch.randn(windows, heads, n, c, dtype=dtype) for _ in range(3))
    table = torch.randn(heads, (2 * window - 1) ** 2)  # a strong bias, so folding matters
    return q, k, v, table


@torch.no_grad()
def test_full_rank_folding_equals_naive():
    q, k, v, table = inputs()
    expected = attention._naive(q, k, v, table, 8)
    out = folded_attention(q, k, v, table, 8, rank=64, kernel=sdpa_stand_in)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)
    _, _, error = fold_relative_position_bias(table, 8, 64)
    assert error < 1e-4


@torch.no_grad()
def test_truncated_folding_reports_its_error():
    q, k, v, table = inputs()
    left, right, error = fold_relative_position_bias(table, 8, 16)
    assert left.shape == right.shape == (2, 64, 16)
    bias = relative_position_bias(table, 8)
    assert error == pytest.approx((bias - left @ right.transpose(1, 2)).abs().max().item(), rel=1e-5)
    assert error > 0.1  # a random table is far from rank 16
    exact = attention._naive(q, k, v, table, 8)
    approx = folded_attention(q, k, v, table, 8, rank=16, kernel=sdpa_stand_in)
    assert 0 < (approx - exact).abs().max() < 2 * error  # softmax is 1/2-Lipschitz per logit
    # the best rank-r approximation improves with r
    errors = [fold_relative_position_bias(table, 8, r)[2] for r in (8, 32, 56)]
    assert errors == sorted(errors, reverse=True)


@torch.no_grad()
def test_bf16_folding_matches_naive_fp32_closely():
    q, k, v, table = inputs()
    expected = attention._naive(q, k, v, table, 8)
    out = folded_attention(*(t.bfloat16() for t in (q, k, v)), table, 8, rank=64, kernel=sdpa_stand_in)
    assert out.dtype == torch.bfloat16
    assert (out.float() - expected).abs().max() < 0.1


@torch.no_grad()
def test_folded_network_equals_naive_and_logs_the_error(monkeypatch, caplog):
    """The whole network with the folded stand-in in place of the sdpa backend."""
    net = ESC(**TINY, upscaling_factor=2, attn_type="naive").eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    x = torch.rand(2, 3, 13, 11)
    expected = net(x)
    monkeypatch.setitem(
        attention.ATTENTION_BACKENDS,
        "sdpa",
        lambda q, k, v, table, w: folded_attention(q, k, v, table, w, rank=w * w, kernel=sdpa_stand_in),
    )
    net.set_attn_type("sdpa")
    attention._logged_fold.clear()
    with caplog.at_level(logging.INFO, logger="basicsr.esc"):
        out = net(x)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)
    assert "folded at rank 64 (exact)" in caplog.text


@torch.no_grad()
def test_distance_shaped_bias_folds_well_at_flash_rank():
    """ESC's window (32) and head dim (16) at the rank flash-attn allows (240 of 1024), for a bias
    shaped like trained ones (decaying with distance, plus small noise): error < 2% of its range."""
    w = 32
    dy, dx = torch.meshgrid(torch.arange(-w + 1, w).float(), torch.arange(-w + 1, w).float(), indexing="ij")
    decay = torch.stack([-(dy**2 + dx**2).sqrt() / s for s in (2.0, 4.0, 8.0, 16.0)]).flatten(1)
    table = decay + 0.01 * torch.randn_like(decay)
    _, _, error = fold_relative_position_bias(table, w, attention.flash_rank(16))
    bias = relative_position_bias(table, w)
    assert error < 0.02 * (bias.max() - bias.min()).item()


def test_folding_refuses_training():
    table = torch.randn(2, 225, requires_grad=True)
    with pytest.raises(RuntimeError, match="for inference"):
        fold_relative_position_bias(table, 8, 8)
    with pytest.raises(ValueError, match="rank must be in"):
        fold_relative_position_bias(table.detach(), 8, 65)
