"""Behaviour of the ESC networks beyond golden parity: sizes, batches, gradients, errors."""

import io
import logging

import pytest
import torch
import torch.nn.functional as F

from esc_arch import ESC, ESCFP, PRESETS, ESCReal, build_preset, convert_state_dict
from esc_arch.archs.attention import relative_position_index
from esc_arch.archs.esc_arch import reflect_pad, symmetrize_kernel

from conftest import DATA, load_golden

TINY = dict(dim=16, pdim=8, kernel_size=5, n_blocks=1, conv_blocks=2, window_size=8, num_heads=2, exp_ratio=1.25)
TINY_NETS = {
    "ESC": lambda **kw: ESC(**TINY, **kw),
    "ESC-ln": lambda **kw: ESC(**TINY, use_ln=True, **kw),
    "ESCFP": lambda **kw: ESCFP(**TINY, **kw),
    "ESCReal": lambda **kw: ESCReal(**dict(TINY, upscaling_factor=4), **kw),
}


def _perturb(net):
    """Random weights everywhere (the dynamic-kernel heads start at zero)."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return net


@pytest.mark.parametrize(("name", "scale"), [(n, s) for n, p in PRESETS.items() for s in p.scales])
def test_preset_parameter_counts(name, scale):
    net = build_preset(name, scale)
    assert sum(p.numel() for p in net.parameters()) == PRESETS[name].params[scale]
    assert net.upscaling_factor == scale


def test_relative_position_index_is_derived_not_stored():
    net = build_preset("ESC-XL", 4)
    assert not any("index" in key for key in net.state_dict())
    index = relative_position_index(48)
    assert index.shape == (48 * 48, 48 * 48)
    # key minus query, row-major tokens: token 0 = (0, 0), token 49 = (1, 1)
    assert index[0, 49].item() == (1 + 47) * 95 + (1 + 47)
    assert index[49, 0].item() == (-1 + 47) * 95 + (-1 + 47)
    assert relative_position_index(48).data_ptr() == index.data_ptr()  # built once per window size


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("net_name", list(TINY_NETS))
def test_batch_equals_per_image(net_name, mode):
    net = _perturb(TINY_NETS[net_name](attn_type="naive")).train(mode == "train")
    x = torch.rand(3, 3, 12, 19)
    with torch.no_grad():
        batched = net(x)
        single = torch.cat([net(x[i : i + 1]) for i in range(3)])
    assert (batched - single).abs().max().item() < 1e-5


@pytest.mark.parametrize("net_name", list(TINY_NETS))
def test_every_parameter_gets_a_gradient(net_name):
    net = _perturb(TINY_NETS[net_name](attn_type="sdpa")).train()
    net(torch.rand(2, 3, 10, 13)).square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@pytest.mark.parametrize("net_name", list(TINY_NETS))
@pytest.mark.parametrize("size", [(1, 1), (7, 9), (33, 65), (2, 3)])
def test_odd_sizes(net_name, size):
    net = TINY_NETS[net_name]().eval()
    scale = net.upscaling_factor
    with torch.no_grad():
        out = net(torch.rand(1, 3, *size))
    assert out.shape == (1, 3, scale * size[0], scale * size[1])
    assert torch.isfinite(out).all()


def test_inputs_smaller_than_half_a_window_on_published_window():
    net = _perturb(build_preset("ESC-light", 2)).eval()
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


def test_input_is_never_written():
    for make in TINY_NETS.values():
        net = make().eval()
        x = torch.rand(1, 3, 9, 9)
        before = x.clone()
        with torch.no_grad():
            net(x)
        assert torch.equal(x, before)


def test_state_dict_round_trip_weights_only(tmp_path):
    net = _perturb(TINY_NETS["ESCReal"]()).eval()
    path = tmp_path / "net.pth"
    torch.save({"params_ema": net.state_dict()}, path)
    clone = TINY_NETS["ESCReal"]().eval()
    clone.load_state_dict(torch.load(path, weights_only=True)["params_ema"], strict=True)
    x = torch.rand(1, 3, 10, 10)
    with torch.no_grad():
        assert torch.equal(net(x), clone(x))


def test_symmetrized_kernel_is_invariant_under_the_square_symmetries():
    k = symmetrize_kernel(torch.randn(4, 4, 7, 7))
    for image in (k.flip(-1), k.flip(-2), k.transpose(-1, -2), k.rot90(1, (-2, -1))):
        assert torch.allclose(image, k, atol=1e-6)


@pytest.mark.parametrize("name", ["esc_x2_eval", "esc_real_x4_eval", "esc_fp_x3_eval"])
def test_reparameterize_keeps_outputs(name):
    net, x, expected, _ = load_golden(name)
    with torch.no_grad():
        before = net(x)
        net.reparameterize()
        after = net(x)
    assert (after - before).abs().max().item() < 1e-5
    if hasattr(net, "plk_filter"):
        assert torch.allclose(net.plk_filter, symmetrize_kernel(net.plk_filter), atol=1e-7)


def test_scale_transfer_through_convert_state_dict(caplog):
    from esc_arch import convert_state_dict

    x2_weights = torch.load(DATA / "esc_x2_eval.pth", weights_only=True)["params_ema"]
    _, x, expected, case = load_golden("esc_x4_from_x2_eval")
    net = ESC(**case["config"], attn_type="naive").eval()
    with pytest.raises(RuntimeError, match="size mismatch for to_img.weight"):
        net.load_state_dict(x2_weights, strict=True)  # plain torch: no hidden conversion
    with caplog.at_level(logging.INFO, logger="basicsr.esc"):
        net.load_state_dict(convert_state_dict(x2_weights, net), strict=True)
    assert "to_img from x2 to x4" in caplog.text
    assert x2_weights["to_img.weight"].shape[0] == 12  # the caller's dict is not converted in place
    converted = torch.load(DATA / "esc_x4_from_x2_eval.pth", weights_only=True)["params_ema"]
    assert torch.allclose(net.to_img.weight, converted["to_img.weight"], atol=1e-6)
    with torch.no_grad():
        assert (net(x) - expected).abs().max().item() < 1e-4
    with pytest.raises(ValueError, match="x2 network and this network is x4"):
        convert_state_dict(x2_weights, net, scale_transfer=False)


@pytest.mark.parametrize("strict", [True, False])
def test_scale_transfer_through_basicsr_load_network(tmp_path, strict):
    from esc_arch.basicsr_plugin.models import ESCModel

    _, x, expected, case = load_golden("esc_x4_from_x2_eval")
    net = ESC(**case["config"], attn_type="sdpa").eval()
    model = ESCModel.__new__(ESCModel)  # load_network only needs the bare-model helper
    model.opt, model.is_train = {"dist": False}, True
    model.load_network(net, str(DATA / "esc_x2_eval.pth"), strict=strict, param_key="params_ema")
    with torch.no_grad():
        assert (net(x) - expected).abs().max().item() < 1e-4
    model.is_train = False  # basicsr test: a transfer is refused, naming the file
    with pytest.raises(ValueError, match="esc_x2_eval.pth.*x2 network and this network is x4"):
        model.load_network(net, str(DATA / "esc_x2_eval.pth"), strict=strict, param_key="params_ema")


def test_scale_transfer_to_fp_x2_to_x3():
    src = _perturb(ESCFP(**TINY, upscaling_factor=2))
    dst = ESCFP(**TINY, upscaling_factor=3)
    dst.load_state_dict(convert_state_dict(src.state_dict(), dst), strict=True)
    assert dst.to_img.weight.shape[0] == 27
    # a constant sub-pixel grid stays constant when resized
    grid = torch.ones(12, TINY["dim"], 3, 3)
    state = dict(src.state_dict(), **{"to_img.weight": grid, "to_img.bias": torch.ones(12)})
    dst.load_state_dict(convert_state_dict(state, dst))
    assert torch.allclose(dst.to_img.weight, torch.ones_like(dst.to_img.weight))


@pytest.mark.parametrize("spelling", ["Naive", "SDPA", "Flex", "naive", "sdpa", "flex", "auto", "flash"])
def test_authors_spellings_are_accepted(spelling):
    assert ESC(**TINY, attn_type=spelling).attn_type == spelling.lower()


def test_auto_logs_the_backend_that_runs(caplog):
    from esc_arch.archs import attention

    attention._logged.clear()
    net = ESC(**TINY).eval()
    with caplog.at_level(logging.INFO, logger="basicsr.esc"), torch.no_grad():
        net(torch.rand(1, 3, 8, 8))
    assert "backend: sdpa (auto on cpu)" in caplog.text


def test_flash_without_flash_attn_is_a_clear_error():
    pytest.importorskip("torch")
    try:
        import flash_attn  # noqa: F401

        pytest.skip("flash-attn is installed")
    except ImportError:
        pass
    net = ESC(**TINY, attn_type="flash")
    with pytest.raises(RuntimeError, match="flash-attn"):
        net(torch.rand(1, 3, 8, 8))


def test_set_attn_type_switches_every_block():
    net = _perturb(ESC(**TINY, attn_type="naive")).eval()
    x = torch.rand(2, 3, 11, 12)
    with torch.no_grad():
        reference = net(x)
        net.set_attn_type("SDPA")
        assert {m.attn_type for m in net.modules() if hasattr(m, "to_qkv")} == {"sdpa"}
        assert (net(x) - reference).abs().max().item() < 1e-5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(attn_type="softmax"), "attn_type must be one of .*'naive'.*'sdpa'"),
        (dict(dim=30, num_heads=4), "dim must be divisible by num_heads=4"),
        (dict(pdim=80), "pdim must be at most dim=64"),
        (dict(kernel_size=12), "kernel_size must be odd"),
        (dict(n_blocks=0), "n_blocks must be a positive integer"),
        (dict(window_size=-8), "window_size must be a positive integer"),
        (dict(upscaling_factor=2.5), "upscaling_factor must be a positive integer"),
        (dict(exp_ratio=0), "exp_ratio must be positive"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ESC(**kwargs)


def test_bad_constructor_arguments_of_fixed_variants():
    with pytest.raises(ValueError, match="upscaling_factor must be 4 for ESCReal"):
        ESCReal(upscaling_factor=2)
    with pytest.raises(ValueError, match="use_ln must be True for ESCFP"):
        ESCFP(use_ln=False)
    with pytest.raises(TypeError):
        ESC(64)  # keyword-only
    with pytest.raises(TypeError):
        ESC(dimm=64)  # no **kwargs: typos are errors


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
def test_bad_inputs(shape, match):
    net = ESC(**TINY)
    with pytest.raises(ValueError, match=match):
        net(torch.rand(*shape))


def test_size_requirements_are_exposed():
    net = build_preset("ESC-XL", 2)
    assert net.size_multiple == 48 and net.scale == 2


def test_unknown_preset_and_scale():
    with pytest.raises(ValueError, match="unknown preset 'ESC-XXL'"):
        build_preset("ESC-XXL", 2)
    with pytest.raises(ValueError, match="accepted scales: \\[4\\]"):
        build_preset("ESC-Real", 2)


def test_state_dict_survives_torch_save_in_memory():
    net = build_preset("ESC-FP", 3)
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert list(loaded) == list(net.state_dict())


@pytest.mark.parametrize("w", [1, 2, 8, 32])
def test_bias_matrix_equals_the_table_gathered_by_the_index(w):
    from esc_arch.archs.attention import relative_position_bias

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
    from esc_arch.archs.attention import relative_position_bias

    table = torch.nn.Parameter(torch.randn(2, 225))
    with torch.no_grad():
        first = relative_position_bias(table, 8)
        assert relative_position_bias(table, 8) is first  # reused
        table.add_(1.0)  # new weights: rebuilt
        torch.testing.assert_close(relative_position_bias(table, 8), first + 1.0)
    trained = relative_position_bias(table, 8)  # training: never cached, gradients flow
    assert trained.requires_grad and trained is not relative_position_bias(table, 8)


@pytest.mark.parametrize("name", ["ESC", "ESCFP", "ESCReal"])
def test_channels_last_gives_the_same_output(name):
    net = _perturb(TINY_NETS[name]()).eval()
    x = torch.rand(2, 3, 13, 17)
    with torch.no_grad():
        expected = net(x)
        fast = net.to(memory_format=torch.channels_last)
        out = fast(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_flex_compiles_once_for_every_image_size_and_batch():
    """One shape family (heads, tokens per window, head dim, dtype, device): one compile,
    whatever the number of windows; the zero-padded last group changes nothing."""
    from torch._dynamo.utils import counters

    net = _perturb(ESC(**TINY, attn_type="naive")).eval()
    inputs = [torch.rand(1, 3, 8, 8), torch.rand(2, 3, 13, 17), torch.rand(3, 3, 30, 9), torch.rand(1, 3, 40, 41)]
    with torch.no_grad():
        expected = [net(x) for x in inputs]
        torch._dynamo.reset()
        before = counters["stats"]["unique_graphs"]
        net.set_attn_type("flex")
        for x, reference in zip(inputs, expected, strict=True):
            torch.testing.assert_close(net(x), reference, atol=1e-5, rtol=0)
    assert counters["stats"]["unique_graphs"] - before == 1


def test_torch_compile_of_the_whole_network_gives_the_same_output():
    net = _perturb(ESC(**TINY)).eval()
    x = torch.rand(1, 3, 13, 17)
    with torch.no_grad():
        expected = net(x)
        out = torch.compile(net)(x)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
