"""What this machine's CPU computes natively, read once from torch.

bf16 autocast on a CPU without bf16 instructions (AVX-512 BF16 or AMX) is emulated: ESC x4
inference took 8.5x the fp32 time on an AVX2-only CPU. :func:`cpu_precision` is the one place
that decides what a requested precision runs as on the CPU.
"""

from __future__ import annotations

import functools

import torch

__all__ = ["cpu_precision", "native_bf16"]


@functools.cache
def native_bf16() -> bool:
    """Whether the CPU has bf16 instructions (AVX-512 BF16 or AMX tiles), as torch reads them."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    found = [getattr(torch.cpu, name, None) for name in checks]
    if any(check is None for check in found):  # an older torch: oneDNN's own test
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return any(bool(check()) for check in found)


def cpu_precision(precision: str | None, device: torch.device | str) -> tuple[str | None, str | None]:
    """``(precision to run, note)``: bf16 on a CPU without bf16 instructions runs fp32 (``None``),
    with a one-line note saying why; anything else runs as asked, without a note."""
    if precision != "bf16" or torch.device(device).type != "cpu" or native_bf16():
        return precision, None
    capability = torch.backends.cpu.get_cpu_capability()
    return None, (
        f"bf16 was asked for, but this CPU ({capability}) has no bf16 instructions (AVX-512 BF16 or AMX): "
        "emulated bf16 runs several times slower than fp32, so this runs in fp32"
    )
