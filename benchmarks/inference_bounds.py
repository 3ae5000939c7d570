#!/usr/bin/env python
"""ESC x4 inference against this machine's matrix-multiply bounds (issue 16, targets 1, 2, 4), in
ONE run: the CPU model (lscpu), the fp32 and bf16 matmul peaks (2048x2048), then

- target 1: ESC x4, input 180x320 (output 1280x720), random weights, fp32: latency / fp32 bound;
- target 2: the same under ``torch.autocast('cpu', torch.bfloat16)``: latency / bf16 bound, and
  the PSNR of bf16 against fp32 on the real photos (tests/data/images/val) with the trained
  ESC-light x2 weights (tests/data/ESC-light_x2_small.pth);
- target 4: FlashBias factors (heads 4, N=1024, head dim 16, 60 windows = one ESC x4 block at
  180x320; r = 48 and 240): masked sdpa against the unbiased sdpa on c + r channels;
- the operator profile (torch.profiler key_averages) of one fp32 and one bf16 pass.

"before" = the bias mask rounded to bf16 under bf16 autocast (``reference_paths.bf16_rounded_mask``),
"after" = as shipped (float32 mask), "fused ConvAttn" = each ConvAttn layer as one convolution
(``reference_paths.fused_convattn``; the package runs the authors' two), "channels-last" = the
input in channels-last memory format; all measured here, in
a process that called ``esc_arch.keep_freed_memory()`` (as ``esc upscale`` does). Its effect is
measured apart, in fresh processes (glibc's state is process-wide and adapts to what ran
before): ESC x4 fp32 at 180x320 and 400x400 with glibc's defaults and with freed memory kept,
wall and system time, page faults and peak RSS of the passes after the first.

The bound of a pass is its FLOPs at the measured peak. FLOPs come from
``torch.utils.flop_counter`` on the ``naive`` attention (its matrix products are counted;
torch's fused CPU sdpa kernel is not, which left the 80 GFLOP of attention out of the earlier
suite's 217 GFLOP); the earlier figure is printed too.

  python benchmarks/inference_bounds.py                 # ~5 min on 2 quiet cores
  python benchmarks/inference_bounds.py --repeats 5 --out docs/benchmarks
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time
from os import path as osp

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from benchmarks._common import cpu_model, matmul_peaks  # noqa: E402
from benchmarks.reference_paths import bf16_rounded_mask, fused_convattn, fused_large_and_dynamic  # noqa: E402

SIZE = (180, 320)


def network(preset="ESC", scale=4, attn_type="auto"):
    import esc_arch

    torch.manual_seed(0)
    return esc_arch.build_preset(preset, scale, attn_type=attn_type).eval()


def flops(net, x, attn_type: str) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    previous = net.attn_type
    net.set_attn_type(attn_type)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(x)
    net.set_attn_type(previous)
    return float(counter.get_total_flops())


def precision_context(precision: str):
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def latency(net, x, precision: str, repeats: int, warmup: int) -> float:
    times = []
    with torch.no_grad(), precision_context(precision):
        for i in range(warmup + repeats):
            start = time.perf_counter()
            net(x)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def profile(net, x, precision: str, rows: int) -> list[tuple[str, float, int]]:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch.no_grad(), precision_context(precision):
        net(x)
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            net(x)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: -e.self_cpu_time_total)
    return [(e.key, e.self_cpu_time_total / total, e.count) for e in events[:rows]], total / 1e6


def psnr_bf16_vs_fp32() -> dict[str, float]:
    import cv2
    import numpy as np

    from esc_arch import load_model

    net = load_model(osp.join(ROOT, "tests", "data", "ESC-light_x2_small.pth"))
    out = {}
    for name in ("butterfly", "bird"):
        bgr = cv2.imread(osp.join(ROOT, "tests", "data", "images", "val", f"{name}.png"))
        x = torch.from_numpy(bgr[..., ::-1].astype(np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0).contiguous()
        with torch.no_grad():
            reference = net(x).clamp(0, 1)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                low = net(x).float().clamp(0, 1)
        mse = ((low - reference) ** 2).mean().item()
        out[name] = 10 * np.log10(1 / mse)
    return out


def flashbias(precision: str, rank: int, repeats: int, windows: int = 60) -> dict[str, float]:
    from esc_arch.archs.attention import ATTENTION_BACKENDS, sdpa_factors

    _sdpa = ATTENTION_BACKENDS["sdpa"]

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    torch.manual_seed(0)
    q, k, v = (torch.randn(windows, 4, 1024, 16).to(dtype) for _ in range(3))
    factors = tuple(torch.randn(4, 1024, rank) * rank**-0.5 for _ in range(2))
    out = {}
    with torch.no_grad():
        for name, kernel in (("masked", _sdpa), ("factors", sdpa_factors)):
            kernel(q, k, v, factors, 32)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                kernel(q, k, v, factors, 32)
                times.append(time.perf_counter() - start)
            out[name] = statistics.median(times)
        diff = (_sdpa(q, k, v, factors, 32).float() - sdpa_factors(q, k, v, factors, 32).float()).abs().max()
    out["max_diff"] = diff.item()
    return out


MALLOC_SIZES = ((180, 320), (400, 400))


def malloc_probe(kept: bool, height: int, width: int, passes: int) -> dict:
    """In this (fresh) process: ESC x4 fp32 on a height x width input, one warm-up pass, then
    ``passes`` timed ones; with glibc's defaults or after keep_freed_memory()."""
    import resource

    from esc_arch import keep_freed_memory

    if kept:
        keep_freed_memory()
    net, x = network(), torch.rand(1, 3, height, width)

    def usage():
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_stime, r.ru_minflt

    with torch.no_grad():
        net(x)
        start, (sys0, faults0) = time.perf_counter(), usage()
        for _ in range(passes):
            net(x)
        wall, (sys1, faults1) = time.perf_counter() - start, usage()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"wall": wall / passes, "sys": (sys1 - sys0) / passes, "faults": (faults1 - faults0) / passes, "peak": peak}


def malloc_effect(size: tuple[int, int], passes: int) -> dict[bool, dict]:
    out = {}
    for kept in (False, True):
        spec = json.dumps({"kept": kept, "height": size[0], "width": size[1], "passes": passes})
        result = subprocess.run([sys.executable, __file__, "--malloc-probe", spec], capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"malloc probe failed: {result.stderr.strip().splitlines()[-1]}")
        out[kept] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


def convattn_training_step(repeats: int = 5) -> tuple[float, float]:
    """(fused, split) seconds of ConvAttn's kernel forward + backward at a training batch."""
    import torch.nn.functional as F

    from esc_arch.archs.esc_arch import _per_sample_depthwise

    x = torch.randn(8, 16, 32, 32, requires_grad=True)
    shared = torch.randn(16, 16, 13, 13, requires_grad=True)
    dynamic = torch.randn(8, 16, 3, 3, requires_grad=True)
    out = []
    for step in (
        lambda: fused_large_and_dynamic(x, shared, dynamic),
        lambda: F.conv2d(x, shared, padding=6) + _per_sample_depthwise(x, dynamic),
    ):
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            step().sum().backward()
            times.append(time.perf_counter() - start)
        out.append(statistics.median(times[1:]))
    return out[0], out[1]


#: the rows of targets 1 and 2: (label, context manager, input memory format)
STATES = (
    ("before", bf16_rounded_mask, None),
    ("fused ConvAttn", fused_convattn, None),
    ("after, channels-last", contextlib.nullcontext, torch.channels_last),
    ("after", contextlib.nullcontext, None),
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-before", action="store_true", help="time the shipped network only")
    parser.add_argument("--profile-rows", type=int, default=12)
    parser.add_argument("--quick", action="store_true", help="smoke run: input 64x64, one repeat")
    parser.add_argument("--out", default=None, help="folder for inference_bounds.md")
    parser.add_argument("--malloc-probe", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.malloc_probe:
        print(json.dumps(malloc_probe(**json.loads(args.malloc_probe))))
        return 0
    size = (64, 64) if args.quick else SIZE
    if args.quick:
        args.repeats, args.warmup = 1, 0

    lines: list[str] = []

    def emit(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    from esc_arch import keep_freed_memory

    keep_freed_memory()  # as esc upscale does; its effect: the malloc section below
    peaks = matmul_peaks()
    emit(
        f"Machine: {cpu_model()}, {torch.get_num_threads()} torch threads; torch {torch.__version__}. "
        f"Matmul peak (2048x2048, this run): fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s "
        f"({peaks['bf16'] / peaks['fp32']:.2f}x). Median of {args.repeats} after {args.warmup} warm-up."
    )
    net = network()
    x = torch.rand(1, 3, *size)
    total = flops(net, x, "naive") / 1e9
    counted_sdpa = flops(net, x, "auto") / 1e9
    emit(
        f"\nESC x4, input {size[0]}x{size[1]}: {total:.0f} GFLOP (flop_counter with the naive attention; "
        f"{counted_sdpa:.0f} GFLOP with sdpa, whose fused CPU kernel it does not count)."
    )
    bound = {p: total / peaks[p] for p in ("fp32", "bf16")}
    emit("\n| target | configuration | latency (s) | bound (s) | latency / bound | goal |")
    emit("|---|---|---|---|---|---|")
    results = {}
    for precision, target, goal in (("fp32", "1", 1.6), ("bf16", "2", 2.0)):
        for state, context, memory_format in STATES[-1:] if args.no_before else STATES:
            with context():
                seconds = latency(net, x.contiguous(memory_format=memory_format or torch.contiguous_format),
                                  precision, args.repeats, args.warmup)  # fmt: skip
            results[(precision, state)] = seconds
            ratio = seconds / bound[precision]
            emit(
                f"| {target} | {precision} {state} | {seconds:.3f} | {bound[precision]:.3f} | {ratio:.2f}x | "
                f"{'met' if ratio <= goal else 'missed'} (<= {goal}x) |"
            )
    emit(
        f"\nbf16 vs fp32 (after): {results[('fp32', 'after')] / results[('bf16', 'after')]:.2f}x faster. "
        f"Against the earlier suite's bound ({counted_sdpa:.0f} GFLOP at the fp32 peak, attention uncounted): "
        f"fp32 after {results[('fp32', 'after')] / (counted_sdpa / peaks['fp32']):.2f}x."
    )
    emit("\n### Freed memory kept (`esc_arch.keep_freed_memory`), fresh processes, ESC x4 fp32\n")
    emit("| input | malloc | s / pass | system s / pass | page faults / pass | peak RSS (MiB) | faster |")
    emit("|---|---|---|---|---|---|---|")
    for malloc_size in [(48, 48)] if args.quick else MALLOC_SIZES:
        effect = malloc_effect(malloc_size, 1 if args.quick else 2)
        for kept, r in effect.items():
            speedup = f"{effect[False]['wall'] / r['wall']:.2f}x" if kept else ""
            emit(
                f"| {malloc_size[0]}x{malloc_size[1]} | {'kept' if kept else 'glibc defaults'} | {r['wall']:.3f} | "
                f"{r['sys']:.3f} | {r['faults']:,.0f} | {r['peak']:.0f} | {speedup} |"
            )
    quality = psnr_bf16_vs_fp32()
    emit(
        "\nbf16 vs fp32 PSNR (ESC-light x2 trained weights, real photos, after): "
        + ", ".join(f"{k} {v:.1f} dB" for k, v in quality.items())
        + " (goal >= 50 dB)"
    )

    emit("\n### Target 4: FlashBias factors, 60 windows x 4 heads x N=1024, head dim 16 (one ESC x4 block)\n")
    emit("| precision | rank r | masked sdpa (s) | unbiased sdpa on 16+r channels (s) | faster | max abs diff |")
    emit("|---|---|---|---|---|---|")
    for precision in ("fp32", "bf16"):
        for rank in (48, 240):
            r = flashbias(precision, rank, max(args.repeats, 3), 2 if args.quick else 60)
            best = "factors" if r["factors"] < r["masked"] else "masked"
            emit(f"| {precision} | {rank} | {r['masked']:.3f} | {r['factors']:.3f} | {best} | {r['max_diff']:.1e} |")

    fused, split = convattn_training_step()
    emit(
        f"\nConvAttn kernel in training (batch 8 x 16 x 32x32, 13x13, forward + backward): one grouped "
        f"convolution {1000 * fused:.1f} ms, the two convolutions {1000 * split:.1f} ms."
    )

    for precision in ("fp32", "bf16"):
        profiles = {}
        for state, context in (("before", bf16_rounded_mask), ("after", contextlib.nullcontext)):
            with context():
                profiles[state] = profile(net, x, precision, args.profile_rows)
        emit(f"\n### Operator profile, {precision} (self CPU time of one pass, top {args.profile_rows})\n")
        before, after = profiles["before"][1], profiles["after"][1]
        emit(f"| before ({before:.2f} s) | share | calls | after ({after:.2f} s) | share | calls |")
        emit("|---|---|---|---|---|---|")
        for (k0, s0, c0), (k1, s1, c1) in zip(profiles["before"][0], profiles["after"][0], strict=False):
            emit(f"| `{k0}` | {100 * s0:.1f}% | {c0} | `{k1}` | {100 * s1:.1f}% | {c1} |")

    if args.out:
        with open(osp.join(args.out, "inference_bounds.md"), "w") as f:
            f.write("\n".join(lines) + "\n")
        print(f"\nwrote {osp.join(args.out, 'inference_bounds.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
