"""The small-set experiment (benchmarks/quality_small.py) at toy size, and what it is built on:
several HR folders -> one set (with downscaled copies), small images kept whole, crop strips."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import DATA

ROOT = Path(__file__).resolve().parent.parent
IMAGES = DATA / "images"


def test_collect_images_merges_folders_with_downscaled_copies(tmp_path):
    from esc_arch.data_prep import collect_images

    b = tmp_path / "b"
    b.mkdir()
    (b / "bird.png").write_bytes((IMAGES / "val/bird.png").read_bytes())
    count = collect_images([str(IMAGES / "train"), str(b)], str(tmp_path / "out"), factors=(1, 0.5), workers=1)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert count == 10 and len(names) == 10
    assert "birdT050.png" in names and "bird.png" in names
    full, half = cv2.imread(str(tmp_path / "out/bird.png")), cv2.imread(str(tmp_path / "out/birdT050.png"))
    assert full.shape == (288, 288, 3) and half.shape == (144, 144, 3)
    # an image of the same name in two folders is refused, naming both
    (b / "t1.png").write_bytes((IMAGES / "train/t1.png").read_bytes())
    with pytest.raises(ValueError, match="two inputs named 't1'"):
        collect_images([str(IMAGES / "train"), str(b)], str(tmp_path / "out2"), workers=1)


def test_small_images_are_kept_whole_or_skipped(tmp_path):
    from esc_arch.data_prep import extract_subimages

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
    from esc_arch.data_prep import PreparationError

    with pytest.raises(PreparationError, match="smaller"):  # without min_size: an error, as before
        extract_subimages(str(hr), str(tmp_path / "sub2"), crop_size=192, step=96, workers=1)


def test_crop_strip_shows_the_most_detailed_region():
    from esc_arch.visual import crop_strip, detail_window

    hr = np.full((128, 160, 3), 120, np.uint8)
    hr[64:96, 96:128] = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    assert detail_window(hr, 32, 2) == (64, 96)
    lq = cv2.resize(hr, (80, 64), interpolation=cv2.INTER_AREA)
    out = cv2.resize(lq, (160, 128), interpolation=cv2.INTER_CUBIC)
    strip = crop_strip(lq, out, hr, scale=2, size=32, zoom=2)
    assert strip.shape == (18 + 64, 4 * 64 + 3 * 4, 3)
    esc_panel = strip[18:, 2 * (64 + 4) : 2 * (64 + 4) + 64]
    expected = cv2.resize(out[64:96, 96:128], (64, 64), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(esc_panel, expected)
    hr_panel = strip[18:, 3 * (64 + 4) :]
    np.testing.assert_array_equal(hr_panel, cv2.resize(hr[64:96, 96:128], (64, 64), interpolation=cv2.INTER_NEAREST))
    assert crop_strip(lq, out, None, scale=2, size=32).shape[1] == 3 * 64 + 2 * 4  # no HR: three panels
    with pytest.raises(ValueError, match="not 2x"):
        crop_strip(lq, out[:-2], hr, scale=2)


def test_crop_strip_and_suffix_options_are_checked():
    from esc_arch.basicsr_plugin.checks import OptionError, check_options

    opt = yaml_options("test_ESC_light_x2.yml")
    check_options(opt, "x.yml", is_train=False)
    bad = dict(opt, val=dict(opt["val"], crop_strip={"size": "big"}))
    with pytest.raises(OptionError, match="crop_strip must be a mapping"):
        check_options(bad, "x.yml", is_train=False)
    no_suffix = dict(opt, val={k: v for k, v in opt["val"].items() if k != "suffix"})
    with pytest.raises(OptionError, match="needs a 'suffix'"):
        check_options(no_suffix, "x.yml", is_train=False)


def yaml_options(name: str) -> dict:
    import yaml

    opt = yaml.safe_load((ROOT / "options" / name).read_text())
    opt["path"]["pretrain_network_g"] = None
    for dataset in opt["datasets"].values():  # point the test sets at the bundled images
        dataset.update(dataroot_gt=str(IMAGES / "val"), dataroot_lq=str(IMAGES / "val"), filename_tmpl="{}")
    return opt


def test_quality_experiment_pipeline_at_toy_size(tmp_path):
    """prepare -> train (budgeted, resumable) -> eval (export, basicsr test, strips) -> report."""
    root = tmp_path / "exp"
    command = [
        sys.executable, str(ROOT / "benchmarks/quality_small.py"), "--root", str(root), "--toy",
        "--hr", str(IMAGES / "train"), "--bench", "Val", "--bench-hr", str(IMAGES / "val"), "--workers", "1",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    wall = json.loads((root / "train_wall.json").read_text())
    assert wall["finished"] and wall["runs"] == 1 and wall["seconds"] > 0
    evaluation = json.loads((root / "evaluation.json").read_text())
    assert evaluation["iteration"] == 4
    psnr, ssim = evaluation["scores"]["Val"]
    assert 5 < psnr < 60 and 0 < ssim <= 1
    bicubic_psnr = evaluation["bicubic"]["Val"][0]
    assert 28 < bicubic_psnr < 40  # bird and butterfly x2, measured by the same protocol
    table = (root / "results.md").read_text()
    assert f"{psnr:.2f} / {ssim:.4f}" in table and "4 iterations of 2 x 32px" in table
    assert (root / "psnr_vs_iter.png").stat().st_size > 10_000
    strips = sorted((root / "results/ESC_light_x2_small_eval/visualization/Val").glob("*_strip.png"))
    assert [p.name for p in strips] == ["birdx2_strip.png", "butterflyx2_strip.png"]
    assert cv2.imread(str(strips[0])).shape == (18 + 64, 4 * 64 + 3 * 4, 3)

    from esc_arch import load_model

    net = load_model(evaluation["weights"])
    assert type(net).__name__ == "ESC" and net.upscaling_factor == 2

    # the train step again: finished, so nothing runs; the budget is respected on a fresh root
    again = subprocess.run([*command, "--steps", "train"], capture_output=True, text=True, timeout=300)
    assert "training already finished" in again.stdout
    spent = subprocess.run(
        [*command[:3], str(tmp_path / "exp2"), *command[4:], "--steps", "prepare", "train", "--budget-min", "0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert spent.returncode == 0 and "budget of 0.0 min spent" in spent.stdout
