"""ESC, ESC-light, ESC-XL and their FlashBias versions: class :class:`esc_arch.ESC`
(configuration :class:`esc_arch.ESCConfig`, both in ``archs/esc_arch.py``).

Also the reader of an ESC body (the stem, the blocks, block 0's attention), which every
family built on ESC's blocks shares (ESC-FP, ESC-Real, ESCRealM, ESC-LTE's encoder).
"""

from __future__ import annotations

import math

from torch import Tensor

from ..archs.esc_arch import ESC, ESCConfig
from .family import Family, Preset, Weights, count_groups, has_all, has_any, tensor

__all__ = ["ESC_BODY", "FAMILY", "RELEASE", "read_blocks", "read_body", "read_to_img"]

#: The authors' release page of ESC's weights (their README's "Pre-trained Models").
RELEASE = "https://github.com/dslisleedh/ESC/releases/tag/1.0.0"

#: What every ESC body holds besides its family's keys: the stem and block 0's attention (the
#: relative-position table, FlashBias factors, or the authors' to_mobile() expanded bias).
ESC_BODY = has_all(
    has_any("proj.weight", "proj.1.weight"),
    has_any("blocks.0.attn.relative_position_bias", "blocks.0.attn.flashbias_q", "blocks.0.attn.rpe_bias"),
)


def _attention_layout(state_dict: dict[str, Tensor]) -> tuple[int, int, int | None, str]:
    """(window, heads, FlashBias rank or None, the key read) of block 0's attention."""
    factor_key, table_key = "blocks.0.attn.flashbias_q", "blocks.0.attn.relative_position_bias"
    expanded_key = "blocks.0.attn.rpe_bias"  # the authors' to_mobile() layout (1, heads, N, N)
    if expanded_key in state_dict and table_key not in state_dict:
        _, heads, tokens, _ = tensor(state_dict, expanded_key, 4).shape
        window = math.isqrt(tokens)
        if window * window != tokens:
            raise ValueError(f"{expanded_key!r} has {tokens} tokens per window; expected a square number")
        return window, heads, None, expanded_key
    if factor_key in state_dict:
        heads, tokens, rank = tensor(state_dict, factor_key, 3).shape
        window = math.isqrt(tokens)
        if window * window != tokens:
            raise ValueError(f"{factor_key!r} has {tokens} tokens per window; expected a square number")
        return window, heads, rank, factor_key
    bias = tensor(state_dict, table_key, 2)
    window = (math.isqrt(bias.shape[1]) + 1) // 2
    if (2 * window - 1) ** 2 != bias.shape[1]:
        raise ValueError(
            f"{table_key!r} has shape {tuple(bias.shape)}; the second size must be (2w-1)^2 for a window w"
        )
    return window, bias.shape[0], None, table_key


def read_blocks(state_dict: dict[str, Tensor], lk_key: str, proj_key: str) -> tuple[dict, dict]:
    """What the blocks of every family hold: dim (the stem), pdim and kernel_size (the shared
    kernel ``lk_key``), n_blocks, conv_blocks, exp_ratio and use_ln."""
    ffn_key = "blocks.0.convffns.0.proj.weight"
    lk, proj = tensor(state_dict, lk_key, 4), tensor(state_dict, proj_key, 4)
    dim = proj.shape[0]
    n_blocks, blocks_key = count_groups(state_dict, "blocks.", "block")
    conv_blocks, conv_key = count_groups(state_dict, "blocks.0.pconvs.", "conv block")
    keywords = {
        "dim": dim,
        "pdim": lk.shape[0],
        "kernel_size": lk.shape[-1],
        "n_blocks": n_blocks,
        "conv_blocks": conv_blocks,
        "exp_ratio": tensor(state_dict, ffn_key, 4).shape[0] / dim if dim else 0,
        "use_ln": "blocks.0.lns.0.weight" in state_dict,
    }
    sources = dict(dim=proj_key, pdim=lk_key, kernel_size=lk_key, n_blocks=blocks_key, conv_blocks=conv_key)
    return keywords, {**sources, "exp_ratio": ffn_key}


def read_body(state_dict: dict[str, Tensor], attn_type: str, lk_key: str = "plk_filter") -> tuple[dict, dict]:
    """An ESC body (ESC, ESC-FP, ESC-Real, ESCRealM, ESC-LTE's encoder): the blocks and the
    window, heads and FlashBias rank of their attention."""
    proj_key = "proj.1.weight" if "proj.1.weight" in state_dict else "proj.weight"
    keywords, sources = read_blocks(state_dict, lk_key, proj_key)
    window, heads, rank, bias_key = _attention_layout(state_dict)
    keywords.update(window_size=window, num_heads=heads, flashbias_rank=rank, attn_type=attn_type)
    sources.update(window_size=bias_key, num_heads=bias_key, flashbias_rank=bias_key)
    return keywords, sources


def read_to_img(state_dict: dict[str, Tensor], keywords: dict, sources: dict) -> tuple[dict, dict]:
    """``keywords`` and ``sources`` with the scale of a pixel-shuffle ``to_img`` (3 * s^2 channels)."""
    keywords["upscaling_factor"] = math.isqrt(tensor(state_dict, "to_img.weight", 4).shape[0] // 3)
    sources["upscaling_factor"] = "to_img.weight"
    return keywords, sources


def _read(state_dict: dict[str, Tensor], attn_type: str, window_size: int | None) -> tuple[dict, dict]:
    return read_to_img(state_dict, *read_body(state_dict, attn_type))


def to_img_head(config: ESCConfig) -> tuple[str, int]:
    """The pixel-shuffle head a scale transfer resizes: ``to_img``, 3 channels per sub-pixel."""
    return "to_img", 3


_ESC = ESCConfig(dim=64, pdim=16, kernel_size=13, conv_blocks=5, window_size=32, num_heads=4, exp_ratio=1.25)


def _weights(stem: str, scales: tuple[int, ...], note: str = "") -> tuple[Weights, ...]:
    return tuple(Weights(f"{stem}{s}.pth", s, RELEASE, note=note) for s in scales)


FAMILY = Family(
    ESCConfig,
    ESC,
    "plk_filter",
    ESC_BODY,
    _read,
    pixel_shuffle_head=to_img_head,
    presets={
        "ESC": Preset(
            _ESC.replace(n_blocks=5),
            {2: 946_728, 3: 955_383, 4: 967_500},
            _weights("ESC_DIV2K_X", (2, 3, 4), "trained on DIV2K")
            + _weights("ESC_DFLIP_X", (2, 3, 4), "trained on DFLIP (DIV2K, Flickr2K, LSDIR, DiverSeg-IP)")
            + _weights("ESC_DIV2K_FB_R48_X", (2,), "FlashBias layout of rank 48 (variant ESC-FB48)"),
        ),
        "ESC-light": Preset(
            _ESC.replace(n_blocks=3), {2: 603_600, 3: 612_255, 4: 624_372}, _weights("ESC_light_X", (2, 3, 4))
        ),
        "ESC-XL": Preset(  # the authors' release page holds it; no option file of theirs names the files
            _ESC.replace(dim=192, pdim=48, n_blocks=8, window_size=48, num_heads=12, use_ln=True),
            {2: 12_455_916, 3: 12_481_851, 4: 12_518_160},
        ),
    },
)
