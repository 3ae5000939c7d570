"""``esc export``: turn a training checkpoint into a model-zoo release file.

The release holds ``params_ema`` only and is named ``{variant}_x{scale}.pth`` (the name the
test option files expect under ``experiments/pretrained_models/``; ``ESC-LTE.pth`` for the
arbitrary-scale network); ``--hash`` appends
BasicSR's ``-{sha256[:8]}`` for publishing. The same weights always give the same bytes.
The output folder and ``--name`` are checked before the checkpoint is read; a checkpoint that
does not load is one line naming the file and the key (:func:`esc_arch.load_model`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from os import path as osp

import torch

from ..families import describe
from ..io.fileio import atomic_path
from .common import check_not_an_input, guarded

__all__ = ["export_checkpoint", "release_bytes", "run"]


def _check_name(name: str | None, label: str) -> None:
    if name is not None and (not name or name in (".", "..") or osp.basename(name) != name or "/" in name):
        raise ValueError(f"{label} {name!r}: a file name stem, without a folder")


def _sorted_header(data: bytes) -> bytes:
    """A safetensors file with its JSON header's entries in a fixed order (the metadata keys
    sorted, then the tensors by name): safetensors writes the metadata in hash-map order,
    which changes from one call to the next. Same length, so the data offsets still hold."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    ordered = {"__metadata__": dict(sorted(header.pop("__metadata__", {}).items()))}
    ordered.update(sorted(header.items()))
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > size:  # cannot happen: the same entries, reordered
        raise RuntimeError("safetensors header grew when sorted")
    return data[:8] + text.ljust(size, b" ") + data[8 + size :]


def release_bytes(state_dict: dict[str, torch.Tensor], *, safetensors: bool, metadata: dict[str, str]) -> bytes:
    """The release file's content: the same tensors always give the same bytes (serialised in
    memory, so no file name is recorded inside the archive)."""
    if safetensors:
        from safetensors.torch import save

        return _sorted_header(save(state_dict, metadata=metadata))
    buffer = io.BytesIO()
    torch.save({"params_ema": state_dict}, buffer)
    return buffer.getvalue()


def export_checkpoint(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    name: str | None = None,
    fp16: bool = False,
    safetensors: bool = False,
    with_hash: bool = False,
    allow_pickle: bool = False,
    window_size: int | None = None,
    overwrite: bool = True,
) -> tuple[str, str]:
    """Write the release file of ``checkpoint`` into ``out_dir``: ``params_ema`` only, named
    ``{name}.pth`` (default name ``{variant}_x{scale}``, ``{variant}`` for an arbitrary-scale
    network; ``with_hash`` appends ``-{sha256[:8]}``; ``.safetensors`` with ``safetensors``).
    Weights holding NaN or Inf, or (``fp16``) values beyond float16's range, are refused; so is
    a release file that exists already unless ``overwrite`` (checked before writing; one that
    appears while it is written is kept), and the checkpoint itself as the release file.
    ``window_size``: ESC-RIB's window (:func:`esc_arch.load_model`). Returns the file's path
    and its model-zoo table row."""
    from ..weights import load_model

    _check_name(name, "name")
    net = load_model(checkpoint, allow_pickle=allow_pickle, window_size=window_size)  # refuses what does not load
    described = describe(net)
    variant, scale = described.variant, described.scale
    if fp16:
        limit = torch.finfo(torch.float16).max
        for key, value in net.state_dict().items():
            if value.is_floating_point() and value.abs().max() > limit:
                raise ValueError(
                    f"{os.fspath(checkpoint)}: {key!r} holds values up to {value.abs().max():.4g}, beyond float16's "
                    f"range ({limit:g}); export it without --fp16"
                )
    state_dict = {
        k: (v.half() if fp16 and v.is_floating_point() else v).contiguous() for k, v in net.state_dict().items()
    }
    ext = ".safetensors" if safetensors else ".pth"
    metadata = {"format": "pt", "arch": type(net).__name__, "variant": variant}
    data = release_bytes(state_dict, safetensors=safetensors, metadata=metadata)
    digest = hashlib.sha256(data).hexdigest()
    stem = name or (variant if described.arbitrary_scale else f"{variant}_x{scale}")
    if with_hash:
        stem = f"{stem}-{digest[:8]}"
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as error:
        raise ValueError(f"{os.fspath(out_dir)}: cannot create the output folder: {error.strerror or error}") from error
    path = osp.join(os.fspath(out_dir), stem + ext)
    check_not_an_input(path, checkpoint, "the checkpoint being exported", "choose another -o or --name")
    if not overwrite and osp.lexists(path):
        raise ValueError(f"{path} exists already; pass --overwrite to replace it, or choose another -o or --name")
    with atomic_path(path, suffix=ext, replace=overwrite) as tmp, open(tmp, "wb") as f:
        f.write(data)
    params = sum(v.numel() for v in state_dict.values())
    scale_text, precision = "any" if described.arbitrary_scale else f"x{scale}", "fp16" if fp16 else "fp32"
    row = f"| {variant} | {scale_text} | {params:,} | {precision} | `{osp.basename(path)}` | `{digest}` |"
    return path, row


@guarded
def run(args) -> int:
    """``esc export`` (arguments: :mod:`esc_arch.cli`)."""
    from .common import check_output_folder

    _check_name(args.name, "--name")
    check_output_folder(args.output)
    path, row = export_checkpoint(args.checkpoint, args.output, name=args.name, fp16=args.fp16,
                                  safetensors=args.safetensors, with_hash=args.hash, allow_pickle=args.allow_pickle,
                                  window_size=args.window_size, overwrite=args.overwrite)  # fmt: skip
    print(path)
    print("| model | scale | parameters | precision | file | sha256 |\n|---|---|---|---|---|---|")
    print(row)
    return 0
