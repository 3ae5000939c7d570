"""Load any ESC checkpoint without an option file: :func:`load_model`.

Accepted files: BasicSR model-zoo files (``params_ema`` preferred, else ``params``), the
LIIF/LTE code base's files (``{'model': {'name', 'args', 'sd'}}``, the authors' arbitrary-scale
ESC), BasicSR training checkpoints (``models/net_g_<iter>.pth``; a ``training_states/<iter>.state`` file
is followed to its ``models/net_g_<iter>.pth``), bare state dicts (``module.`` prefixes
removed) and ``.safetensors`` files. The architecture, scale and every hyper-parameter are
inferred from the tensors (:func:`infer_config`), and the variant is named when the
configuration is a published one. Loading goes through :func:`esc_arch.convert_state_dict`
(each conversion logged), then ``load_state_dict(strict=True)``.

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

import logging
import math
import os
import re
from os import path as osp

import torch
from torch import Tensor, nn

from .archs import NETWORKS
from .cli_util import first_line
from .config import UPSAMPLERS, ESCConfig, ESCFPConfig, ESCLTEConfig, ESCRealConfig, ESCRealMConfig, ESCRIBConfig
from .convert import convert_state_dict

logger = logging.getLogger("basicsr.esc")

__all__ = ["LIMITS", "build_network", "check_finite", "check_tensors", "infer_config", "load_model", "read_state_dict"]

#: The largest value of each hyper-parameter read from a checkpoint (every published network
#: is far inside them), checked before anything is built.
LIMITS: dict[str, int] = {
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


def _file_kind(path: str) -> str:
    """``torch`` or ``safetensors``, from the file's first bytes; ``ValueError`` for anything else."""
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise ValueError(f"{path}: not a checkpoint (empty file)")
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch.save: a zip, or (legacy) a pickle
        return "torch"
    if len(head) > 8 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= osp.getsize(path) - 8:
        return "safetensors"  # 8-byte header length, then the JSON header
    raise ValueError(f"{path}: not a checkpoint (neither a torch zip/pickle file nor safetensors)")


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
    state_dict = _read(path, param_key, allow_pickle)
    check_finite(state_dict, path)
    return state_dict


def _read(path: str, param_key: str | None, allow_pickle: bool) -> dict[str, Tensor]:
    if _file_kind(path) == "safetensors":
        from safetensors.torch import load_file

        try:
            tensors = load_file(path)
        except Exception as error:  # safetensors' own SafetensorError, or an OSError
            raise ValueError(
                f"{path}: not a readable safetensors file (truncated or corrupt): {first_line(error)}"
            ) from error
        return _unwrap(tensors, path, param_key)
    try:
        with open(path, "rb") as f:  # a file object: torch.load does not go by the name's extension
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
    meta = _tensor(state_dict, "to_img.MetaUpsample", 1).tolist()
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


def _infer_lte_config(state_dict: dict[str, Tensor], attn_type: str) -> ESCLTEConfig:
    """ESCLTE: the encoder's configuration from ``encoder.*`` (an ESC body without ``to_img``),
    the head's sizes from ``coef`` and ``imnet.layers.{0,2,...}``."""
    encoder = {k.removeprefix("encoder."): v for k, v in state_dict.items() if k.startswith("encoder.")}
    try:
        encoder_config = infer_config(encoder, attn_type=attn_type, _encoder=True)
    except ValueError as error:
        raise ValueError(f"the encoder (encoder.*): {error}") from error
    layers = sorted(int(m.group(1)) for k in state_dict if (m := re.fullmatch(r"imnet\.layers\.(\d+)\.weight", k)))
    if layers != list(range(0, 2 * len(layers), 2)) or not layers:  # Linear, ReLU, Linear, ..., Linear
        raise ValueError(f"imnet.layers.*.weight are numbered {layers}; expected 0, 2, 4, ... (Linear, ReLU, ...)")
    try:
        hidden = _tensor(state_dict, "coef.weight", 4).shape[0]
        widths = [_tensor(state_dict, f"imnet.layers.{i}.weight", 2).shape[0] for i in layers]
    except KeyError as error:
        raise ValueError(f"not an ESC-LTE state dict: {error.args[0]!r} is missing") from error
    for key, value in (("coef.weight", hidden), *((f"imnet.layers.{2 * i}.weight", w) for i, w in enumerate(widths))):
        if value > LIMITS["dim"] * 4:
            raise ValueError(f"{key!r}: {value} channels is out of range (at most {LIMITS['dim'] * 4})")
    try:
        return ESCLTEConfig(encoder=encoder_config, hidden_dim=hidden, mlp_hidden=tuple(widths[:-1]))
    except ValueError as error:
        raise ValueError(f"the configuration read from the tensors is not valid: {error}") from error


#: ESC-RIB's window when the caller gives none: the released one (it is not in the tensors).
RIB_RELEASED_WINDOW = 64


def _rib_upsampler_layout(state_dict: dict[str, Tensor], dim: int) -> tuple[dict, str]:
    """ESC-RIB's upsampler type, scale and intermediate_dim from the ``upsampler.*`` keys, and the
    key read. ``nn+conv`` at x2 and x3 have the same tensors: x2 is assumed (logged)."""
    if "upsampler.f.0.weight" in state_dict:
        mid = _tensor(state_dict, "upsampler.f.0.weight", 4).shape[0]
        convs = sorted(int(m.group(1)) for k in state_dict if (m := re.fullmatch(r"upsampler\.f\.(\d+)\.weight", k)))
        stages = (convs[-1] - 2) // 3
        if convs != [0, *range(3, 3 * stages + 1, 3), 3 * stages + 2]:
            raise ValueError(f"'upsampler.f': convolutions {convs} are not an nn+conv upsampler's (0, 3, 6, ..., 3s+2)")
        if stages == 1:
            logger.info("ESC-RIB nn+conv upsampler with one stage: x2 assumed (an x3 one has the same tensors)")
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


def _infer_rib_config(state_dict: dict[str, Tensor], attn_type: str, window_size: int | None) -> ESCRIBConfig:
    """ESCRIB: every keyword from the tensors but ``window_size`` (given, else the released 64, logged)."""
    try:
        proj, lk = _tensor(state_dict, "proj.weight", 4), _tensor(state_dict, "plk_filter", 4)
        heads, hidden, rank = _tensor(state_dict, "blocks.0.attn.to_q", 3).shape
        inputs = _tensor(state_dict, "blocks.0.attn.to_hidden", 2).shape[0]
        n_blocks, blocks_key = _count(state_dict, "blocks.", "block")
        conv_blocks, conv_key = _count(state_dict, "blocks.0.pconvs.", "conv block")
        dim = proj.shape[0]
        ffn_key = "blocks.0.convffns.0.proj.weight"
        gate = state_dict.get("blocks.0.attn.gate.0.weight")
        upsampler, upsampler_key = _rib_upsampler_layout(state_dict, dim)
        exp_ratio = _tensor(state_dict, ffn_key, 4).shape[0] / dim if dim else 0
    except KeyError as error:
        raise ValueError(f"not an ESC-RIB state dict: {error.args[0]!r} is missing") from error
    if (inputs - 2) % 4:
        raise ValueError(f"'blocks.0.attn.to_hidden' has {inputs} rows; expected 2 + 4 * rib_n_freqs")
    if window_size is None:
        window_size = RIB_RELEASED_WINDOW
        logger.info(f"ESC-RIB: the window is not stored in checkpoints; the released {window_size} assumed")
    keywords = {
        "dim": dim,
        "pdim": lk.shape[0],
        "kernel_size": lk.shape[-1],
        "n_blocks": n_blocks,
        "conv_blocks": conv_blocks,
        "window_size": window_size,
        "num_heads": heads,
        "exp_ratio": exp_ratio,
        "attn_type": attn_type,
        "use_ln": "blocks.0.lns.0.weight" in state_dict,
        "rank": rank,
        "rib_hidden_dim": hidden,
        "rib_n_freqs": (inputs - 2) // 4,
        "gate_type": None if gate is None else "DWC" if gate.shape[-1] == 3 else "Linear",  # 3x3 depthwise, or 1x1
        **upsampler,
    }
    sources = dict(dim="proj.weight", pdim="plk_filter", kernel_size="plk_filter", n_blocks=blocks_key)
    sources.update(conv_blocks=conv_key, num_heads="blocks.0.attn.to_q", exp_ratio=ffn_key)
    sources.update(upscaling_factor=upsampler_key, window_size="window_size")
    for name, limit in LIMITS.items():
        if keywords.get(name) is not None and keywords[name] > limit:
            value = keywords[name]
            value = f"{value:g}" if isinstance(value, float) else value
            raise ValueError(f"{sources[name]!r}: {name} {value} is out of range (at most {limit})")
    for name, limit in (("rank", LIMITS["flashbias_rank"]), ("rib_hidden_dim", LIMITS["dim"]), ("rib_n_freqs", 32)):
        if keywords[name] > limit:
            raise ValueError(f"'blocks.0.attn': {name} {keywords[name]} is out of range (at most {limit})")
    try:
        return ESCRIBConfig(**keywords)
    except ValueError as error:
        raise ValueError(f"the configuration read from the tensors is not valid: {error}") from error


def infer_config(
    state_dict: dict[str, Tensor],
    *,
    attn_type: str = "auto",
    window_size: int | None = None,
    _encoder: bool = False,
) -> ESCConfig | ESCLTEConfig:
    """The network's configuration, read off the tensors' names and shapes (its class is
    ``config.family()``); ``module.`` prefixes are ignored. ``ValueError`` (naming the key)
    for tensors of the wrong rank, blocks not numbered 0, 1, 2, ..., or values beyond
    :data:`LIMITS`; nothing is allocated.

    ``window_size``: ESC-RIB's window, which its tensors do not hold (None: the released 64,
    logged); for the other families it must be the window the tensors hold."""
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    integer = isinstance(window_size, int) and not isinstance(window_size, bool)
    if window_size is not None and not (integer and 0 < window_size <= LIMITS["window_size"]):
        raise ValueError(f"window_size must be an integer in [1, {LIMITS['window_size']}]; got {window_size!r}")
    if "blocks.0.attn.to_hidden" in state_dict:
        return _infer_rib_config(state_dict, attn_type, window_size)
    if window_size is not None:
        config = infer_config(state_dict, attn_type=attn_type, _encoder=_encoder)
        held = (config.encoder if isinstance(config, ESCLTEConfig) else config).window_size
        if held != window_size:
            raise ValueError(
                f"window_size {window_size} does not fit these tensors: their attention holds a {held}x{held} "
                "window (only ESC-RIB's window is free)"
            )
        return config
    if "coef.weight" in state_dict and "encoder.proj.weight" in state_dict:
        return _infer_lte_config(state_dict, attn_type)
    if "lk_channel" in state_dict:
        family, lk_key = ESCFPConfig, "lk_spatial"
    elif "to_img.MetaUpsample" in state_dict:
        family, lk_key = ESCRealMConfig, "plk_filter"
    elif "skip.0.weight" in state_dict:
        family, lk_key = ESCRealConfig, "plk_filter"
    elif "plk_filter" in state_dict:
        family, lk_key = ESCConfig, "plk_filter"
    else:
        raise ValueError("not an ESC state dict (no plk_filter / lk_channel)")
    ffn_key = "blocks.0.convffns.0.proj.weight"
    proj_key = "proj.1.weight" if "proj.1.weight" in state_dict else "proj.weight"
    try:
        lk = _tensor(state_dict, lk_key, 4)
        proj = _tensor(state_dict, proj_key, 4)
        dim = proj.shape[0]
        window, heads, rank, bias_key = _attention_layout(state_dict)
        n_blocks, blocks_key = _count(state_dict, "blocks.", "block")
        conv_blocks, conv_key = _count(state_dict, "blocks.0.pconvs.", "conv block")
        keywords = {
            "dim": dim,
            "pdim": lk.shape[0],
            "kernel_size": lk.shape[-1],
            "n_blocks": n_blocks,
            "conv_blocks": conv_blocks,
            "window_size": window,
            "num_heads": heads,
            "exp_ratio": _tensor(state_dict, ffn_key, 4).shape[0] / dim if dim else 0,
            "attn_type": attn_type,
            "flashbias_rank": rank,
        }
        sources = dict(dim=proj_key, pdim=lk_key, kernel_size=lk_key, n_blocks=blocks_key, conv_blocks=conv_key)
        sources.update(window_size=bias_key, num_heads=bias_key, exp_ratio=ffn_key, flashbias_rank=bias_key)
        if family in (ESCConfig, ESCFPConfig) and not _encoder:
            keywords["upscaling_factor"] = math.isqrt(_tensor(state_dict, "to_img.weight", 4).shape[0] // 3)
            sources["upscaling_factor"] = "to_img.weight"
        if family is ESCConfig:
            keywords["use_ln"] = "blocks.0.lns.0.weight" in state_dict
        if family is ESCRealConfig and "to_img.init_pos" not in state_dict:
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
        if family is ESCRealConfig and "to_img.init_pos" in state_dict:  # DySample: 2 * 4 groups * s^2 offsets
            offsets = _tensor(state_dict, "to_img.offset.weight", 4).shape[0]
            keywords.update(use_dysample=True, upscaling_factor=math.isqrt(offsets // 8))
            sources["upscaling_factor"] = "to_img.offset.weight"
        if family is ESCRealMConfig:
            keywords.update(_upsampler_layout(state_dict, proj))
            sources.update(upscaling_factor="to_img.MetaUpsample", mid_dim="to_img.MetaUpsample")
    except KeyError as error:
        raise ValueError(f"not an ESC state dict: {error.args[0]!r} is missing") from error
    for name, limit in LIMITS.items():
        if keywords.get(name) is not None and keywords[name] > limit:
            value = keywords[name]
            value = f"{value:g}" if isinstance(value, float) else value
            raise ValueError(f"{sources[name]!r}: {name} {value} is out of range (at most {limit})")
    try:
        return family(**keywords)
    except ValueError as error:
        raise ValueError(f"the configuration read from the tensors is not valid: {error}") from error


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


def build_network(config: ESCConfig) -> nn.Module:
    """A freshly initialised network of ``config``'s family."""
    return NETWORKS[config.family()](config)


def load_model(
    path: str | os.PathLike,
    *,
    attn_type: str = "auto",
    device: str | torch.device = "cpu",
    allow_pickle: bool = False,
    window_size: int | None = None,
) -> nn.Module:
    """Build the network stored in ``path`` and load it (``strict=True``), in eval mode.

    The returned module has ``.config``, ``.variant`` (preset name or ``"custom"``) and
    ``.scale`` (``None`` for the arbitrary-scale :class:`esc_arch.ESCLTE`). ``window_size``
    builds ESC-RIB with another window than the released 64 (its checkpoints do not hold it);
    for the other families it must match the tensors.
    """
    state_dict = read_state_dict(path, allow_pickle=allow_pickle)
    try:
        config = infer_config(state_dict, attn_type=attn_type, window_size=window_size)
        try:  # the expected tensors' names and shapes, without allocating them
            with torch.device("meta"):
                reference = build_network(config)
        except (RuntimeError, NotImplementedError):  # a module that needs real values to initialise
            reference = None  # (the configuration is within LIMITS: building it is affordable)
        net = reference if reference is not None else build_network(config)
        converted = convert_state_dict(state_dict, net)
        check_tensors(converted, net.state_dict())
        if reference is not None:
            net = build_network(config)
        net.load_state_dict(converted, strict=True)
    except (ValueError, RuntimeError) as error:
        raise ValueError(f"{os.fspath(path)}: {' '.join(str(error).split())}") from error
    return net.to(device).eval()
