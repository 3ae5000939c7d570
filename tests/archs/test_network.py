"""Behaviour of the ESC networks (esc_arch/archs/esc_arch.py) beyond golden parity: sizes,
batches, gradients, padding, inputs, reparameterisation, memory formats, torch.compile."""

import io

import pytest
import torch
import torch.nn.functional as F

from esc_arch import build_preset
from esc_arch.archs.esc_arch import reflect_pad, symmetrize_kernel

#: (class, changes to the tiny configuration): every layout of the networks
TINY_LAYOUTS = {
    "ESC": ("ESC", {}),
    "ESC-ln": ("ESC", {"use_ln": True}),
    "ESCFP": ("ESCFP", {}),
    "ESCReal": ("ESCReal", {}),
}


@pytest.fixture(params=list(TINY_LAYOUTS))
def layout(request, tiny_net):
    """``layout(**changes)``: the tiny network of one layout, perturbed."""
    arch, changes = TINY_LAYOUTS[request.param]
    return lambda **more: tiny_net(arch, **changes, **more)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_batch_equals_per_image(layout, mode):
    net = layout(attn_type="naive").train(mode == "train")
    x = torch.rand(3, 3, 12, 19)
    with torch.no_grad():
        batched = net(x)
        single = torch.cat([net(x[i : i + 1]) for i in range(3)])
    assert (batched - single).abs().max().item() < 1e-5


def test_every_parameter_gets_a_gradient(layout):
    net = layout(attn_type="sdpa").train()
    net(torch.rand(2, 3, 10, 13)).square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@pytest.mark.parametrize("size", [(1, 1), (7, 9), (33, 65), (2, 3)])
def test_odd_sizes(layout, size):
    net = layout().eval()
    scale = net.upscaling_factor
    with torch.no_grad():
        out = net(torch.rand(1, 3, *size))
    assert out.shape == (1, 3, scale * size[0], scale * size[1])
    assert torch.isfinite(out).all()


def test_input_is_never_written(layout):
    net = layout().eval()
    x = torch.rand(1, 3, 9, 9)
    before = x.clone()
    with torch.no_grad():
        net(x)
    assert torch.equal(x, before)


def test_inputs_smaller_than_half_a_window_on_published_window(perturbed):
    net = perturbed(build_preset("ESC-light", 2)).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, 5, 40))  # 5 rows need 27 rows of padding to reach 32
    assert out.shape == (1, 3, 10, 80) and torch.isfinite(out).all()


def test_reflect_pad_matches_torch_where_torch_works():
    x = torch.rand(2, 3, 9, 11)
    for bottom, right in [(0, 0), (8, 10), (3, 0), (0, 5)]:
        assert torch.equal(reflect_pad(x, bottom, right), F.pad(x, (0, right, 0, bottom), mode="reflect"))


def test_reflect_pad_continues_reflection_periodically():
    row = torch.arange(3.0).view(1, 1, 1, 3)
    assert reflect_pad(row, 0, 7).flatten().tolist() == [0, 1, 2, 1, 0, 1, 2, 1, 0, 1]
    assert reflect_pad(torch.ones(1, 1, 1, 1) * 5, 3, 2).shape == (1, 1, 4, 3)


def test_state_dict_round_trip_weights_only(tiny_net, tmp_path):
    net = tiny_net("ESCReal").eval()
    path = tmp_path / "net.pth"
    torch.save({"params_ema": net.state_dict()}, path)
    clone = tiny_net("ESCReal", seed=1).eval()
    x = torch.rand(1, 3, 10, 10)
    with torch.no_grad():
        assert not torch.equal(net(x), clone(x))  # other weights: the loading below is what makes them equal
        clone.load_state_dict(torch.load(path, weights_only=True)["params_ema"], strict=True)
        assert torch.equal(net(x), clone(x))


def test_state_dict_survives_torch_save_in_memory():
    net = build_preset("ESC-FP", 3)
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert list(loaded) == list(net.state_dict())


def test_symmetrized_kernel_is_invariant_under_the_square_symmetries():
    k = symmetrize_kernel(torch.randn(4, 4, 7, 7))
    for image in (k.flip(-1), k.flip(-2), k.transpose(-1, -2), k.rot90(1, (-2, -1))):
        assert torch.allclose(image, k, atol=1e-6)


@pytest.mark.parametrize("name", ["esc_x2_eval", "esc_real_x4_eval", "esc_fp_x3_eval"])
def test_reparameterize_keeps_outputs(golden, name):
    net, x, _, _ = golden(name)
    with torch.no_grad():
        before = net(x)
        assert net.reparameterize() is net
        after = net(x)
    assert (after - before).abs().max().item() < 1e-5


@pytest.mark.parametrize("name", ["esc_x2_eval", "esc_real_x4_eval"])
def test_reparameterize_stores_the_symmetrised_kernel(golden, name):
    net = golden(name).net
    stored = net.plk_filter.detach().clone()
    assert not torch.allclose(stored, symmetrize_kernel(stored), atol=1e-4)  # the file holds the raw kernel
    net.reparameterize()
    torch.testing.assert_close(net.plk_filter, symmetrize_kernel(stored), atol=1e-7, rtol=0)
    net.reparameterize()  # once only: a second call changes nothing
    torch.testing.assert_close(net.plk_filter, symmetrize_kernel(stored), atol=1e-7, rtol=0)


def test_set_attn_type_switches_every_block(tiny_net):
    net = tiny_net(attn_type="naive").eval()
    x = torch.rand(2, 3, 11, 12)
    with torch.no_grad():
        reference = net(x)
        net.set_attn_type("SDPA")
        assert net.attn_type == net.config.attn_type == "sdpa"
        assert (net(x) - reference).abs().max().item() < 1e-5


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((3, 16, 16), "4-D"),
        ((1, 1, 16, 16), "3 \\(RGB\\) channels"),
        ((1, 4, 8, 8), "3 \\(RGB\\)"),
        ((0, 3, 8, 8), "empty"),
        ((1, 3, 0, 8), "empty"),
    ],
)
def test_bad_inputs(tiny_net, shape, match):
    net = tiny_net()
    with pytest.raises(ValueError, match=match):
        net(torch.rand(*shape))


def test_size_requirements_are_exposed():
    net = build_preset("ESC-XL", 2)
    assert net.size_multiple == 48 and net.scale == 2


@pytest.mark.parametrize("arch", ["ESC", "ESCFP", "ESCReal"])
def test_channels_last_gives_the_same_output(tiny_net, arch):
    net = tiny_net(arch).eval()
    x = torch.rand(2, 3, 13, 17)
    with torch.no_grad():
        expected = net(x)
        fast = net.to(memory_format=torch.channels_last)
        out = fast(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_torch_compile_of_the_whole_network_gives_the_same_output(tiny_net):
    net = tiny_net().eval()
    x = torch.rand(1, 3, 13, 17)
    with torch.no_grad():
        expected = net(x)
        out = torch.compile(net)(x)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
