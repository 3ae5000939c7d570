"""The command lines (esc_arch/cli.py): parsers and dispatch in this process; each console
script once as a subprocess (slow tier)."""

import sys

import cv2
import pytest
import torch

from esc_arch import cli


@pytest.mark.parametrize(
    ("main", "commands"),
    [(cli.esc_main, ["demo", "upscale", "export", "onnx"]), (cli.basicsr_main, ["train", "test"])],
)
def test_help_lists_every_command(main, commands, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in commands:
        assert command in out
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("usage: ")


def test_help_does_not_import_the_heavy_modules(capsys, monkeypatch):
    """``--help`` stays fast: the commands' modules are imported only when they run."""
    commands = ("esc_arch.upscale", "esc_arch.onnx_export", "esc_arch.basicsr_plugin.demo",
                "esc_arch.basicsr_plugin.pipeline")  # fmt: skip
    for name in commands:
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(SystemExit):
        cli.esc_main(["upscale", "--help"])
    with pytest.raises(SystemExit):
        cli.basicsr_main(["train", "--help"])
    assert not {"esc_arch.upscale", "esc_arch.basicsr_plugin.pipeline"} & set(sys.modules)


def test_python_m_dispatch(monkeypatch, tmp_path, capsys):
    """``python -m esc_arch.cli`` is ``basicsr`` (for torchrun), or ``esc`` after a first ``esc``."""
    monkeypatch.setattr(sys, "argv", ["esc_arch.cli", "esc", "export", str(tmp_path / "none.pth")])
    assert cli._main() == 2
    assert "esc: error: " in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["esc_arch.cli", "train", "-opt", str(tmp_path / "none.yml")])
    assert cli._main() == 2
    assert "basicsr train: error: option file" in capsys.readouterr().err


@pytest.mark.slow
def test_esc_console_script(run_command, esc_bin, tiny_net, image_dir, tmp_path):
    torch.save({"params_ema": tiny_net().state_dict()}, tmp_path / "tiny.pth")
    result = run_command([esc_bin, "upscale", "-i", image_dir / "val/bird.png", "-o", tmp_path / "out",
                          "-m", tmp_path / "tiny.pth"])  # fmt: skip
    assert "1 upscaled, 0 failed" in result.stderr
    assert cv2.imread(str(tmp_path / "out/bird_custom_x2.png")).shape == (576, 576, 3)


@pytest.mark.slow
def test_basicsr_console_script(run_command, basicsr_bin, tmp_path):
    result = run_command([basicsr_bin, "train", "-opt", "nope.yml"], tmp_path, check=False)
    assert result.returncode == 2 and "option file 'nope.yml' does not exist" in result.stderr
    assert "Traceback" not in result.stderr
