"""ESC-FP: class :class:`esc_arch.ESCFP` (configuration :class:`esc_arch.ESCFPConfig`, both in
``archs/esc_arch.py``): ESC with the shared kernel decomposed (``lk_channel``, ``lk_spatial``)."""

from __future__ import annotations

from torch import Tensor

from ..archs.esc_arch import ESCFP, ESCFPConfig
from .esc import ESC_BODY, RELEASE, read_body, read_to_img, to_img_head
from .family import Family, Preset, Weights, has_all

__all__ = ["FAMILY"]


def _read(state_dict: dict[str, Tensor], attn_type: str, window_size: int | None) -> tuple[dict, dict]:
    keywords, sources = read_to_img(state_dict, *read_body(state_dict, attn_type, "lk_spatial"))
    del keywords["use_ln"]  # fixed by the family
    return keywords, sources


FAMILY = Family(
    ESCFPConfig,
    ESCFP,
    "lk_channel",
    has_all("lk_spatial", ESC_BODY),
    _read,
    pixel_shuffle_head=to_img_head,
    presets={
        "ESC-FP": Preset(
            ESCFPConfig(
                dim=48, pdim=16, kernel_size=13, n_blocks=5, conv_blocks=5, window_size=32, num_heads=3, exp_ratio=1.25
            ),  # fmt: skip
            {2: 523_675, 3: 530_170, 4: 539_263},
            tuple(Weights(f"ESC_FP_X{s}.pth", s, RELEASE) for s in (2, 3, 4)),
        ),
    },
)
