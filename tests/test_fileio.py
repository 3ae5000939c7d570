"""Atomic writes (esc_arch/fileio.py), used by every writer of the project."""

import os

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
