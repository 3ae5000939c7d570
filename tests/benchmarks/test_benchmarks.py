"""The benchmark suite (benchmarks/suite.py) runs end to end (its figures are not checked: no
timing assertions in tests)."""

import json
import sys

import pytest

pytestmark = pytest.mark.slow


def test_suite_quick_runs_every_section(run_command, repo_root, tmp_path):
    out = run_command([sys.executable, repo_root / "benchmarks/suite.py", "--quick", "--out", tmp_path],
                      timeout=1200).stdout  # fmt: skip
    assert "failed" not in out, out
    assert out.startswith("Machine: ") and "Matmul peak: fp32" in out
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    backends = [k for k in results if k.startswith("ESC x4 ")]
    assert backends == [
        "ESC x4 naive fp32", "ESC x4 sdpa fp32", "ESC x4 flex fp32", "ESC x4 auto fp32",
        "ESC x4 auto fp32, channels-last", "ESC x4 auto bf16",
    ]  # fmt: skip
    assert results["ESC x4 auto fp32"]["gflops"] > 0
    assert {"peer SwinIR-light", "peer SAFMN", "peer SPAN", "peer OmniSR", "train fp32", "tiled bf16"} <= set(results)
    assert all("median_s" in r and r["peak_mib"] >= 0 for r in results.values())
    assert results["tiled fp32"]["output"] == [192, 256]
    assert (tmp_path / "chart.png").stat().st_size > 10_000 and (tmp_path / "results.md").is_file()
