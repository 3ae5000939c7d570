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
    commands = ("esc_arch.commands.upscale", "esc_arch.commands.onnx_export", "esc_arch.basicsr_plugin.demo",
                "esc_arch.basicsr_plugin.pipeline")  # fmt: skip
    for name in commands:
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(SystemExit):
        cli.esc_main(["upscale", "--help"])
    with pytest.raises(SystemExit):
        cli.basicsr_main(["train", "--help"])
    assert not {"esc_arch.commands.upscale", "esc_arch.basicsr_plugin.pipeline"} & set(sys.modules)


def test_python_m_dispatch(monkeypatch, tmp_path, capsys):
    """``python -m esc_arch.cli`` is ``basicsr`` (for torchrun), or ``esc`` after a first ``esc``
    or before an esc subcommand (``python -m esc_arch.cli upscale ...``, for torchrun)."""
    monkeypatch.setattr(sys, "argv", ["esc_arch.cli", "esc", "export", str(tmp_path / "none.pth")])
    assert cli._main() == 2
    assert "esc: error: " in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["esc_arch.cli", "upscale", "-i", "x.png", "-o", "out", "-m", "w.pth",
                                      "--tile", "0"])  # fmt: skip
    assert cli._main() == 2
    assert capsys.readouterr().err == "esc: error: --tile 0: must be a positive number of input pixels\n"
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


# --------------------------------------------------------------------------- the package's warnings on the console

RIB_FILE = "rib/escrib_tiny_x2_gate_linear_pixelshuffle.pth"  # tests/data: an ESC-RIB of window 16


def _noisy_load_model(monkeypatch, seen: list, *, fail: bool):
    """``esc_arch.weights.load_model`` that logs an assumption on ``basicsr.esc`` (as loading an
    ESC-RIB file does) and records its keywords; with ``fail``, then refuses the file."""
    import logging

    import esc_arch.weights

    real = esc_arch.weights.load_model

    def load_model(path, **kwargs):
        seen.append(kwargs)
        logging.getLogger("basicsr.esc").warning("ESC-RIB: the released window 64 assumed")
        logging.getLogger("basicsr.esc").info("an info record, not shown")
        if fail:
            raise ValueError(f"{path}: refused")
        return real(path, **kwargs)

    monkeypatch.setattr(esc_arch.weights, "load_model", load_model)


@pytest.mark.parametrize("command", ["upscale", "export", "onnx"])
def test_a_logged_assumption_is_one_note_on_stderr(command, esc_cli, monkeypatch, tmp_path):
    """Every command shows the package's warnings once, as ``esc: note: ...``, and passes
    ``--window-size`` to ``load_model``."""
    seen = []
    _noisy_load_model(monkeypatch, seen, fail=True)
    model = tmp_path / "w.pth"
    args = {
        "upscale": ["upscale", "-i", tmp_path, "-o", tmp_path / "out", "-m", model],
        "export": ["export", model, "-o", tmp_path / "out"],
        "onnx": ["onnx", "-m", model, "-o", tmp_path / "m.onnx"],
    }[command]
    result = esc_cli(*args, "--window-size", "16")
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["esc: note: ESC-RIB: the released window 64 assumed",
                                          f"esc: error: {model}: refused"]  # fmt: skip
    assert seen[0]["window_size"] == 16


def test_a_note_is_printed_once_when_basicsr_prints_it_already(esc_cli, tiny_net, monkeypatch, image_dir, tmp_path,
                                                                capsys):  # fmt: skip
    """A BasicSR run in this process has set its console logger up (``esc demo`` trains, then
    evaluates): the record is printed by it alone, not a second time as a note."""
    import logging
    import sys

    torch.save({"params_ema": tiny_net().state_dict()}, tmp_path / "tiny.pth")
    args = ["upscale", "-i", image_dir / "val/bird.png", "-o", tmp_path / "out", "-m", tmp_path / "tiny.pth"]
    _noisy_load_model(monkeypatch, [], fail=False)
    result = esc_cli(*args)
    assert result.returncode == 0 and result.stderr.count("ESC-RIB: the released window 64 assumed") == 1
    basicsr = logging.getLogger("basicsr")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    monkeypatch.setattr(basicsr, "handlers", [handler])
    monkeypatch.setattr(basicsr, "propagate", False)
    result = esc_cli(*args, "--overwrite")
    assert result.returncode == 0
    assert [line for line in result.stderr.splitlines() if "window 64" in line] == [
        "WARNING: ESC-RIB: the released window 64 assumed"
    ]


def test_the_assumed_rib_window_is_a_note(esc_cli, data_dir, image_dir, tmp_path):
    """The real ESC-RIB file without --window-size: loading's notice of the assumed window is
    one ``esc: note:`` line; with --window-size there is none."""
    cv2.imwrite(str(tmp_path / "b.png"), cv2.imread(str(image_dir / "val/bird.png"))[:37, :45])
    args = ["upscale", "-i", tmp_path / "b.png", "-o", tmp_path / "out", "-m", data_dir / RIB_FILE]
    result = esc_cli(*args)
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "ESC-RIB:" in line]
    assert len(notes) == 1 and notes[0].startswith("esc: note: ESC-RIB: the window is not stored in checkpoints; "
                                                   "the released 64 assumed"), result.stderr  # fmt: skip
    result = esc_cli(*args, "--window-size", "16", "--overwrite")
    assert result.returncode == 0 and "esc: note:" not in result.stderr, result.stderr
    result = esc_cli("export", data_dir / RIB_FILE, "-o", tmp_path / "zoo", "--window-size", "16")
    assert result.returncode == 0 and result.stderr == "", result.stderr


@pytest.mark.parametrize("command", ["upscale", "export", "onnx"])
def test_ctrl_c_is_one_line_and_exit_130(command, esc_cli, monkeypatch, tmp_path):
    """Ctrl-C at any point of a command (here while the model is read): one line, no traceback."""
    import esc_arch.weights

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(esc_arch.weights, "load_model", interrupted)
    args = {
        "upscale": ["upscale", "-i", tmp_path, "-o", tmp_path / "out", "-m", tmp_path / "w.pth"],
        "export": ["export", tmp_path / "w.pth", "-o", tmp_path / "out"],
        "onnx": ["onnx", "-m", tmp_path / "w.pth", "-o", tmp_path / "m.onnx"],
    }[command]
    try:
        result = esc_cli(*args)
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C ended the command with a traceback")
    assert result.returncode == 130 and result.stderr == "esc: interrupted\n"
    assert list(tmp_path.iterdir()) == []
