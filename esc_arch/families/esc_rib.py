"""ESC-RIB (the authors' ESCRIB, dslisleedh/SST): class :class:`esc_arch.ESCRIB` (configuration
:class:`esc_arch.ESCRIBConfig`, both in ``archs/esc_rib_arch.py``), 64x64 windows with the
implicit bias RIB, an optional attention gate and a choice of upsampler. Its files do not hold
the window: it is a choice (``window_size``), the released 64 by default."""

from __future__ import annotations

import logging
import math
import re

from torch import Tensor

from ..archs.esc_rib_arch import ESCRIB, RIB_RELEASED_WINDOW, ESCRIBConfig
from ..limits import NETWORK_LIMITS
from .esc import read_blocks
from .family import Family, Preset, Weights, has_all, tensor

__all__ = ["FAMILY", "RIB_LIMITS"]

logger = logging.getLogger("basicsr.esc")

#: The authors' repository of ESC-RIB.
SOURCE = "https://github.com/dslisleedh/SST"

#: The limits of ESC-RIB's own keywords (read from ``blocks.0.attn``), besides NETWORK_LIMITS.
RIB_LIMITS = {"rank": NETWORK_LIMITS["flashbias_rank"], "rib_hidden_dim": NETWORK_LIMITS["dim"], "rib_n_freqs": 32}


def _upsampler_layout(state_dict: dict[str, Tensor]) -> tuple[dict, str]:
    """The upsampler type, scale and intermediate_dim from the ``upsampler.*`` keys, and the key
    read. ``nn+conv`` at x2 and x3 have the same tensors: x2 is assumed (logged)."""
    if "upsampler.f.0.weight" in state_dict:
        mid = tensor(state_dict, "upsampler.f.0.weight", 4).shape[0]
        convs = sorted(int(m.group(1)) for k in state_dict if (m := re.fullmatch(r"upsampler\.f\.(\d+)\.weight", k)))
        stages = (convs[-1] - 2) // 3
        if convs != [0, *range(3, 3 * stages + 1, 3), 3 * stages + 2]:
            raise ValueError(f"'upsampler.f': convolutions {convs} are not an nn+conv upsampler's (0, 3, 6, ..., 3s+2)")
        if stages == 1:
            logger.warning("ESC-RIB nn+conv upsampler with one stage: x2 assumed (an x3 one has the same tensors)")
        layout = {"upsampler_type": "nn+conv", "upscaling_factor": 2**stages, "intermediate_dim": mid}
        return layout, "upsampler.f.0.weight"
    up_conv = tensor(state_dict, "upsampler.up_conv.weight", 4)
    if "upsampler.feature_conv.weight" in state_dict:
        mid = tensor(state_dict, "upsampler.feature_conv.weight", 4).shape[0]
        scale = math.isqrt(up_conv.shape[0] // mid)
        if scale * scale * mid != up_conv.shape[0]:
            raise ValueError(f"'upsampler.up_conv.weight' has {up_conv.shape[0]} channels; expected {mid} * scale^2")
        layout = {"upsampler_type": "pixelshuffle", "upscaling_factor": scale, "intermediate_dim": mid}
        return layout, "upsampler.up_conv.weight"
    scale = math.isqrt(up_conv.shape[0] // 3)
    if 3 * scale * scale != up_conv.shape[0]:
        raise ValueError(f"'upsampler.up_conv.weight' has {up_conv.shape[0]} channels; expected 3 * scale^2")
    return {"upsampler_type": "pixelshuffle_direct", "upscaling_factor": scale}, "upsampler.up_conv.weight"


def _read(state_dict: dict[str, Tensor], attn_type: str, window_size: int | None) -> tuple[dict, dict]:
    """Every keyword from the tensors but ``window_size`` (given, else the released 64, logged)."""
    keywords, sources = read_blocks(state_dict, "plk_filter", "proj.weight")
    heads, hidden, rank = tensor(state_dict, "blocks.0.attn.to_q", 3).shape
    inputs = tensor(state_dict, "blocks.0.attn.to_hidden", 2).shape[0]
    gate = state_dict.get("blocks.0.attn.gate.0.weight")
    upsampler, upsampler_key = _upsampler_layout(state_dict)
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


def _pixel_shuffle_head(config: ESCRIBConfig) -> tuple[str, int] | None:
    """``upsampler.up_conv``: RGB sub-pixels (``pixelshuffle_direct``) or ``intermediate_dim``
    channels (``pixelshuffle``), as the authors' own loader transfers them; nn+conv has none."""
    channels = {"pixelshuffle_direct": 3, "pixelshuffle": config.intermediate_dim}.get(config.upsampler_type)
    return None if channels is None else ("upsampler.up_conv", channels)


FAMILY = Family(
    ESCRIBConfig,
    ESCRIB,
    "blocks.0.attn.to_hidden",
    has_all("blocks.0.attn.to_q", "plk_filter", "proj.weight"),
    _read,
    what="an ESC-RIB",
    limits=RIB_LIMITS,
    pixel_shuffle_head=_pixel_shuffle_head,
    window_in_file=False,
    default_window=RIB_RELEASED_WINDOW,
    presets={
        "ESC-RIB": Preset(
            ESCRIBConfig(
                dim=64,
                pdim=16,
                kernel_size=13,
                n_blocks=5,
                conv_blocks=5,
                window_size=RIB_RELEASED_WINDOW,
                num_heads=4,
                exp_ratio=1.25,
                rank=16,
                rib_hidden_dim=32,
                rib_n_freqs=10,
                gate_type="DWC",
            ),
            {2: 1_007_796, 3: 1_016_451, 4: 1_028_568},
            tuple(Weights(f"ESCRIB_DFLIP_X{s}.pth", s, SOURCE, note="trained on DFLIP") for s in (2, 3, 4)),
        ),
    },
)
