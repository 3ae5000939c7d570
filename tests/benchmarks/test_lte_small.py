"""The arbitrary-scale CPU-budget experiment (benchmarks/lte_small.py) at toy size: prepare ->
train (two iterations, from the released ESC-light body) -> eval at five scales beside bicubic
-> report. The dataset, model and metric are tested in tests/basicsr_plugin/test_lte_training.py."""

import json
import sys

import pytest

pytestmark = pytest.mark.slow


def test_lte_experiment_pipeline_at_toy_size(run_command, repo_root, tmp_path):
    root = tmp_path / "exp"
    run_command([sys.executable, str(repo_root / "benchmarks/lte_small.py"), "--root", str(root), "--toy"])
    results = json.loads((root / "eval.json").read_text())
    assert list(results) == ["Val"] and list(results["Val"]) == ["2", "3", "4", "2.5", "6"]
    for scale, (esc_lte, _) in results["Val"].items():
        assert 10 < esc_lte < 60, scale
    bicubic = [results["Val"][s][1] for s in ("2", "2.5", "3", "4", "6")]
    assert 28 < bicubic[0] < 40 and bicubic == sorted(bicubic, reverse=True)  # harder as the scale grows
    table = (root / "results.md").read_text()
    assert "| Val ESC-LTE |" in table and f"{results['Val']['2'][1]:.2f}" in table
    assert "median" in table and "seconds" not in table  # iteration times from the log; no memory step here
