"""``esc export`` (esc_arch/export.py): a training checkpoint -> a model-zoo release file,
named as the test option files expect, the same bytes for the same weights."""

import hashlib
from pathlib import Path

import torch

from esc_arch import load_model
from esc_arch.commands.export import export_checkpoint


def test_training_state_export_load_round_trip(esc_cli, training_run, tmp_path):
    state, net = training_run
    exp = state.parent.parent
    x = torch.rand(1, 3, 9, 10)
    with torch.no_grad():
        expected = net(x)

    state = exp / "training_states/5.state"
    result = esc_cli("export", state, "-o", tmp_path / "zoo")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    path = Path(out.splitlines()[0])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert path.name == "custom_x2.pth"  # the name test option files expect
    again, _ = export_checkpoint(state, str(tmp_path / "zoo2"), with_hash=True)
    assert Path(again).name == f"custom_x2-{digest[:8]}.pth"  # same weights, same bytes, BasicSR's name
    assert Path(again).read_bytes() == path.read_bytes()
    assert f"`{digest}`" in out and "| custom | x2 |" in out
    assert set(torch.load(path, weights_only=True)) == {"params_ema"}
    with torch.no_grad():
        assert torch.equal(load_model(str(path))(x), expected)

    half, _ = export_checkpoint(str(path), str(tmp_path / "zoo"), fp16=True, safetensors=True, name="tiny")
    assert Path(half).suffix == ".safetensors" and Path(half).name == "tiny.safetensors"
    with torch.no_grad():
        assert (load_model(half)(x) - expected).abs().max().item() < 1e-2


def test_export_of_a_file_that_is_not_esc_is_a_clear_error(esc_cli, tmp_path):
    torch.save({"params": {"conv.weight": torch.ones(3, 3, 3, 3)}}, tmp_path / "other.pth")
    result = esc_cli("export", tmp_path / "other.pth", "-o", tmp_path / "zoo")
    assert (
        result.returncode == 2 and result.stderr.startswith("esc: error: ") and "not an ESC state dict" in result.stderr
    )
    assert not (tmp_path / "zoo").exists()


def test_an_existing_release_is_replaced_only_with_overwrite(esc_cli, tiny_net, tmp_path):
    """Two checkpoints of the same variant and scale exported into one folder: the second is
    refused before it is written, and replaces the first only with --overwrite."""
    for name, seed in (("first.pth", 0), ("second.pth", 1)):
        torch.save({"params_ema": tiny_net(seed=seed).state_dict()}, tmp_path / name)
    assert esc_cli("export", tmp_path / "first.pth", "-o", tmp_path / "zoo").returncode == 0
    first = (tmp_path / "zoo/custom_x2.pth").read_bytes()
    result = esc_cli("export", tmp_path / "second.pth", "-o", tmp_path / "zoo")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (f"esc: error: {tmp_path / 'zoo/custom_x2.pth'} exists already; pass --overwrite to "
                             "replace it, or choose another -o or --name\n")  # fmt: skip
    assert (tmp_path / "zoo/custom_x2.pth").read_bytes() == first
    assert esc_cli("export", tmp_path / "second.pth", "-o", tmp_path / "zoo", "--overwrite").returncode == 0
    assert (tmp_path / "zoo/custom_x2.pth").read_bytes() != first
    assert sorted(p.name for p in (tmp_path / "zoo").iterdir()) == ["custom_x2.pth"]
