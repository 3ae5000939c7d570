"""Load any ESC checkpoint without an option file: :func:`load_model`.

Accepted files: BasicSR model-zoo files (``params_ema`` preferred, else ``params``), the
LIIF/LTE code base's files (``{'model': {'name', 'args', 'sd'}}``, the authors' arbitrary-scale
ESC), BasicSR training checkpoints (``models/net_g_<iter>.pth``; a ``training_states/<iter>.state`` file
is followed to its ``models/net_g_<iter>.pth``), bare state dicts (``module.`` prefixes
removed) and ``.safetensors`` files. The architecture, scale and every hyper-parameter are
inferred from the tensors (:func:`infer_config`: the family from the table :data:`FAMILIES`, one
row per family with the keys that identify it and the function that reads its
hyper-parameters), and the variant is named when the configuration is a published one.
Loading goes through :func:`esc_arch.convert_state_dict` (each conversion logged), then
``load_state_dict(strict=True)``.

Files are read with ``torch.load(weights_only=True)``; a file that needs pickled code is
refused unless ``allow_pickle=True`` is passed (only for files you trust). The format is
read from the file's first bytes, not its name: a file that is neither a torch zip/pickle
file nor safetensors is "not a checkpoint".

Nothing is built before the tensors are checked: the configuration read from them must be
within :data:`LIMITS`, the blocks numbered 0, 1, 2, ..., and every tensor present with its
shape (checked against the network built on the meta device, which allocates nothing).
Every failure is one ``ValueError`` line naming the file and the key; a tensor holding NaN or
Inf (the weights of a diverged training) is refused the same way.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from os import path as osp
from typing import Any

import torch
from torch import Tensor, nn

from .archs import build_network
from .cli_util import first_line
from .config import (
    RIB_RELEASED_WINDOW,
    UPSAMPLERS,
    ESCConfig,
    ESCFPConfig,
    ESCLTEConfig,
    ESCRealConfig,
    ESCRealMConfig,
    ESCRIBConfig,
)
from .convert import convert_state_dict
from .limits import CHECKPOINT_LIMITS, NETWORK_LIMITS

logger = logging.getLogger("basicsr.esc")

__all__ = [
    "FAMILIES",
    "LIMITS",
    "Family",
    "check_declared_sizes",
    "check_finite",
    "check_tensors",
    "detect_family",
    "infer_config",
    "load_model",
    "load_weights",
    "network_from_state_dict",
    "prepare_state_dict",
    "read_state_dict",
]

#: The largest value of each hyper-parameter read from a checkpoint (:data:`esc_arch.limits.NETWORK_LIMITS`).
LIMITS = NETWORK_LIMITS


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


# --------------------------------------------------------------------------- the families


def _tensor(state_dict: dict[str, Tensor], key: str, ndim: int) -> Tensor:
    """``state_dict[key]``, which must have ``ndim`` dimensions."""
    if key not in state_dict:
        raise KeyError(key)
    tensor = state_dict[key]
    if tensor.ndim != ndim:
        raise ValueError(f"{key!r} has shape {tuple(tensor.shape)}; expected {ndim} dimensions")
    return tensor


def _attention_layout(state_dict: dict[str, Tensor]) -> tuple[int, int, int | None, str]:
    """(window, heads, FlashBias rank or None, the key read) of block 0's attention."""
    factor_key, table_key = "blocks.0.attn.flashbias_q", "blocks.0.attn.relative_position_bias"
    expanded_key = "blocks.0.attn.rpe_bias"  # the authors' to_mobile() layout (1, heads, N, N)
    if expanded_key in state_dict and table_key not in state_dict:
        _, heads, tokens, _ = _tensor(state_dict, expanded_key, 4).shape
        window = math.isqrt(tokens)
        if window * window != tokens:
            raise ValueError(f"{expanded_key!r} has {tokens} tokens per window; expected a square number")
        return window, heads, None, expanded_key
    if factor_key in state_dict:
        heads, tokens, rank = _tensor(state_dict, factor_key, 3).shape
        window = math.isqrt(tokens)
        if window * window != tokens:
            raise ValueError(f"{factor_key!r} has {tokens} tokens per window; expected a square number")
        return window, heads, rank, factor_key
    bias = _tensor(state_dict, table_key, 2)
    window = (math.isqrt(bias.shape[1]) + 1) // 2
    if (2 * window - 1) ** 2 != bias.shape[1]:
        raise ValueError(
            f"{table_key!r} has shape {tuple(bias.shape)}; the second size must be (2w-1)^2 for a window w"
        )
    return window, bias.shape[0], None, table_key


def _upsampler_layout(state_dict: dict[str, Tensor], proj: Tensor) -> dict:
    """ESCRealM's scale, upsampler, mid_dim and unshuffle_mod, from ``to_img.MetaUpsample``
    (version, upsampler index, scale, in_dim, out_dim, mid_dim, groups) and the stem.

    The scale is the network's true output factor: an unshuffled input is upsampled by 4, and
    an upsampler recorded at x1 (whatever its index) or ``conv`` is one convolution that does
    not upsample."""
    record = _tensor(state_dict, "to_img.MetaUpsample", 1)
    if record.is_floating_point() or record.is_complex():  # integers stored as floats read as such
        if not bool((record == record.round()).all()):
            raise ValueError(f"'to_img.MetaUpsample' {record.tolist()} holds fractions; an upsampler record holds "
                             "integers")  # fmt: skip
        record = record.real.long() if record.is_complex() else record.long()
    meta = record.tolist()
    if len(meta) != 7:
        raise ValueError(f"'to_img.MetaUpsample' {meta} is not an upsampler record of 7 values")
    if not 0 <= meta[1] < len(UPSAMPLERS):
        raise ValueError(
            f"'to_img.MetaUpsample': upsampler {meta[1]} is none of the known ones ({', '.join(UPSAMPLERS)}); "
            "this layout cannot be loaded"
        )
    unshuffle = math.isqrt(proj.shape[1] // 3)  # 3 * f^2 input channels after PixelUnshuffle(f)
    if meta[1] == 0 or meta[2] == 1:  # one convolution: no upsampling
        if unshuffle > 1:
            raise ValueError(
                f"'to_img.MetaUpsample': the upsampler ({UPSAMPLERS[meta[1]]}, x{meta[2]}) is one convolution after "
                f"PixelUnshuffle({unshuffle}): the network outputs 1/{unshuffle} of its input size, not an upscale"
            )
        return {"upscaling_factor": 1, "upsampler": "conv", "mid_dim": meta[5], "unshuffle_mod": False}
    scale = 4 // unshuffle if unshuffle > 1 else meta[2]
    return {
        "upscaling_factor": scale,
        "upsampler": UPSAMPLERS[meta[1]],
        "mid_dim": meta[5],
        "unshuffle_mod": unshuffle > 1 or scale >= 3,
    }


def _count(state_dict: dict, prefix: str, what: str) -> tuple[int, str]:
    """How many ``{prefix}{i}.`` groups there are, numbered 0, 1, 2, ... (else ``ValueError``
    naming the key out of sequence), and the last one's first key."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found: dict[int, str] = {}
    for key in state_dict:
        if m := pattern.match(key):
            found.setdefault(int(m.group(1)), key)
    count = len(found)
    for index in sorted(found):
        if index >= count:
            gap = min(set(range(count)) - found.keys())
            raise ValueError(
                f"{found[index]!r}: {what} {index} but no {what} {gap} ({what}s are numbered 0, 1, 2, ...)"
            )
    return count, found.get(count - 1, prefix)


def _rib_upsampler_layout(state_dict: dict[str, Tensor]) -> tuple[dict, str]:
    """ESC-RIB's upsampler type, scale and intermediate_dim from the ``upsampler.*`` keys, and the
    key read. ``nn+conv`` at x2 and x3 have the same tensors: x2 is assumed (logged)."""
    if "upsampler.f.0.weight" in state_dict:
        mid = _tensor(state_dict, "upsampler.f.0.weight", 4).shape[0]
        convs = sorted(int(m.group(1)) for k in state_dict if (m := re.fullmatch(r"upsampler\.f\.(\d+)\.weight", k)))
        stages = (convs[-1] - 2) // 3
        if convs != [0, *range(3, 3 * stages + 1, 3), 3 * stages + 2]:
            raise ValueError(f"'upsampler.f': convolutions {convs} are not an nn+conv upsampler's (0, 3, 6, ..., 3s+2)")
        if stages == 1:
            logger.warning("ESC-RIB nn+conv upsampler with one stage: x2 assumed (an x3 one has the same tensors)")
        layout = {"upsampler_type": "nn+conv", "upscaling_factor": 2**stages, "intermediate_dim": mid}
        return layout, "upsampler.f.0.weight"
    up_conv = _tensor(state_dict, "upsampler.up_conv.weight", 4)
    if "upsampler.feature_conv.weight" in state_dict:
        mid = _tensor(state_dict, "upsampler.feature_conv.weight", 4).shape[0]
        scale = math.isqrt(up_conv.shape[0] // mid)
        if scale * scale * mid != up_conv.shape[0]:
            raise ValueError(f"'upsampler.up_conv.weight' has {up_conv.shape[0]} channels; expected {mid} * scale^2")
        layout = {"upsampler_type": "pixelshuffle", "upscaling_factor": scale, "intermediate_dim": mid}
        return layout, "upsampler.up_conv.weight"
    scale = math.isqrt(up_conv.shape[0] // 3)
    if 3 * scale * scale != up_conv.shape[0]:
        raise ValueError(f"'upsampler.up_conv.weight' has {up_conv.shape[0]} channels; expected 3 * scale^2")
    return {"upsampler_type": "pixelshuffle_direct", "upscaling_factor": scale}, "upsampler.up_conv.weight"


class Keys:
    """A condition on a state dict's key names, as spandrel's ``KeyCondition``: all of, or any
    of, keys and nested conditions (:func:`has_all`, :func:`has_any`)."""

    def __init__(self, kind: str, keys: tuple[str | Keys, ...]) -> None:
        self.kind, self.keys = kind, keys

    def __call__(self, state_dict: Mapping[str, object]) -> bool:
        held = (key(state_dict) if isinstance(key, Keys) else key in state_dict for key in self.keys)
        return all(held) if self.kind == "all" else any(held)

    def __repr__(self) -> str:
        return f"has_{self.kind}({', '.join(map(repr, self.keys))})"


def has_all(*keys: str | Keys) -> Keys:
    return Keys("all", keys)


def has_any(*keys: str | Keys) -> Keys:
    return Keys("any", keys)


#: What every ESC body holds besides its family's keys: the stem and block 0's attention (the
#: relative-position table, FlashBias factors, or the authors' to_mobile() expanded bias).
ESC_BODY = has_all(
    has_any("proj.weight", "proj.1.weight"),
    has_any("blocks.0.attn.relative_position_bias", "blocks.0.attn.flashbias_q", "blocks.0.attn.rpe_bias"),
)

#: A reader: ``(state_dict, attn_type, window_size)`` -> (the family's keywords, and for each
#: keyword checked against a limit, the key it was read from). A missing key is a ``KeyError``.
Reader = Callable[[dict[str, Tensor], str, int | None], tuple[dict[str, Any], dict[str, str]]]


def _read_blocks(state_dict: dict[str, Tensor], lk_key: str, proj_key: str) -> tuple[dict, dict]:
    """What the blocks of every family hold: dim (the stem), pdim and kernel_size (the shared
    kernel ``lk_key``), n_blocks, conv_blocks, exp_ratio and use_ln."""
    ffn_key = "blocks.0.convffns.0.proj.weight"
    lk, proj = _tensor(state_dict, lk_key, 4), _tensor(state_dict, proj_key, 4)
    dim = proj.shape[0]
    n_blocks, blocks_key = _count(state_dict, "blocks.", "block")
    conv_blocks, conv_key = _count(state_dict, "blocks.0.pconvs.", "conv block")
    keywords = {
        "dim": dim,
        "pdim": lk.shape[0],
        "kernel_size": lk.shape[-1],
        "n_blocks": n_blocks,
        "conv_blocks": conv_blocks,
        "exp_ratio": _tensor(state_dict, ffn_key, 4).shape[0] / dim if dim else 0,
        "use_ln": "blocks.0.lns.0.weight" in state_dict,
    }
    sources = dict(dim=proj_key, pdim=lk_key, kernel_size=lk_key, n_blocks=blocks_key, conv_blocks=conv_key)
    return keywords, {**sources, "exp_ratio": ffn_key}


def _read_body(state_dict: dict[str, Tensor], attn_type: str, lk_key: str = "plk_filter") -> tuple[dict, dict]:
    """An ESC body (ESC, ESC-FP, ESC-Real, ESCRealM, ESC-LTE's encoder): the blocks and the
    window, heads and FlashBias rank of their attention."""
    proj_key = "proj.1.weight" if "proj.1.weight" in state_dict else "proj.weight"
    keywords, sources = _read_blocks(state_dict, lk_key, proj_key)
    window, heads, rank, bias_key = _attention_layout(state_dict)
    keywords.update(window_size=window, num_heads=heads, flashbias_rank=rank, attn_type=attn_type)
    sources.update(window_size=bias_key, num_heads=bias_key, flashbias_rank=bias_key)
    return keywords, sources


def _read_to_img(state_dict: dict[str, Tensor], keywords: dict, sources: dict) -> tuple[dict, dict]:
    """``keywords`` and ``sources`` with the scale of a pixel-shuffle ``to_img`` (3 * s^2 channels)."""
    keywords["upscaling_factor"] = math.isqrt(_tensor(state_dict, "to_img.weight", 4).shape[0] // 3)
    sources["upscaling_factor"] = "to_img.weight"
    return keywords, sources


def _read_esc(state_dict: dict[str, Tensor], attn_type: str, window_size: int | None) -> tuple[dict, dict]:
    return _read_to_img(state_dict, *_read_body(state_dict, attn_type))


def _read_esc_fp(state_dict: dict[str, Tensor], attn_type: str, window_size: int | None) -> tuple[dict, dict]:
    keywords, sources = _read_to_img(state_dict, *_read_body(state_dict, attn_type, "lk_spatial"))
    del keywords["use_ln"]  # fixed by the family
    return keywords, sources


def _read_esc_real(state_dict: dict[str, Tensor], attn_type: str, window_size: int | None) -> tuple[dict, dict]:
    """ESC-Real: its nearest tail (to_img.1,4,6,8), neosr's (two convolutions per x2 stage), or
    DySample (2 * 4 groups * s^2 offsets)."""
    keywords, sources = _read_body(state_dict, attn_type)
    del keywords["use_ln"]  # fixed by the family
    if "to_img.init_pos" in state_dict:
        offsets = _tensor(state_dict, "to_img.offset.weight", 4).shape[0]
        keywords.update(use_dysample=True, upscaling_factor=math.isqrt(offsets // 8))
        sources["upscaling_factor"] = "to_img.offset.weight"
        return keywords, sources
    tail = sorted(int(k.split(".")[1]) for k in state_dict if k.startswith("to_img.") and k.endswith(".weight"))
    stages = tail[-1] // 5 if tail else 0
    neosr = [i for t in range(stages) for i in (5 * t + 1, 5 * t + 3)] + [5 * stages]
    if tail == neosr:  # neosr: nearest, conv, LeakyReLU, conv, LeakyReLU per x2 stage; conv to RGB
        keywords.update(neosr_tail=True, upscaling_factor=2**stages)
        sources["upscaling_factor"] = f"to_img.{tail[-1]}.weight"
    elif tail != [1, 4, 6, 8]:  # ESC-Real's: conv after each of two x2 upsamplings, two more
        raise ValueError(
            f"the nearest-upsampling tail (convolutions to_img.{','.join(map(str, tail))}) is neither "
            "ESC-Real's (to_img.1,4,6,8) nor neosr's (to_img.1,3,6,8,...,5s); this layout cannot be loaded"
        )
    return keywords, sources


def _read_esc_realm(state_dict: dict[str, Tensor], attn_type: str, window_size: int | None) -> tuple[dict, dict]:
    """ESCRealM: the upsampler from its ``to_img.MetaUpsample`` record."""
    keywords, sources = _read_body(state_dict, attn_type)
    del keywords["use_ln"]  # fixed by the family
    keywords.update(_upsampler_layout(state_dict, state_dict[sources["dim"]]))
    sources.update(upscaling_factor="to_img.MetaUpsample", mid_dim="to_img.MetaUpsample")
    return keywords, sources


def _read_encoder(state_dict: dict[str, Tensor], attn_type: str, window_size: int | None) -> tuple[dict, dict]:
    """ESC-LTE's encoder: an ESC body without ``to_img`` (its upscaling_factor is unused)."""
    return _read_body(state_dict, attn_type)


def _read_esc_lte(state_dict: dict[str, Tensor], attn_type: str, window_size: int | None) -> tuple[dict, dict]:
    """ESC-LTE: the encoder's configuration from ``encoder.*``, the head's sizes from ``coef``
    and ``imnet.layers.{0,2,...}``."""
    encoder = {k.removeprefix("encoder."): v for k, v in state_dict.items() if k.startswith("encoder.")}
    try:
        encoder_config = _configure(ENCODER, encoder, attn_type, None)
    except ValueError as error:
        raise ValueError(f"the encoder (encoder.*): {error}") from error
    layers = sorted(int(m.group(1)) for k in state_dict if (m := re.fullmatch(r"imnet\.layers\.(\d+)\.weight", k)))
    if layers != list(range(0, 2 * len(layers), 2)) or not layers:  # Linear, ReLU, Linear, ..., Linear
        raise ValueError(f"imnet.layers.*.weight are numbered {layers}; expected 0, 2, 4, ... (Linear, ReLU, ...)")
    hidden = _tensor(state_dict, "coef.weight", 4).shape[0]
    widths = [_tensor(state_dict, f"imnet.layers.{i}.weight", 2).shape[0] for i in layers]
    for key, value in (("coef.weight", hidden), *((f"imnet.layers.{2 * i}.weight", w) for i, w in enumerate(widths))):
        if value > LIMITS["dim"] * 4:
            raise ValueError(f"{key!r}: {value} channels is out of range (at most {LIMITS['dim'] * 4})")
    return {"encoder": encoder_config, "hidden_dim": hidden, "mlp_hidden": tuple(widths[:-1])}, {}


#: The limits of ESC-RIB's own keywords (read from ``blocks.0.attn``), besides :data:`LIMITS`.
RIB_LIMITS = {"rank": LIMITS["flashbias_rank"], "rib_hidden_dim": LIMITS["dim"], "rib_n_freqs": 32}


def _read_esc_rib(state_dict: dict[str, Tensor], attn_type: str, window_size: int | None) -> tuple[dict, dict]:
    """ESC-RIB: every keyword from the tensors but ``window_size`` (given, else the released 64,
    logged)."""
    keywords, sources = _read_blocks(state_dict, "plk_filter", "proj.weight")
    heads, hidden, rank = _tensor(state_dict, "blocks.0.attn.to_q", 3).shape
    inputs = _tensor(state_dict, "blocks.0.attn.to_hidden", 2).shape[0]
    gate = state_dict.get("blocks.0.attn.gate.0.weight")
    upsampler, upsampler_key = _rib_upsampler_layout(state_dict)
    if (inputs - 2) % 4:
        raise ValueError(f"'blocks.0.attn.to_hidden' has {inputs} rows; expected 2 + 4 * rib_n_freqs")
    if window_size is None:
        window_size = RIB_RELEASED_WINDOW
        logger.warning(
            f"ESC-RIB: the window is not stored in checkpoints; the released {window_size} assumed "
            "(a file trained with another window needs window_size / --window-size, or its output is wrong)"
        )
    keywords.update(
        window_size=window_size,
        num_heads=heads,
        attn_type=attn_type,
        rank=rank,
        rib_hidden_dim=hidden,
        rib_n_freqs=(inputs - 2) // 4,
        gate_type=None if gate is None else "DWC" if gate.shape[-1] == 3 else "Linear",  # 3x3 depthwise, or 1x1
        **upsampler,
    )
    sources.update(num_heads="blocks.0.attn.to_q", upscaling_factor=upsampler_key, window_size="window_size")
    sources.update(rank="blocks.0.attn", rib_hidden_dim="blocks.0.attn", rib_n_freqs="blocks.0.attn")
    return keywords, sources


@dataclass(frozen=True)
class Family:
    """One row of :data:`FAMILIES`: a network family, the keys that identify its state dicts and
    the function that reads its configuration from them."""

    config: type  #: its configuration class; ``config.family()`` names the network (NETWORKS)
    marker: str  #: the key that tells this family from the rows after it (none of them holds it)
    keys: Keys  #: the other keys its state dicts hold
    read: Reader
    what: str = "an ESC"  #: in "not an ESC state dict: 'KEY' is missing"
    #: limits of its own keywords besides :data:`LIMITS`
    limits: dict[str, int] = field(default_factory=dict)
    window_in_tensors: bool = True  #: False: the window is a choice (``window_size``), not read
    fixed_scale: bool = True  #: False: an arbitrary-scale network (spandrel does not take it)

    def __call__(self, state_dict: Mapping[str, object]) -> bool:
        """Whether ``state_dict`` holds every key of this family."""
        return self.marker in state_dict and self.keys(state_dict)

    def __repr__(self) -> str:
        return f"Family({self.config.family()}: has_all({self.marker!r}, {self.keys!r}))"


#: The families, in the order they are tried: the first row whose keys a state dict holds is
#: its family. The order matters where a family holds another's keys: ESC-RIB, ESCRealM and
#: ESC-Real hold ESC's ``plk_filter``, ESCRealM ESC-Real's ``skip.0.weight``; each row's marker
#: is held by none of the families after it. A state dict that holds a row's marker but not all
#: its keys is read as that row's family, so the error names the tensor that is missing.
FAMILIES: tuple[Family, ...] = (
    Family(ESCRIBConfig, "blocks.0.attn.to_hidden", has_all("blocks.0.attn.to_q", "plk_filter", "proj.weight"),
           _read_esc_rib, what="an ESC-RIB", limits=RIB_LIMITS, window_in_tensors=False),
    Family(ESCLTEConfig, "coef.weight", has_all("encoder.proj.weight"), _read_esc_lte, what="an ESC-LTE",
           fixed_scale=False),
    Family(ESCFPConfig, "lk_channel", has_all("lk_spatial", ESC_BODY), _read_esc_fp),
    Family(ESCRealMConfig, "to_img.MetaUpsample", has_all("plk_filter", ESC_BODY), _read_esc_realm),
    Family(ESCRealConfig, "skip.0.weight", has_all("plk_filter", ESC_BODY), _read_esc_real),
    Family(ESCConfig, "plk_filter", ESC_BODY, _read_esc),
)  # fmt: skip

#: ESC-LTE's encoder (``encoder.*``, read by ESC-LTE's row): an ESC body without ``to_img``.
ENCODER = Family(ESCConfig, "plk_filter", ESC_BODY, _read_encoder)


def detect_family(state_dict: Mapping[str, object], *, complete: bool = True) -> Family | None:
    """The row of :data:`FAMILIES` that ``state_dict`` belongs to: the first whose keys it holds;
    with ``complete=False``, else the first whose marker it holds; else None."""
    found = next((family for family in FAMILIES if family(state_dict)), None)
    if found is None and not complete:
        found = next((family for family in FAMILIES if family.marker in state_dict), None)
    return found


def _configure(family: Family, state_dict: dict[str, Tensor], attn_type: str, window_size: int | None):
    """``family``'s configuration read from ``state_dict``, its values checked against the limits
    before it is built."""
    try:
        keywords, sources = family.read(state_dict, attn_type, window_size)
    except KeyError as error:
        raise ValueError(f"not {family.what} state dict: {error.args[0]!r} is missing") from error
    for name, limit in {**LIMITS, **family.limits}.items():
        if (value := keywords.get(name)) is not None and value > limit:
            value = f"{value:g}" if isinstance(value, float) else value
            raise ValueError(f"{sources[name]!r}: {name} {value} is out of range (at most {limit})")
    try:
        return family.config(**keywords)
    except ValueError as error:
        raise ValueError(f"the configuration read from the tensors is not valid: {error}") from error


def infer_config(
    state_dict: dict[str, Tensor], *, attn_type: str = "auto", window_size: int | None = None
) -> ESCConfig | ESCLTEConfig:
    """The network's configuration, read off the tensors' names and shapes (its class is
    ``config.family()``; the family is found in :data:`FAMILIES`); ``module.`` prefixes are
    ignored. ``ValueError`` (naming the key) for tensors of the wrong rank, blocks not numbered
    0, 1, 2, ..., or values beyond :data:`LIMITS`; nothing is allocated.

    ``window_size``: ESC-RIB's window, which its tensors do not hold (None: the released 64,
    logged); for the other families it must be the window the tensors hold."""
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    integer = isinstance(window_size, int) and not isinstance(window_size, bool)
    if window_size is not None and not (integer and 0 < window_size <= LIMITS["window_size"]):
        raise ValueError(f"window_size must be an integer in [1, {LIMITS['window_size']}]; got {window_size!r}")
    family = detect_family(state_dict, complete=False)
    if family is None:
        raise ValueError("not an ESC state dict (no plk_filter / lk_channel)")
    config = _configure(family, state_dict, attn_type, window_size)
    held = getattr(config, "encoder", config).window_size
    if window_size is not None and family.window_in_tensors and held != window_size:
        raise ValueError(
            f"window_size {window_size} does not fit these tensors: their attention holds a {held}x{held} "
            "window (only ESC-RIB's window is free)"
        )
    return config


# --------------------------------------------------------------------------- loading


def check_tensors(state_dict: dict[str, Tensor], expected: dict[str, Tensor]) -> None:
    """``ValueError`` naming the first key missing, unexpected, or of the wrong shape."""
    missing = [k for k in expected if k not in state_dict]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ValueError(f"{missing[0]!r} is missing{more}")
    unexpected = [k for k in state_dict if k not in expected]
    if unexpected:
        more = f", and {len(unexpected) - 1} more" if len(unexpected) > 1 else ""
        raise ValueError(f"unexpected tensor {unexpected[0]!r} (not part of this ESC network{more})")
    for key, reference in expected.items():
        tensor = state_dict[key]
        if tuple(tensor.shape) != tuple(reference.shape):
            raise ValueError(f"{key!r} has shape {tuple(tensor.shape)}; expected {tuple(reference.shape)}")
        if reference.is_floating_point() and not tensor.is_floating_point():
            raise ValueError(f"{key!r} holds {tensor.dtype} values; expected floating point")


def prepare_state_dict(
    state_dict: Mapping[str, Tensor],
    net: nn.Module,
    *,
    source: str,
    strict: bool = True,
    scale_transfer: bool = True,
) -> dict[str, Tensor]:
    """``state_dict`` ready for ``net.load_state_dict``: every tensor finite
    (:func:`check_finite`), converted to ``net``'s layout (:func:`esc_arch.convert_state_dict`,
    each conversion logged), then checked against ``net``'s tensors (which may live on the meta
    device). ``strict``: every tensor present with its shape (:func:`check_tensors`); else, as
    BasicSR's non-strict loading, a tensor of another shape is left out (logged) and missing or
    unexpected names are left to ``load_state_dict(strict=False)``. Each failure is one
    ``ValueError`` line starting with ``source``."""
    check_finite(state_dict, source)
    try:
        converted = convert_state_dict(dict(state_dict), net, scale_transfer=scale_transfer)
        expected = net.state_dict()
        if strict:
            check_tensors(converted, expected)
            return converted
        for key in [k for k in converted if k in expected]:
            if tuple(converted[key].shape) != tuple(expected[key].shape):
                logger.warning(f"{source}: {key!r} has shape {tuple(converted[key].shape)}, the network's "
                               f"{tuple(expected[key].shape)}; left out (non-strict loading)")  # fmt: skip
                del converted[key]
        return converted
    except (ValueError, RuntimeError) as error:
        raise ValueError(f"{source}: {' '.join(str(error).split())}") from error


def load_weights(
    net: nn.Module,
    state_dict: Mapping[str, Tensor],
    *,
    source: str,
    strict: bool = True,
    scale_transfer: bool = True,
) -> None:
    """Load ``state_dict`` into the built network ``net`` by the load path every door shares
    (:func:`prepare_state_dict`, then ``load_state_dict``); one ``ValueError`` line starting
    with ``source`` for anything that does not fit."""
    converted = prepare_state_dict(state_dict, net, source=source, strict=strict, scale_transfer=scale_transfer)
    try:
        net.load_state_dict(converted, strict=strict)
    except RuntimeError as error:
        raise ValueError(f"{source}: {' '.join(str(error).split())}") from error


def network_from_state_dict(
    state_dict: Mapping[str, Tensor],
    *,
    source: str,
    attn_type: str = "auto",
    window_size: int | None = None,
) -> nn.Module:
    """The network ``state_dict`` holds, built and loaded: the load path every door shares
    (:func:`load_model` after reading a file, the spandrel architecture on the state dict it is
    handed). In order: every tensor finite (:func:`check_finite`), the configuration read from
    the tensors within the limits (:func:`infer_config`), the conversions (logged), every tensor
    present with its shape (checked against the network built on the meta device, which
    allocates nothing), then ``load_state_dict(strict=True)``. Each failure is one
    ``ValueError`` line starting with ``source`` (the file's path, or what the caller calls it).
    Returned in train mode on the CPU, as a freshly built network is."""
    check_finite(state_dict, source)
    try:
        config = infer_config(dict(state_dict), attn_type=attn_type, window_size=window_size)
    except ValueError as error:
        raise ValueError(f"{source}: {' '.join(str(error).split())}") from error
    try:  # the expected tensors' names and shapes, without allocating them
        with torch.device("meta"):
            reference = build_network(config)
    except (RuntimeError, NotImplementedError):  # a module that needs real values to initialise
        reference = None  # (the configuration is within LIMITS: building it is affordable)
    net = reference if reference is not None else build_network(config)
    converted = prepare_state_dict(state_dict, net, source=source)
    if reference is not None:
        net = build_network(config)
    try:
        net.load_state_dict(converted, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{source}: {' '.join(str(error).split())}") from error
    return net


def load_model(
    path: str | os.PathLike,
    *,
    attn_type: str = "auto",
    device: str | torch.device = "cpu",
    allow_pickle: bool = False,
    window_size: int | None = None,
) -> nn.Module:
    """Build the network stored in ``path`` and load it (:func:`network_from_state_dict`), in
    eval mode.

    The returned module has ``.config``, ``.variant`` (preset name or ``"custom"``) and
    ``.scale`` (``None`` for the arbitrary-scale :class:`esc_arch.ESCLTE`). ``window_size``
    builds ESC-RIB with another window than the released 64 (its checkpoints do not hold it);
    for the other families it must match the tensors.
    """
    state_dict = read_state_dict(path, allow_pickle=allow_pickle)
    net = network_from_state_dict(state_dict, source=os.fspath(path), attn_type=attn_type, window_size=window_size)
    return net.to(device).eval()
