#!/usr/bin/env python
"""Latency and peak memory of one ESC forward pass per attention backend, on the CPU.

Each configuration runs in its own process (so peak RSS is its own): model built, input
made, warm-up passes, then the median of --repeats timed passes under torch.no_grad().
Peak memory is the process's peak RSS minus its RSS just before the first pass.

  python benchmarks/forward_cpu.py                  # ESC x4 on 320x180 (the paper's 1280x720 output)
  python benchmarks/forward_cpu.py --quick          # a small input, one repeat (smoke run)
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

CONFIGS = [("naive", "fp32"), ("sdpa", "fp32"), ("flex", "fp32"), ("auto", "fp32"), ("auto", "bf16")]


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(preset: str, scale: int, height: int, width: int, backend: str, precision: str, repeats: int) -> dict:
    import torch

    import esc_arch
    from esc_arch.inference import autocast

    net = esc_arch.build_preset(preset, scale, attn_type=backend).eval()
    x = torch.rand(1, 3, height, width)
    base = _rss_mib()
    times = []
    with torch.no_grad(), autocast(precision, x.device):
        for i in range(repeats + 2):
            start = time.perf_counter()
            net(x)
            if i >= 2:  # two warm-up passes (compilation for flex)
                times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"backend": backend, "precision": precision, "median_s": statistics.median(times), "peak_mib": peak - base}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="ESC")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--size", type=int, nargs=2, default=[180, 320], metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="64x64 input, 1 repeat")
    parser.add_argument("--one", nargs=2, metavar=("BACKEND", "PRECISION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.size, args.repeats = [64, 64], 1
    if args.one:
        print(json.dumps(measure(args.preset, args.scale, *args.size, *args.one, args.repeats)))
        return 0

    import torch

    print(
        f"{args.preset} x{args.scale}, input {args.size[0]}x{args.size[1]}, median of {args.repeats}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    print("| backend | precision | latency (s) | peak memory (MiB) | vs naive |\n|---|---|---|---|---|")
    rows = []
    for backend, precision in CONFIGS:
        size = [str(v) for v in args.size]
        cmd = [sys.executable, __file__, "--preset", args.preset, "--scale", str(args.scale), "--size", *size,
               "--repeats", str(args.repeats), "--one", backend, precision]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"| {backend} | {precision} | failed: {out.stderr.strip().splitlines()[-1]} | | |")
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        ref = rows[0]
        print(
            f"| {backend} | {precision} | {row['median_s']:.3f} | {row['peak_mib']:.0f} | "
            f"{ref['median_s'] / row['median_s']:.2f}x time, {ref['peak_mib'] / max(row['peak_mib'], 1):.2f}x memory |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
