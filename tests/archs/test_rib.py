"""ESC-RIB (esc_arch/archs/esc_rib_arch.py) against the reference tensors made with the authors'
code (tests/data/rib, README there): every tiny case on every CPU backend, through the class,
BasicSR's registry and load_model; the properties the references cannot see (batch = per
sample in training, the converted form, the RIB coordinates, what the attention builds)."""

import json
import logging
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from esc_arch import ESCRIB, ESCRIBConfig, infer_config, load_model
from esc_arch.archs.esc_rib_arch import rib_coordinates

RIB = Path(__file__).parent.parent / "data" / "rib"
CASES = sorted(p.stem for p in RIB.glob("*.json"))
#: The references' README: the authors' attention runs in bfloat16, this one in float32.
MAX_DIFF, MEAN_DIFF = 1e-2, 1.5e-3


#: the released configurations (window 64), in ../shared/golden/rib only (tests/data/README.md)
FULL_SIZE = ["escrib_x2_eval", "escrib_x4_eval_converted"]


def case(name: str, folder: Path = RIB) -> tuple[dict, dict, dict]:
    spec = json.loads((folder / f"{name}.json").read_text())
    weights = torch.load(folder / f"{name}.pth", weights_only=True)["params_ema"]
    io = torch.load(folder / f"{name}_io.pt", weights_only=True)
    return spec, weights, io


def check(net: torch.nn.Module, spec: dict, io: dict) -> None:
    net.train(spec["mode"] == "train")
    with torch.no_grad():
        out = net(io["input"])
    assert out.shape == io["output"].shape
    diff = (out - io["output"]).abs()
    assert diff.max().item() <= MAX_DIFF and diff.mean().item() <= MEAN_DIFF


def tiny(seed: int = 0, **changes) -> ESCRIB:
    """The references' tiny configuration with every parameter perturbed (dynamic kernels on)."""
    spec, _, _ = case("escrib_tiny_x3_train_b2")
    torch.manual_seed(seed)
    net = ESCRIB(**{**spec["config"], **changes})
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.1)
    return net


def test_the_cases_are_here():
    assert len(CASES) == 3


@pytest.mark.parametrize("backend", ["naive", "sdpa", "chunked", "auto"])
@pytest.mark.parametrize("name", CASES)
def test_case(name, backend):
    spec, weights, io = case(name)
    net = ESCRIB(**spec["config"])  # the authors' keywords, attn_type 'RIB' included
    net.set_attn_type(backend)
    assert sum(p.numel() for p in net.parameters()) == spec["param_count"]
    net.load_state_dict(weights, strict=True)
    check(net, spec, io)


def test_case_through_basicsr_registry():
    from basicsr.archs import build_network

    from esc_arch.basicsr_plugin import activate

    activate()
    spec, weights, io = case("escrib_tiny_x2_gate_linear_pixelshuffle")
    net = build_network({"type": "ESCRIB", **spec["config"]})
    net.load_state_dict(weights, strict=True)
    check(net, spec, io)


@pytest.mark.parametrize("name", CASES)
def test_case_through_load_model(name, tmp_path, caplog):
    spec, weights, io = case(name)
    path = tmp_path / "w.pth"
    torch.save({"params_ema": weights}, path)
    net = load_model(path, window_size=spec["config"]["window_size"])
    assert net.config == ESCRIBConfig(**spec["config"])  # every other keyword read from the tensors
    check(net, spec, io)
    with caplog.at_level(logging.INFO, logger="basicsr.esc"):
        assert load_model(path).config.window_size == 64
    assumed = [r for r in caplog.records if "the released 64 assumed" in r.getMessage()]
    assert [r.levelno for r in assumed] == [logging.WARNING]  # a warning: the esc commands show it


@pytest.mark.parametrize("backend", [pytest.param("naive", marks=pytest.mark.slow), "auto"])  # naive: 13 s at x2
@pytest.mark.parametrize("name", FULL_SIZE)
def test_released_configuration_through_load_model(name, backend, reference_folder, tmp_path):
    """The released x2 and x4 (converted form) configurations, window 64 assumed from the file."""
    spec, weights, io = case(name, reference_folder(name, "rib"))
    path = tmp_path / "w.pth"
    torch.save({"params_ema": weights}, path)
    net = load_model(path, attn_type=backend)
    assert net.config == ESCRIBConfig(**spec["config"]).replace(attn_type=backend)
    assert sum(p.numel() for p in net.parameters()) == spec["param_count"]
    check(net, spec, io)


def test_converted_form(tmp_path):
    """convert() folds the kernel ensemble; a converted state dict gives the same network in a
    converted model, in a plain one (the ensemble is a projection) and through load_model."""
    spec, weights, io = case("escrib_tiny_x4_nogate_nnconv")
    plain = ESCRIB(**spec["config"]).eval()
    plain.load_state_dict(weights, strict=True)
    converted = ESCRIB(**spec["config"]).eval()
    converted.load_state_dict(weights, strict=True)
    converted.convert()
    state = converted.state_dict()
    assert set(state) == set(weights) and not torch.equal(state["plk_filter"], weights["plk_filter"])
    other = ESCRIB(**spec["config"]).eval()
    other.load_state_dict(state, strict=True)
    with torch.no_grad():
        expected = plain(io["input"])
        assert (converted(io["input"]) - expected).abs().max().item() < 1e-5
        assert (other(io["input"]) - expected).abs().max().item() < 1e-5
        torch.save({"params_ema": state}, tmp_path / "converted.pth")
        loaded = load_model(tmp_path / "converted.pth", window_size=16)
        assert (loaded(io["input"]) - expected).abs().max().item() < 1e-5
    check(converted, spec, io)


def test_train_batch_equals_per_sample_outputs():
    """The references' blind spot: each sample must get its own dynamic kernels."""
    net = tiny().train()
    x = torch.rand(3, 3, 20, 18)
    with torch.no_grad():
        batch = net(x)
        single = torch.cat([net(x[i : i + 1]) for i in range(3)])
        net.eval()
        evaluated = net(x)
    assert (batch - single).abs().max().item() < 1e-4
    assert (evaluated - single).abs().max().item() < 1e-4


def test_rib_coordinates():
    """Token n = y*w + x: [bx, by], then sin(2^i bx), sin(2^i by), cos(2^i bx), cos(2^i by)."""
    coords = rib_coordinates(4, 2)
    assert coords.shape == (16, 10)
    token = 1 * 4 + 3  # y = 1, x = 3
    bx, by = 2 * 3.5 / 4 - 1, 2 * 1.5 / 4 - 1
    expected = [bx, by]
    for i in range(2):
        f = 2**i
        expected += [math.sin(f * bx), math.sin(f * by), math.cos(f * bx), math.cos(f * by)]
    assert torch.allclose(coords[token], torch.tensor(expected), atol=1e-7)
    assert rib_coordinates(16, 0).shape == (256, 2)


def test_rib_bias_matches_its_definition():
    """The attention equals softmax(q k^T / sqrt(c) + q_pos k_pos^T / sqrt(R)) v, written out here."""
    attn = tiny().blocks[0].attn
    heads, c, w = attn.num_heads, attn.dim // attn.num_heads, attn.window_size
    hidden = torch.relu(rib_coordinates(w, 4) @ attn.to_hidden + attn.hidden_b)
    q_pos = torch.stack([hidden @ attn.to_q[h] for h in range(heads)])
    k_pos = torch.stack([hidden @ attn.to_k[h] for h in range(heads)])
    bias = q_pos @ k_pos.transpose(1, 2) / math.sqrt(attn.rank)
    x = torch.rand(1, attn.dim, w, w)
    with torch.no_grad():
        q, k, v = attn.to_qkv(x).view(3, heads, c, w * w).transpose(-1, -2)
        out = ((q @ k.transpose(-1, -2)) / math.sqrt(c) + bias).softmax(-1) @ v
        out = out.transpose(-1, -2).reshape(1, attn.dim, w, w)
        gate = torch.sigmoid(attn.gate[1](attn.gate[0](x)))
        expected = attn.to_out(out * gate)
        for backend in ("naive", "sdpa", "chunked", "auto"):
            assert (attn(x, backend) - expected).abs().max().item() < 1e-5, backend


#: what explicit attention runs: a softmax over materialised scores (and its backward)
SCORES = {"aten::softmax", "aten::_softmax", "aten::_softmax_backward_data", "aten::_scaled_dot_product_attention_math"}


def _attention_ops(net, x, *, backward: bool) -> set[str]:
    with torch.profiler.profile() as profile:
        out = net(x)
        if backward:
            out.mean().backward()
    return {event.name for event in profile.events()}


def test_rib_attention_builds_no_score_matrix():
    """auto: the factors ride as extra query/key channels of torch's fused kernel, forward and
    backward; no softmax over materialised scores, no bias matrix."""
    net = tiny()
    x = torch.rand(2, 3, 20, 18)
    with torch.no_grad():
        ops = _attention_ops(net.eval(), x, backward=False)
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in ops
    assert not SCORES & ops
    ops = _attention_ops(net.train(), x, backward=True)
    assert "aten::_scaled_dot_product_flash_attention_for_cpu_backward" in ops
    assert not SCORES & ops


@pytest.mark.parametrize("backend", ["auto", "chunked"])
def test_training_gradients_match_naive(backend):
    x = torch.rand(2, 3, 20, 18)
    grads = {}
    for name in ("naive", backend):
        net = tiny(attn_type=name).train()
        net(x).square().mean().backward()
        grads[name] = {k: p.grad for k, p in net.named_parameters()}
    for key, reference in grads["naive"].items():
        assert reference is not None and reference.abs().max() > 0, key
        scale = reference.abs().max().item()
        assert (grads[backend][key] - reference).abs().max().item() <= 1e-4 * max(scale, 1.0), key


def test_configuration_rules():
    assert ESCRIBConfig(attn_type="RIB").attn_type == "auto"
    assert ESCRIBConfig(dim=64, num_heads=4).rank == 240  # the authors' default: 256 - head dim
    assert ESCRIBConfig(flashbias_rank=8).rank == 8
    with pytest.raises(ValueError, match="'Flex' is the authors' ESCRIB without RIB"):
        ESCRIBConfig(attn_type="Flex")
    with pytest.raises(ValueError, match="gate_type must be one of"):
        ESCRIBConfig(gate_type="dwc")
    with pytest.raises(ValueError, match="upsampler_type must be one of"):
        ESCRIBConfig(upsampler_type="pixelshuffledirect")
    with pytest.raises(ValueError, match="'nn\\+conv' supports scales 2\\^n and 3"):
        ESCRIBConfig(upsampler_type="nn+conv", upscaling_factor=5)
    with pytest.raises(TypeError, match="unknown keyword 'rib_freqs'"):
        ESCRIB(rib_freqs=4)


@pytest.mark.parametrize(
    ("changes", "scale"),
    [
        (dict(upsampler_type="pixelshuffle", intermediate_dim=24), 3),
        (dict(upsampler_type="nn+conv", intermediate_dim=24), 8),
        (dict(upsampler_type="nn+conv", intermediate_dim=24), 1),
        (dict(upsampler_type="pixelshuffle_direct", gate_type=None, rib_n_freqs=0, use_ln=True), 1),
    ],
)
def test_every_layout_is_read_back_from_its_tensors(changes, scale):
    net = tiny(upscaling_factor=scale, **changes)
    assert infer_config(net.state_dict(), window_size=16) == net.config
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        assert net.eval()(x).shape == (1, 3, 9 * scale, 11 * scale)


def test_nn_conv_at_x3_is_read_as_x2_and_says_so(caplog):
    net = tiny(upscaling_factor=3, upsampler_type="nn+conv")
    with caplog.at_level(logging.INFO, logger="basicsr.esc"):
        assert infer_config(net.state_dict(), window_size=16).upscaling_factor == 2
    assert [r.levelno for r in caplog.records if "x2 assumed" in r.getMessage()] == [logging.WARNING]


def test_window_size_override(tmp_path):
    net = tiny().eval()
    path = tmp_path / "w.pth"
    torch.save({"params_ema": net.state_dict()}, path)
    x = torch.rand(1, 3, 40, 36)
    with torch.no_grad():
        expected = net(x)
        assert (load_model(path, window_size=16)(x) - expected).abs().max().item() < 1e-5
        assert (load_model(path, window_size=8)(x) - expected).abs().max().item() > 1e-3
    for bad in (0, 1000, 2.5):
        with pytest.raises(ValueError, match="window_size must be an integer in \\[1, 128\\]"):
            load_model(path, window_size=bad)


def test_a_window_that_does_not_fit_the_tensors_is_one_line(data_dir):
    with pytest.raises(ValueError, match=r"esc_x2_eval.pth: window_size 16 does not fit these tensors: .* 32x32"):
        load_model(data_dir / "esc_x2_eval.pth", window_size=16)
    assert load_model(data_dir / "esc_x2_eval.pth", window_size=32).config.window_size == 32


def test_small_inputs_and_bfloat16():
    """Inputs below half a window (where the authors' reflect padding fails) and bf16 autocast."""
    net = tiny().eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, 5, 3)).shape == (1, 3, 15, 9)
        x = torch.rand(1, 3, 20, 18)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(x)
        reference = net(x)
        assert (low.float() - reference).abs().max().item() < 0.05 * reference.abs().max().item()


def test_extra_repr_names_the_rib_settings():
    text = repr(tiny().blocks[0].attn)
    assert "rank=4" in text and "gate_type='DWC'" in text and "window_size=16" in text


def test_flash_is_guarded_as_for_the_other_networks():
    net = tiny(attn_type="flash").eval()
    with pytest.raises(RuntimeError, match="attn_type='flash' (needs the flash-attn package|runs on CUDA only)"):
        with torch.no_grad():
            net(torch.rand(1, 3, 16, 16))


@pytest.mark.parametrize(("upsampler", "channels"), [("pixelshuffle_direct", 3), ("pixelshuffle", 24)])
def test_an_x2_checkpoint_starts_an_x4_network(upsampler, channels, caplog):
    """As the authors' loader: the up_conv's r x r sub-pixel grid resized bilinearly (written out here)."""
    from esc_arch import convert_state_dict

    x2 = tiny(upscaling_factor=2, upsampler_type=upsampler, intermediate_dim=24).state_dict()
    x4 = tiny(upscaling_factor=4, upsampler_type=upsampler, intermediate_dim=24)
    with caplog.at_level(logging.INFO, logger="basicsr.esc"):
        converted = convert_state_dict(x2, x4)
    assert "upsampler.up_conv from x2 to x4" in caplog.text
    x4.load_state_dict(converted, strict=True)
    weight = x2["upsampler.up_conv.weight"]  # (channels * 2 * 2, in, 3, 3), channel = c * 4 + 2 * i + j
    grid = weight.view(channels, 2, 2, -1).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(4, 4), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
    assert torch.allclose(converted["upsampler.up_conv.weight"], expected.reshape(channels * 16, *weight.shape[1:]))
    with pytest.raises(ValueError, match="converting between scales is for starting a training run"):
        convert_state_dict(x2, x4, scale_transfer=False)
