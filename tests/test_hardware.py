"""bf16 on a CPU without bf16 instructions (esc_arch/hardware.py): it runs fp32, saying so in
one line, in esc upscale and in BasicSR training; the capability is mocked where it is read."""

import pytest
import torch

from esc_arch.runtime import hardware


@pytest.fixture(params=[False, True], ids=["no-native-bf16", "native-bf16"])
def native(request, monkeypatch):
    monkeypatch.setattr(hardware, "native_bf16", lambda: request.param)
    return request.param


def test_cpu_precision(native):
    precision, note = hardware.cpu_precision("bf16", "cpu")
    assert precision == ("bf16" if native else None)
    assert (note is None) == native
    if note:
        capability = torch.backends.cpu.get_cpu_capability()
        assert note.startswith(f"bf16 was asked for, but this CPU ({capability}) has no bf16 instructions")
        assert note.endswith("so this runs in fp32")
    assert hardware.cpu_precision("fp16", "cuda") == ("fp16", None)
    assert hardware.cpu_precision(None, "cpu") == (None, None)


def test_the_capability_is_read_from_torch():
    assert isinstance(hardware.native_bf16(), bool)


def test_esc_upscale_bf16(native, esc_cli, data_dir, image_dir, tmp_path):
    model = data_dir / "ESC-light_x2_small.pth"
    result = esc_cli("upscale", "-i", image_dir / "train/t1.png", "-o", tmp_path, "-m", model, "--precision", "bf16")
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if line.startswith("esc: note:")]
    assert len(notes) == (0 if native else 1)
    assert (", bf16, attention" if native else ", fp32, attention") in result.stderr


def test_basicsr_training_bf16(native, basicsr_cli, write_options, tiny_training, tmp_path):
    opt = tiny_training("bf16", mixed_precision="bf16")
    result = basicsr_cli("train", "-opt", write_options(tmp_path / "bf16.yml", opt), "--root", tmp_path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-1000:]
    log = next((tmp_path / "experiments" / "bf16").glob("train_*.log")).read_text()
    assert log.count("train: mixed_precision: bf16 was asked for") == (0 if native else 1)
