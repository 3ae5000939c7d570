"""``esc upscale`` across processes (esc_arch/runtime/ranks.py): torchrun's variables, the
split of the files between ranks, each rank's device or CPU threads; then real torchrun runs
of 2 CPU processes on gloo (slow): every file done once, one summary from rank 0 counting
across ranks, exit status 0 only when every file succeeded."""

from __future__ import annotations

import os
import sys

import cv2
import pytest
import torch

from esc_arch.runtime.ranks import Ranks, ranks


@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_every_file_goes_to_exactly_one_rank(world):
    for count in range(12):
        files = [f"f{i}.png" for i in range(count)]
        shares = [Ranks(rank, world, rank, world).share(files) for rank in range(world)]
        assert sorted(f for share in shares for f in share) == sorted(files)
        assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_ranks_come_from_torchruns_environment():
    assert ranks({}) == Ranks() and not ranks({}).distributed
    assert ranks({"WORLD_SIZE": "1", "RANK": "0"}) == Ranks()
    group = ranks({"WORLD_SIZE": "16", "RANK": "9", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "8"})
    assert (group.rank, group.world, group.local_rank, group.local_world) == (9, 16, 1, 8)
    assert group.distributed and not group.main
    with pytest.raises(ValueError, match="RANK 4 is outside WORLD_SIZE 2"):
        ranks({"WORLD_SIZE": "2", "RANK": "4"})
    with pytest.raises(ValueError, match="are not numbers"):
        ranks({"WORLD_SIZE": "two"})


def test_each_rank_takes_its_share_of_the_cpu_threads_or_its_own_gpu():
    threads = torch.get_num_threads()
    try:
        assert Ranks(1, 2, 1, 2).device(torch.device("cpu")) == torch.device("cpu")
        assert torch.get_num_threads() == max(1, (os.cpu_count() or 1) // 2)
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(ValueError, match=r"--device cuda:1: under torchrun each process takes cuda:LOCAL_RANK"):
        Ranks(0, 2, 0, 2).device(torch.device("cuda", 1))
    assert Ranks().device(torch.device("cpu")) == torch.device("cpu")  # one process: as given


@pytest.fixture
def photos(image_dir, tmp_path):
    """Five 40x32 crops of a photograph and one file that is not an image."""
    folder = tmp_path / "photos"
    folder.mkdir()
    bird = cv2.imread(str(image_dir / "val" / "bird.png"))
    for index in range(5):
        cv2.imwrite(str(folder / f"p{index}.png"), bird[10 * index : 10 * index + 32, 20:60])
    return folder


def _torchrun(run_command, launcher, args):
    """``torchrun --standalone --nproc_per_node=2 LAUNCHER upscale ARGS`` (a free port each time)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *launcher,
               "upscale", *args]  # fmt: skip
    return run_command(command, check=False)


@pytest.mark.slow  # three torchrun launches of two processes each
def test_torchrun_splits_the_files_and_rank_0_counts_across_ranks(run_command, esc_bin, photos, data_dir, tmp_path):
    model = data_dir / "ESC-light_x2_small.pth"
    (photos / "broken.png").write_text("not an image")
    out = tmp_path / "out"
    # the console script, as `torchrun --nproc_per_node=2 $(which esc) upscale ...`
    args = ["-i", photos, "-o", out, "-m", model, "--device", "cpu"]
    result = _torchrun(run_command, [esc_bin], args)
    lines = result.stderr.splitlines()
    assert result.returncode == 1, result.stderr  # a rank exited 1 (one file failed): torchrun exits 1
    assert sorted(p.name for p in out.iterdir()) == [f"p{i}_ESC-light_x2.png" for i in range(5)]
    assert lines.count("5 upscaled, 1 failed by 2 processes (3, 3 files)") == 1
    assert sum("failed: " in line and "broken.png" in line for line in lines) == 1
    assert sum("on 2 processes (cpu, split by file)" in line for line in lines) == 1
    # python -m esc_arch.cli, every file succeeding: exit status 0; no file written twice
    (photos / "broken.png").unlink()
    again = _torchrun(run_command, ["-m", "esc_arch.cli"], [*args, "--overwrite"])
    assert again.returncode == 0, again.stderr
    assert again.stderr.splitlines().count("5 upscaled, 0 failed by 2 processes (3, 2 files)") == 1
    # a refusal before any work: one line, from rank 0
    refused = _torchrun(run_command, ["-m", "esc_arch.cli"], [*args, "--tile", "0"])
    assert refused.returncode == 1
    errors = [line for line in refused.stderr.splitlines() if line.startswith("esc: error:")]
    assert errors == ["esc: error: --tile 0: must be a positive number of input pixels"]
