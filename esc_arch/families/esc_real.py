"""ESC-Real and ESC-Real-XL: class :class:`esc_arch.ESCReal` (configuration
:class:`esc_arch.ESCRealConfig`, both in ``archs/esc_real_arch.py``), the real-world network with
its nearest-upsampling x4 tail, neosr's tail (two convolutions per x2 stage), or DySample."""

from __future__ import annotations

import math

from torch import Tensor

from ..archs.esc_real_arch import ESCReal, ESCRealConfig
from .esc import ESC_BODY, RELEASE, read_body
from .family import Family, Preset, Weights, has_all, tensor

__all__ = ["FAMILY"]


def _read(state_dict: dict[str, Tensor], attn_type: str, window_size: int | None) -> tuple[dict, dict]:
    """ESC-Real: its nearest tail (to_img.1,4,6,8), neosr's (two convolutions per x2 stage), or
    DySample (2 * 4 groups * s^2 offsets)."""
    keywords, sources = read_body(state_dict, attn_type)
    del keywords["use_ln"]  # fixed by the family
    if "to_img.init_pos" in state_dict:
        offsets = tensor(state_dict, "to_img.offset.weight", 4).shape[0]
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


FAMILY = Family(
    ESCRealConfig,
    ESCReal,
    "skip.0.weight",
    has_all("plk_filter", ESC_BODY),
    _read,
    presets={
        "ESC-Real": Preset(  # the authors' release page holds the plain weights; their options name the FlashBias ones
            ESCRealConfig(
                dim=64, pdim=16, kernel_size=13, n_blocks=10, conv_blocks=5, window_size=32, num_heads=4, exp_ratio=2.0
            ),  # fmt: skip
            {4: 2_265_307},
            (Weights("ESC_Real_FB_R48_GAN_X4.pth", 4, RELEASE, note="FlashBias layout of rank 48 (ESC-Real-FB48)"),),
        ),
        "ESC-Real-XL": Preset(  # the authors' ESC_Real_XL_DF2KOST_GAN
            ESCRealConfig(
                dim=128, pdim=32, kernel_size=13, n_blocks=16, conv_blocks=5, window_size=32, num_heads=8, exp_ratio=2.0
            ),  # fmt: skip
            {4: 13_105_027},
        ),
    },
)
