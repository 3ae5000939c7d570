#!/usr/bin/env python
"""ESC x4 inference on this CPU against its roofline, in ONE run (every rate and every latency
from the same process, so the ratios hold on any machine):

- the machine: CPU model and whether it has AMX / AVX-512 BF16, the rates of
  ``benchmarks/roofline.py`` (fp32 and bf16 matmul peaks, copy bandwidth, exp throughput);
- ESC x4, input 180x320 (output 1280x720), random weights, in each configuration below: latency
  (median of ``--repeats`` rounds, each running every configuration once), its matrix-multiply
  bound (FLOPs at the peaks), its roofline (each operator's largest lower bound: FLOPs at the
  peak of its dtype, bytes at the bandwidth, exponentials at the exp rate;
  ``benchmarks/roofline.py``) and latency / roofline; the
  per-operator-class roofline tables of fp32 and bf16, reference and package; the acceptance
  ratios (bf16 >= 2.5x fp32 on AMX, bf16 within 2x and fp32 within 1.5x of their rooflines);
- ``torch.compile``: compile time, compiled latency against eager passes alternating with it in the
  same process, speed-up and the break-even number of images, fp32 and bf16, inductor's
  defaults (what ``esc upscale --compile`` runs) and with the weights frozen (inductor's
  ``freezing``), each in a fresh process with an empty compile cache;
- the attention of one ESC x4 block (60 windows x 4 heads x 1024 tokens, head dim 16) by the
  kernels tried: the fused sdpa windows first and heads first (package), without its mask (a
  floor), FlexAttention compiled, and scores + softmax + product in the input's dtype (a bf16
  softmax under bf16), against its exp and matmul bounds;
- the PSNR of bf16 (autocast, and weights converted) against fp32 on the real photos
  (tests/data/images/val) with the trained ESC-light x2 weights (tests/data/ESC-light_x2_small.pth);
- freed memory kept (``esc_arch.keep_freed_memory()``, as ``esc upscale`` calls it; the whole run
  keeps it) against glibc's defaults, in fresh processes: ESC x4 fp32 at 180x320 and 400x400,
  wall and system time and page faults of the passes after the first, the process's peak RSS;
- FlashBias factors (heads 4, N=1024, head dim 16, 60 windows = one ESC x4 block; r = 48 and
  240): masked sdpa against the unbiased sdpa on c + r channels;
- the ConvAttn kernel in training as one convolution against the two;
- the operator profiles (torch.profiler) of fp32 and bf16, reference and package.

Configurations: "(package)" = fp32 as the package runs it, and bf16 with the weights converted
once (``esc_arch.runtime.inference.for_precision``, what ``esc upscale --precision bf16`` runs on a
CPU); the reference rows: the attention walking windows first, in fp32 and, for bf16, with the
unchanged network under ``torch.autocast('cpu', torch.bfloat16)``. The reference paths (windows-first sdpa, ConvAttn
fused into one convolution, the mask rounded to bf16, grouped bf16 attention) are in
``benchmarks/reference_paths.py``; a channels-last input is the other fp32 row.

FLOPs of the whole pass come from ``torch.utils.flop_counter`` on the ``naive`` attention (torch's
fused CPU sdpa kernel is not counted by it; the roofline's recorder counts it itself).

  python benchmarks/inference_bounds.py                 # ~17 min on 2 quiet cores
  python benchmarks/inference_bounds.py --repeats 5 --out docs/benchmarks
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from os import path as osp

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from benchmarks._common import bf16_flags, cpu_model  # noqa: E402
from benchmarks.reference_paths import (  # noqa: E402
    bf16_rounded_mask,
    fused_convattn,
    fused_large_and_dynamic,
    grouped_naive_attention,
    windows_first_sdpa,
)
from benchmarks.roofline import machine_rates, record_pass, roofline_summary, roofline_table  # noqa: E402

SIZE = (180, 320)
#: one ESC x4 block's attention at 180x320: windows, heads, tokens per window, head dim
BLOCK = (60, 4, 1024, 16)


def network(preset="ESC", scale=4, attn_type="auto"):
    import esc_arch

    torch.manual_seed(0)
    return esc_arch.build_preset(preset, scale, attn_type=attn_type).eval()


def cpu_features() -> str:
    """Which bf16 instructions this CPU has: "AMX", "AVX-512 BF16" or "no bf16"."""
    flags = bf16_flags()
    return "AMX" if "amx_bf16" in flags else "AVX-512 BF16" if flags else "no bf16"


class Pass:
    """One way of running ESC x4: the network (fp32, or converted to bf16), its input, and the
    context each call runs in (autocast, a reference path)."""

    def __init__(self, net, x, context=contextlib.nullcontext, autocast=False) -> None:
        self.net, self.x, self.context, self.autocast = net, x, context, autocast

    def __call__(self):
        with torch.no_grad(), self.context(), torch.autocast("cpu", torch.bfloat16, enabled=self.autocast):
            return self.net(self.x)


def configurations(net, x) -> dict[str, Pass]:
    """label -> pass: the package's rows and the reference ones (module docstring)."""
    from esc_arch.runtime.inference import for_precision

    converted = for_precision(copy.deepcopy(net), "bf16", "cpu")
    return {
        "fp32, attention windows first": Pass(net, x, windows_first_sdpa),
        "fp32, ConvAttn fused into one convolution": Pass(net, x, fused_convattn),
        "fp32, channels-last input": Pass(net, x.contiguous(memory_format=torch.channels_last)),
        "fp32 (package)": Pass(net, x),
        "bf16 autocast, attention windows first": Pass(net, x, windows_first_sdpa, autocast=True),
        "bf16 autocast, mask rounded to bf16": Pass(net, x, bf16_rounded_mask, autocast=True),
        "bf16 autocast, attention heads first": Pass(net, x, autocast=True),
        "bf16 weights converted once (package)": Pass(converted, x.to(torch.bfloat16)),
    }


#: the rows whose roofline tables per operator class are printed
CLASS_TABLES = (
    "fp32, attention windows first",
    "fp32 (package)",
    "bf16 autocast, attention windows first",
    "bf16 weights converted once (package)",
)


def profile(run: Pass, rows: int) -> tuple[list[tuple[str, float, int]], float]:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    run()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: -e.self_cpu_time_total)
    return [(e.key, e.self_cpu_time_total / total, e.count) for e in events[:rows]], total / 1e6


def psnr_bf16_vs_fp32() -> dict[str, dict[str, float]]:
    """PSNR (dB) of bf16 against fp32 on the real photos, trained ESC-light x2: ``autocast`` and
    ``converted`` (the weights converted once)."""
    import cv2
    import numpy as np

    from esc_arch import load_model
    from esc_arch.runtime.inference import for_precision, upscale

    net = load_model(osp.join(ROOT, "tests", "data", "ESC-light_x2_small.pth"))
    converted = for_precision(copy.deepcopy(net), "bf16", "cpu")
    out: dict[str, dict[str, float]] = {"autocast": {}, "converted": {}}
    for name in ("butterfly", "bird"):
        bgr = cv2.imread(osp.join(ROOT, "tests", "data", "images", "val", f"{name}.png"))
        x = torch.from_numpy(bgr[..., ::-1].astype(np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0).contiguous()
        reference = upscale(net, x).clamp(0, 1)
        for label, low in (("autocast", upscale(net, x, precision="bf16")), ("converted", upscale(converted, x))):
            mse = ((low.clamp(0, 1) - reference) ** 2).mean().item()
            out[label][name] = 10 * np.log10(1 / mse)
    return out


#: torch.compile probes: label -> (bf16 weights converted, inductor options)
COMPILE_MODES = {
    "fp32, inductor defaults (esc upscale --compile)": (False, {}),
    "fp32, weights frozen": (False, {"freezing": True}),
    "bf16, inductor defaults (esc upscale --compile --precision bf16)": (True, {}),
    "bf16, weights frozen": (True, {"freezing": True}),
}


def compile_probe(mode: str, height: int, width: int, repeats: int) -> dict:
    """In this (fresh) process, with an empty compile cache: ESC x4 after an eager warm-up, the
    first compiled call (compile + one pass), then ``repeats`` rounds alternating an eager pass
    (the module's own ``forward``) and a compiled one (its compiled call); medians."""
    from esc_arch import keep_freed_memory
    from esc_arch.runtime.inference import for_precision

    keep_freed_memory()
    convert, options = COMPILE_MODES[mode]
    net, x = network(), torch.rand(1, 3, height, width)
    if convert:
        net, x = for_precision(net, "bf16", "cpu"), x.to(torch.bfloat16)

    def timed(call) -> float:
        start = time.perf_counter()
        call(x)
        return time.perf_counter() - start

    with torch.no_grad():
        net(x)
        net.compile(options=options)
        first = timed(net)
        eager, compiled = [], []
        for _ in range(repeats):
            eager.append(timed(net.forward))
            compiled.append(timed(net))
    eager_s, compiled_s = statistics.median(eager), statistics.median(compiled)
    return {"eager": eager_s, "compiled": compiled_s, "compile": max(first - compiled_s, 0.0)}


def compile_effect(mode: str, size: tuple[int, int], repeats: int) -> dict:
    spec = json.dumps({"mode": mode, "height": size[0], "width": size[1], "repeats": repeats})
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
        result = subprocess.run([sys.executable, __file__, "--compile-probe", spec], capture_output=True, text=True,
                                env=env)  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"compile probe failed: {result.stderr.strip().splitlines()[-1]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def attention_attempts(dtype: torch.dtype, windows: int, repeats: int) -> dict[str, tuple[float, float, float]]:
    """label -> (median seconds over ``repeats`` rounds that run every kernel in turn, first call's
    seconds, max abs difference from the naive fp32 attention) of one block's attention, q, k, v
    in ``dtype``."""
    import torch.nn.functional as F

    from benchmarks.reference_paths import windows_first_attention
    from esc_arch.archs.attention import ATTENTION_BACKENDS
    from esc_arch.archs.position_bias import relative_position_bias

    _, heads, tokens, dim = BLOCK
    torch.manual_seed(0)
    q, k, v = (torch.randn(windows, heads, tokens, dim).to(dtype) for _ in range(3))
    table = torch.randn(heads, (2 * 32 - 1) ** 2) * 0.02
    relative_position_bias(table, 32)  # built once, as in inference
    kernels = {
        "sdpa, windows first": lambda: windows_first_attention(q, k, v, table, 32),
        "sdpa, heads first (package)": lambda: ATTENTION_BACKENDS["sdpa"](q, k, v, table, 32),
        "sdpa without the mask (a floor)": lambda: F.scaled_dot_product_attention(q, k, v),
        "FlexAttention, compiled": lambda: ATTENTION_BACKENDS["flex"](q, k, v, table, 32),
        f"scores + softmax + product in {str(dtype).removeprefix('torch.')}, 4 windows at a time": (
            lambda: grouped_naive_attention(q, k, v, table, 32)
        ),
    }
    with torch.no_grad():
        expected = ATTENTION_BACKENDS["naive"](q.float(), k.float(), v.float(), table, 32)
        first, difference, times = {}, {}, {label: [] for label in kernels}
        for label, kernel in kernels.items():
            start = time.perf_counter()
            result = kernel()
            first[label] = time.perf_counter() - start
            difference[label] = (result.float() - expected).abs().max().item() if "without" not in label else math.nan
        for _ in range(repeats):
            for label, kernel in kernels.items():
                start = time.perf_counter()
                kernel()
                times[label].append(time.perf_counter() - start)
    return {label: (statistics.median(times[label]), first[label], difference[label]) for label in kernels}


def flops(net, x, attn_type: str) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    previous = net.attn_type
    net.set_attn_type(attn_type)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(x)
    net.set_attn_type(previous)
    return float(counter.get_total_flops())


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


def peak_of_this_process_mib() -> float:
    """This process's own peak resident size (``VmHWM``; ``ru_maxrss`` of a process started by
    ``subprocess`` begins at its parent's)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


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
    peak = peak_of_this_process_mib()
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile-rows", type=int, default=12)
    parser.add_argument("--quick", action="store_true", help="smoke run: input 48x64, one repeat, one compile probe")
    parser.add_argument("--out", default=None, help="folder for inference_bounds.md and inference_bounds.json")
    parser.add_argument("--malloc-probe", help=argparse.SUPPRESS)
    parser.add_argument("--compile-probe", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.malloc_probe:
        print(json.dumps(malloc_probe(**json.loads(args.malloc_probe))))
        return 0
    if args.compile_probe:
        print(json.dumps(compile_probe(**json.loads(args.compile_probe))))
        return 0
    size = (48, 64) if args.quick else SIZE
    if args.quick:
        args.repeats = 1

    lines: list[str] = []
    results: dict = {}

    def emit(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    from esc_arch import keep_freed_memory

    keep_freed_memory()  # as esc upscale does; its effect: the malloc section below
    rates = machine_rates()
    features = cpu_features()
    results.update(cpu=cpu_model(), bf16_instructions=features, size=list(size), rates=rates)
    emit(
        f"Machine: {cpu_model()} ({features}), {torch.get_num_threads()} torch threads; torch {torch.__version__}. "
        f"Rates in this run: matmul fp32 {rates['fp32']:.0f} GFLOP/s, bf16 {rates['bf16']:.0f} GFLOP/s "
        f"({rates['bf16'] / rates['fp32']:.2f}x); copy bandwidth {rates['bandwidth']:.1f} GB/s; exp "
        f"{rates['exp'] / 1e9:.2f} G/s. Latencies: medians of {args.repeats} rounds through every configuration "
        "after a warm-up; each operator's time: its best of as many recorded passes."
    )
    net = network()
    x = torch.rand(1, 3, *size)
    total = flops(net, x, "naive") / 1e9
    emit(f"\nESC x4, input {size[0]}x{size[1]}: {total:.0f} GFLOP (flop_counter with the naive attention).")

    emit("\n| configuration | latency (s) | matmul bound (s) | latency / matmul bound | roofline (s) | "
         "latency / roofline |")  # fmt: skip
    emit("|---|---|---|---|---|---|")
    passes, summaries, tables = configurations(net, x), {}, {}
    walls: dict[str, list[float]] = {label: [] for label in passes}
    for run in passes.values():
        run()  # warm-up
    for _ in range(args.repeats):  # rounds through every configuration: drift hits them alike
        for label, run in passes.items():
            start = time.perf_counter()
            run()
            walls[label].append(time.perf_counter() - start)
    for label, run in passes.items():
        records, _ = record_pass(run, warmup=0, repeats=args.repeats)
        wall = statistics.median(walls[label])
        summary = summaries[label] = roofline_summary(records, rates, wall)
        if label in CLASS_TABLES:
            tables[label] = roofline_table(records, rates, wall)
        emit(
            f"| {label} | {wall:.3f} | {summary['matmul_bound_s']:.3f} | {summary['matmul_ratio']:.2f}x | "
            f"{summary['roofline_s']:.3f} | {summary['ratio']:.2f}x |"
        )
    results["configurations"] = summaries
    fp32, bf16 = summaries["fp32 (package)"], summaries["bf16 weights converted once (package)"]
    speedup = fp32["wall_s"] / bf16["wall_s"]
    peak_ratio = rates["bf16"] / rates["fp32"]
    where = f" (AMX targets; this CPU: {features}, bf16 matmul peak {peak_ratio:.2f}x fp32)"
    where = "" if features == "AMX" else where
    emit(f"\nAcceptance{where}:")
    for text, value, goal, met in (
        ("bf16 (package) vs fp32 (package), speed-up", speedup, ">= 2.5x", speedup >= 2.5),
        ("bf16 (package), latency / roofline", bf16["ratio"], "<= 2x", bf16["ratio"] <= 2),
        ("fp32 (package), latency / roofline", fp32["ratio"], "<= 1.5x", fp32["ratio"] <= 1.5),
    ):
        emit(f"- {text}: {value:.2f}x (goal {goal}): {'met' if met else 'missed'}")
    for label, table in tables.items():
        emit(f"\n### Roofline by operator class: {label}\n")
        for line in table:
            emit(line)

    emit("\n### torch.compile, ESC x4 (fresh process each, empty compile cache)\n")
    emit("| mode | eager (s) | compiled (s) | speed-up | compile time (s) | break-even (images) |")
    emit("|---|---|---|---|---|---|")
    modes = [m for m in COMPILE_MODES if "esc upscale" in m and "fp32" in m] if args.quick else list(COMPILE_MODES)
    results["compile"] = {}
    for mode in modes:
        r = results["compile"][mode] = compile_effect(mode, size, args.repeats)
        saved = r["eager"] - r["compiled"]
        even = f"{math.ceil(r['compile'] / saved)}" if saved > 0 else "never"
        emit(f"| {mode} | {r['eager']:.3f} | {r['compiled']:.3f} | {r['eager'] / r['compiled']:.2f}x | "
             f"{r['compile']:.1f} | {even} |")  # fmt: skip

    windows = 2 if args.quick else BLOCK[0]
    heads, tokens, dim = BLOCK[1:]
    scores = windows * heads * tokens * tokens
    emit(
        f"\n### Attention of one block ({windows} windows x {heads} heads x {tokens} tokens, head dim {dim}): "
        f"kernels tried\n\nBounds: {scores / rates['exp']:.3f} s of exponentials ({scores / 1e6:.0f}M at the exp "
        f"rate), {4 * scores * dim / rates['fp32'] / 1e9:.3f} s of fp32 matmul, "
        f"{4 * scores * dim / rates['bf16'] / 1e9:.3f} s of bf16 matmul.\n"
    )
    emit("| dtype | kernel | seconds | first call (s) | max abs diff vs naive fp32 |")
    emit("|---|---|---|---|---|")
    results["attention"] = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        attempts = results["attention"][name] = attention_attempts(dtype, windows, max(args.repeats, 3))
        for label, (seconds, first, difference) in attempts.items():
            diff = "—" if math.isnan(difference) else f"{difference:.1e}"
            emit(f"| {name} | {label} | {seconds:.3f} | {first:.2f} | {diff} |")

    quality = results["psnr"] = psnr_bf16_vs_fp32()
    emit(
        "\nbf16 vs fp32 PSNR (ESC-light x2 trained weights, real photos; goal >= 50 dB): "
        + "; ".join(f"{how}: " + ", ".join(f"{k} {v:.1f} dB" for k, v in r.items()) for how, r in quality.items())
    )

    emit("\n### Freed memory kept (`esc_arch.keep_freed_memory`), fresh processes, ESC x4 fp32\n")
    emit("| input | malloc | s / pass | system s / pass | page faults / pass | peak RSS (MiB) | faster |")
    emit("|---|---|---|---|---|---|---|")
    for malloc_size in [(48, 48)] if args.quick else MALLOC_SIZES:
        effect = malloc_effect(malloc_size, 1 if args.quick else 2)
        for kept, r in effect.items():
            faster = f"{effect[False]['wall'] / r['wall']:.2f}x" if kept else ""
            emit(
                f"| {malloc_size[0]}x{malloc_size[1]} | {'kept' if kept else 'glibc defaults'} | {r['wall']:.3f} | "
                f"{r['sys']:.3f} | {r['faults']:,.0f} | {r['peak']:.0f} | {faster} |"
            )

    emit("\n### FlashBias factors, 60 windows x 4 heads x N=1024, head dim 16 (one ESC x4 block)\n")
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

    for precision, first, package in (("fp32", *CLASS_TABLES[:2]), ("bf16", *CLASS_TABLES[2:])):
        profiles = {label: profile(passes[label], args.profile_rows) for label in (first, package)}
        emit(f"\n### Operator profile, {precision} (self CPU time of one pass, top {args.profile_rows})\n")
        emit(f"| {first} ({profiles[first][1]:.2f} s) | share | calls | {package} ({profiles[package][1]:.2f} s) "
             "| share | calls |")  # fmt: skip
        emit("|---|---|---|---|---|---|")
        for (k0, s0, c0), (k1, s1, c1) in zip(profiles[first][0], profiles[package][0], strict=False):
            emit(f"| `{k0}` | {100 * s0:.1f}% | {c0} | `{k1}` | {100 * s1:.1f}% | {c1} |")

    if args.out:
        with open(osp.join(args.out, "inference_bounds.md"), "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(osp.join(args.out, "inference_bounds.json"), "w") as f:
            json.dump(results, f, indent=1)
        print(f"\nwrote {osp.join(args.out, 'inference_bounds.md')} and inference_bounds.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
