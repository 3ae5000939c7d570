#!/usr/bin/env python
"""CPU training step with the old attention path (sdpa: torch's unfused math backward, every
window's N x N probabilities kept for backward) against the new one (``chunked``: fused forward,
tile-by-tile backward; what ``attn_type='auto'`` runs on the CPU when gradients are needed).

  python benchmarks/train_attention.py               # about 5 minutes on 2 cores
  python benchmarks/train_attention.py --no-real     # ESC-light only

Prints the machine (lscpu model name), then:

- ESC-light x2, batch 8 x 32x32 LR, fp32 and bf16 autocast: one training step (forward, L1
  loss, backward, AdamW), median of ``--repeats`` after one warm-up, and peak RSS, each
  configuration in its own process (peak memory is its own, as benchmarks/suite.py);
- the largest difference between the two paths' gradients after one step from the same weights
  and batch (bias tables, FlashBias factors, all parameters);
- ESC-Real x4, batch ``--real-batch`` x 256x256 HR (64x64 LR), one step with the new path
  (peak RSS), beside the old path at a small batch (``--real-old-batch``; at batch 12 it was
  OOM-killed at 23.8 GB on this machine) and that batch with the new path.

Peak RSS = the process's ``ru_maxrss``; "above start" subtracts the RSS after building the
network and inputs (libraries, weights). Writes the tables to docs/benchmarks/train_attention.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from os import path as osp

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks._common import cpu_model, peak_rss_mib, rss_mib, time_training_steps  # noqa: E402

OLD, NEW = "sdpa", "auto"  # attn_type of the old path and of the new one (auto -> chunked in training)


def _network(preset: str, scale: int, attn_type: str, flashbias_rank: int | None = None):
    from esc_arch.families import NETWORKS, preset_config

    config = preset_config(preset, scale).replace(attn_type=attn_type)
    if flashbias_rank:
        config = config.replace(flashbias_rank=flashbias_rank)
    return NETWORKS[config.family()](config)


def measure_step(spec: dict) -> dict:
    """Seconds per training step and peak RSS of one configuration (run in its own process)."""
    import torch

    from esc_arch.archs.attention import resolve_backend
    from esc_arch.runtime.inference import autocast

    torch.manual_seed(0)
    net = _network(spec["preset"], spec["scale"], spec["attn_type"]).train()
    optimizer = torch.optim.AdamW(net.parameters(), 1e-4)
    batch, size, scale = spec["batch"], spec["lr_size"], spec["scale"]
    x = torch.rand(batch, 3, size, size)
    y = torch.rand(batch, 3, size * scale, size * scale)
    base = rss_mib()
    times, cpu_times = time_training_steps(net, optimizer, x, y, spec["precision"], warmup=spec["warmup"],
                                           repeats=spec["repeats"])  # fmt: skip
    with autocast(spec["precision"], x.device):  # the backend auto picks under this precision
        backend = resolve_backend(spec["attn_type"], x.device, training=True)
    return {"step_s": min(times), "median_s": statistics.median(times), "cpu_s": min(cpu_times),
            "peak_mib": peak_rss_mib(), "above_mib": peak_rss_mib() - base, "backend": backend}  # fmt: skip


def measure_gradients(spec: dict) -> dict:
    """Largest absolute gradient differences between the old and the new path after one step
    (same weights, same batch), for the table layout and for FlashBias factors."""
    import torch

    result = {}
    for layout, rank in (("table", None), ("flashbias", 48)):
        grads = {}
        for attn_type in (OLD, NEW):
            torch.manual_seed(0)
            net = _network("ESC-light", 2, attn_type, rank).train()
            with torch.no_grad():  # trained-like biases: the tables start at 1e-3 noise, the factors at 0
                for name, p in net.named_parameters():
                    if "relative_position_bias" in name or "flashbias" in name:
                        p.normal_(0, 0.5 if "relative" in name else 0.1)
            x = torch.rand(spec["batch"], 3, 32, 32)
            y = torch.rand(spec["batch"], 3, 64, 64)
            (net(x) - y).abs().mean().backward()
            grads[attn_type] = {n: p.grad.clone() for n, p in net.named_parameters()}
        old, new = grads[OLD], grads[NEW]
        bias_names = [n for n in old if "relative_position_bias" in n or "flashbias" in n]
        result[layout] = {
            "bias_max_abs": max((old[n] - new[n]).abs().max().item() for n in bias_names),
            "bias_max_magnitude": max(old[n].abs().max().item() for n in bias_names),
            "all_max_abs": max((old[n] - new[n]).abs().max().item() for n in old),
            "all_max_rel": max(
                ((old[n] - new[n]).abs().max() / old[n].abs().max().clamp_min(1e-30)).item() for n in old
            ),
        }  # fmt: skip
    return result


KINDS = {"step": measure_step, "gradients": measure_gradients}


def run_isolated(spec: dict, timeout: float | None = None) -> dict:
    command = [sys.executable, __file__, "--one", json.dumps(spec)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    if result.returncode != 0:
        lines = (result.stderr.strip() or f"exit status {result.returncode} (killed?)").splitlines()
        return {"error": lines[-1][:200]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:8]]
    return values[0] + values[1] + values[2] + values[4] + values[5] + values[6], sum(values)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-real", action="store_true", help="skip the ESC-Real rows")
    parser.add_argument("--real-batch", type=int, default=12)
    parser.add_argument("--real-old-batch", type=int, default=2)
    parser.add_argument("--out", default=osp.join(ROOT, "docs", "benchmarks", "train_attention.md"))
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 2, one step, no ESC-Real rows")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        spec = json.loads(args.one)
        print(json.dumps(KINDS[spec.pop("kind")](spec)))
        return 0

    import torch

    lines: list[str] = []

    def emit(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    emit(
        f"CPU: {cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads; "
        f"torch {torch.__version__}"
    )
    busy_start, total_start = _cpu_jiffies()
    emit()
    batch = 2 if args.quick else 8
    if args.quick:
        args.repeats, args.no_real = 1, True
    emit(f"### ESC-light x2 training step, batch {batch} x 32x32 LR (forward, L1, backward, AdamW)")
    emit()
    emit(f"Fastest of {args.repeats} steps after one warm-up (median and process CPU time beside it), one "
         f"process per row. Old: `attn_type='{OLD}'` (math backward); new: `auto` (runs `chunked` in training "
         "on the CPU). Ratios from the fastest steps.")  # fmt: skip
    emit()
    emit("| precision | path | backend | step (s) | median (s) | CPU time (s) | peak RSS (MiB) | above start (MiB) "
         "| new vs old |")  # fmt: skip
    emit("|---|---|---|---|---|---|---|---|---|")
    common = dict(kind="step", preset="ESC-light", scale=2, batch=batch, lr_size=32, warmup=1, repeats=args.repeats)
    for precision in ("fp32", "bf16"):
        results = {}
        for label, attn_type in (("old", OLD), ("new", NEW)):
            results[label] = r = run_isolated(dict(common, precision=precision, attn_type=attn_type))
            if "error" in r:
                emit(f"| {precision} | {label} | | failed: {r['error']} | | | | | |")
                continue
            ratio = ""
            if label == "new" and "error" not in results["old"]:
                old = results["old"]
                ratio = (f"{old['step_s'] / r['step_s']:.2f}x faster, "
                         f"{old['above_mib'] / max(r['above_mib'], 1):.1f}x less memory above start")  # fmt: skip
            emit(f"| {precision} | {label} | {r['backend']} | {r['step_s']:.3f} | {r['median_s']:.3f} | "
                 f"{r['cpu_s']:.2f} | {r['peak_mib']:.0f} | {r['above_mib']:.0f} | {ratio} |")  # fmt: skip

    emit()
    emit(f"### Gradient differences, old vs new path (ESC-light x2, batch {batch}, one backward, fp32)")
    emit()
    emit("Bias parameters drawn at trained-like magnitudes (tables N(0, 0.5), FlashBias factors N(0, 0.1)).")
    emit()
    emit("| bias layout | bias grads: max abs diff | largest bias grad | all params: max abs diff | max rel diff |")
    emit("|---|---|---|---|---|")
    grads = run_isolated(dict(kind="gradients", batch=batch))
    if "error" in grads:
        emit(f"| failed: {grads['error']} | | | | |")
    else:
        for layout, g in grads.items():
            emit(f"| {layout} | {g['bias_max_abs']:.2e} | {g['bias_max_magnitude']:.2e} | {g['all_max_abs']:.2e} | "
                 f"{g['all_max_rel']:.2e} |")  # fmt: skip

    if not args.no_real:
        emit()
        emit("### ESC-Real x4 training step, 256x256 HR (64x64 LR), fp32, one step, no warm-up")
        emit()
        emit("| batch | path | backend | step (s) | peak RSS (MiB) | above start (MiB) |")
        emit("|---|---|---|---|---|---|")
        real = dict(kind="step", preset="ESC-Real", scale=4, lr_size=64, warmup=0, repeats=1, precision="fp32")
        for batch, label, attn_type in (
            (args.real_old_batch, "old", OLD),
            (args.real_old_batch, "new", NEW),
            (args.real_batch, "new", NEW),
        ):
            r = run_isolated(dict(real, batch=batch, attn_type=attn_type), timeout=900)
            if "error" in r:
                emit(f"| {batch} | {label} | | failed: {r['error']} | | |")
            else:
                emit(f"| {batch} | {label} | {r['backend']} | {r['step_s']:.1f} | {r['peak_mib']:.0f} | "
                     f"{r['above_mib']:.0f} |")  # fmt: skip

    busy_end, total_end = _cpu_jiffies()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    ours = (children.ru_utime + children.ru_stime) * os.sysconf("SC_CLK_TCK")
    other = max(0.0, (busy_end - busy_start - ours) / max(total_end - total_start, 1))
    emit()
    emit(
        f"Other processes kept the CPUs {100 * other:.0f}% busy during this run (0% = a quiet machine; the "
        "step times are only comparable within one run when this is high)."
    )
    if args.out:
        os.makedirs(osp.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            f.write("# Training-step attention: old (sdpa math backward) vs new (chunked)\n\n")
            f.write("Written by `benchmarks/train_attention.py`; see docs/performance.md.\n\n")
            f.write("\n".join(lines) + "\n")
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
