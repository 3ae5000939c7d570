"""Data preparation (esc_arch/basicsr_plugin/data_prep.py) and the datasets/ scripts built on it: sub-images,
MATLAB-bicubic LR, LMDBs in BasicSR's layout, benchmark folders, several HR folders -> one set."""

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from esc_arch.basicsr_plugin.checks import read_lmdb_meta


def test_data_scripts_make_basicsr_layouts(sr_data, data_script, image_dir, capsys):
    gt = read_lmdb_meta(str(sr_data / "T4/T4_HR_sub.lmdb"))
    lq = read_lmdb_meta(str(sr_data / "T4/T4_LR_bicubic_X2_sub.lmdb"))
    assert set(gt) == set(lq) and len(gt) > 20
    assert all(gt[k][:2] == (96, 96) and lq[k][:2] == (48, 48) for k in gt)
    assert "t1_s001" in gt
    bird_lr = cv2.imread(str(sr_data / "Set5/LR_bicubic/X2/birdx2.png"))
    assert bird_lr.shape == (144, 144, 3)
    # idempotent: a second run keeps every output as it is
    stamp = (sr_data / "T4/T4_HR_sub.lmdb/data.mdb").stat().st_mtime_ns
    capsys.readouterr()
    status = data_script("prepare_sr_lmdb").main(
        ["--hr", str(image_dir / "train"), "--name", "T4", "--out", str(sr_data / "T4"), "--scales", "2",
         "--crop-size", "96", "--step", "48", "--workers", "1"]
    )  # fmt: skip
    assert status == 0 and "done" in capsys.readouterr().out
    assert (sr_data / "T4/T4_HR_sub.lmdb/data.mdb").stat().st_mtime_ns == stamp


def test_data_script_reports_bad_images(data_script, image_dir, tmp_path, capsys):
    folder = tmp_path / "hr"
    folder.mkdir()
    (folder / "good.png").write_bytes((image_dir / "train/t1.png").read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    status = data_script("prepare_sr_lmdb").main(
        ["--hr", str(folder), "--name", "x", "--out", str(tmp_path / "out"), "--scales", "2", "--crop-size", "64",
         "--step", "64", "--workers", "1"]
    )  # fmt: skip
    assert status == 1
    assert "broken.png: unreadable or truncated image" in capsys.readouterr().err
    assert list((tmp_path / "out/x_HR_sub").glob("good_s*.png"))  # the good image was still processed


@pytest.mark.slow
def test_data_script_as_a_command_with_worker_processes(run_command, repo_root, image_dir, sr_data, tmp_path):
    """The script run as users run it, with a pool of 2 processes: the same LMDBs as in-process."""
    run_command([sys.executable, repo_root / "datasets/prepare_sr_lmdb.py", "--hr", image_dir / "train",
                 "--name", "T4", "--out", tmp_path / "T4", "--scales", "2", "--crop-size", "96", "--step", "48",
                 "--workers", "2"], tmp_path)  # fmt: skip
    for lmdb in ("T4_HR_sub.lmdb", "T4_LR_bicubic_X2_sub.lmdb"):
        meta = "T4/" + lmdb + "/meta_info.txt"
        assert (tmp_path / meta).read_text() == (sr_data / meta).read_text()
    for name in ("t1_s001.png", "t1_s002.png"):
        pooled = cv2.imread(str(tmp_path / "T4/T4_LR_bicubic_X2_sub" / name))
        assert np.array_equal(pooled, cv2.imread(str(sr_data / "T4/T4_LR_bicubic_X2_sub" / name)))


def test_collect_images_merges_folders_with_downscaled_copies(image_dir, tmp_path):
    from esc_arch.basicsr_plugin.data_prep import collect_images

    b = tmp_path / "b"
    b.mkdir()
    (b / "bird.png").write_bytes((image_dir / "val/bird.png").read_bytes())
    count = collect_images([str(image_dir / "train"), str(b)], str(tmp_path / "out"), factors=(1, 0.5), workers=1)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert count == 10 and len(names) == 10
    assert "birdT050.png" in names and "bird.png" in names
    full, half = cv2.imread(str(tmp_path / "out/bird.png")), cv2.imread(str(tmp_path / "out/birdT050.png"))
    assert full.shape == (288, 288, 3) and half.shape == (144, 144, 3)
    # an image of the same name in two folders is refused, naming both
    (b / "t1.png").write_bytes((image_dir / "train/t1.png").read_bytes())
    with pytest.raises(ValueError, match="two inputs named 't1'"):
        collect_images([str(image_dir / "train"), str(b)], str(tmp_path / "out2"), workers=1)


def test_small_images_are_kept_whole_or_skipped(tmp_path):
    from esc_arch.basicsr_plugin.data_prep import PreparationError, extract_subimages

    hr = tmp_path / "hr"
    hr.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(hr / "wide.png"), rng.integers(0, 255, (100, 300, 3), dtype=np.uint8))  # short side 100
    cv2.imwrite(str(hr / "tiny.png"), rng.integers(0, 255, (50, 60, 3), dtype=np.uint8))
    skipped = extract_subimages(str(hr), str(tmp_path / "sub"), crop_size=192, step=96, min_size=64, multiple=12)
    assert [Path(p).name for p in skipped] == ["tiny.png"]
    shapes = {p.name: cv2.imread(str(p)).shape[:2] for p in (tmp_path / "sub").iterdir()}
    assert set(shapes.values()) == {(96, 192)}  # 100 -> 96 (multiple of 12): every scale divides it
    assert len(shapes) == 3  # y: 0 only; x: 0, 96 and the border crop at 300 - 192
    with pytest.raises(PreparationError, match="smaller"):  # without min_size: an error, as before
        extract_subimages(str(hr), str(tmp_path / "sub2"), crop_size=192, step=96, workers=1)
