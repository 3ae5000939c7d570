"""The forms of the per-sample dynamic kernels (esc_arch/archs/esc_arch.py,
``set_dynamic_kernels``): the batch-free forms an ONNX export uses give the grouped
convolution's output on every network that has them, batches included; a bad form is one line."""

import pytest
import torch

from esc_arch.archs.esc_arch import DYNAMIC_KERNEL_FORMS, _per_sample_depthwise, set_dynamic_kernels


@pytest.mark.parametrize("size", [3, 5])
def test_every_form_is_the_grouped_convolution(size):
    x, kernels = torch.rand(3, 4, 11, 7), torch.randn(3, 4, size, size)
    expected = _per_sample_depthwise(x, kernels)
    for form in DYNAMIC_KERNEL_FORMS:
        torch.testing.assert_close(_per_sample_depthwise(x, kernels, form), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["ESC", "ESCFP", "ESCReal"])
def test_every_form_gives_the_network_s_output(tiny_net, arch):
    net = tiny_net(arch).eval()
    x = torch.rand(3, 3, 19, 13)
    with torch.no_grad():
        expected = net(x)
        for form in DYNAMIC_KERNEL_FORMS:
            assert set_dynamic_kernels(net, form) is net
            torch.testing.assert_close(net(x), expected, atol=2e-5, rtol=1e-5)
    assert {m.dynamic_kernels for m in net.modules() if hasattr(m, "dynamic_kernels")} == {DYNAMIC_KERNEL_FORMS[-1]}


def test_a_network_is_built_grouped_and_keeps_its_parameters(tiny_net):
    net = tiny_net("ESC")
    assert {m.dynamic_kernels for m in net.modules() if hasattr(m, "dynamic_kernels")} == {"grouped"}
    names = [name for name, _ in net.named_parameters()]
    buffers = [name for name, _ in net.named_buffers()]
    set_dynamic_kernels(net, "unfold")
    assert [name for name, _ in net.named_parameters()] == names and [n for n, _ in net.named_buffers()] == buffers


def test_an_unknown_form_is_one_line(tiny_net):
    with pytest.raises(ValueError, match=r"^dynamic kernel form must be one of grouped, shifts, unfold; got 'im2col'$"):
        set_dynamic_kernels(tiny_net("ESC"), "im2col")


def test_the_export_refuses_the_grouped_form(tiny_net, tmp_path):
    pytest.importorskip("onnxscript")
    from esc_arch.commands.onnx_export import export_onnx

    with pytest.raises(ValueError, match=r"^dynamic_kernels 'grouped' folds the batch into a convolution's groups; "):
        export_onnx(tiny_net("ESC"), str(tmp_path / "m.onnx"), dynamic_kernels="grouped")
    assert list(tmp_path.iterdir()) == []
