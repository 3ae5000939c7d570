"""Reading ESC weights (esc_arch/weights/files.py, esc_arch/weights/load.py): every file
format, the configuration read from the tensors, training checkpoints, pickled files refused."""

import re

import numpy as np
import pytest
import torch

from esc_arch import PRESETS, build_preset, describe, load_model
from esc_arch.families import detect_variant
from esc_arch.weights import infer_config, read_state_dict


@pytest.mark.parametrize(
    ("name", "variant", "scale"),
    [("esc_x2_eval", "ESC", 2), ("esc_light_x4_eval", "ESC-light", 4), ("esc_fp_x3_eval", "ESC-FP", 3),
     ("esc_real_x4_eval", "custom", 4), ("esc_tiny_ln_x2_train_b2", "custom", 2)],
)  # fmt: skip
def test_golden_files_load_with_variant_and_scale(golden, data_dir, name, variant, scale):
    net = load_model(str(data_dir / f"{name}.pth"), attn_type="sdpa")
    assert (describe(net).variant, describe(net).scale, net.training) == (variant, scale, False)
    _, x, expected, case = golden(name)
    net.train(case["mode"] == "train")
    with torch.no_grad():
        assert (net(x) - expected).abs().max().item() < 1e-4


@pytest.mark.parametrize(("name", "scale"), [(n, s) for n, p in PRESETS.items() for s in p.scales])
def test_every_preset_is_detected(name, scale):
    net = build_preset(name, scale)
    config = infer_config(net.state_dict())
    assert config.family() == type(net).__name__ and config.upscaling_factor == scale
    assert config == net.config and detect_variant(config) == name == describe(net).variant


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
    from esc_arch.families import FAMILIES, detect_family

    state_dicts = _family_state_dicts(tiny_config)
    rows = {name: detect_family(sd) for name, sd in state_dicts.items()}
    assert {name: row.config.family() for name, row in rows.items()} == {n: n.split()[0] for n in state_dicts}
    for name, state_dict in state_dicts.items():
        assert rows[name](state_dict) and infer_config(state_dict, window_size=8).family() == name.split()[0]
        for earlier in FAMILIES[: FAMILIES.index(rows[name])]:  # the order is what tells it apart
            assert earlier.marker not in state_dict, (name, earlier)
    assert [row.arbitrary_scale for row in FAMILIES] == [row.config.family() == "ESCLTE" for row in FAMILIES]


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
    from esc_arch.families import detect_family

    state_dict = dict(_family_state_dicts(tiny_config)[layout])
    del state_dict[removed]
    assert detect_family(state_dict) is None  # spandrel does not take it
    assert detect_family(state_dict, complete=False).config.family() == layout
    with pytest.raises(ValueError) as info:
        infer_config(state_dict)
    assert str(info.value) == message


# --------------------------------------------------------------------------- untrusted files


def _safetensors_with_first_byte(sd: dict, first: int) -> bytes:
    """A safetensors file of ``sd`` whose 8-byte header length starts with the byte ``first``
    (a metadata entry pads the header until it does)."""
    from safetensors.torch import save

    for pad in range(300):
        data = save({k: v.contiguous() for k, v in sd.items()}, metadata={"pad": "x" * pad})
        if data[0] == first:
            return data
    raise AssertionError("no padding gives that header length")


def test_a_safetensors_file_is_recognised_by_its_header_whatever_its_length(tiny_net, tmp_path):
    """One file in 256 has a header length whose first byte is 0x80, pickle's PROTO opcode."""
    net = tiny_net().eval()
    (tmp_path / "w.safetensors").write_bytes(_safetensors_with_first_byte(net.state_dict(), 0x80))
    x = torch.rand(1, 3, 11, 13)
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "w.safetensors")(x), net(x))


def _deflated(path, members: dict[str, bytes]) -> None:
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def test_a_compression_bomb_is_refused_before_it_is_inflated(tiny_net, tmp_path, monkeypatch):
    """A torch zip re-packed with deflate, one member of 40 MB of zeros (40 KB stored): refused
    from the zip directory; torch.load is never called."""
    import zipfile

    import esc_arch.weights

    sd = tiny_net().state_dict()
    sd["proj.weight"] = torch.zeros(10_000_000)
    torch.save({"params_ema": sd}, tmp_path / "plain.pth")
    with zipfile.ZipFile(tmp_path / "plain.pth") as archive:
        _deflated(tmp_path / "bomb.pth", {m.filename: archive.read(m) for m in archive.infolist()})
    assert (tmp_path / "bomb.pth").stat().st_size < 200_000
    monkeypatch.setattr(esc_arch.weights.files.torch, "load", None)  # calling it would be a TypeError
    with pytest.raises(ValueError) as info:
        load_model(tmp_path / "bomb.pth")
    assert re.fullmatch(
        r"\S*bomb\.pth: member 'plain/data/\d+' inflates [\d,]+ stored bytes to 40,000,000 \([\d,]+x\); torch\.save "
        r"stores tensors uncompressed, so this file was crafted \(a compression bomb\) and was refused before "
        r"inflating it",
        str(info.value),
    ), str(info.value)


def test_a_deflated_checkpoint_of_real_weights_loads(tiny_net, tmp_path):
    """Weights deflate by little: a re-zipped release file is within the ratio and loads."""
    import zipfile

    net = tiny_net().eval()
    torch.save({"params_ema": net.state_dict()}, tmp_path / "plain.pth")
    with zipfile.ZipFile(tmp_path / "plain.pth") as archive:
        _deflated(tmp_path / "zipped.pth", {m.filename: archive.read(m) for m in archive.infolist()})
    x = torch.rand(1, 3, 11, 13)
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "zipped.pth")(x), net(x))


def _claim_size(path, member_suffix: str, size: int) -> None:
    """Rewrite the zip's central directory so that the member ending in ``member_suffix`` claims
    ``size`` bytes uncompressed (its data stays as it is)."""
    data = bytearray(path.read_bytes())
    start = 0
    while (start := data.find(b"PK\x01\x02", start)) >= 0:
        name_length = int.from_bytes(data[start + 28 : start + 30], "little")
        name = bytes(data[start + 46 : start + 46 + name_length]).decode()
        if name.endswith(member_suffix):
            data[start + 24 : start + 28] = size.to_bytes(4, "little")
        start += 4
    path.write_bytes(bytes(data))


def test_declared_sizes_beyond_the_limits_are_refused_before_reading(tiny_net, tmp_path, monkeypatch):
    import esc_arch.weights
    from esc_arch.limits import CHECKPOINT_LIMITS

    torch.save({"params_ema": tiny_net().state_dict()}, tmp_path / "w.pth")
    _claim_size(tmp_path / "w.pth", "/data/0", CHECKPOINT_LIMITS["bytes"] + 1)
    monkeypatch.setattr(esc_arch.weights.files.torch, "load", None)
    with pytest.raises(ValueError, match=r"w\.pth: declares 2\.0 GiB of data once read, more than the limit of 2\.0 "
                       r"GiB; refused before reading it$"):  # fmt: skip
        load_model(tmp_path / "w.pth")
    torch.save({"params_ema": {f"t{i}": torch.zeros(1) for i in range(40)}}, tmp_path / "many.pth")
    monkeypatch.setitem(CHECKPOINT_LIMITS, "entries", 20)
    with pytest.raises(ValueError, match=r"many\.pth: holds 4\d members, more than the limit of 20$"):
        load_model(tmp_path / "many.pth")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda sd: sd.update({1: torch.zeros(1)}),
         r"the state dict has the key 1 \(int\); tensors are named by strings"),
        (lambda sd: sd.update({"to_img.bias": sd["to_img.bias"].to_sparse()}),
         r"'to_img\.bias' is a sparse_coo tensor; ESC weights are dense \(strided\) tensors"),
    ],
    ids=["int key", "sparse"],
)  # fmt: skip
def test_a_state_dict_that_is_not_named_dense_tensors_is_one_line(tiny_net, tmp_path, change, message):
    sd = dict(tiny_net().state_dict())
    change(sd)
    torch.save({"params_ema": sd}, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match=rf"^\S*odd\.pth: {message}$"):
        load_model(tmp_path / "odd.pth")


def test_an_upsampler_record_stored_as_floats(tiny_config, tmp_path):
    """ESCRealM's ``MetaUpsample`` holds integers; stored as whole floats it reads the same, with
    fractions it is refused."""
    from esc_arch import ESCRealM

    net = ESCRealM(**tiny_config, upscaling_factor=2, upsampler="pixelshuffle", mid_dim=8).eval()
    sd = dict(net.state_dict())
    sd["to_img.MetaUpsample"] = sd["to_img.MetaUpsample"].float()
    torch.save({"params_ema": sd}, tmp_path / "float.pth")
    loaded = load_model(tmp_path / "float.pth")
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert loaded.config == net.config and torch.equal(loaded(x), net(x))
    sd["to_img.MetaUpsample"] = sd["to_img.MetaUpsample"] + 0.5
    torch.save({"params_ema": sd}, tmp_path / "half.pth")
    with pytest.raises(ValueError, match=r"half\.pth: 'to_img\.MetaUpsample' \[\d\.5, .*\] holds fractions; an "
                       "upsampler record holds integers"):  # fmt: skip
        load_model(tmp_path / "half.pth")


def test_a_checkpoint_without_read_permission_is_one_line(tiny_net, permissions):
    path = permissions.folder / "secret.pth"
    torch.save({"params_ema": tiny_net().state_dict()}, path)
    path.chmod(0)
    with permissions.denied(), pytest.raises(ValueError) as info:
        load_model(path)
    assert str(info.value) == f"{path}: cannot be read: Permission denied"
