"""The benchmark scripts run end to end (their timings are not checked: no timing assertions in
tests; what they compute besides, such as gradient differences and PSNR, is)."""

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
    assert {"ESC x2 fp32, input 32x32", "ESC-RIB x2 fp32, input 32x32"} <= set(results)
    assert (tmp_path / "chart.png").stat().st_size > 10_000 and (tmp_path / "results.md").is_file()


def test_inference_bounds_quick_prints_every_section(run_command, repo_root, tmp_path):
    """benchmarks/inference_bounds.py at 48x64: the machine's rates, every configuration with its
    matmul bound and roofline, the acceptance lines, the class tables, a compile probe, the
    attention kernels tried, the bf16 PSNR on the real photos, malloc, FlashBias and profiles."""
    out = run_command([sys.executable, repo_root / "benchmarks/inference_bounds.py", "--quick", "--out", tmp_path],
                      timeout=1200).stdout  # fmt: skip
    text = (tmp_path / "inference_bounds.md").read_text()
    assert out.startswith("Machine: ") and "Rates in this run: matmul fp32" in text and "copy bandwidth" in text
    rows = ("fp32, attention windows first", "fp32 (package)", "bf16 autocast, attention windows first",
            "bf16 weights converted once (package)")  # fmt: skip
    for row in rows:
        assert f"| {row} |" in text, row
    for line in ("- bf16 (package) vs fp32 (package), speed-up:", "- bf16 (package), latency / roofline:",
                 "- fp32 (package), latency / roofline:"):  # fmt: skip
        assert line in text, line
    assert text.count("### Roofline by operator class:") == 4 and "| **pass** |" in text
    results = json.loads((tmp_path / "inference_bounds.json").read_text())
    for summary in results["configurations"].values():
        assert summary["ratio"] == pytest.approx(summary["wall_s"] / summary["roofline_s"])
        assert {"convolution", "attention"} <= set(summary["classes"])
    probe = results["compile"]["fp32, inductor defaults (esc upscale --compile)"]
    assert probe["eager"] > 0 and probe["compiled"] > 0 and probe["compile"] > 0
    assert set(results["attention"]["bf16"]) >= {"sdpa, heads first (package)", "FlexAttention, compiled"}
    assert all(diff < 0.1 for _, _, diff in results["attention"]["fp32"].values() if diff == diff)  # NaN: no diff
    assert min(results["psnr"]["converted"].values()) >= 50  # bf16 vs fp32, trained weights
    assert "| 48x48 | glibc defaults |" in text and "| 48x48 | kept |" in text
    assert "| fp32 | 48 |" in text and "### Operator profile, bf16" in text


def test_train_attention_quick_matches_gradients(run_command, repo_root, tmp_path):
    """benchmarks/train_attention.py --quick: both paths train in fp32 and bf16, the new one runs
    ``chunked``, and its gradients equal the math path's (the table it prints)."""
    report = tmp_path / "train_attention.md"
    run_command([sys.executable, repo_root / "benchmarks/train_attention.py", "--quick", "--out", report],
                timeout=1200)  # fmt: skip
    text = report.read_text()
    assert "failed" not in text, text
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith(("| fp32 |", "| bf16 |"))]
    assert [(r[0].strip(), r[1].strip(), r[2].strip()) for r in rows] == [
        ("fp32", "old", "sdpa"), ("fp32", "new", "chunked"), ("bf16", "old", "sdpa"), ("bf16", "new", "chunked"),
    ]  # fmt: skip
    grads = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in text.splitlines()
             if line.startswith(("| table |", "| flashbias |"))}  # fmt: skip
    assert set(grads) == {"table", "flashbias"}
    for layout, cells in grads.items():
        assert float(cells[0]) < 1e-9 and float(cells[3]) < 1e-5, (layout, cells)  # bias grads; all params, relative


def test_output_check_quick_prints_the_ratio(run_command, repo_root):
    """benchmarks/output_check.py --quick: the check's cost as a share of an ESC x4 forward."""
    out = run_command([sys.executable, repo_root / "benchmarks/output_check.py", "--quick"], timeout=600).stdout
    assert out.startswith("Machine: ") and "input 32x32 -> output (1, 3, 128, 128)" in out
    ratio = next(line for line in out.splitlines() if line.startswith("check / forward: "))
    assert ratio.endswith(("PASS", "FAIL")) and "(acceptance: under 1%)" in ratio


def test_video_pipeline_quick_prints_the_overhead(run_command, repo_root):
    """benchmarks/video_pipeline.py --quick: decode + upscale + encode against upscale alone."""
    pytest.importorskip("av")
    out = run_command([sys.executable, repo_root / "benchmarks/video_pipeline.py", "--quick"], timeout=600).stdout
    assert out.startswith("Machine: ") and "8 frames of 40x32 -> 80x64, batches of 4, libx264 yuv420p" in out
    assert "upscale alone: " in out and "decode + upscale + encode: " in out
    assert next(line for line in out.splitlines() if line.startswith("pipeline overhead: ")).endswith("%)")


def test_onnx_speed_quick_prints_the_ratio(run_command, repo_root):
    """benchmarks/onnx_speed.py --quick: every eager form, each exported form under onnxruntime
    with its ratio to torch, and outputs that agree."""
    pytest.importorskip("onnxruntime")
    out = run_command([sys.executable, repo_root / "benchmarks/onnx_speed.py", "--quick"], timeout=900).stdout
    for form in ("grouped", "unfold", "shifts"):
        assert f"torch eager, dynamic kernels {form}" in out
    lines = [line for line in out.splitlines() if "ratio onnxruntime / torch" in line]
    assert len(lines) == 2
    assert all(float(line.rsplit("max abs ", 1)[1].rstrip(")")) <= 1e-4 for line in lines)
