#!/usr/bin/env python
"""A roofline of one network pass on this CPU: every operator's time against the least time its
work needs at this machine's rates, all measured in the same run.

Machine rates (:func:`machine_rates`), measured in this process:

- ``fp32`` / ``bf16``: matrix-multiply peaks in GFLOP/s (``_common.matmul_peaks``, 2048x2048);
- ``bandwidth``: memory bandwidth in GB/s, a 256 MiB fp32 ``copy_`` counted as bytes read plus
  bytes written (as operators' bytes are counted), best of 20 (it varies run to run on a shared
  host);
- ``exp``: ``torch.exp`` throughput in elements/s, fp32, all torch threads, on 1 Mi elements
  (input and output fit the last-level cache, enough work for every thread), ``out=`` so
  nothing is allocated, best of 100.

One pass (:func:`record_pass`): a warm-up call, timed calls (the pass latency: the best), then
calls under :class:`OpRecorder` (each operator's time: its best), a ``TorchDispatchMode`` that
times every aten operator (``time.perf_counter`` around the call; CPU kernels are synchronous)
and records its class (:data:`OP_CLASSES`), FLOPs (``torch.utils.flop_counter``'s formulas,
plus torch's fused CPU attention kernel, which flop_counter does not count), bytes (every input
and output tensor, ``numel * element size``; a broadcast dimension, stride 0, counts once; views
move nothing) and exponentials (softmax and the fused attention: one per score).

The bound of an operator is the largest of its FLOPs at the matmul peak of its dtype (bf16 for
bf16 inputs, fp32 otherwise), its bytes at the copy bandwidth and its exponentials at the exp
rate; the fused attention's two matrix products, softmax and traffic are one kernel, so it gets
the same largest-of-three. The roofline of a pass is the sum of its operators' bounds; the time
not spent inside operators (Python, module calls, dispatch) is the "framework" row. Bytes are
priced at memory bandwidth, so an operator whose tensors stay in the last-level cache can beat
its bound.

  python benchmarks/roofline.py                 # ESC x4 on 180x320, fp32 and bf16, ~1 min on 2 cores
  python benchmarks/roofline.py --quick         # 48x64
  python benchmarks/roofline.py --repeats 1 --json roofline.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from os import path as osp
from typing import Any, NamedTuple

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402
from torch.utils.flop_counter import flop_registry, shape_wrapper  # noqa: E402

from benchmarks._common import cpu_model, matmul_peaks  # noqa: E402

aten = torch.ops.aten

# --------------------------------------------------------------------------- machine rates


def machine_rates(
    *,
    matmul_n: int = 2048,
    matmul_repeats: int = 6,
    copy_mib: int = 256,
    copy_repeats: int = 20,
    exp_elements: int = 1 << 20,
    exp_repeats: int = 100,
) -> dict[str, float]:
    """This machine's rates, measured now:

    - ``fp32``, ``bf16``: GFLOP/s of an ``matmul_n`` square matmul (best of ``matmul_repeats``);
    - ``bandwidth``: GB/s of a ``copy_mib`` MiB fp32 ``copy_`` between two tensors already
      faulted in, bytes read plus bytes written, best of ``copy_repeats``;
    - ``exp``: elements/s of ``torch.exp(x, out=y)`` on ``exp_elements`` fp32 elements with all
      torch threads (``torch.get_num_threads()``), best of ``exp_repeats``.
    """
    rates = dict(matmul_peaks(matmul_n, matmul_repeats))
    rates["bandwidth"] = copy_bandwidth(copy_mib, copy_repeats)
    rates["exp"] = exp_rate(exp_elements, exp_repeats)
    return rates


def copy_bandwidth(mib: int = 256, repeats: int = 20) -> float:
    """GB/s of ``target.copy_(source)`` on ``mib`` MiB of fp32 (bytes read plus bytes written),
    the best of ``repeats``, the target's pages faulted in first."""
    source = torch.ones(mib * 2**20 // 4)
    target = torch.empty_like(source)
    target.copy_(source)
    return 2 * source.numel() * source.element_size() / _best_time(lambda: target.copy_(source), repeats) / 1e9


def exp_rate(elements: int = 1 << 20, repeats: int = 100) -> float:
    """Elements/s of ``torch.exp(x, out=y)`` on ``elements`` fp32 elements with all torch
    threads, the best of ``repeats`` after one warm-up."""
    x = torch.rand(elements)
    y = torch.empty_like(x)
    torch.exp(x, out=y)
    return elements / _best_time(lambda: torch.exp(x, out=y), repeats)


def _best_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


# --------------------------------------------------------------------------- operator tables

#: The operators of each class (aten names, without overload), whitespace-separated.
_CLASS_MEMBERS: dict[str, str] = {
    "convolution": """convolution _convolution mkldnn_convolution _mkldnn_convolution _slow_conv2d_forward
        convolution_overrideable thnn_conv2d _nnpack_spatial_convolution slow_conv_transpose2d""",
    "attention": """_scaled_dot_product_flash_attention_for_cpu _scaled_dot_product_flash_attention
        _scaled_dot_product_efficient_attention _scaled_dot_product_cudnn_attention _flash_attention_forward
        _efficient_attention_forward scaled_dot_product_attention""",
    "matmul": "mm bmm addmm baddbmm linear matmul mv addmv dot _scaled_mm",
    "elementwise": """add add_ mul mul_ sub sub_ rsub div div_ where clamp clamp_ clamp_min clamp_min_ clamp_max
        clamp_max_ erf erf_ gelu gelu_ relu relu_ leaky_relu leaky_relu_ hardtanh hardtanh_ silu silu_ sigmoid
        sigmoid_ tanh tanh_ exp exp_ log neg abs pow sqrt rsqrt reciprocal maximum minimum lerp addcmul addcdiv
        masked_fill masked_fill_ round floor ceil sign sin cos eq ne lt gt le ge logical_and logical_or
        logical_not fill_ zero_ prelu _prelu_kernel softplus mish""",
    "normalisation": """native_layer_norm native_group_norm native_batch_norm _native_batch_norm_legit
        _native_batch_norm_legit_no_training _fused_rms_norm _softmax _safe_softmax _log_softmax""",
    "copy": """copy_ _to_copy clone contiguous cat stack constant_pad_nd reflection_pad1d reflection_pad2d
        replication_pad2d index_select index _unsafe_index gather pixel_shuffle pixel_unshuffle repeat_interleave
        repeat flip roll upsample_nearest2d lift_fresh_copy im2col col2im""",
    "reduction": """mean sum amax amin max min var std var_mean std_mean norm linalg_vector_norm argmax argmin
        prod any all cumsum logsumexp""",
    "view": """view _unsafe_view _reshape_alias permute transpose transpose_ t t_ expand slice select split
        split_with_sizes unbind chunk narrow unsqueeze unsqueeze_ squeeze squeeze_ as_strided as_strided_ alias
        unfold detach diagonal view_as_real view_as_complex lift_fresh""",
}

#: The class of each aten operator (by name, without overload); operators not listed are "other".
#: "view" operators return a view of their input and move no bytes.
OP_CLASSES: dict[str, str] = {name: cls for cls, names in _CLASS_MEMBERS.items() for name in names.split()}

#: The order of the table's rows.
CLASSES: tuple[str, ...] = (*_CLASS_MEMBERS, "other")

#: Operators that move no bytes although they are not in the "view" class (allocation only).
NO_TRAFFIC: frozenset[str] = frozenset(
    {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "_local_scalar_dense"}
)

#: Operators whose first argument is only written (its old contents are not read).
WRITE_ONLY_FIRST: frozenset[str] = frozenset({"copy_", "fill_", "zero_", "uniform_", "normal_", "random_"})


def _cpu_flash_attention_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """The two matrix products of attention (q (B, H, L, E), k (B, H, S, E), v (B, H, S, Ev)):
    ``2 B H L S E + 2 B H L S Ev``."""
    batch, heads, length, channels = query_shape
    source = key_shape[-2]
    return 2 * batch * heads * length * source * (channels + value_shape[-1])


#: FLOP formulas by operator packet: torch.utils.flop_counter's, plus torch's fused CPU attention
#: kernel (not in its registry), in the registry's calling convention (shapes, ``out_val``).
FLOP_FORMULAS: dict[Any, Callable[..., int]] = {
    **flop_registry,
    aten._scaled_dot_product_flash_attention_for_cpu: shape_wrapper(_cpu_flash_attention_flop),
}


def _attention_exps(args: tuple, kwargs: dict, out: Any) -> int:
    query, key = args[0], args[1]
    return math.prod(query.shape[:-1]) * key.shape[-2]


def _output_numel(args: tuple, kwargs: dict, out: Any) -> int:
    return out.numel()


#: Exponentials computed, by operator name: one per attention score, one per softmax element.
EXP_FORMULAS: dict[str, Callable[[tuple, dict, Any], int]] = {
    **dict.fromkeys(
        """_scaled_dot_product_flash_attention_for_cpu _scaled_dot_product_flash_attention
        _scaled_dot_product_efficient_attention""".split(),
        _attention_exps,
    ),
    **dict.fromkeys("_softmax _safe_softmax _log_softmax exp exp_ sigmoid silu".split(), _output_numel),
}

#: Which matmul peak (a key of :func:`machine_rates`) serves the FLOPs of an input dtype.
PEAK_OF_DTYPE: dict[torch.dtype, str] = {torch.bfloat16: "bf16"}

# --------------------------------------------------------------------------- the recorder


class OpRecord(NamedTuple):
    """One aten operator call: its measured seconds and the work it did."""

    name: str  # e.g. "aten.convolution.default"
    op_class: str  # one of CLASSES
    seconds: float
    flops: int
    bytes: int
    exps: int
    dtype: torch.dtype | None  # of the first floating input; None without one
    shapes: tuple[tuple[int, ...], ...]  # of the input tensors, in argument order


def tensor_bytes(t: torch.Tensor) -> int:
    """The bytes a tensor holds: ``numel * element_size``, a broadcast (stride 0) dimension once."""
    return t.element_size() * math.prod(size for size, stride in zip(t.shape, t.stride(), strict=True) if stride)


class OpRecorder(TorchDispatchMode):
    """While active, times every aten operator call and appends an :class:`OpRecord` to ``records``."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[OpRecord] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        start = time.perf_counter()
        out = func(*args, **kwargs)
        seconds = time.perf_counter() - start
        name = func._opname
        op_class = OP_CLASSES.get(name, "other")
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        dtype = next((t.dtype for t in inputs if t.is_floating_point()), None)
        if op_class == "view" or name in NO_TRAFFIC:
            moved = 0
        else:
            written = {id(t) for t in tree_flatten(kwargs.get("out"))[0] if isinstance(t, torch.Tensor)}
            read = [t for t in (inputs[1:] if name in WRITE_ONLY_FIRST else inputs) if id(t) not in written]
            moved = sum(tensor_bytes(t) for t in read) + sum(tensor_bytes(t) for t in outputs)
        formula = FLOP_FORMULAS.get(func._overloadpacket)
        flops = int(formula(*args, **kwargs, out_val=out)) if formula else 0
        exps = EXP_FORMULAS[name](args, kwargs, out) if name in EXP_FORMULAS else 0
        shapes = tuple(tuple(t.shape) for t in inputs)
        self.records.append(OpRecord(str(func), op_class, seconds, flops, moved, int(exps), dtype, shapes))
        return out


def record_pass(fn: Callable[[], object], *, warmup: int = 1, repeats: int = 1) -> tuple[list[OpRecord], float]:
    """``(records, wall)``: ``fn`` called ``warmup`` times, then ``repeats`` times without recording
    (``wall``: the best, seconds), then ``repeats`` times under :class:`OpRecorder`; each record's
    seconds are its operator's least over these calls (they run the same operators in order)."""
    for _ in range(warmup):
        fn()
    wall = _best_time(fn, repeats)
    runs = []
    for _ in range(repeats):
        recorder = OpRecorder()
        with recorder:
            fn()
        runs.append(recorder.records)
    names = [r.name for r in runs[0]]
    if any([r.name for r in run] != names for run in runs[1:]):
        raise RuntimeError("the recorded calls ran different operators")
    return [r._replace(seconds=min(run[i].seconds for run in runs)) for i, r in enumerate(runs[0])], wall


# --------------------------------------------------------------------------- bounds and table


def op_bounds(record: OpRecord, rates: dict[str, float]) -> dict[str, float]:
    """Seconds each resource needs for the operator's work: ``matmul`` (FLOPs at the peak of its
    dtype), ``bandwidth`` (bytes), ``exp`` (exponentials)."""
    peak = rates[PEAK_OF_DTYPE.get(record.dtype, "fp32")]
    return {
        "matmul": record.flops / (peak * 1e9),
        "bandwidth": record.bytes / (rates["bandwidth"] * 1e9),
        "exp": record.exps / rates["exp"],
    }


def op_bound(record: OpRecord, rates: dict[str, float]) -> tuple[float, str]:
    """``(seconds, resource)``: the operator's lower bound, the largest of :func:`op_bounds`, and
    the resource that sets it ("none" when the operator does no work)."""
    bounds = op_bounds(record, rates)
    resource = max(bounds, key=bounds.__getitem__)
    return bounds[resource], resource if bounds[resource] > 0 else "none"


def roofline_summary(records: list[OpRecord], rates: dict[str, float], wall: float) -> dict[str, Any]:
    """The roofline of one pass as numbers: per class (``classes``, in :data:`CLASSES` order, those
    with operators) its operator count, measured seconds, share of the pass, bound, the resource
    binding most of the bound and latency / bound; the pass latency ``wall_s``, the seconds spent
    in operators and outside them (``framework_s``), the roofline (sum of the bounds) and
    ``ratio`` = latency / roofline; the matmul-only bound (FLOPs at the peaks) and its ratio."""
    classes: dict[str, dict[str, Any]] = {}
    by_resource: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    matmul_bound = 0.0
    for record in records:
        bound, resource = op_bound(record, rates)
        matmul_bound += op_bounds(record, rates)["matmul"]
        row = classes.setdefault(
            record.op_class, {"ops": 0, "seconds": 0.0, "bound_s": 0.0, "gflop": 0.0, "gbyte": 0.0, "exps": 0}
        )
        row["ops"] += 1
        row["seconds"] += record.seconds
        row["bound_s"] += bound
        row["gflop"] += record.flops / 1e9
        row["gbyte"] += record.bytes / 1e9
        row["exps"] += record.exps
        by_resource[record.op_class][resource] += bound
    ordered = {}
    for name in CLASSES:
        if name not in classes:
            continue
        row = classes[name]
        resources = by_resource[name]
        binding = max(resources, key=resources.__getitem__)
        row["share"] = row["seconds"] / wall
        row["bound_by"] = binding if row["bound_s"] > 0 else "none"
        row["bound_by_share"] = resources[binding] / row["bound_s"] if row["bound_s"] > 0 else 0.0
        row["ratio"] = row["seconds"] / row["bound_s"] if row["bound_s"] > 0 else None
        ordered[name] = row
    operators = sum(r.seconds for r in records)
    roofline = sum(row["bound_s"] for row in ordered.values())
    return {
        "wall_s": wall,
        "operators_s": operators,
        "framework_s": wall - operators,
        "roofline_s": roofline,
        "ratio": wall / roofline if roofline > 0 else None,
        "matmul_bound_s": matmul_bound,
        "matmul_ratio": wall / matmul_bound if matmul_bound > 0 else None,
        "gflop": sum(r.flops for r in records) / 1e9,
        "ops": len(records),
        "classes": ordered,
    }


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}x"


def roofline_table(records: list[OpRecord], rates: dict[str, float], wall: float) -> list[str]:
    """Markdown lines: one row per operator class (measured milliseconds, share of the pass,
    bound, the resource binding most of it, latency / bound), the framework row (time outside
    operators), the pass (latency, roofline, ratio) and the matmul-only bound (FLOPs at the peaks)."""
    summary = roofline_summary(records, rates, wall)
    lines = [
        "| class | ops | measured (ms) | share | bound (ms) | bound by | latency / bound |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for name, row in summary["classes"].items():
        binding = row["bound_by"] if row["bound_by"] == "none" else f"{row['bound_by']} ({row['bound_by_share']:.0%})"
        lines.append(
            f"| {name} | {row['ops']} | {row['seconds'] * 1e3:.2f} | {row['share']:.1%} | {row['bound_s'] * 1e3:.2f} "
            f"| {binding} | {_ratio(row['ratio'])} |"
        )
    framework = summary["framework_s"]
    lines.append(f"| framework (outside operators) | — | {framework * 1e3:.2f} | {framework / wall:.1%} | — | — | — |")
    lines.append(
        f"| **pass** | {summary['ops']} | {wall * 1e3:.2f} | 100% | {summary['roofline_s'] * 1e3:.2f} | roofline "
        f"| {_ratio(summary['ratio'])} |"
    )
    lines.append(
        f"| matmul-only bound ({summary['gflop']:.3g} GFLOP at the peaks) | — | {wall * 1e3:.2f} | 100% "
        f"| {summary['matmul_bound_s'] * 1e3:.2f} | matmul | {_ratio(summary['matmul_ratio'])} |"
    )
    return lines


# --------------------------------------------------------------------------- ESC x4


def main(argv: list[str] | None = None) -> int:
    import esc_arch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="48x64 input instead of 180x320")
    parser.add_argument("--repeats", type=int, default=3, help="timed and recorded calls of each pass (best)")
    parser.add_argument("--json", help="also write the rates and summaries to this file")
    args = parser.parse_args(argv)
    size = (48, 64) if args.quick else (180, 320)

    esc_arch.keep_freed_memory()
    print(f"Machine: {cpu_model()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    rates = machine_rates()
    print(
        f"Rates: matmul fp32 {rates['fp32']:.1f} GFLOP/s, bf16 {rates['bf16']:.1f} GFLOP/s; "
        f"copy bandwidth {rates['bandwidth']:.1f} GB/s; exp {rates['exp'] / 1e9:.2f} G/s (fp32)"
    )
    torch.manual_seed(0)
    net = esc_arch.build_preset("ESC", 4).eval()
    x = torch.rand(1, 3, *size)
    results: dict[str, Any] = {"cpu": cpu_model(), "size": list(size), "rates": rates, "passes": {}}
    for precision in ("fp32", "bf16"):

        def one_pass(precision: str = precision) -> torch.Tensor:
            with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
                return net(x)

        records, wall = record_pass(one_pass, repeats=args.repeats)
        summary = roofline_summary(records, rates, wall)
        results["passes"][precision] = summary
        print(
            f"\nESC x4, input {size[0]}x{size[1]}, {precision}: {wall:.3f} s, roofline {summary['roofline_s']:.3f} s: "
            f"within {summary['ratio']:.1f}x of the roofline"
        )
        print("\n".join(roofline_table(records, rates, wall)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
