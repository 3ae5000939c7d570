#!/usr/bin/env python
"""ESC performance suite: forward latency and peak memory per variant, scale, attention backend
and precision, peers built from spandrel, training throughput and a tiled 4K upscale, in one
run on one machine. Prints a markdown table and writes it with a PNG chart.

  python benchmarks/suite.py                 # the full run (about 15 minutes on 2 cores; --compile adds
                                             # torch.compile of the whole network, minutes of compiling)
  python benchmarks/suite.py --quick         # tiny inputs, one repeat: checks that it runs
  python benchmarks/suite.py --only backends # one section: backends, variants, rib, peers, train, tiled

Protocol: every figure is measured in its own process (so peak memory is its own): model built
with random weights, input made, warm-up passes, then the median of --repeats timed passes
under ``torch.no_grad()``. Peak memory = the process's peak RSS minus its RSS before the first
pass. Inputs follow the paper: an output of 1280x720 (input 640x360 at x2, 427x240 at x3,
320x180 at x4). "bf16" is the unchanged network under ``torch.autocast('cpu', torch.bfloat16)``.
The matrix-multiply peak is measured with a 2048x2048 fp32 matmul, and the bound of a
network is its FLOPs (``torch.utils.flop_counter``) at that peak.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from os import path as osp

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks._common import bf16_flags, cpu_model, matmul_peaks, peak_rss_mib, rss_mib, time_training_steps  # noqa: E402

#: Output 1280x720 at each scale (the paper's protocol): input (H, W).
PAPER_INPUT = {2: (360, 640), 3: (240, 427), 4: (180, 320)}

#: Peers at their published light configurations (spandrel's architectures, random weights), x4.
PEERS = {
    "SwinIR-light": ("spandrel.architectures.SwinIR", "SwinIR", dict(
        img_size=64, window_size=8, img_range=1.0, depths=[6, 6, 6, 6], embed_dim=60, num_heads=[6, 6, 6, 6],
        mlp_ratio=2, upsampler="pixelshuffledirect", resi_connection="1conv", upscale=4)),
    "SAFMN": ("spandrel.architectures.SAFMN", "SAFMN", dict(dim=36, n_blocks=8, ffn_scale=2.0, upscaling_factor=4)),
    "SPAN": ("spandrel.architectures.SPAN", "SPAN", dict(num_in_ch=3, num_out_ch=3, feature_channels=48, upscale=4)),
    "OmniSR": ("spandrel.architectures.OmniSR", "OmniSR", dict(
        num_feat=64, block_num=1, res_num=5, window_size=8, up_scale=4, pe=True)),
    "PLKSR-tiny": ("spandrel.architectures.PLKSR", "PLKSR", dict(
        dim=64, n_blocks=12, kernel_size=13, split_ratio=0.25, use_ea=False, upscaling_factor=4)),
    "Real-ESRGAN Compact": ("spandrel.architectures.Compact", "Compact", dict(
        num_feat=64, num_conv=16, upscale=4)),
}  # fmt: skip


# --------------------------------------------------------------------------- one measurement
def _build(spec: dict):
    import importlib

    import esc_arch

    if spec.get("peer"):
        module, name, config = PEERS[spec["peer"]]
        return getattr(importlib.import_module(module), name)(**config)
    net = esc_arch.build_preset(spec["preset"], spec["scale"], attn_type=spec.get("backend", "auto"))
    return net


def _flops(net, x) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(x)
    return float(counter.get_total_flops())


def measure_forward(spec: dict) -> dict:
    import torch

    from esc_arch.runtime.inference import autocast

    net = _build(spec).eval()
    height, width = spec["size"]
    x = torch.rand(1, 3, height, width)
    if spec.get("channels_last"):
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if spec.get("compile"):
        net = torch.compile(net)
    base = rss_mib()
    times = []
    with torch.no_grad(), autocast(spec["precision"], x.device):
        for i in range(spec["repeats"] + spec["warmup"]):
            start = time.perf_counter()
            net(x)
            if i >= spec["warmup"]:
                times.append(time.perf_counter() - start)
    result = {"median_s": statistics.median(times), "peak_mib": peak_rss_mib() - base}
    result["params"] = sum(p.numel() for p in _build(spec).parameters())
    if spec.get("flops"):
        # counted with the naive attention: flop_counter does not count torch's fused CPU sdpa kernel
        result["gflops"] = _flops(_build(dict(spec, backend="naive")).eval(), x.contiguous()) / 1e9
    return result


def measure_matmul(spec: dict) -> dict:
    return {f"{name}_gflops": gflops for name, gflops in matmul_peaks(spec["n"], repeats=5).items()}


def measure_train(spec: dict) -> dict:
    import torch

    torch.manual_seed(0)
    net = _build(spec).train()
    optimizer = torch.optim.AdamW(net.parameters(), 1e-4)
    scale, batch, lr_size = spec["scale"], spec["batch"], spec["lr_size"]
    x = torch.rand(batch, 3, lr_size, lr_size)
    y = torch.rand(batch, 3, lr_size * scale, lr_size * scale)
    base = rss_mib()
    times, _ = time_training_steps(net, optimizer, x, y, spec["precision"], warmup=spec["warmup"],
                                   repeats=spec["repeats"])  # fmt: skip
    step = statistics.median(times)
    return {"median_s": step, "peak_mib": peak_rss_mib() - base, "patches_per_s": batch / step}


def measure_tiled(spec: dict) -> dict:
    import torch

    from esc_arch.runtime.inference import upscale

    net = _build(spec).eval()
    height, width = spec["size"]
    x = torch.rand(1, 3, height, width)
    base = rss_mib()
    start = time.perf_counter()
    out = upscale(net, x, tile=spec["tile"], overlap=spec["overlap"], precision=spec["precision"])
    seconds = time.perf_counter() - start
    return {"median_s": seconds, "peak_mib": peak_rss_mib() - base, "output": list(out.shape[-2:])}


KINDS = {"forward": measure_forward, "matmul": measure_matmul, "train": measure_train, "tiled": measure_tiled}


def run_isolated(spec: dict) -> dict:
    """One measurement in a fresh process; {'error': ...} when it fails."""
    command = [sys.executable, __file__, "--one", json.dumps(spec)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        lines = (result.stderr.strip() or "failed").splitlines()
        return {"error": lines[-1][:200]}
    return json.loads(result.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- sections
def machine() -> dict:
    import torch

    model = cpu_model()
    bf16 = bf16_flags()
    return {
        "cpu": model if model != "unknown" else platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "bf16_units": ", ".join(bf16) or "none",
        "python": platform.python_version(),
    }


def _cells(label: str, result: dict, *tail: str) -> str:
    """A table row: label, latency, peak memory, then ``tail`` (or the error of a failed run)."""
    if "error" in result:
        return f"| {label} | failed: {result['error']} | | | |"
    return f"| {label} | {result['median_s']:.3f} | {result['peak_mib']:.0f} | {' | '.join(tail)} |"


def _row(label: str, result: dict, ref: dict | None = None, extra: str = "") -> str:
    ratio = ""
    if ref and "error" not in ref and "error" not in result:
        ratio = (
            f"{ref['median_s'] / result['median_s']:.2f}x faster, "
            f"{ref['peak_mib'] / max(result['peak_mib'], 1):.1f}x less memory"
        )
    return _cells(label, result, ratio, extra)


def section_backends(args, report) -> None:
    scale = 4
    size = [64, 64] if args.quick else list(PAPER_INPUT[scale])
    report.title(f"ESC x{scale}, input {size[0]}x{size[1]}: attention backends and precisions (ratios vs naive)")
    report.header("configuration", "latency (s)", "peak memory (MiB)", "vs naive fp32", "notes")
    common = dict(kind="forward", preset="ESC", scale=scale, size=size, repeats=args.repeats, warmup=args.warmup)
    configs = [
        ("naive fp32", dict(backend="naive", precision="fp32")),
        ("sdpa fp32", dict(backend="sdpa", precision="fp32")),
        ("flex fp32", dict(backend="flex", precision="fp32")),
        ("auto fp32", dict(backend="auto", precision="fp32", flops=True)),
        ("auto fp32, channels-last", dict(backend="auto", precision="fp32", channels_last=True)),
        ("auto fp32, torch.compile", dict(backend="auto", precision="fp32", compile=True)),
        ("auto bf16", dict(backend="auto", precision="bf16")),
    ]
    if not args.compile:
        configs = [c for c in configs if "compile" not in c[0]]
    ref = None
    for label, config in configs:
        result = run_isolated(dict(common, **config))
        ref = ref or result
        extra = ""
        if "gflops" in result and report.matmul.get("fp32_gflops"):
            bound = result["gflops"] / report.matmul["fp32_gflops"]
            ratio = result["median_s"] / bound
            extra = f"{result['gflops']:.0f} GFLOP; fp32 matmul bound {bound:.2f} s ({ratio:.1f}x it)"
        report.row(_row(label, result, ref, extra), label=f"ESC x4 {label}", result=result)
    fp32 = report.results.get("ESC x4 auto fp32", {})
    bf16 = report.results.get("ESC x4 auto bf16", {})
    if "median_s" in fp32 and "median_s" in bf16:
        report.note(f"bf16 vs fp32 (auto): {fp32['median_s'] / bf16['median_s']:.2f}x faster")


def section_variants(args, report) -> None:
    presets = ["ESC-light"] if args.quick else ["ESC", "ESC-light", "ESC-FP"]
    report.title("Variants at the paper's protocol (output 1280x720), attn_type auto")
    report.header("network", "latency (s)", "peak memory (MiB)", "bf16 vs fp32", "params")
    for preset in presets:
        for scale in (4,) if args.quick else (2, 3, 4):
            size = [32, 32] if args.quick else list(PAPER_INPUT[scale])
            spec = dict(kind="forward", preset=preset, scale=scale, size=size, repeats=args.repeats, warmup=1)
            for precision in ("fp32", "bf16"):
                result = run_isolated(dict(spec, precision=precision))
                label = f"{preset} x{scale} {precision}, input {size[0]}x{size[1]}"
                ref = report.results.get(f"{preset} x{scale} fp32") if precision == "bf16" else None
                ratio = ""
                if ref and "median_s" in ref and "median_s" in result:
                    ratio = f"{ref['median_s'] / result['median_s']:.2f}x"
                row = _cells(label, result, ratio, f"{result.get('params', 0):,}")
                report.row(row, label=f"{preset} x{scale} {precision}", result=result)


def section_peers(args, report) -> None:
    size = [32, 32] if args.quick else list(PAPER_INPUT[4])
    report.title(f"Peers at x4, input {size[0]}x{size[1]}, fp32 (spandrel architectures, random weights)")
    report.header("network", "latency (s)", "peak memory (MiB)", "vs ESC x4 auto fp32", "params")
    common = dict(kind="forward", scale=4, size=size, repeats=args.repeats, warmup=1, precision="fp32")
    esc = run_isolated(dict(common, preset="ESC"))
    light = run_isolated(dict(common, preset="ESC-light"))
    report.row(_row("ESC (ours, auto)", esc, None, f"{esc.get('params', 0):,}"), label="peer ESC", result=esc)
    report.row(_row("ESC-light (ours, auto)", light, esc, f"{light.get('params', 0):,}"), "peer ESC-light", light)
    for name in PEERS:
        result = run_isolated(dict(common, peer=name))
        report.row(_row(name, result, esc, f"{result.get('params', 0):,}"), label=f"peer {name}", result=result)
    report.note("vs ESC: a ratio above 1 means the peer is faster / lighter than ESC on this machine")


def section_train(args, report) -> None:
    batch, lr_size = (2, 16) if args.quick else (8, 32)
    report.title(f"Training step (forward + backward + AdamW), ESC-light x2, batch {batch} x {lr_size}x{lr_size} LR")
    report.header("precision", "step (s)", "peak memory (MiB)", "patches / s", "")
    for precision in ("fp32", "bf16"):
        spec = dict(kind="train", preset="ESC-light", scale=2, batch=batch, lr_size=lr_size, precision=precision,
                    repeats=args.repeats, warmup=1)  # fmt: skip
        result = run_isolated(spec)
        row = _cells(precision, result, f"{result.get('patches_per_s', 0):.2f}", "")
        report.row(row, label=f"train {precision}", result=result)


def section_tiled(args, report) -> None:
    size, tile, overlap = ([48, 64], 32, 8) if args.quick else ([540, 960], 256, 64)
    report.title(f"Tiled upscale to {size[0] * 4}x{size[1] * 4} (ESC x4, tile {tile}, overlap {overlap}, one pass)")
    report.header("precision", "time (s)", "peak memory (MiB)", "", "")
    for precision in ("fp32", "bf16"):
        spec = dict(kind="tiled", preset="ESC", scale=4, size=size, tile=tile, overlap=overlap, precision=precision)
        result = run_isolated(spec)
        report.row(_row(precision, result), label=f"tiled {precision}", result=result)


def section_rib(args, report) -> None:
    """ESC-RIB x2 (the released network: 64x64 windows) against ESC x2 at the same output size."""
    sizes = [[32, 32]] if args.quick else [[64, 64], [128, 128]]
    report.title("ESC-RIB against ESC at the same output size, x2, fp32, attn_type auto")
    report.header("network", "latency (s)", "peak memory (MiB)", "RIB / ESC time", "params")
    for size in sizes:
        esc = None
        for preset in ("ESC", "ESC-RIB"):
            spec = dict(kind="forward", preset=preset, scale=2, size=size, repeats=args.repeats, warmup=1)
            result = run_isolated(dict(spec, precision="fp32"))
            ratio = ""
            if esc and "median_s" in esc and "median_s" in result:
                ratio = f"{result['median_s'] / esc['median_s']:.2f}x"
            esc = esc or result
            label = f"{preset} x2 fp32, input {size[0]}x{size[1]}"
            report.row(_cells(label, result, ratio, f"{result.get('params', 0):,}"), label=label, result=result)


SECTIONS = {
    "backends": section_backends,
    "variants": section_variants,
    "rib": section_rib,
    "peers": section_peers,
    "train": section_train,
    "tiled": section_tiled,
}


class Report:
    def __init__(self, out: str | None) -> None:
        self.lines: list[str] = []
        self.results: dict[str, dict] = {}
        self.matmul: dict = {}
        self.out = out

    def emit(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)

    def title(self, text: str) -> None:
        self.emit(f"\n### {text}\n")

    def header(self, *cells: str) -> None:
        self.emit("| " + " | ".join(cells) + " |")
        self.emit("|" + "---|" * len(cells))

    def row(self, line: str, label: str, result: dict) -> None:
        self.results[label] = result
        self.emit(line)

    def note(self, text: str) -> None:
        self.emit(f"\n{text}")

    def save(self) -> None:
        if not self.out:
            return
        os.makedirs(self.out, exist_ok=True)
        with open(osp.join(self.out, "results.md"), "w") as f:
            f.write("\n".join(self.lines) + "\n")
        with open(osp.join(self.out, "results.json"), "w") as f:
            json.dump({"matmul": self.matmul, "results": self.results}, f, indent=1)
        chart(self.results, osp.join(self.out, "chart.png"))


def chart(results: dict, path: str) -> None:
    """Latency and peak memory of the x4 forward rows (backends and peers), one bar each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = [k for k in results if k.startswith("ESC x4 ") and k not in ("ESC x4 fp32", "ESC x4 bf16")]
    peers = [k for k in results if k.startswith("peer ")]
    rows = [(k, results[k]) for k in backends + peers if "median_s" in results[k]]
    if not rows:
        return
    labels = [k.replace("ESC x4 ", "ESC ").replace("peer ", "") for k, _ in rows]
    ours = ("peer ESC", "peer ESC-light")
    colors = ["tab:blue" if k in backends else "tab:cyan" if k in ours else "tab:gray" for k, _ in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.35 * len(rows) + 1.5), dpi=110, sharey=True)
    for ax, key, name in ((axes[0], "median_s", "latency (s)"), (axes[1], "peak_mib", "peak memory (MiB)")):
        ax.barh(range(len(rows)), [v[key] for _, v in rows], color=colors)
        ax.set_xlabel(name)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(rows)), labels, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle("x4 forward, input 180x320, CPU (blue: ESC backends; cyan/gray: ours/peers, fp32 auto)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny inputs, one repeat (smoke run)")
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), help="run these sections only")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the whole network")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", default="benchmark_results", help="folder for results.md/json and chart.png")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        spec = json.loads(args.one)
        print(json.dumps(KINDS[spec.pop("kind")](spec)))
        return 0
    if args.quick:
        args.repeats, args.warmup = 1, 1

    report = Report(args.out)
    info = machine()
    report.matmul = run_isolated({"kind": "matmul", "n": 512 if args.quick else 2048})
    report.emit(
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['threads']} torch threads, bf16 instructions: "
        f"{info['bf16_units']}; torch {info['torch']}, Python {info['python']}. "
        f"Matmul peak: fp32 {report.matmul.get('fp32_gflops', 0):.0f} GFLOP/s, "
        f"bf16 {report.matmul.get('bf16_gflops', 0):.0f} GFLOP/s. "
        f"Median of {args.repeats} after {args.warmup} warm-up pass(es), one process per figure."
    )
    for name in args.only or SECTIONS:
        SECTIONS[name](args, report)
    report.save()
    if args.out:
        print(f"\nwrote {args.out}/results.md, results.json, chart.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
