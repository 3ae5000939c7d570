"""benchmarks/reference_paths.py: the reference implementations the benchmarks compare the package
with give the package's results (within float rounding), so their timings compare like with like."""

import pytest
import torch
import torch.nn.functional as F


@pytest.fixture(scope="module")
def reference(benchmark_module):
    with benchmark_module("reference_paths") as module:
        yield module


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("grad", [False, True])
def test_fused_convattn_kernel_equals_the_two_convolutions(reference, batch, grad):
    """One convolution with the shared kernel plus the padded diagonal 3x3 (dense for one sample,
    grouped over the batch for several) equals the large conv plus the per-sample depthwise
    conv; gradients too."""
    from esc_arch.archs.esc_arch import _per_sample_depthwise

    torch.manual_seed(0)
    x = torch.randn(batch, 8, 21, 17, dtype=torch.float64, requires_grad=grad)
    shared = torch.randn(8, 8, 7, 7, dtype=torch.float64, requires_grad=grad)
    dynamic = torch.randn(batch, 8, 3, 3, dtype=torch.float64, requires_grad=grad)
    with torch.set_grad_enabled(grad):
        fused = reference.fused_large_and_dynamic(x, shared, dynamic)
        split = F.conv2d(x, shared, padding=3) + _per_sample_depthwise(x, dynamic)
    torch.testing.assert_close(fused, split, atol=1e-12, rtol=0)
    if grad:
        weights = torch.randn_like(fused)
        first = torch.autograd.grad((fused * weights).sum(), (x, shared, dynamic))
        second = torch.autograd.grad((split * weights).sum(), (x, shared, dynamic))
        for a, b in zip(first, second, strict=True):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


@pytest.mark.parametrize("arch", ["ESC", "ESCFP", "ESCReal"])
@pytest.mark.parametrize("batch", [1, 2])
def test_reference_inference_matches_the_package(reference, tiny_net, arch, batch):
    """The fused ConvAttn convolution and the bf16-rounded mask (fp32 here: no rounding) leave
    outputs unchanged, and a channels-last input gives the NCHW input's output."""
    net = tiny_net(arch).eval()
    x = torch.rand(batch, 3, 13, 17)
    with torch.no_grad():
        shipped = net(x)
        with reference.reference_inference():
            before = net(x)
        channels_last = net(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(before, shipped, atol=1e-5, rtol=0)
    torch.testing.assert_close(channels_last, shipped, atol=1e-5, rtol=0)


def test_bf16_rounded_mask_differs_only_by_rounding(reference, tiny_net):
    net = tiny_net().eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        shipped = net(x).float()
        with reference.bf16_rounded_mask():
            rounded = net(x).float()
    assert (shipped - rounded).abs().max().item() < 0.05


def test_fused_convattn_keeps_training_outputs_and_gradients(reference, tiny_net):
    net = tiny_net().train()
    x = torch.rand(2, 3, 13, 17)
    out = net(x)
    grads = torch.autograd.grad(out.square().sum(), list(net.parameters()))
    with reference.fused_convattn():
        out0 = net(x)
        grads0 = torch.autograd.grad(out0.square().sum(), list(net.parameters()))
    torch.testing.assert_close(out, out0, atol=1e-5, rtol=0)
    for a, b in zip(grads, grads0, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_full_svd_factors_reconstruct_the_matrix_at_full_rank(reference):
    torch.manual_seed(0)
    bias = torch.randn(2, 16, 16)
    left, right, error = reference.full_svd_factors(bias, 16)
    assert error < 1e-5
    torch.testing.assert_close(left @ right.transpose(1, 2), bias, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_windows_first_sdpa_gives_the_package_s_output(reference, tiny_net, dtype):
    """Windows first or heads first, the fused kernel computes the same values (bit for bit)."""
    net = tiny_net().eval().to(dtype)
    x = torch.rand(2, 3, 16, 16, dtype=dtype)
    with torch.no_grad():
        shipped = net(x)
        with reference.windows_first_sdpa():
            before = net(x)
    assert torch.equal(before, shipped)


def test_grouped_naive_attention_is_the_attention(reference):
    from esc_arch.archs.attention import ATTENTION_BACKENDS

    torch.manual_seed(0)
    q, k, v = (torch.randn(5, 2, 16, 8) for _ in range(3))
    table = torch.randn(2, 49) * 0.1
    expected = ATTENTION_BACKENDS["naive"](q, k, v, table, 4)
    torch.testing.assert_close(reference.grouped_naive_attention(q, k, v, table, 4, group=2), expected)
