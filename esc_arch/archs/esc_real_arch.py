"""The real-world ESC family: ESC-Real, ESC-Real-XL and ESCRealM.

- :class:`ESCReal`: ESC's body with a reflect-padded input branch (``skip``) and Real-ESRGAN's
  nearest-upsampling tail (x4), or with ``use_dysample`` a DySample tail of any scale, or with
  ``neosr_tail`` neosr's nearest-upsampling tail (two convolutions per x2 stage).
- :class:`ESCRealM`: the same body for any scale and a choice of upsampler (:class:`UniUpsample`);
  scales 1 and 2 run the body on a ``PixelUnshuffle``d input (by 4 or 2), reflect-padded to a
  multiple of that factor, and upsample by 4; the output is cropped to ``s*H x s*W``.

Parameter names are the authors' (their checkpoints load with ``strict=True``), including
the ``to_img.MetaUpsample`` buffer that records ESCRealM's upsampler, from which
:func:`esc_arch.infer_config` reads the configuration of a checkpoint alone.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import positive_int
from .esc_arch import ESCConfig, LayerNorm, ReflectConv2d, _ESCNetwork, pad_to_multiple


@dataclass(frozen=True, kw_only=True)
class ESCRealConfig(ESCConfig):
    """ESC-Real: the hyper-parameters of :class:`esc_arch.ESCReal` (real-world model; x4 with
    its nearest-upsampling tail, any scale with the DySample one)."""

    n_blocks: int = 10
    upscaling_factor: int = 4
    use_ln: bool = True
    use_dysample: bool = False  #: DySample upsampler (groups 4, 1x1 end convolution) as the tail
    #: neosr's nearest-upsampling tail (its ``esc`` with ``realsr: true, use_dysample: false``):
    #: two convolutions per x2 stage, any power-of-two scale
    neosr_tail: bool = False

    FIXED: ClassVar[dict[str, tuple[Any, str]]] = {"use_ln": (True, "its conv blocks always normalise")}

    def _check_family(self) -> None:
        if not isinstance(self.use_dysample, bool):
            raise ValueError(f"use_dysample must be true or false; got {self.use_dysample!r}")
        if not isinstance(self.neosr_tail, bool):
            raise ValueError(f"neosr_tail must be true or false; got {self.neosr_tail!r}")
        scale = self.upscaling_factor
        if self.neosr_tail and (self.use_dysample or scale & (scale - 1)):
            raise ValueError(f"neosr_tail is a nearest-upsampling tail of a power-of-two scale; got x{scale}"
                             f"{' with use_dysample' if self.use_dysample else ''}")  # fmt: skip
        if not self.use_dysample and not self.neosr_tail and self.upscaling_factor != 4:
            raise ValueError(
                f"upscaling_factor must be 4 for ESCReal (its tail is fixed at x4; use_dysample: true, neosr_tail: "
                f"true or ESCRealM for other scales); got {self.upscaling_factor!r}"
            )
        if self.use_dysample and self.dim % 4:
            raise ValueError(f"dim must be a multiple of DySample's 4 groups; got {self.dim}")


#: ESCRealM's upsamplers, in the order of the ``to_img.MetaUpsample`` buffer's index: the
#: authors' five, then traiNNer-redux's three (its ``UniUpsampleV3``, record version 3).
UPSAMPLERS = (
    "conv",
    "pixelshuffledirect",
    "pixelshuffle",
    "nearest+conv",
    "dysample",
    "transpose+conv",
    "lda",
    "pa_up",
)


@dataclass(frozen=True, kw_only=True)
class ESCRealMConfig(ESCConfig):
    """ESCRealM: ESC-Real for any scale (1, 2, 3, 4, 8, ...) with a choice of upsampler."""

    n_blocks: int = 10
    upscaling_factor: int = 4
    use_ln: bool = True
    mid_dim: int = 48  #: channels of the pixelshuffle and dysample upsamplers
    upsampler: str = "nearest+conv"  #: one of UPSAMPLERS
    unshuffle_mod: bool = True  #: scales 1 and 2 run the body on a PixelUnshuffled input

    FIXED: ClassVar[dict[str, tuple[Any, str]]] = {"use_ln": (True, "its conv blocks always normalise")}

    @property
    def unshuffle(self) -> int:
        """The PixelUnshuffle factor of the input (1: none)."""
        return 4 // self.upscaling_factor if self.unshuffle_mod and self.upscaling_factor < 3 else 1

    @property
    def upsampler_scale(self) -> int:
        """The upsampler's factor (4 when the input is unshuffled)."""
        return 4 if self.unshuffle > 1 else self.upscaling_factor

    def _check_family(self) -> None:
        if self.upsampler not in UPSAMPLERS:
            raise ValueError(f"upsampler must be one of {', '.join(UPSAMPLERS)}; got {self.upsampler!r}")
        positive_int("mid_dim", self.mid_dim)
        if not isinstance(self.unshuffle_mod, bool):
            raise ValueError(f"unshuffle_mod must be true or false; got {self.unshuffle_mod!r}")
        scale = self.upsampler_scale
        power_of_two = scale & (scale - 1) == 0
        if (
            self.upsampler in ("pixelshuffle", "nearest+conv", "pa_up")
            and scale > 1
            and not (power_of_two or scale == 3)
        ):
            raise ValueError(f"upsampler {self.upsampler!r} supports scales 2^n and 3; got x{scale}")
        if self.upsampler == "transpose+conv" and scale not in (1, 2, 3, 4):
            raise ValueError(f"upsampler 'transpose+conv' supports scales 2, 3 and 4; got x{scale}")
        if self.upsampler == "conv" and scale > 1:
            raise ValueError(
                f"upsampler 'conv' does not upsample: the network would output x{self.upscaling_factor / scale:g}, "
                f"not x{self.upscaling_factor} (use it at upscaling_factor 1 with unshuffle_mod false)"
            )
        if self.upsampler == "lda" and self.mid_dim % 8:
            raise ValueError(f"mid_dim must be a multiple of 8 for 'lda' (4x reduction, 2 groups); got {self.mid_dim}")
        if self.upsampler == "dysample" and self.mid_dim % 4:
            raise ValueError(f"mid_dim must be a multiple of DySample's 4 groups; got {self.mid_dim}")
        if max(scale, self.mid_dim, self.dim) > 255:
            raise ValueError("the MetaUpsample buffer stores scale, dim and mid_dim in 8 bits (at most 255)")


__all__ = ["DySample", "ESCReal", "ESCRealM", "LDAUpsampler", "PixelAttention", "UniUpsample"]


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
        # Coordinates and sampling in float32 whatever the network's dtype: bfloat16 holds pixel
        # positions to 1/2 only up to 128 (and its sampling returns NaN); the result is cast back.
        batch, channels, height, width = x.shape
        s, g = self.scale, self.groups
        offset = (self.offset(x) * self.scope(x).sigmoid() * 0.5).float() + self.init_pos.float()  # (B, 2*g*s*s, H, W)
        offset = offset.view(batch, 2, g * s * s, height, width)
        centres_x = torch.arange(width, device=x.device, dtype=torch.float32) + 0.5
        centres_y = torch.arange(height, device=x.device, dtype=torch.float32) + 0.5
        centres = torch.stack(torch.meshgrid(centres_x, centres_y, indexing="xy"))  # (2, H, W): x, y
        size = torch.tensor([width, height], device=x.device, dtype=torch.float32).view(1, 2, 1, 1, 1)
        coords = 2 * (centres.view(1, 2, 1, height, width) + offset) / size - 1
        coords = F.pixel_shuffle(coords.reshape(batch, -1, height, width), s)  # (B, 2*g, sH, sW)
        coords = coords.view(batch, 2, g, s * height, s * width).permute(0, 2, 3, 4, 1).flatten(0, 1)
        sampled = F.grid_sample(
            x.reshape(batch * g, channels // g, height, width).float(),
            coords,
            mode="bilinear",
            align_corners=False,
            padding_mode="border",
        )
        return self.end_conv(sampled.view(batch, channels, s * height, s * width).to(x.dtype))


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


def _transpose_conv_layers(in_dim: int, out_dim: int, scale: int) -> list[nn.Module]:
    """traiNNer-redux's ``transpose+conv``: transposed convolutions (x2: kernel 4, stride 2; x3:
    kernel 3, stride 3; x4: two x2 with a GELU between), then a 3x3 convolution."""
    if scale == 3:
        layers: list[nn.Module] = [nn.ConvTranspose2d(in_dim, out_dim, 3, 3, 0)]
    elif scale == 4:
        layers = [nn.ConvTranspose2d(in_dim, in_dim, 4, 2, 1), nn.GELU(), nn.ConvTranspose2d(in_dim, out_dim, 4, 2, 1)]
    else:
        layers = [nn.ConvTranspose2d(in_dim, out_dim, 4, 2, 1)]
    return [*layers, nn.Conv2d(out_dim, out_dim, 3, padding=1)]


class PixelAttention(nn.Module):
    """``x * sigmoid(conv1x1(x))`` (traiNNer-redux's ``PA``; parameters ``conv.0``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return x * self.conv(x)


def _pa_up_layers(in_dim: int, mid_dim: int, scale: int) -> list[nn.Module]:
    """traiNNer-redux's ``pa_up``: per x2 stage (or one x3) nearest upsampling, conv, pixel
    attention, LeakyReLU(0.2), conv, LeakyReLU(0.2); then a conv to RGB (added by the caller)."""
    layers: list[nn.Module] = []
    for factor in [3] if scale == 3 else [2] * int(math.log2(scale)):
        layers += [nn.Upsample(scale_factor=factor), nn.Conv2d(in_dim, mid_dim, 3, padding=1), PixelAttention(mid_dim)]
        layers += [nn.LeakyReLU(0.2), nn.Conv2d(mid_dim, mid_dim, 3, padding=1), nn.LeakyReLU(0.2)]
        in_dim = mid_dim
    return layers


class LDAUpsampler(nn.Module):
    """traiNNer-redux's ``lda`` upsampler core (its ``LDA_AQU``): learned deformable attention.

    Every output pixel attends over ``k_u x k_u`` = 9 points of the input, one head, in two
    channel groups. The query is the normalised input projected to ``dim/4`` channels and
    bilinearly upsampled (``align_corners=True``); per group, a small conv stack on it predicts 9
    offsets, ``11 tanh(.)`` around the 3x3 grid, in output pixels. Keys (the other projection)
    and values (the un-normalised input) are sampled there bilinearly, the output position being
    mapped onto the input by ``align_corners=True``; a learned bias is added to the keys."""

    K = 3  #: points per side
    GROUPS = 2
    RANGE = 11.0  #: offset range, output pixels

    def __init__(self, dim: int, scale: int) -> None:
        super().__init__()
        self.dim, self.scale = dim, scale
        hidden = dim // 4
        self.proj_q = nn.Conv2d(dim, hidden, 1, bias=False)
        self.proj_k = nn.Conv2d(dim, hidden, 1, bias=False)
        group = hidden // self.GROUPS
        self.conv_offset = nn.Sequential(
            nn.Conv2d(group, group, 3, padding=1, groups=group, bias=False),
            LayerNorm(group),
            nn.SiLU(),
            nn.Conv2d(group, 2 * self.K * self.K, 3, padding=1),
        )
        self.layer_norm = LayerNorm(dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(1, 1, 1, self.K * self.K, hidden))
        if self.relative_position_bias_table.device.type != "meta":
            nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        g, k, s = self.GROUPS, self.K, self.scale
        out_h, out_w = height * s, width * s
        normed = self.layer_norm(x)
        query = F.interpolate(self.proj_q(normed), size=(out_h, out_w), mode="bilinear", align_corners=True)
        keys = self.proj_k(normed)
        hidden = query.shape[1]
        # Positions and sampling in float32 whatever the network's dtype (bfloat16 holds integers
        # only up to 256); the samples are cast back.
        offset = self.conv_offset(query.reshape(batch * g, hidden // g, out_h, out_w)).tanh().float() * self.RANGE
        offset = offset.view(batch * g, k * k, 2, out_h, out_w)
        grid_offsets = torch.arange(k, device=x.device, dtype=torch.float32) - (k - 1) / 2
        base_y, base_x = torch.meshgrid(grid_offsets, grid_offsets, indexing="ij")
        rows = torch.arange(out_h, device=x.device, dtype=torch.float32).view(1, 1, out_h, 1)
        cols = torch.arange(out_w, device=x.device, dtype=torch.float32).view(1, 1, 1, out_w)
        y = offset[:, :, 0] + base_y.reshape(1, k * k, 1, 1) + rows  # (B*g, 9, out_h, out_w), output pixels
        x_pos = offset[:, :, 1] + base_x.reshape(1, k * k, 1, 1) + cols
        grid = torch.stack([2 * x_pos / max(out_w - 1, 1) - 1, 2 * y / max(out_h - 1, 1) - 1], dim=-1)
        grid = grid.view(batch * g, k * k * out_h, out_w, 2)

        def sample(t: Tensor) -> Tensor:  # (B, C, H, W) -> (B, out_h*out_w, 9, C), groups on their offsets
            per_group = t.reshape(batch * g, t.shape[1] // g, height, width).float()
            taken = F.grid_sample(per_group, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
            taken = taken.to(t.dtype).view(batch, g, t.shape[1] // g, k * k, out_h * out_w)
            return taken.permute(0, 4, 3, 1, 2).reshape(batch, out_h * out_w, k * k, t.shape[1])

        sampled_k = sample(keys) + self.relative_position_bias_table[0, 0]
        sampled_v = sample(x)
        q = query.flatten(2).transpose(1, 2).unsqueeze(2) * hidden**-0.5  # (B, N, 1, hidden)
        weights = (q @ sampled_k.transpose(-1, -2)).softmax(-1)  # (B, N, 1, 9)
        out = (weights @ sampled_v).squeeze(2)  # (B, N, C)
        return out.transpose(1, 2).reshape(batch, channels, out_h, out_w)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, scale={self.scale}"


#: ``MetaUpsample``'s record version: the authors' 2, traiNNer-redux's 3 for its own upsamplers.
_RECORD_VERSION = {"transpose+conv": 3, "lda": 3, "pa_up": 3}


class UniUpsample(nn.Sequential):
    """ESCRealM's upsampler (``to_img``), one of :data:`esc_arch.archs.esc_real_arch.UPSAMPLERS`; its buffer
    ``MetaUpsample`` (uint8) records the version (the authors' 2, traiNNer-redux's 3), the
    upsampler's index, scale, in_dim, out_dim, mid_dim and groups, as those files do."""

    def __init__(self, upsampler: str, scale: int, in_dim: int, out_dim: int, mid_dim: int, groups: int = 4):
        conv = nn.Conv2d
        recorded_in_dim = in_dim
        if scale == 1 or upsampler == "conv":
            layers = [conv(in_dim, out_dim, 3, padding=1)]
        elif upsampler == "pixelshuffledirect":
            layers = [conv(in_dim, out_dim * scale * scale, 3, padding=1), nn.PixelShuffle(scale)]
        elif upsampler == "pixelshuffle":
            layers = [conv(in_dim, mid_dim, 3, padding=1), nn.LeakyReLU(inplace=True)]
            layers += [*_pixelshuffle_stages(mid_dim, scale), conv(mid_dim, out_dim, 3, padding=1)]
        elif upsampler == "nearest+conv":
            layers = [*_nearest_conv_stages(in_dim, scale), conv(in_dim, out_dim, 3, padding=1)]
        elif upsampler == "transpose+conv":
            layers = _transpose_conv_layers(in_dim, out_dim, scale)
        elif upsampler == "pa_up":
            layers = [*_pa_up_layers(in_dim, mid_dim, scale), conv(mid_dim, out_dim, 3, padding=1)]
            recorded_in_dim = mid_dim if scale != 3 else in_dim  # as traiNNer-redux records it
        else:  # dysample and lda, after a 3x3 projection to mid_dim unless that is in_dim already
            project = [conv(in_dim, mid_dim, 3, padding=1), nn.LeakyReLU(inplace=True)] if mid_dim != in_dim else []
            if upsampler == "lda":
                layers = [*project, LDAUpsampler(mid_dim, scale), conv(mid_dim, out_dim, 3, padding=1)]
            else:
                layers = [*project, DySample(mid_dim, out_dim, scale, groups=groups)]
        super().__init__(*layers)
        version = _RECORD_VERSION.get(upsampler, 2)
        meta = [version, UPSAMPLERS.index(upsampler), scale, recorded_in_dim, out_dim, mid_dim, groups]
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
        elif self.config.neosr_tail:  # per x2 stage: nearest, conv, LeakyReLU, conv, LeakyReLU
            stage = [nn.Upsample(scale_factor=2), nn.Conv2d(dim, dim, 3, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            stage += [nn.Conv2d(dim, dim, 3, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            stages = int(math.log2(self.config.upscaling_factor))
            self.to_img = nn.Sequential(
                *[copy.deepcopy(m) for _ in range(stages) for m in stage], nn.Conv2d(dim, 3, 3, padding=1)
            )
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
            x = pad_to_multiple(x, factor)
        return super().forward(x)[..., : scale * height, : scale * width]
