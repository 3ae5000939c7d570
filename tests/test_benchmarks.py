"""The benchmark scripts run (their figures are not checked: no timing assertions in tests)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_forward_cpu_quick_runs_every_configuration():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/forward_cpu.py"), "--quick", "--preset", "ESC-light"],
                         capture_output=True, text=True, check=True, timeout=900).stdout  # fmt: skip
    rows = [line for line in out.splitlines() if line.startswith("| ") and "backend" not in line]
    assert [row.split("|")[1].strip() for row in rows] == ["naive", "sdpa", "flex", "auto", "auto"]
    assert "failed" not in out
