"""The real-world ESC family: ESC-Real, ESC-Real-XL and ESCRealM.

- :class:`ESCReal`: ESC's body with a reflect-padded input branch (``skip``) and Real-ESRGAN's
  nearest-upsampling tail (x4), or with ``use_dysample`` a DySample tail of any scale.
- :class:`ESCRealM`: the same body for any scale and a choice of upsampler (:class:`UniUpsample`);
  scales 1 and 2 run the body on a ``PixelUnshuffle``d input (by 4 or 2), reflect-padded to a
  multiple of that factor, and upsample by 4; the output is cropped to ``s*H x s*W``.

Parameter names are the authors' (their checkpoints load with ``strict=True``), including
the ``to_img.MetaUpsample`` buffer that records ESCRealM's upsampler, from which
:func:`esc_arch.infer_config` reads the configuration of a checkpoint alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import UPSAMPLERS, ESCRealConfig, ESCRealMConfig
from .esc_arch import ReflectConv2d, _ESCNetwork, reflect_pad

__all__ = ["DySample", "ESCReal", "ESCRealM", "UniUpsample"]


class DySample(nn.Module):
    """DySample ("Learning to Upsample by Learning to Sample", Liu et al., ICCV 2023): each output
    pixel bilinearly samples the input at a learned offset from its sub-pixel position, per group
    of channels; a 1x1 ``end_conv`` maps to the output channels."""

    def __init__(self, in_dim: int, out_dim: int, scale: int, *, groups: int = 4) -> None:
        super().__init__()
        if in_dim % groups:
            raise ValueError(f"DySample: {in_dim} channels do not split into {groups} groups")
        self.scale, self.groups = scale, groups
        self.end_conv = nn.Conv2d(in_dim, out_dim, 1)
        self.offset = nn.Conv2d(in_dim, 2 * groups * scale**2, 1)
        self.scope = nn.Conv2d(in_dim, 2 * groups * scale**2, 1, bias=False)
        nn.init.trunc_normal_(self.offset.weight, std=0.02)
        nn.init.zeros_(self.scope.weight)
        # Sub-pixel positions relative to the pixel centre, x then y, repeated per group.
        steps = (torch.arange(scale) - (scale - 1) / 2) / scale
        grid_y, grid_x = torch.meshgrid(steps, steps, indexing="ij")
        init_pos = torch.stack([grid_x, grid_y]).unsqueeze(1).repeat(1, groups, 1, 1)
        self.register_buffer("init_pos", init_pos.reshape(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        s, g = self.scale, self.groups
        offset = self.offset(x) * self.scope(x).sigmoid() * 0.5 + self.init_pos  # (B, 2*g*s*s, H, W)
        offset = offset.view(batch, 2, g * s * s, height, width)
        centres_x = torch.arange(width, device=x.device, dtype=x.dtype) + 0.5
        centres_y = torch.arange(height, device=x.device, dtype=x.dtype) + 0.5
        centres = torch.stack(torch.meshgrid(centres_x, centres_y, indexing="xy"))  # (2, H, W): x, y
        size = torch.tensor([width, height], device=x.device, dtype=x.dtype).view(1, 2, 1, 1, 1)
        coords = 2 * (centres.view(1, 2, 1, height, width) + offset) / size - 1
        coords = F.pixel_shuffle(coords.reshape(batch, -1, height, width), s)  # (B, 2*g, sH, sW)
        coords = coords.view(batch, 2, g, s * height, s * width).permute(0, 2, 3, 4, 1).flatten(0, 1)
        sampled = F.grid_sample(
            x.reshape(batch * g, channels // g, height, width),
            coords,
            mode="bilinear",
            align_corners=False,
            padding_mode="border",
        )
        return self.end_conv(sampled.view(batch, channels, s * height, s * width))


def _nearest_conv_stages(dim: int, scale: int) -> list[nn.Module]:
    """``nearest+conv``: conv, nearest x2 (or x3), LeakyReLU(0.2) per stage, then conv, LeakyReLU."""
    factors = [3] if scale == 3 else [2] * int(math.log2(scale))
    layers: list[nn.Module] = []
    for factor in factors:
        layers += [nn.Conv2d(dim, dim, 3, padding=1), nn.Upsample(scale_factor=factor), nn.LeakyReLU(0.2, True)]
    return layers + [nn.Conv2d(dim, dim, 3, padding=1), nn.LeakyReLU(0.2, True)]


def _pixelshuffle_stages(mid_dim: int, scale: int) -> list[nn.Module]:
    """``pixelshuffle``: conv + PixelShuffle(2) per factor 2 (or one x3)."""
    factors = [3] if scale == 3 else [2] * int(math.log2(scale))
    layers: list[nn.Module] = []
    for factor in factors:
        layers += [nn.Conv2d(mid_dim, factor * factor * mid_dim, 3, padding=1), nn.PixelShuffle(factor)]
    return layers


class UniUpsample(nn.Sequential):
    """ESCRealM's upsampler (``to_img``), one of :data:`esc_arch.config.UPSAMPLERS`; its buffer
    ``MetaUpsample`` (uint8) records version 2, the upsampler's index, scale, in_dim, out_dim,
    mid_dim and groups, as the authors' files do."""

    def __init__(self, upsampler: str, scale: int, in_dim: int, out_dim: int, mid_dim: int, groups: int = 4):
        conv = nn.Conv2d
        if scale == 1 or upsampler == "conv":
            layers = [conv(in_dim, out_dim, 3, padding=1)]
        elif upsampler == "pixelshuffledirect":
            layers = [conv(in_dim, out_dim * scale * scale, 3, padding=1), nn.PixelShuffle(scale)]
        elif upsampler == "pixelshuffle":
            layers = [conv(in_dim, mid_dim, 3, padding=1), nn.LeakyReLU(inplace=True)]
            layers += [*_pixelshuffle_stages(mid_dim, scale), conv(mid_dim, out_dim, 3, padding=1)]
        elif upsampler == "nearest+conv":
            layers = [*_nearest_conv_stages(in_dim, scale), conv(in_dim, out_dim, 3, padding=1)]
        else:  # dysample, after a 3x3 projection to mid_dim unless that is in_dim already
            project = [conv(in_dim, mid_dim, 3, padding=1), nn.LeakyReLU(inplace=True)] if mid_dim != in_dim else []
            layers = [*project, DySample(mid_dim, out_dim, scale, groups=groups)]
        super().__init__(*layers)
        meta = [2, UPSAMPLERS.index(upsampler), scale, in_dim, out_dim, mid_dim, groups]
        self.register_buffer("MetaUpsample", torch.tensor(meta, dtype=torch.uint8))


def _input_branch(dim: int, unshuffle: int) -> nn.Sequential:
    """The reflect-padded input branch (``skip``), after an optional PixelUnshuffle."""
    layers = [nn.PixelUnshuffle(unshuffle)] if unshuffle > 1 else []
    return nn.Sequential(
        *layers,
        nn.Conv2d(3 * unshuffle * unshuffle, dim * 2, 1),
        ReflectConv2d(dim * 2, dim * 2, 7, padding=3, groups=dim * 2, padding_mode="reflect"),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(dim * 2, dim, 1),
    )


class ESCReal(_ESCNetwork):
    """ESC-Real and ESC-Real-XL: the real-world model (reflect-padded input branch; nearest-
    upsampling tail at x4, or a DySample tail of any scale with ``use_dysample``)."""

    Config = ESCRealConfig

    def _init_tail(self) -> None:
        dim = self.config.dim
        self.last = nn.Conv2d(dim, dim, 3, padding=1)
        if self.config.use_dysample:
            self.to_img = DySample(dim, 3, self.config.upscaling_factor, groups=4)
        else:
            self.to_img = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(dim, dim, 3, padding=1),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(dim, dim, 3, padding=1),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(dim, dim, 3, padding=1),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(dim, 3, 3, padding=1),
            )
        self.skip = _input_branch(dim, 1)

    def _tail(self, x: Tensor, feat: Tensor, skip: Tensor) -> Tensor:
        return self.to_img(self.last(feat) + skip + self.skip(x))


class ESCRealM(ESCReal):
    """ESCRealM: ESC-Real for any scale, with the upsampler chosen by ``upsampler``."""

    Config = ESCRealMConfig

    def _make_proj(self) -> nn.Module:
        factor = self.config.unshuffle
        if factor == 1:
            return super()._make_proj()
        return nn.Sequential(nn.PixelUnshuffle(factor), nn.Conv2d(3 * factor * factor, self.config.dim, 3, padding=1))

    def _init_tail(self) -> None:
        config = self.config
        self.skip = _input_branch(config.dim, config.unshuffle)
        self.last = nn.Conv2d(config.dim, config.dim, 3, padding=1)
        self.to_img = UniUpsample(config.upsampler, config.upsampler_scale, config.dim, 3, config.mid_dim)

    @property
    def size_multiple(self) -> int:
        """The window in input pixels (the body runs on the unshuffled input)."""
        return self.config.window_size * self.config.unshuffle

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        factor, scale = self.config.unshuffle, self.config.upscaling_factor
        if factor > 1:
            x = reflect_pad(x, (factor - height % factor) % factor, (factor - width % factor) % factor)
        return super().forward(x)[..., : scale * height, : scale * width]
