"""Every bound on what an untrusted file may make this package do, in one place.

Checkpoints, option files and training states are downloaded and shared (docs/security.md).
Each bound below is checked before the work it bounds: a checkpoint's declared sizes before
anything is inflated, its hyper-parameters before anything is built, an option file's size,
depth and node count while it is parsed (aliases counted, never expanded). Every published
network and option file is far inside them. Tests read the numbers from here.
"""

from __future__ import annotations

__all__ = ["CHECKPOINT_LIMITS", "NETWORK_LIMITS", "OPTION_FILE_LIMITS"]

#: The largest value of each network hyper-parameter, whether read from a checkpoint's tensors
#: or from an option file's ``network_g``; checked before anything is built.
NETWORK_LIMITS: dict[str, int] = {
    "dim": 1024,
    "pdim": 1024,
    "kernel_size": 63,
    "n_blocks": 64,
    "conv_blocks": 32,
    "window_size": 128,
    "num_heads": 64,
    "upscaling_factor": 8,
    "exp_ratio": 16,
    "flashbias_rank": 1024,
}

#: A checkpoint file (``.pth``, ``.safetensors``, ``.state``), read from its directory or header
#: before anything is inflated: ``bytes``, the declared size of everything it holds once read
#: (a torch zip's members, uncompressed; a safetensors file's tensors); ``entries``, its members
#: or tensors; ``ratio``, how many times larger than stored a compressed member may declare
#: itself (``torch.save`` stores its members uncompressed; tensors of weights deflate by less
#: than 2x, so a larger ratio is a crafted file).
CHECKPOINT_LIMITS: dict[str, int] = {
    "bytes": 2 * 2**30,
    "entries": 100_000,
    "ratio": 20,
}

#: An option file (``.yml``): ``bytes``, its size on disk; ``depth``, the nesting of its
#: mappings and lists; ``nodes``, its scalars, mappings and lists counted with every alias
#: expanded (what BasicSR's printing and deep copies would build). Published option files
#: hold at most 7.3 KB, 4 levels and 514 values.
OPTION_FILE_LIMITS: dict[str, int] = {
    "bytes": 1 << 20,
    "depth": 32,
    "nodes": 20_000,
}
