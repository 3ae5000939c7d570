"""Reading ESC weights (esc_arch/loading.py): every file format, the configuration read from
the tensors, training checkpoints, pickled files refused."""

import numpy as np
import pytest
import torch

from esc_arch import PRESETS, build_preset, load_model
from esc_arch.config import detect_variant
from esc_arch.loading import infer_config, read_state_dict


@pytest.mark.parametrize(
    ("name", "variant", "scale"),
    [("esc_x2_eval", "ESC", 2), ("esc_light_x4_eval", "ESC-light", 4), ("esc_fp_x3_eval", "ESC-FP", 3),
     ("esc_real_x4_eval", "custom", 4), ("esc_tiny_ln_x2_train_b2", "custom", 2)],
)  # fmt: skip
def test_golden_files_load_with_variant_and_scale(golden, data_dir, name, variant, scale):
    net = load_model(str(data_dir / f"{name}.pth"), attn_type="sdpa")
    assert (net.variant, net.scale, net.training) == (variant, scale, False)
    _, x, expected, case = golden(name)
    net.train(case["mode"] == "train")
    with torch.no_grad():
        assert (net(x) - expected).abs().max().item() < 1e-4


@pytest.mark.parametrize(("name", "scale"), [(n, s) for n, p in PRESETS.items() for s in p.scales])
def test_every_preset_is_detected(name, scale):
    net = build_preset(name, scale)
    config = infer_config(net.state_dict())
    assert config.family() == type(net).__name__ and config.upscaling_factor == scale
    assert config == net.config and detect_variant(config) == name == net.variant


def test_checkpoint_formats(tiny_net, tmp_path):
    from safetensors.torch import save_file

    net = tiny_net().eval()
    sd = net.state_dict()
    x = torch.rand(1, 3, 11, 13)
    with torch.no_grad():
        expected = net(x)
    files = {
        "zoo.pth": {"params_ema": sd, "params": {k: torch.zeros_like(v) for k, v in sd.items()}},
        "params.pth": {"params": sd},
        "bare.pth": sd,
        "ddp.pth": {"params": {f"module.{k}": v for k, v in sd.items()}},
    }
    for name, obj in files.items():
        torch.save(obj, tmp_path / name)
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "w.safetensors")
    for name in [*files, "w.safetensors"]:
        loaded = load_model(str(tmp_path / name))
        with torch.no_grad():
            assert torch.equal(loaded(x), expected), name


def test_training_state_is_followed_to_its_weights(training_run):
    state, net = training_run
    exp = state.parent.parent
    x = torch.rand(1, 3, 9, 10)
    with torch.no_grad():
        assert torch.equal(load_model(str(exp / "training_states/5.state"))(x), net(x))
    (exp / "models/net_g_5.pth").unlink()
    with pytest.raises(ValueError, match="training state .*net_g_5.pth is missing"):
        load_model(str(exp / "training_states/5.state"))


def test_pickled_files_are_refused_unless_allowed(tiny_net, tmp_path):
    sd = tiny_net().state_dict()
    torch.save({"params": sd, "note": np.float64(3.0)}, tmp_path / "pickled.pth")
    with pytest.raises(ValueError, match="pickled Python objects .* allow_pickle=True"):
        load_model(str(tmp_path / "pickled.pth"))
    assert load_model(str(tmp_path / "pickled.pth"), allow_pickle=True).scale == 2


def test_not_an_esc_file(tmp_path):
    torch.save({"params": {"conv.weight": torch.ones(3, 3, 3, 3)}}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="other.pth: not an ESC state dict"):
        load_model(str(tmp_path / "other.pth"))


def test_read_state_dict_param_keys_as_basicsr(tmp_path):
    sd = {"module.a": torch.ones(1)}
    torch.save({"params": sd}, tmp_path / "p.pth")
    torch.save({"params_ema": {"b": torch.ones(1)}, "params": sd}, tmp_path / "e.pth")
    torch.save(sd, tmp_path / "bare.pth")
    # falls back to params; prefixes are convert_state_dict's job
    assert list(read_state_dict(str(tmp_path / "p.pth"), param_key="params_ema")) == ["module.a"]
    assert list(read_state_dict(str(tmp_path / "e.pth"), param_key="params_ema")) == ["b"]
    assert list(read_state_dict(str(tmp_path / "bare.pth"), param_key=None)) == ["module.a"]
    assert list(read_state_dict(str(tmp_path / "e.pth"), param_key="params")) == ["module.a"]
    torch.save({"params": {"x": np.float64(1.0)}}, tmp_path / "pickled.pth")
    with pytest.raises(ValueError, match="pickled Python objects besides tensors and was refused"):
        read_state_dict(str(tmp_path / "pickled.pth"))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        read_state_dict(str(tmp_path / "missing.pth"))


def _family_state_dicts(tiny_config) -> dict[str, dict]:
    """A tiny state dict of every layout the family table tells apart."""
    from esc_arch import NETWORKS

    layouts = {
        "ESC": ("ESC", dict(upscaling_factor=2)),
        "ESC FlashBias": ("ESC", dict(upscaling_factor=2, flashbias_rank=4)),
        "ESCFP": ("ESCFP", dict(upscaling_factor=3)),
        "ESCReal": ("ESCReal", dict(upscaling_factor=4)),
        "ESCReal DySample": ("ESCReal", dict(upscaling_factor=2, use_dysample=True)),
        "ESCReal neosr": ("ESCReal", dict(upscaling_factor=2, neosr_tail=True)),
        "ESCRealM": ("ESCRealM", dict(upscaling_factor=2, upsampler="pixelshuffle", mid_dim=8)),
        "ESCRIB": ("ESCRIB", dict(upscaling_factor=2, rank=4, rib_hidden_dim=8, rib_n_freqs=2)),
    }
    state_dicts = {
        name: NETWORKS[arch](**tiny_config, **changes).state_dict() for name, (arch, changes) in layouts.items()
    }
    state_dicts["ESCLTE"] = NETWORKS["ESCLTE"](encoder=tiny_config, hidden_dim=16, mlp_hidden=(8,)).state_dict()
    return state_dicts


def test_the_family_table_tells_every_layout_apart(tiny_config):
    from esc_arch.loading import FAMILIES, detect_family

    state_dicts = _family_state_dicts(tiny_config)
    rows = {name: detect_family(sd) for name, sd in state_dicts.items()}
    assert {name: row.config.family() for name, row in rows.items()} == {n: n.split()[0] for n in state_dicts}
    for name, state_dict in state_dicts.items():
        assert rows[name](state_dict) and infer_config(state_dict, window_size=8).family() == name.split()[0]
        for earlier in FAMILIES[: FAMILIES.index(rows[name])]:  # the order is what tells it apart
            assert earlier.marker not in state_dict, (name, earlier)
    assert [row.fixed_scale for row in FAMILIES] == [row.config.family() != "ESCLTE" for row in FAMILIES]


@pytest.mark.parametrize(
    ("layout", "removed", "message"),
    [
        ("ESC", "proj.weight", "not an ESC state dict: 'proj.weight' is missing"),
        ("ESCRealM", "blocks.0.attn.relative_position_bias",
         "not an ESC state dict: 'blocks.0.attn.relative_position_bias' is missing"),
        ("ESCRIB", "blocks.0.attn.to_q", "not an ESC-RIB state dict: 'blocks.0.attn.to_q' is missing"),
        ("ESCLTE", "encoder.proj.weight", "the encoder (encoder.*): not an ESC state dict: 'proj.weight' is missing"),
    ],
)  # fmt: skip
def test_a_family_missing_a_key_is_read_as_that_family(tiny_config, layout, removed, message):
    """A row's marker decides when its other keys are not all there: the message names the missing one."""
    from esc_arch.loading import detect_family

    state_dict = dict(_family_state_dicts(tiny_config)[layout])
    del state_dict[removed]
    assert detect_family(state_dict) is None  # spandrel does not take it
    assert detect_family(state_dict, complete=False).config.family() == layout
    with pytest.raises(ValueError) as info:
        infer_config(state_dict)
    assert str(info.value) == message
