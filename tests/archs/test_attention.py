"""Windowed attention (esc_arch/archs/attention.py, position_bias.py, flashbias.py): the
relative-position bias against its index form, the backends, and attn_type='flash', which folds
the bias into extra query/key channels. The flash CUDA kernel cannot run here; its math runs on
the CPU with SDPA standing in for flash_attn_func (same (batch, seq, heads, dim) layout and
softmax_scale argument) and is compared with naive."""

import logging

import pytest
import torch
import torch.nn.functional as F

from esc_arch import build_preset
from esc_arch.archs import attention, flashbias
from esc_arch.archs.attention import relative_position_bias, relative_position_index
from esc_arch.archs.flashbias import factor_channels, fold_relative_position_bias, folded_attention

# --------------------------------------------------------------------------- the bias


def test_relative_position_index_is_derived_not_stored():
    net = build_preset("ESC-XL", 4)
    assert not any("index" in key for key in net.state_dict())
    index = relative_position_index(48)
    assert index.shape == (48 * 48, 48 * 48)
    # key minus query, row-major tokens: token 0 = (0, 0), token 49 = (1, 1)
    assert index[0, 49].item() == (1 + 47) * 95 + (1 + 47)
    assert index[49, 0].item() == (-1 + 47) * 95 + (-1 + 47)
    assert relative_position_index(48).data_ptr() == index.data_ptr()  # built once per window size


@pytest.mark.parametrize("w", [1, 2, 8, 32])
def test_bias_matrix_equals_the_table_gathered_by_the_index(w):
    table = torch.nn.Parameter(torch.randn(3, (2 * w - 1) ** 2))
    expected = table[:, relative_position_index(w)]
    with torch.no_grad():
        assert torch.equal(relative_position_bias(table, w), expected)  # inference (cached) path
    built = relative_position_bias(table, w)  # training path
    assert torch.equal(built, expected)
    grad = torch.randn_like(expected)
    (mine,) = torch.autograd.grad(built, table, grad)
    (reference,) = torch.autograd.grad(expected, table, grad)
    torch.testing.assert_close(mine, reference, atol=1e-4, rtol=1e-5)


def test_bias_matrix_is_built_once_per_weight_version_in_inference():
    table = torch.nn.Parameter(torch.randn(2, 225))
    with torch.no_grad():
        first = relative_position_bias(table, 8)
        assert relative_position_bias(table, 8) is first  # reused
        table.add_(1.0)  # new weights: rebuilt
        torch.testing.assert_close(relative_position_bias(table, 8), first + 1.0)
    trained = relative_position_bias(table, 8)  # training: never cached, gradients flow
    assert trained.requires_grad and trained is not relative_position_bias(table, 8)


# --------------------------------------------------------------------------- backends


def test_auto_logs_the_backend_that_runs(tiny_net, caplog):
    attention._logged_backends.clear()
    net = tiny_net(attn_type="auto").eval()
    with caplog.at_level(logging.INFO, logger="basicsr.esc"), torch.no_grad():
        net(torch.rand(1, 3, 8, 8))
    assert "backend: sdpa (auto on cpu)" in caplog.text


def test_flash_without_flash_attn_is_a_clear_error(tiny_net):
    try:
        import flash_attn  # noqa: F401

        pytest.skip("flash-attn is installed")
    except ImportError:
        pass
    net = tiny_net(attn_type="flash")
    with pytest.raises(RuntimeError, match="flash-attn"):
        net(torch.rand(1, 3, 8, 8))


@pytest.mark.slow
def test_flex_compiles_once_for_every_image_size_and_batch(tiny_net):
    """One shape family (heads, tokens per window, head dim, dtype, device): one compile,
    whatever the number of windows; the zero-padded last group changes nothing."""
    from torch._dynamo.utils import counters

    net = tiny_net(attn_type="naive").eval()
    inputs = [torch.rand(1, 3, 8, 8), torch.rand(2, 3, 13, 17), torch.rand(3, 3, 30, 9), torch.rand(1, 3, 40, 41)]
    with torch.no_grad():
        expected = [net(x) for x in inputs]
        torch._dynamo.reset()
        before = counters["stats"]["unique_graphs"]
        net.set_attn_type("flex")
        for x, reference in zip(inputs, expected, strict=True):
            torch.testing.assert_close(net(x), reference, atol=1e-5, rtol=0)
    assert counters["stats"]["unique_graphs"] - before == 1


# --------------------------------------------------------------------------- flash: the folding


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
def test_folded_network_equals_naive_and_logs_the_error(tiny_net, monkeypatch, caplog):
    """The whole network with the folded stand-in in place of the sdpa backend."""
    net = tiny_net(attn_type="naive").eval()
    x = torch.rand(2, 3, 13, 11)
    expected = net(x)
    monkeypatch.setitem(
        attention.ATTENTION_BACKENDS,
        "sdpa",
        lambda q, k, v, table, w: folded_attention(q, k, v, table, w, rank=w * w, kernel=sdpa_stand_in),
    )
    net.set_attn_type("sdpa")
    flashbias._logged_fold.clear()
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
    _, _, error = fold_relative_position_bias(table, w, flashbias.flash_rank(16))
    bias = relative_position_bias(table, w)
    assert error < 0.02 * (bias.max() - bias.min()).item()


def test_folding_refuses_training():
    table = torch.randn(2, 225, requires_grad=True)
    with pytest.raises(RuntimeError, match="for inference"):
        fold_relative_position_bias(table, 8, 8)
    with pytest.raises(ValueError, match="rank must be in"):
        fold_relative_position_bias(table.detach(), 8, 65)


# --------------------------------------------------------------------------- FlashBias factors, unbiased sdpa


@pytest.mark.parametrize("rank", [4, 48])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_factors_folded_into_channels_equal_the_masked_sdpa(rank, dtype):
    """[q c^-1/2, fq] . [k, fk]^T = q k^T c^-1/2 + fq fk^T: the unbiased sdpa on c + r channels
    gives the masked attention (and naive's)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 64, 16).to(dtype) for _ in range(3))
    factors = tuple(torch.randn(2, 64, rank) * rank**-0.5 for _ in range(2))
    with torch.no_grad():
        folded = attention.sdpa_factors(q, k, v, factors, 8).float()
        masked = attention._sdpa(q, k, v, factors, 8).float()
        naive = attention._naive(q.double(), k.double(), v.double(), tuple(f.double() for f in factors), 8).float()
    tolerance = 1e-5 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(folded, naive, atol=tolerance, rtol=0)
    torch.testing.assert_close(masked, naive, atol=tolerance, rtol=0)


def test_factors_path_takes_a_table_through_the_mask():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 64, 8) for _ in range(3))
    table = torch.randn(2, 15 * 15)
    torch.testing.assert_close(attention.sdpa_factors(q, k, v, table, 8), attention._sdpa(q, k, v, table, 8))


def test_auto_keeps_the_mask_for_flashbias_factors():
    """``auto`` runs the masked sdpa for either bias layout in inference (``sdpa_factors`` is
    reached by name only: ESC-RIB, or a program that points ``sdpa`` at it)."""
    cpu = torch.device("cpu")
    assert attention.resolve_backend("auto", cpu) == "sdpa"
    assert attention.resolve_backend("auto", cpu, training=True) == "chunked"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert attention.resolve_backend("auto", cpu) == "sdpa"


def test_factor_channels_pad_to_the_multiple():
    q, k, v = (torch.randn(3, 2, 64, 16) for _ in range(3))
    left, right = (torch.randn(2, 64, 5) for _ in range(2))
    q_ext, k_ext, v_ext = factor_channels(q, k, v, left, right, multiple=8)
    assert q_ext.shape == k_ext.shape == v_ext.shape == (3, 2, 64, 24)
    assert q_ext[..., 21:].abs().max() == 0 and v_ext[..., 16:].abs().max() == 0
    torch.testing.assert_close(q_ext[..., :16], q * 0.25)
    torch.testing.assert_close(k_ext[0, :, :, 16:21], right)


def test_flashbias_network_with_the_factor_kernel_equals_naive(tiny_net, monkeypatch):
    """A FlashBias network with ``sdpa`` pointed at ``sdpa_factors`` (as benchmarks/gpu_acceptance.py
    runs its flashbias-on-sdpa rows) equals ``naive``."""
    calls = []
    net = tiny_net(flashbias_rank=8, attn_type="auto").eval()
    kernel = lambda *a: calls.append(1) or attention.sdpa_factors(*a)  # noqa: E731
    with torch.no_grad(), attention.backend_kernel("sdpa", kernel):
        for block in net.blocks:
            for factor in (block.attn.flashbias_q, block.attn.flashbias_k):
                factor.normal_(std=0.3)
        x = torch.rand(1, 3, 19, 13)
        out = net(x)
        net.set_attn_type("naive")
        expected = net(x)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert calls


def test_a_backend_kernel_is_swapped_for_the_block_only():
    table = dict(attention.ATTENTION_BACKENDS)
    with pytest.raises(RuntimeError, match="inside"), attention.backend_kernel("sdpa", attention.sdpa_factors):
        assert attention.ATTENTION_BACKENDS["sdpa"] is attention.sdpa_factors
        raise RuntimeError("inside")
    assert attention.ATTENTION_BACKENDS == table
    with pytest.raises(ValueError, match="backend must be one of naive, sdpa, .*; got 'spda'"):
        with attention.backend_kernel("spda", attention.sdpa_factors):
            pass
