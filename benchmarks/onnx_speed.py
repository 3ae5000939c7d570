#!/usr/bin/env python
"""onnxruntime against torch on the same input, fp32, on the CPU: the ``esc onnx`` graph (dynamic
batch and size, the dynamic kernels in each batch-free form) against the network in eager torch
with each form of the dynamic kernels (``grouped``, torch's own forward, first). Each figure is
the median of ``--repeats`` runs after one warm-up, the runs interleaved; both run with
``--threads`` threads.

  python benchmarks/onnx_speed.py                           # the trained ESC-light x2, 1x3x256x256
  python benchmarks/onnx_speed.py -m ESC_x4.pth --size 180 320 --batch 2
  python benchmarks/onnx_speed.py --quick                   # a tiny network, toy size (CI)

It prints one line per run and the ratio onnxruntime / torch (torch's own forward); the outputs
are compared too (max abs).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from os import path as osp

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks._common import cpu_model  # noqa: E402

TRAINED = osp.join(ROOT, "tests", "data", "ESC-light_x2_small.pth")
TINY = dict(dim=16, pdim=8, kernel_size=5, n_blocks=1, conv_blocks=2, window_size=8, num_heads=2, exp_ratio=1.25)


def _medians(runs: dict, repeats: int) -> dict[str, float]:
    """The median wall time of each of ``runs`` (name -> callable) after one warm-up each, the
    runs interleaved (one of each per round), so that a load that changes meanwhile falls on
    every run alike."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", default=TRAINED, help="weights (default: the trained ESC-light x2)")
    parser.add_argument("--size", type=int, nargs=2, default=[256, 256], metavar=("H", "W"), help="input size")
    parser.add_argument("--batch", type=int, default=1, help="batch (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (median; default 3)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads (default: every core)")
    parser.add_argument("--forms", nargs="+", default=["unfold", "shifts"], help="batch-free forms to export")
    parser.add_argument("--quick", action="store_true", help="a tiny network, a 20x28 input, one repeat (CI)")
    args = parser.parse_args(argv)

    import numpy as np
    import onnxruntime
    import torch

    import esc_arch
    from esc_arch.archs.esc_arch import DYNAMIC_KERNEL_FORMS, set_dynamic_kernels
    from esc_arch.commands.onnx_export import export_onnx
    from esc_arch.runtime.inference import upscale

    if args.quick:
        args.size, args.repeats = [20, 28], 1
        torch.manual_seed(0)
        net, name = esc_arch.ESC(**TINY, upscaling_factor=2).eval(), "tiny ESC x2 (random)"
    else:
        net = esc_arch.load_model(args.model)
        described = esc_arch.describe(net)
        name = f"{described.variant} x{described.scale} ({osp.basename(args.model)})"
    torch.set_num_threads(args.threads)
    net.set_attn_type("sdpa")  # the backend the export uses
    lq = torch.rand(args.batch, 3, *args.size)
    print(f"Machine: {cpu_model()}, {args.threads} thread(s); torch {torch.__version__}, onnxruntime "
          f"{onnxruntime.__version__}")  # fmt: skip
    print(f"{name}, input {tuple(lq.shape)}, fp32, median of {args.repeats}")
    nets = {}
    for form in DYNAMIC_KERNEL_FORMS:
        nets[form] = set_dynamic_kernels(copy.deepcopy(net), form)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = args.threads
    feed = {"lq": lq.numpy()}
    with torch.no_grad():
        expected = upscale(nets["grouped"], lq).numpy()
    runs, errors = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for form in args.forms:
            path = export_onnx(net, osp.join(folder, f"{form}.onnx"), dynamic_kernels=form)
            session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            errors[form] = float(np.abs(session.run(None, feed)[0] - expected).max())
            runs[f"onnxruntime {form}"] = lambda s=session: s.run(None, feed)
    for form, model in nets.items():
        runs[f"torch {form}"] = lambda m=model: upscale(m, lq)
    with torch.no_grad():
        seconds = _medians(runs, args.repeats)
    for form in DYNAMIC_KERNEL_FORMS:
        print(f"  torch eager, dynamic kernels {form:8s}: {seconds[f'torch {form}']:8.3f} s")
    for form in args.forms:
        time_ = seconds[f"onnxruntime {form}"]
        print(f"  onnxruntime CPU, {form:8s}        : {time_:8.3f} s  ratio onnxruntime / torch "
              f"{time_ / seconds['torch grouped']:.2f}  (max abs {errors[form]:.1e})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
