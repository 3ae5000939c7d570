"""The small-set experiment (benchmarks/quality_small.py) at toy size: prepare -> train
(budgeted, resumable) -> eval (export, basicsr test, crop strips) -> report. What it is built on
is tested where it lives (tests/test_data_prep.py, tests/test_visual.py,
tests/basicsr_plugin/test_checks.py)."""

import json
import sys
from pathlib import Path

import cv2
import pytest


def test_validations_are_read_at_their_own_iterations():
    """BasicSR logs no iteration with a validation: with print_freq 50 and val_freq 104 (the
    ESC-RIB recipe) the points are at 104 and 208, not at the printed 100 and 200."""
    sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
    try:
        from quality_small import parse_validations
    finally:
        sys.path.pop(0)
    log = (
        "".join(f"INFO: [ESC..][epoch:  0, iter:     {i:,}, lr:(1e-3,)] l_pix: 1e-2\n" for i in (50, 100))
        + "INFO: Validation Set5\n\t # psnr: 31.4794\tBest: 31.4794 @ 104 iter\n\t # ssim: 0.8817\tBest: x\n"
    )
    log += (
        "INFO: [ESC..][epoch:  0, iter:     1,000, lr:(1e-3,)]\nINFO: Validation Set5\n # psnr: 33.5\n # ssim: 0.93\n"
    )
    assert parse_validations(log, 104) == [(104, "Set5", 31.4794, 0.8817), (1040, "Set5", 33.5, 0.93)]
    assert parse_validations(log, 50) == [(100, "Set5", 31.4794, 0.8817), (1000, "Set5", 33.5, 0.93)]


@pytest.mark.slow
def test_quality_experiment_pipeline_at_toy_size(run_command, repo_root, image_dir, tmp_path):
    root = tmp_path / "exp"
    command = [
        sys.executable, str(repo_root / "benchmarks/quality_small.py"), "--root", str(root), "--toy",
        "--hr", str(image_dir / "train"), "--bench", "Val", "--bench-hr", str(image_dir / "val"), "--workers", "1",
    ]  # fmt: skip
    run_command(command)

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
    again = run_command([*command, "--steps", "train"], timeout=300)
    assert "training already finished" in again.stdout
    spent = run_command([*command[:3], str(tmp_path / "exp2"), *command[4:], "--steps", "prepare", "train",
                         "--budget-min", "0"], timeout=300)  # fmt: skip
    assert "budget of 0.0 min spent" in spent.stdout


@pytest.mark.slow
def test_the_esc_rib_recipe_at_toy_size(run_command, repo_root, image_dir, tmp_path):
    """``--network ESC-RIB``: its recipe, its release name, the report's label; no x4 recipe."""
    command = [
        sys.executable, str(repo_root / "benchmarks/quality_small.py"), "--root", str(tmp_path / "rib"), "--toy",
        "--network", "ESC-RIB", "--hr", str(image_dir / "train"), "--bench", "Val", "--bench-hr",
        str(image_dir / "val"), "--workers", "1",
    ]  # fmt: skip
    run_command(command)
    evaluation = json.loads((tmp_path / "rib" / "evaluation.json").read_text())
    assert evaluation["weights"].endswith("ESC-RIB_x2_small.pth") and evaluation["iteration"] == 4
    assert "| **ESC-RIB, ours** |" in (tmp_path / "rib" / "results.md").read_text()

    from esc_arch import load_model

    assert type(load_model(evaluation["weights"])).__name__ == "ESCRIB"
    refused = run_command([*command, "--scale", "4"], check=False)
    assert refused.returncode == 2 and "no ESC-RIB x4 recipe:" in refused.stderr
