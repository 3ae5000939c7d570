"""Load any ESC checkpoint without an option file: :func:`load_model`.

Accepted files: BasicSR model-zoo files (``params_ema`` preferred, else ``params``), BasicSR
training checkpoints (``models/net_g_<iter>.pth``; a ``training_states/<iter>.state`` file
is followed to its ``models/net_g_<iter>.pth``), bare state dicts (``module.`` prefixes
removed) and ``.safetensors`` files. The architecture, scale and every hyper-parameter are
inferred from the tensors (:func:`infer_config`), and the variant is named when the
configuration is a published one. Loading goes through :func:`esc_arch.convert_state_dict`
(each conversion logged), then ``load_state_dict(strict=True)``.

Files are read with ``torch.load(weights_only=True)``; a file that needs pickled code is
refused unless ``allow_pickle=True`` is passed (only for files you trust).
"""

from __future__ import annotations

import math
import os
import re
from os import path as osp

import torch
from torch import Tensor, nn

from .archs import NETWORKS
from .config import ESCConfig, ESCFPConfig, ESCRealConfig
from .convert import convert_state_dict

__all__ = ["build_network", "infer_config", "load_model", "read_state_dict"]


def _unwrap(checkpoint, path: str, param_key: str | None = None) -> dict[str, Tensor]:
    if isinstance(checkpoint, dict):
        keys = (param_key, "params") if param_key else ("params_ema", "params", "state_dict", "model")
        for key in keys:
            if isinstance(checkpoint.get(key), dict):
                checkpoint = checkpoint[key]
                break
    if (
        not isinstance(checkpoint, dict)
        or not checkpoint
        or not all(isinstance(v, Tensor) for v in checkpoint.values())
    ):
        raise ValueError(f"{path}: no state dict found (expected params_ema / params / a bare state dict)")
    return checkpoint


def read_state_dict(
    path: str | os.PathLike, *, param_key: str | None = None, allow_pickle: bool = False
) -> dict[str, Tensor]:
    """The network state dict stored in ``path`` (see the module docstring for the formats).

    ``param_key`` picks the entry of a BasicSR file as BasicSR's ``load_network`` does (that
    key, else ``params``, else a bare state dict); by default ``params_ema`` is preferred.
    """
    path = os.fspath(path)
    if not osp.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return _unwrap(load_file(path), path, param_key)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as error:
        if not allow_pickle and "Weights only load failed" in str(error):
            raise ValueError(
                f"{path}: the file holds pickled Python objects besides tensors and was refused "
                "(torch.load weights_only=True); if you trust its source, pass allow_pickle=True "
                "(esc upscale --allow-pickle)"
            ) from error
        raise ValueError(f"{path}: not a readable torch or safetensors file: {error}") from error
    if isinstance(checkpoint, dict) and "optimizers" in checkpoint and "iter" in checkpoint:
        models = osp.join(osp.dirname(osp.dirname(osp.abspath(path))), "models")
        weights = osp.join(models, f"net_g_{checkpoint['iter']}.pth")
        if not osp.isfile(weights):
            raise ValueError(f"{path} is a BasicSR training state (no weights); {weights} is missing")
        return read_state_dict(weights, param_key=param_key, allow_pickle=allow_pickle)
    return _unwrap(checkpoint, path, param_key)


def _count(state_dict: dict, pattern: str) -> int:
    indices = {int(m.group(1)) for k in state_dict if (m := re.match(pattern, k))}
    return max(indices) + 1 if indices else 0


def infer_config(state_dict: dict[str, Tensor], *, attn_type: str = "auto") -> ESCConfig:
    """The network's configuration, read off the tensors' names and shapes (its class is
    ``config.family()``); ``module.`` prefixes are ignored."""
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    if "lk_channel" in state_dict:
        family, lk = ESCFPConfig, state_dict["lk_spatial"]
    elif "skip.0.weight" in state_dict:
        family, lk = ESCRealConfig, state_dict["plk_filter"]
    elif "plk_filter" in state_dict:
        family, lk = ESCConfig, state_dict["plk_filter"]
    else:
        raise ValueError("not an ESC state dict (no plk_filter / lk_channel)")
    try:
        dim = state_dict["proj.weight"].shape[0]
        bias = state_dict["blocks.0.attn.relative_position_bias"]
        keywords = {
            "dim": dim,
            "pdim": lk.shape[0],
            "kernel_size": lk.shape[-1],
            "n_blocks": _count(state_dict, r"blocks\.(\d+)\."),
            "conv_blocks": _count(state_dict, r"blocks\.0\.pconvs\.(\d+)\."),
            "window_size": (math.isqrt(bias.shape[1]) + 1) // 2,
            "num_heads": bias.shape[0],
            "exp_ratio": state_dict["blocks.0.convffns.0.proj.weight"].shape[0] / dim,
            "attn_type": attn_type,
        }
        if family is not ESCRealConfig:
            keywords["upscaling_factor"] = math.isqrt(state_dict["to_img.weight"].shape[0] // 3)
        if family is ESCConfig:
            keywords["use_ln"] = "blocks.0.lns.0.weight" in state_dict
    except KeyError as error:
        raise ValueError(f"not an ESC state dict: {error.args[0]!r} is missing") from error
    return family(**keywords)


def build_network(config: ESCConfig) -> nn.Module:
    """A freshly initialised network of ``config``'s family."""
    return NETWORKS[config.family()](config)


def load_model(
    path: str | os.PathLike,
    *,
    attn_type: str = "auto",
    device: str | torch.device = "cpu",
    allow_pickle: bool = False,
) -> nn.Module:
    """Build the network stored in ``path`` and load it (``strict=True``), in eval mode.

    The returned module has ``.config``, ``.variant`` (preset name or ``"custom"``) and
    ``.scale``.
    """
    state_dict = read_state_dict(path, allow_pickle=allow_pickle)
    try:
        net = build_network(infer_config(state_dict, attn_type=attn_type))
        net.load_state_dict(convert_state_dict(state_dict, net), strict=True)
    except (ValueError, RuntimeError) as error:
        raise ValueError(f"{os.fspath(path)}: {error}") from error
    return net.to(device).eval()
