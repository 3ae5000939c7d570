"""Reading checkpoint files safely: :func:`read_state_dict`.

Accepted files: BasicSR model-zoo files (``params_ema`` preferred, else ``params``), the
LIIF/LTE code base's files (``{'model': {'name', 'args', 'sd'}}``, the authors' arbitrary-scale
ESC), BasicSR training checkpoints (``models/net_g_<iter>.pth``; a ``training_states/<iter>.state``
file is followed to its ``models/net_g_<iter>.pth``), bare state dicts and ``.safetensors``
files.

Files are read with ``torch.load(weights_only=True)``; a file that needs pickled code is
refused unless ``allow_pickle=True`` is passed (only for files you trust). The format is
read from the file's first bytes, not its name: a file that is neither a torch zip/pickle
file nor safetensors is "not a checkpoint". What a file declares it holds is checked against
:data:`esc_arch.limits.CHECKPOINT_LIMITS` before anything is inflated
(:func:`check_declared_sizes`), and a tensor holding NaN or Inf (the weights of a diverged
training) is refused (:func:`check_finite`). Every failure is one ``ValueError`` line naming
the file.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
import zipfile
from os import path as osp

import torch
from torch import Tensor

from ..limits import CHECKPOINT_LIMITS
from ..text import first_line

logger = logging.getLogger("basicsr.esc")

__all__ = ["check_declared_sizes", "check_finite", "read_state_dict"]


#: Members of a torch zip at most this large are not checked for their compression ratio
#: (a small member cannot exhaust memory, whatever it declares).
_SMALL_MEMBER = 1 << 20
#: The largest safetensors JSON header read (safetensors' own limit).
_SAFETENSORS_HEADER = 100 << 20


def _file_kind(path: str) -> str:
    """``zip`` (``torch.save``), ``pickle`` (torch's legacy format) or ``safetensors``, each
    recognised by its own structure in the file's first bytes; ``ValueError`` for anything else.
    A safetensors file starts with its JSON header's length (8 bytes, little-endian) and ``{``;
    a torch zip with ``PK\\x03\\x04``, whose 9th byte (the compression method) is never ``{``; a
    legacy torch file with pickle's PROTO opcode ``0x80`` and a protocol 2 to 5."""
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise ValueError(f"{path}: not a checkpoint (empty file)")
    if len(head) > 8 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= osp.getsize(path) - 8:
        return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    raise ValueError(f"{path}: not a checkpoint (neither a torch zip/pickle file nor safetensors)")


def _size_text(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"


def _declared_sizes(path: str, kind: str) -> list[tuple[str, int, int, bool]]:
    """``(name, declared size, stored size, compressed)`` of each member of a torch zip or tensor
    of a safetensors file, read from its directory or header (nothing is inflated)."""
    if kind == "zip":
        try:
            with zipfile.ZipFile(path) as archive:
                members = archive.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
            raise ValueError(
                f"{path}: not a readable torch file (truncated or corrupt): {first_line(error)}"
            ) from error
        return [(m.filename, m.file_size, m.compress_size, m.compress_type != zipfile.ZIP_STORED) for m in members]
    if kind == "safetensors":
        with open(path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            if length > _SAFETENSORS_HEADER:
                raise ValueError(f"{path}: a safetensors header of {_size_text(length)}, more than safetensors' "
                                 f"limit of {_size_text(_SAFETENSORS_HEADER)}")  # fmt: skip
            try:
                header = json.loads(f.read(length))
                spans = {name: entry["data_offsets"] for name, entry in header.items() if name != "__metadata__"}
                return [
                    (name, int(end) - int(start), int(end) - int(start), False) for name, (start, end) in spans.items()
                ]
            except (ValueError, TypeError, KeyError, AttributeError) as error:
                raise ValueError(f"{path}: not a readable safetensors file (its header is not valid): "
                                 f"{first_line(error)}") from error  # fmt: skip
    return [("data", osp.getsize(path), osp.getsize(path), False)]  # legacy pickle: no directory, nothing compressed


def check_declared_sizes(path: str | os.PathLike) -> str:
    """The file's format (:func:`_file_kind`), once what it declares it holds is within
    :data:`esc_arch.limits.CHECKPOINT_LIMITS`: the number of members or tensors, their total
    size once read, and the compression ratio of a large compressed member (``torch.save``
    stores tensors uncompressed; a member inflating to many times its stored size is a
    compression bomb). Read from the zip directory or the safetensors header, before anything
    is inflated; ``ValueError`` naming the file otherwise."""
    path = os.fspath(path)
    kind = _file_kind(path)
    members = _declared_sizes(path, kind)
    limits = CHECKPOINT_LIMITS
    if len(members) > limits["entries"]:
        raise ValueError(f"{path}: holds {len(members):,} members, more than the limit of {limits['entries']:,}")
    total = sum(size for _, size, _, _ in members)
    if total > limits["bytes"]:
        raise ValueError(f"{path}: declares {_size_text(total)} of data once read, more than the limit of "
                         f"{_size_text(limits['bytes'])}; refused before reading it")  # fmt: skip
    for name, size, stored, compressed in members:
        if compressed and size > _SMALL_MEMBER and size > limits["ratio"] * max(stored, 1):
            raise ValueError(
                f"{path}: member {name!r} inflates {stored:,} stored bytes to {size:,} ({size // max(stored, 1):,}x); "
                "torch.save stores tensors uncompressed, so this file was crafted (a compression bomb) and was "
                "refused before inflating it"
            )
    return kind


def _unwrap(checkpoint, path: str, param_key: str | None = None) -> dict[str, Tensor]:
    liif = checkpoint.get("model") if isinstance(checkpoint, dict) else None
    if isinstance(liif, dict) and isinstance(liif.get("sd"), dict):  # LIIF/LTE code base: {'model': {name, args, sd}}
        logger.info(f"{path}: a LIIF-style file (model {liif.get('name')!r}); loading its 'sd'")
        checkpoint = liif["sd"]
    if isinstance(checkpoint, dict):
        # BasicSR's order for an asked key (it, else params), then the other entry of a BasicSR
        # file: a release holds params_ema only, and BasicSR's default param_key_g is params.
        keys = (param_key, "params", "params_ema") if param_key else ("params_ema", "params", "state_dict", "model")
        for key in keys:
            if isinstance(checkpoint.get(key), dict):
                if param_key and key != param_key:
                    logger.warning(f"{path}: no {param_key!r} entry; loading {key!r}")
                checkpoint = checkpoint[key]
                break
    if (
        not isinstance(checkpoint, dict)
        or not checkpoint
        or not all(isinstance(v, Tensor) for v in checkpoint.values())
    ):
        raise ValueError(f"{path}: no state dict found (expected params_ema / params / a bare state dict)")
    for key, tensor in checkpoint.items():
        if not isinstance(key, str):
            raise ValueError(f"{path}: the state dict has the key {key!r} ({type(key).__name__}); tensors are named "
                             "by strings")  # fmt: skip
        if tensor.layout != torch.strided or tensor.is_quantized:
            kind = "quantized" if tensor.is_quantized else str(tensor.layout).removeprefix("torch.")
            raise ValueError(f"{path}: {key!r} is a {kind} tensor; ESC weights are dense (strided) tensors")
    return checkpoint


def _stored(tensor: Tensor) -> Tensor:
    """The numbers ``tensor`` reads: itself, or its storage when it is a view claiming more
    elements than are stored (a crafted file's zero strides), so checking costs no more than
    the file holds."""
    stored = tensor.untyped_storage().nbytes() // tensor.element_size()
    if tensor.numel() <= stored:
        return tensor
    return torch.empty(0, dtype=tensor.dtype).set_(tensor.untyped_storage())


def check_finite(state_dict: dict[str, Tensor], path: str) -> None:
    """``ValueError`` naming ``path`` and the first tensor holding NaN or Inf."""
    for key, tensor in state_dict.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(values := _stored(tensor)).all()):
            bad = int((~torch.isfinite(values)).sum())
            raise ValueError(
                f"{path}: {key!r} holds {bad:,} non-finite value(s) (NaN or Inf); these weights are broken "
                "(a diverged training?) and would give a blank or wrong image"
            )


def read_state_dict(
    path: str | os.PathLike, *, param_key: str | None = None, allow_pickle: bool = False
) -> dict[str, Tensor]:
    """The network state dict stored in ``path`` (see the module docstring for the formats).

    ``param_key`` picks the entry of a BasicSR file as BasicSR's ``load_network`` does (that
    key, else ``params``), else ``params_ema`` (a release file given without ``param_key_g``),
    else a bare state dict, saying which it loaded; by default ``params_ema`` is preferred.
    A tensor holding NaN or Inf is refused (:func:`check_finite`).
    """
    path = os.fspath(path)
    if osp.isdir(path):
        raise ValueError(f"checkpoint {path!r} is a folder, not a file")
    if not osp.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        state_dict = _read(path, param_key, allow_pickle)
    except OSError as error:  # no read permission, an I/O error: one line, as every other refusal
        raise ValueError(f"{path}: cannot be read: {error.strerror or first_line(error)}") from error
    check_finite(state_dict, path)
    return state_dict


def _read(path: str, param_key: str | None, allow_pickle: bool) -> dict[str, Tensor]:
    if check_declared_sizes(path) == "safetensors":
        from safetensors.torch import load_file

        try:
            tensors = load_file(path)
        except Exception as error:  # safetensors' own SafetensorError, or an OSError
            raise ValueError(
                f"{path}: not a readable safetensors file (truncated or corrupt): {first_line(error)}"
            ) from error
        return _unwrap(tensors, path, param_key)
    try:
        with open(path, "rb") as f, warnings.catch_warnings():  # a file object: torch.load ignores the extension
            # a sparse tensor is refused below, in one line: torch's notice about checking it is noise
            warnings.filterwarnings("ignore", message="Validating sparse tensor invariants")
            checkpoint = torch.load(f, map_location="cpu", weights_only=not allow_pickle)
    except Exception as error:
        if not allow_pickle and "Weights only load failed" in str(error):
            raise ValueError(
                f"{path}: the file holds pickled Python objects besides tensors and was refused "
                "(torch.load weights_only=True); if you trust its source, pass allow_pickle=True "
                "(esc upscale --allow-pickle)"
            ) from error
        raise ValueError(f"{path}: not a readable torch file (truncated or corrupt): {first_line(error)}") from error
    if isinstance(checkpoint, dict) and "optimizers" in checkpoint and "iter" in checkpoint:
        models = osp.join(osp.dirname(osp.dirname(osp.abspath(path))), "models")
        weights = osp.join(models, f"net_g_{checkpoint['iter']}.pth")
        if not osp.isfile(weights):
            raise ValueError(f"{path} is a BasicSR training state (no weights); {weights} is missing")
        return _read(weights, param_key, allow_pickle)
    return _unwrap(checkpoint, path, param_key)
