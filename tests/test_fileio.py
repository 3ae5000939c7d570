"""Atomic writes (esc_arch/io/fileio.py), used by every writer of the project."""

import os
import re
from pathlib import Path

import pytest
import torch

from esc_arch.io.fileio import atomic_torch_save


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
    from esc_arch.io import fileio

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
    from esc_arch.io import fileio

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


# --------------------------------------------------------------------------- nothing replaced, nothing left behind


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_file_being_written_has_no_name_until_it_is_complete(tmp_path):
    """On Linux the file is written unnamed (O_TMPFILE): the folder shows nothing while it is
    written, so a kill at that moment leaves nothing behind."""
    from esc_arch.io import fileio

    with fileio.atomic_path(tmp_path / "m.onnx", suffix=".onnx") as tmp, open(tmp, "wb") as f:
        f.write(b"model")
        assert os.listdir(tmp_path) == []
    assert os.listdir(tmp_path) == ["m.onnx"] and (tmp_path / "m.onnx").read_bytes() == b"model"
    assert (tmp_path / "m.onnx").stat().st_mode & 0o777 == 0o666 & ~_umask()


@pytest.mark.parametrize("unnamed", [True, False], ids=["unnamed", "named temporary"])
def test_a_file_that_appears_while_writing_is_kept(unnamed, tmp_path, monkeypatch):
    """Without ``replace``, the final name is given by a link, which never replaces: a file that
    another process created meanwhile survives, and nothing is left under a temporary name."""
    from esc_arch.io import fileio

    if not unnamed:
        monkeypatch.setattr(fileio, "_unnamed", lambda folder: None)
    path = tmp_path / "photo_x2.png"
    with pytest.raises(fileio.OutputExists) as info:
        with fileio.atomic_path(path, suffix=".png", replace=False) as tmp, open(tmp, "wb") as f:
            f.write(b"this run's output")
            path.write_bytes(b"another run's output")  # between the check and the write
    assert str(info.value) == (f"{path} was created by another writer while this output was written; it was kept "
                               "and this output discarded")  # fmt: skip
    assert isinstance(info.value, ValueError)
    assert os.listdir(tmp_path) == ["photo_x2.png"] and path.read_bytes() == b"another run's output"
    with fileio.atomic_path(path, suffix=".png") as tmp, open(tmp, "wb") as f:  # replace: as before
        f.write(b"replaced")
    assert os.listdir(tmp_path) == ["photo_x2.png"] and path.read_bytes() == b"replaced"


def test_without_hard_links_the_name_is_still_never_replaced(tmp_path, monkeypatch):
    """A file system without hard links (vfat): the final name is created exclusively instead."""
    import errno

    from esc_arch.io import fileio

    def no_links(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(fileio, "_unnamed", lambda folder: None)
    monkeypatch.setattr(fileio.os, "link", no_links)
    path = tmp_path / "a.txt"
    with fileio.atomic_path(path, replace=False) as tmp, open(tmp, "w") as f:
        f.write("first")
    assert os.listdir(tmp_path) == ["a.txt"] and path.read_text() == "first"
    with pytest.raises(fileio.OutputExists):
        with fileio.atomic_path(path, replace=False) as tmp, open(tmp, "w") as f:
            f.write("second")
    assert os.listdir(tmp_path) == ["a.txt"] and path.read_text() == "first"


#: A writer killed in the middle of a write: esc_arch/io/fileio.py loaded on its own (no torch), the
#: named-temporary fallback forced when asked (argv[3] == "named").
_KILLED_WRITER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("fileio", sys.argv[1])
fileio = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fileio)
if sys.argv[3] == "named":
    fileio._unnamed = lambda folder: None
with fileio.atomic_path(sys.argv[2], suffix=".onnx") as tmp, open(tmp, "wb") as f:
    f.write(b"half a model")
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("mode", ["unnamed", "named"])
def test_kill_9_while_writing_leaves_nothing_for_long(mode, repo_root, tmp_path):
    """A real ``kill -9`` in the middle of a write: an unnamed file vanishes with its process; a
    named temporary (file systems without unnamed files) carries the writer's process id, and
    the next write into that folder by another process removes it."""
    import signal
    import subprocess
    import sys

    from esc_arch.io import fileio

    target = tmp_path / "m.onnx"
    writer = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(repo_root / "esc_arch" / "io" / "fileio.py"),
                               str(target), mode], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert writer.stdout.readline().strip() == "writing"
        left = os.listdir(tmp_path)
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait()
        writer.stdout.close()
    if mode == "unnamed":
        assert left == [] and os.listdir(tmp_path) == []
        return
    assert len(left) == 1 and left[0].startswith(".m.onnx.") and f"-{writer.pid}-" in left[0], left
    assert os.listdir(tmp_path) == left  # the kill left it
    with fileio.atomic_path(tmp_path / "other.txt") as tmp, open(tmp, "w") as f:  # a later write into that folder
        f.write("x")
    assert os.listdir(tmp_path) == ["other.txt"]


def test_temporaries_of_live_writers_and_other_files_are_kept(tmp_path):
    from esc_arch.io import fileio

    mine = fileio._temporary_name(str(tmp_path / "a.png"), ".png")
    Path(mine).write_bytes(b"being written by this process")
    other_host = tmp_path / f".b.png.{'0' * 6 if fileio._HOST != '0' * 6 else '1' * 6}-1-0123abcd.png"
    other_host.write_bytes(b"another machine's")
    (tmp_path / ".c.png.notours.png").write_bytes(b"not a temporary of ours")
    assert fileio.remove_stale_temporaries(str(tmp_path)) == []
    assert len(os.listdir(tmp_path)) == 3
