"""Atomic writes (esc_arch/fileio.py), used by every writer of the project."""

import os
import re
from pathlib import Path

import pytest
import torch

from esc_arch.fileio import atomic_torch_save


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "net_g_1.pth"
    atomic_torch_save({"params": {"w": torch.ones(2)}}, str(path))

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"params": {"w": torch.zeros(2)}}, str(path))
    assert os.listdir(tmp_path) == ["net_g_1.pth"]
    assert torch.equal(torch.load(path, weights_only=True)["params"]["w"], torch.ones(2))


def _torch_save_on_a_full_disk(obj, f, *args, **kwargs):
    """What ``torch.save`` raises when the disk fills up mid-write (no ENOSPC in sight)."""
    f.write(b"part of an archive")
    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")


def test_a_write_on_a_full_disk_is_one_line_with_the_free_space(tmp_path, monkeypatch):
    from esc_arch import fileio

    monkeypatch.setattr(torch, "save", _torch_save_on_a_full_disk)
    monkeypatch.setattr(fileio, "_free_bytes", lambda folder: 12 * 1024)
    with pytest.raises(fileio.DiskFullError) as info:
        atomic_torch_save({"w": torch.ones(2)}, str(tmp_path / "a.pth"))
    assert str(info.value) == (
        f"cannot write {tmp_path / 'a.pth'}: the disk is full (12 KiB free in {tmp_path} without the partial file, "
        "which was removed)"
    )
    assert isinstance(info.value, ValueError) and os.listdir(tmp_path) == []  # no partial file under any name
    monkeypatch.setattr(fileio, "_free_bytes", lambda folder: 50 * 2**30)  # not full: the writer's own error
    with pytest.raises(RuntimeError, match="unexpected pos"):
        atomic_torch_save({"w": torch.ones(2)}, str(tmp_path / "a.pth"))
    with pytest.raises(fileio.DiskFullError, match=r"the disk is full \(50\.0 GiB free"):  # ENOSPC itself
        with fileio.atomic_path(tmp_path / "b.txt") as tmp, open(tmp, "w") as f:
            f.write("x")
            raise OSError(28, "No space left on device")


def test_basicsr_train_on_a_full_disk_keeps_the_last_checkpoint(basicsr_cli, write_options, tiny_training, tmp_path,
                                                                 monkeypatch):  # fmt: skip
    from esc_arch import fileio

    real_save = torch.save
    saves = []

    def save(obj, f, *args, **kwargs):  # the second checkpoint finds the disk full
        saves.append(f)
        return (real_save if len(saves) <= 2 else _torch_save_on_a_full_disk)(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(fileio, "_free_bytes", lambda folder: 3 * 2**20 // 4)
    opt = tiny_training("full", total_iter=4)
    result = basicsr_cli("train", "-opt", write_options(tmp_path / "full.yml", opt), "--root", tmp_path, cwd=tmp_path)
    models = tmp_path / "experiments" / "full" / "models"
    error = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.returncode == 1 and error == [
        f"basicsr train: error: cannot write {models / 'net_g_4.pth'}: the disk is full (768 KiB free in {models} "
        "without the partial file, which was removed)"
    ], result.stderr[-1000:]
    assert sorted(os.listdir(models)) == ["net_g_2.pth"]  # the checkpoint before it, and no partial file


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(options)``: a tmpfs mounted with ``options`` (mounting needs root: skipped
    elsewhere), unmounted after the test."""
    import subprocess

    mounted = []

    def mount(options: str) -> Path:
        folder = tmp_path / f"tmpfs{len(mounted)}"
        folder.mkdir()
        if subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True
        ).returncode:
            pytest.skip("mounting a tmpfs needs root")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=True)


def test_esc_export_onto_a_really_full_disk(esc_cli, data_dir, tmpfs):
    """The real failure (torch.save's own error, no ENOSPC) on a 256 KiB file system."""
    small_disk = tmpfs("size=256k")
    result = esc_cli("export", data_dir / "ESC-light_x2_small.pth", "-o", small_disk)  # 2.4 MB of weights
    assert result.returncode == 2 and os.listdir(small_disk) == []
    expected = (rf"esc: error: cannot write {small_disk}/ESC-light_x2\.pth: the disk is full \(\d+ KiB free in "
                rf"{small_disk} without the partial file, which was removed\)")  # fmt: skip
    assert re.fullmatch(expected, result.stderr.strip()), result.stderr


def test_esc_onnx_onto_a_read_only_file_system(esc_cli, data_dir, tmpfs):
    mount = tmpfs("ro,size=64k")
    result = esc_cli("onnx", "-m", data_dir / "missing.pth", "-o", mount / "x.onnx")
    assert result.returncode == 2
    assert result.stderr.strip() == f"esc: error: -o {mount}/x.onnx: {mount} is on a read-only file system"
