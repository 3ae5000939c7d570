"""ESCRealM: class :class:`esc_arch.ESCRealM` (configuration :class:`esc_arch.ESCRealMConfig`,
both in ``archs/esc_real_arch.py``), ESC-Real for any fixed scale with a choice of upsampler,
which its ``to_img.MetaUpsample`` record names."""

from __future__ import annotations

import math

from torch import Tensor

from ..archs.esc_real_arch import UPSAMPLERS, ESCRealM, ESCRealMConfig
from .esc import ESC_BODY, read_body
from .family import Family, has_all, tensor

__all__ = ["FAMILY"]


def _upsampler_layout(state_dict: dict[str, Tensor], proj: Tensor) -> dict:
    """ESCRealM's scale, upsampler, mid_dim and unshuffle_mod, from ``to_img.MetaUpsample``
    (version, upsampler index, scale, in_dim, out_dim, mid_dim, groups) and the stem.

    The scale is the network's true output factor: an unshuffled input is upsampled by 4, and
    an upsampler recorded at x1 (whatever its index) or ``conv`` is one convolution that does
    not upsample."""
    record = tensor(state_dict, "to_img.MetaUpsample", 1)
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


def _read(state_dict: dict[str, Tensor], attn_type: str, window_size: int | None) -> tuple[dict, dict]:
    """ESCRealM: the body, and the upsampler from its ``to_img.MetaUpsample`` record."""
    keywords, sources = read_body(state_dict, attn_type)
    del keywords["use_ln"]  # fixed by the family
    keywords.update(_upsampler_layout(state_dict, state_dict[sources["dim"]]))
    sources.update(upscaling_factor="to_img.MetaUpsample", mid_dim="to_img.MetaUpsample")
    return keywords, sources


FAMILY = Family(ESCRealMConfig, ESCRealM, "to_img.MetaUpsample", has_all("plk_filter", ESC_BODY), _read)
