"""benchmarks/gpu_acceptance.py: a failing row fails the run, a missing capability gives SKIPPED
(never PASS), the docs table is the one rebuilt from the committed JSON, and the CPU --quick run
passes every row it can run (slow)."""

import importlib.util
import json
import shutil
import sys

import pytest
import torch


@pytest.fixture(scope="module")
def acceptance(benchmark_module):
    with benchmark_module("gpu_acceptance") as module:
        yield module


def _rows(out) -> dict:
    report = json.loads((out / "gpu_acceptance.json").read_text())
    return {row["name"]: (row["status"], row["detail"]) for row in report["rows"]}


def test_a_failing_row_fails_the_run_and_missing_capabilities_skip(acceptance, monkeypatch, tmp_path):
    ran = []

    def fails(ctx):
        raise AssertionError("max abs 3.1e-02 (bound 1.0e-04)")

    def needs_cuda(ctx):
        ran.append("needs CUDA")
        return "ran"

    def finds_it_missing(ctx):
        raise acceptance.Skip("no such kernel here")

    def section(quick):
        return [
            acceptance.Check("fake", "passes", lambda ctx: "fine"),
            acceptance.Check("fake", "fails", fails),
            acceptance.Check("fake", "needs CUDA", needs_cuda, ("cuda",)),
            acceptance.Check("fake", "needs fp16 and flash-attn", needs_cuda, ("fp16", "flash_attn")),
            acceptance.Check("fake", "skips itself", finds_it_missing),
        ]

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(acceptance, "SECTIONS", {"fake": section})
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "flash_attn" else find_spec(name))
    assert acceptance.main(["--device", "cpu", "--out", str(tmp_path)]) == 1
    rows = _rows(tmp_path)
    assert rows["passes"] == ("PASS", "fine")
    assert rows["fails"] == ("FAIL", "AssertionError: max abs 3.1e-02 (bound 1.0e-04)")
    assert rows["needs CUDA"] == ("SKIPPED", "needs CUDA; this run is on the CPU")
    status, reason = rows["needs fp16 and flash-attn"]
    assert status == "SKIPPED" and "fp16 autocast needs CUDA" in reason and "flash-attn is not installed" in reason
    assert rows["skips itself"] == ("SKIPPED", "no such kernel here")
    assert ran == []  # a check whose capability is missing never runs
    table = (tmp_path / "gpu_acceptance.md").read_text()
    assert "| fake | fails | FAIL | AssertionError: max abs 3.1e-02" in table
    assert table.rstrip().endswith("1 passed, 1 failed, 3 skipped")


def test_exit_status_is_zero_without_a_failing_row(acceptance, monkeypatch, tmp_path):
    monkeypatch.setattr(acceptance, "SECTIONS", {"fake": lambda quick: [
        acceptance.Check("fake", "passes", lambda ctx: "fine"),
        acceptance.Check("fake", "needs NCCL", lambda ctx: "ran", ("nccl",)),
    ]})  # fmt: skip
    assert acceptance.main(["--device", "cpu", "--out", str(tmp_path)]) == 0
    assert _rows(tmp_path)["needs NCCL"] == ("SKIPPED", "needs CUDA; this run is on the CPU")


@pytest.mark.parametrize("device", ["potato", "meta"])
def test_a_device_that_is_not_one_is_one_line(device, acceptance, capsys, tmp_path):
    assert acceptance.main(["--device", device, "--out", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    reason = "not a device" if device == "potato" else "not supported here"
    assert out == "" and err == f"--device {device}: {reason}; use cpu, cuda or cuda:N\n"
    assert list(tmp_path.iterdir()) == []


def test_every_row_that_needs_a_gpu_is_skipped_on_a_cpu(acceptance, monkeypatch, tmp_path):
    """The real plan, each check replaced by one that would PASS: on a CPU without ESCRIB every
    CUDA, fp16, flash, NCCL, onnxruntime-CUDA and RIB row is SKIPPED with its reason."""
    from esc_arch import families

    monkeypatch.setattr(families, "FAMILIES", [f for f in families.FAMILIES if f.name != "ESCRIB"])
    device = torch.device("cpu")
    ctx = acceptance.Context(device=device, quick=True, caps=acceptance.capabilities(device), work=tmp_path)
    checks = [check for build in acceptance.SECTIONS.values() for check in build(True)]
    for check in checks:
        check.run = lambda ctx: "ran"
    rows = {row.name: row for row in acceptance.run_checks(checks, ctx, echo=lambda line: None)}
    gpu_only = [name for name in rows if any(word in name for word in (
        "fp16", ", flash,", "flash vs naive", "CUDA provider", "NCCL", "RIB", "flex vs naive"))]  # fmt: skip
    assert len(gpu_only) >= 25
    for name in gpu_only:
        assert rows[name].status == "SKIPPED" and rows[name].detail, name
    assert rows["RIB goldens, naive, fp32"].detail == "ESCRIB not available in this build"
    assert rows["training step, flex vs naive, fp32"].detail == "torch has no FlexAttention backward pass on the CPU"
    for name, row in rows.items():
        if name not in gpu_only:  # CPU flex compiles C++: SKIPPED only where no compiler is found
            assert row.status == "PASS" or ("flex" in name and row.detail == ctx.caps["flex"]), (name, row)


def test_gradient_criteria_catch_a_wrong_gradient(acceptance):
    torch.manual_seed(0)
    reference = {"table": torch.randn(4, 225), "conv": torch.randn(16, 16, 3, 3)}
    close = {name: g * (1 + 1e-5) for name, g in reference.items()}
    assert acceptance._compare(close, reference, "fp32") <= acceptance.GRAD_TOLERANCE["fp32"]
    assert acceptance._compare(close, reference, "bf16") >= acceptance.GRAD_TOLERANCE["bf16"]
    wrong = dict(reference, table=reference["table"].flip(-1))  # one parameter's gradient permuted
    assert acceptance._compare(wrong, reference, "fp32") > acceptance.GRAD_TOLERANCE["fp32"]
    assert acceptance._compare(wrong, reference, "bf16") < acceptance.GRAD_TOLERANCE["bf16"]


def test_docs_table_is_rebuilt_from_the_committed_json(acceptance, repo_root, tmp_path):
    doc = tmp_path / "verification.md"
    shutil.copy(repo_root / "docs" / "verification.md", doc)
    report = repo_root / "docs" / "benchmarks" / "gpu_acceptance_cpu.json"
    table = acceptance.render_docs([report], target=doc)
    assert doc.read_text() == (repo_root / "docs" / "verification.md").read_text()  # not edited by hand
    rows = json.loads(report.read_text())["rows"]
    assert len(table.splitlines()) == 2 + len(rows)
    assert not [row for row in rows if row["status"] == "FAIL"]


def test_docs_table_has_one_column_per_run(acceptance, tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(f"# Title\n\n{acceptance.BEGIN}\nold\n{acceptance.END}\n\nafter\n")
    runs = []
    for index, (where, status) in enumerate([({"cpu": "Some CPU"}, "PASS"), ({"gpu": "NVIDIA H200"}, "FAIL")]):
        rows = [{"section": "golden", "name": "paper goldens, sdpa, fp32", "status": status, "detail": ""},
                {"section": "onnx", "name": "CUDA provider", "status": "SKIPPED", "detail": "no CUDA"}]  # fmt: skip
        report = {
            "machine": dict(where, cpu=where.get("cpu", "x"), date="2026-12-02 10:00 UTC"),
            "args": {},
            "rows": rows,
        }
        runs.append(tmp_path / f"run{index}.json")
        runs[-1].write_text(json.dumps(report))
    acceptance.render_docs(runs, target=doc)
    text = doc.read_text()
    assert "| section | check | CPU (Some CPU), 2026-12-02 | NVIDIA H200, 2026-12-02 |" in text
    assert "| golden | paper goldens, sdpa, fp32 | PASS | FAIL |" in text
    assert "| onnx | CUDA provider | SKIPPED: no CUDA | SKIPPED: no CUDA |" in text
    assert "\nold\n" not in text and text.endswith("\n\nafter\n")
    doc.write_text("no markers\n")
    with pytest.raises(ValueError, match="markers"):
        acceptance.render_docs(runs, target=doc)


@pytest.mark.slow
def test_cpu_quick_run_passes_every_row_it_can_run(run_command, repo_root, tmp_path):
    out = run_command([sys.executable, repo_root / "benchmarks" / "gpu_acceptance.py", "--device", "cpu", "--quick",
                       "--out", tmp_path], timeout=1800).stdout  # fmt: skip
    assert out.startswith("Machine: CPU ")
    rows = _rows(tmp_path)
    assert {status for status, _ in rows.values()} <= {"PASS", "SKIPPED"}
    for name in ("paper goldens, naive, fp32", "paper goldens, sdpa, fp32", "paper goldens, flex, fp32",
                 "family goldens, flashbias-on-sdpa, fp32", "bf16 vs fp32 naive, sdpa, real photo",
                 "training step, chunked vs naive, fp32", "training step, sdpa vs naive, bf16",
                 "basicsr train --auto_resume", "esc upscale --precision bf16, tiled",
                 "ESC-Real x4 -> 1280x720, auto, bf16", "training step ESC x2, published batch, fp32",
                 "ONNX export, onnxruntime CPU provider"):  # fmt: skip
        assert rows[name][0] == "PASS", (name, rows[name])
    for name in ("fp16 vs fp32 naive, sdpa, real photo", "paper goldens, flash, fp32",
                 "ONNX export, onnxruntime CUDA provider", "basicsr train --launcher pytorch, NCCL"):  # fmt: skip
        assert rows[name][0] == "SKIPPED" and rows[name][1], name
    assert "training step, chunked vs naive, fp32" in out and out.rstrip().splitlines()[-1].startswith("wrote ")
