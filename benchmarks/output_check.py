#!/usr/bin/env python
"""What checking a network's output for NaN and Inf costs, as a share of the forward pass that
made it: ``esc_arch.runtime.inference.check_finite_output`` (one float32 sum over the output; the exact
count only when that sum is not finite) against one ESC x4 forward (random weights,
``build_preset("ESC", scale=4)``), fp32, in this process. Each figure is the median of
``--repeats`` runs; the check is timed ``--check-repeats`` times per run, as it is cheap.

  python benchmarks/output_check.py                   # a 180x320 input (a 720x1280 output)
  python benchmarks/output_check.py --quick           # toy size, one repeat (CI)
  python benchmarks/output_check.py --device cuda

Acceptance: the check costs under 1% of the forward pass.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from os import path as osp

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks._common import cpu_model, synchronize  # noqa: E402

#: The acceptance bound: the check's time over the forward pass's.
BOUND = 0.01


def _seconds(run, device, repeats: int) -> float:
    """The median wall time of ``run()`` over ``repeats`` calls, each to the end of its work."""
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=[180, 320], metavar=("H", "W"), help="input size")
    parser.add_argument("--repeats", type=int, default=3, help="forward passes (median; default 3)")
    parser.add_argument("--check-repeats", type=int, default=50, help="checks per forward pass (default 50)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1")
    parser.add_argument("--quick", action="store_true", help="a 32x32 input, one repeat (CI)")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.repeats, args.check_repeats = [32, 32], 1, 5

    import torch

    import esc_arch
    from esc_arch.runtime.inference import check_finite_output, upscale

    try:
        device = torch.device(args.device)
    except RuntimeError:
        print(f"--device {args.device}: not a device; use cpu, cuda or cuda:N", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    net = esc_arch.build_preset("ESC", scale=4).to(device).eval()
    x = torch.rand(1, 3, *args.size, device=device)
    upscale(net, x)  # warm-up: first-call allocations and kernel selection
    forward, check = [], []
    for _ in range(args.repeats):
        forward.append(_seconds(lambda: upscale(net, x), device, 1))
        sr = upscale(net, x)
        check.append(_seconds(functools.partial(check_finite_output, sr), device, args.check_repeats))
    forward_s, check_s = statistics.median(forward), statistics.median(check)
    ratio = check_s / forward_s
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{cpu_model()}, {os.cpu_count()} cores"
    print(f"Machine: {machine}; ESC x4 (random weights), fp32, input {args.size[0]}x{args.size[1]} -> output "
          f"{tuple(sr.shape)}; medians of {args.repeats} run(s)")  # fmt: skip
    print(f"forward pass: {forward_s * 1e3:.1f} ms")
    print(f"output check: {check_s * 1e3:.3f} ms")
    print(f"check / forward: {ratio:.3%} (acceptance: under {BOUND:.0%}): {'PASS' if ratio < BOUND else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
