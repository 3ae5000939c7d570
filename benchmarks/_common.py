"""What every benchmark script reports the same way: the CPU it ran on, this machine's matrix
multiply peaks (measured in the same run, so ratios hold on any CPU) and memory readings.

The scripts import it as ``_common`` (their own folder is first on ``sys.path``)."""

from __future__ import annotations

import os
import resource
import subprocess
import time


def cpu_model() -> str:
    """lscpu's "Model name" (or /proc/cpuinfo's "model name"); "unknown" if neither says."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        out = ""
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def bf16_flags() -> list[str]:
    """The bf16 instruction sets /proc/cpuinfo lists, of ``amx_bf16`` and ``avx512_bf16``."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return []
    return [name for name in ("amx_bf16", "avx512_bf16") if name in flags]


def matmul_peaks(n: int = 2048, repeats: int = 6) -> dict[str, float]:
    """GFLOP/s of an ``n x n`` matmul in fp32 and bf16, the best of ``repeats`` after two warm-ups."""
    import torch

    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.rand(n, n).to(dtype), torch.rand(n, n).to(dtype)
        times = []
        for i in range(2 + repeats):
            start = time.perf_counter()
            a @ b
            if i >= 2:
                times.append(time.perf_counter() - start)
        out[name] = 2 * n**3 / min(times) / 1e9
    return out


def rss_mib() -> float:
    """This process's resident size now (MiB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """This process's peak resident size so far (``ru_maxrss``, MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synchronize(device) -> None:
    """Wait for the work queued on ``device`` (CUDA runs asynchronously; a CPU needs nothing)."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_training_steps(net, optimizer, x, y, precision: str, *, warmup: int, repeats: int):
    """``(wall, cpu)``: seconds of each of ``repeats`` training steps (zero_grad, forward under
    ``precision`` autocast, L1 loss, backward, optimizer step) after ``warmup`` untimed ones.
    On CUDA each step is timed to the end of its queued work."""
    from esc_arch.runtime.inference import autocast

    wall, cpu = [], []
    for i in range(warmup + repeats):
        synchronize(x.device)
        start, cpu_start = time.perf_counter(), time.process_time()
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision, x.device):
            out = net(x)
        (out.float() - y).abs().mean().backward()
        optimizer.step()
        synchronize(x.device)
        if i >= warmup:
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - cpu_start)
    return wall, cpu
