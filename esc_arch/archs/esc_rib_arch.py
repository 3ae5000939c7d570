"""ESC-RIB: ESC with 64x64 windows and a rank-factorised implicit neural bias (RIB).

The authors' successor of ESC (Dongheon Lee et al., "ESC: Emulating Self-attention with
Convolution for Efficient Image Super-Resolution", ICCV 2025, arXiv:2503.06671), released in
their repository dslisleedh/SST as ``ESCRIB`` (weights ``ESCRIB_DFLIP_X{2,3,4}``).

What changes against :class:`esc_arch.ESC`:

- **RIB.** Each window attention has no bias table. A small MLP over the tokens' in-window
  coordinates (cell centres in (-1, 1), with sinusoidal features) gives per-head factors
  ``q_pos``, ``k_pos`` of rank R, and the bias is ``q_pos k_pos^T / sqrt(R)``. Concatenated to
  the queries and keys, the factors let a kernel without a bias input compute
  ``softmax(q k^T / sqrt(c) + bias) v``. The bias depends on absolute in-window positions,
  not on offsets; nothing window-sized is stored (the coordinates are a non-persistent buffer),
  so the window cannot be read from a checkpoint.
- An optional sigmoid gate (``DWC`` or ``Linear``) on the attention output, computed from the
  unpadded input.
- Each block's input projection is a ConvFFN with expansion 4; the tail normalises (``last``
  is LayerNorm then a 3x3 convolution).
- Three upsamplers (``upsampler``), each also given the low-resolution image.

Parameter names are the authors' (their checkpoints load with ``strict=True``). The authors
compute the attention in bfloat16; here it runs in the input's precision. Plain torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ATTN_TYPES, default_flashbias_rank, positive_int
from .attention import resolve_backend
from .esc_arch import ESCConfig, LayerNorm, WindowAttention, _ESCNetwork
from .position_bias import BiasParameters

#: ESC-RIB's released window (its checkpoints do not hold the window: assumed when loading one).
RIB_RELEASED_WINDOW = 64
#: ESC-RIB's upsamplers (the authors' ``upsampler_type``).
RIB_UPSAMPLERS = ("pixelshuffle_direct", "pixelshuffle", "nn+conv")
#: ESC-RIB's attention gates (the authors' ``gate_type``; None: no gate).
RIB_GATES = (None, "DWC", "Linear")
#: The authors' ``attn_type`` values that give ESCRIB another bias than RIB (a relative-position
#: table, FlashBias factors, a SIREN bias, RoPE, none); this project builds ESCRIB with RIB only.
_OTHER_RIB_LAYOUTS = ("Flex", "Naive", "SDPA", "FlashBias", "flashbias", "NoPE", "RIBSiren", "RoPEViT")


@dataclass(frozen=True, kw_only=True)
class ESCRIBConfig(ESCConfig):
    """ESC-RIB: the hyper-parameters of :class:`esc_arch.ESCRIB` (64x64 windows, the rank-``rank``
    implicit bias RIB, an optional attention gate, a choice of upsampler).

    ``attn_type`` is the backend; the authors' ``RIB`` means ``auto``. ``rank`` defaults as in
    the authors' code: ``flashbias_rank`` when given, else 256 minus the head dim; the resolved
    rank is stored in ``rank`` and ``flashbias_rank`` becomes None. ``window_size`` is not in the
    checkpoints (the RIB coordinates are not saved): 64 in the release."""

    window_size: int = RIB_RELEASED_WINDOW
    rank: int | None = None  #: R: per-head rank of the bias factors
    rib_hidden_dim: int = 64  #: width of the coordinate MLP
    rib_n_freqs: int = 10  #: sinusoidal frequencies per coordinate (2 + 4F MLP inputs)
    gate_type: str | None = None  #: one of RIB_GATES
    upsampler_type: str = "pixelshuffle_direct"  #: one of RIB_UPSAMPLERS
    intermediate_dim: int = 64  #: channels of the pixelshuffle and nn+conv upsamplers

    def __post_init__(self) -> None:
        if self.attn_type in _OTHER_RIB_LAYOUTS:
            raise ValueError(
                f"attn_type {self.attn_type!r} is the authors' ESCRIB without RIB (another position bias); "
                "ESCRIB here has the RIB bias only: attn_type 'RIB' or a backend "
                f"({', '.join(ATTN_TYPES)})"
            )
        if self.attn_type == "RIB":
            object.__setattr__(self, "attn_type", "auto")
        if self.rank is None and isinstance(self.dim, int) and isinstance(self.num_heads, int) and self.num_heads > 0:
            default = default_flashbias_rank(self.dim // self.num_heads)
            object.__setattr__(self, "rank", default if self.flashbias_rank is None else self.flashbias_rank)
        object.__setattr__(self, "flashbias_rank", None)
        super().__post_init__()

    def _check_family(self) -> None:
        positive_int("rank", self.rank)
        positive_int("rib_hidden_dim", self.rib_hidden_dim)
        positive_int("intermediate_dim", self.intermediate_dim)
        if not isinstance(self.rib_n_freqs, int) or isinstance(self.rib_n_freqs, bool) or self.rib_n_freqs < 0:
            raise ValueError(f"rib_n_freqs must be a non-negative integer; got {self.rib_n_freqs!r}")
        if self.gate_type not in RIB_GATES:
            raise ValueError(f"gate_type must be one of {', '.join(map(repr, RIB_GATES))}; got {self.gate_type!r}")
        if self.upsampler_type not in RIB_UPSAMPLERS:
            accepted = ", ".join(map(repr, RIB_UPSAMPLERS))
            raise ValueError(f"upsampler_type must be one of {accepted}; got {self.upsampler_type!r}")
        scale = self.upscaling_factor
        if self.upsampler_type == "nn+conv" and scale & (scale - 1) and scale != 3:
            raise ValueError(f"upsampler_type 'nn+conv' supports scales 2^n and 3; got x{scale}")


__all__ = ["ESCRIB", "RIBWindowAttention", "RIBUpsampler", "rib_coordinates"]


def rib_coordinates(window_size: int, n_freqs: int) -> Tensor:
    """The RIB MLP's input, ``(w*w, 2 + 4 * n_freqs)``: for token ``n = y * w + x``, the cell
    centre ``(bx, by)`` with ``b = 2 (i + 0.5) / w - 1``, then per frequency ``2^i``
    ``sin(2^i bx), sin(2^i by), cos(2^i bx), cos(2^i by)``."""
    centres = (torch.arange(window_size, dtype=torch.float64) + 0.5) * 2 / window_size - 1
    by, bx = torch.meshgrid(centres, centres, indexing="ij")
    base = torch.stack([bx.reshape(-1), by.reshape(-1)], dim=-1)
    features = [base]
    for i in range(n_freqs):
        features += [torch.sin(base * 2**i), torch.cos(base * 2**i)]
    return torch.cat(features, dim=-1).float()


#: Backends for RIB: ``sdpa`` (and ``auto``) concatenate the bias factors to the queries and
#: keys of an unmasked sdpa (``sdpa_factors``, the authors' way; no ``N x N`` bias is built, and
#: torch's fused CPU kernel has a bounded backward for it). The others take the factor pair as
#: FlashBias factors: ``naive`` and ``chunked`` multiply them out to one window's
#: ``(heads, N, N)`` bias.
_RIB_BACKENDS = {"sdpa": "sdpa_factors"}


class RIBWindowAttention(WindowAttention):
    """Window attention (no shift) whose bias comes from RIB; ``gate_type`` adds a sigmoid gate
    on its output. The map is reflect-padded on the bottom and right to window multiples."""

    def __init__(
        self,
        *,
        dim: int,
        window_size: int,
        num_heads: int,
        rank: int,
        hidden_dim: int,
        n_freqs: int,
        gate_type: str | None,
    ) -> None:
        super().__init__(dim=dim, window_size=window_size, num_heads=num_heads)
        self.rank, self.gate_type = rank, gate_type
        self.register_buffer("rib_coords", rib_coordinates(window_size, n_freqs), persistent=False)
        self.to_hidden = nn.Parameter(torch.zeros(2 + 4 * n_freqs, hidden_dim))
        self.hidden_b = nn.Parameter(torch.zeros(1, hidden_dim))
        self.to_q = nn.Parameter(torch.zeros(num_heads, hidden_dim, rank))
        self.to_k = nn.Parameter(torch.zeros(num_heads, hidden_dim, rank))
        if self.to_q.device.type != "meta":
            for parameter in (self.to_hidden, self.to_q, self.to_k):
                nn.init.normal_(parameter, std=0.05)
        gates = {
            "DWC": lambda: nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, groups=dim), nn.Conv2d(dim, dim, 1)),
            "Linear": lambda: nn.Sequential(nn.Conv2d(dim, dim, 1)),
        }
        if gate_type is not None:
            self.gate = gates[gate_type]()

    def _init_bias(self, flashbias_rank: int | None) -> None:
        """No table: the bias parameters are the RIB MLP's."""

    def backend(self, attn_type: str, device: torch.device, *, training: bool) -> str:
        if attn_type == "auto":
            return "sdpa_factors"
        name = resolve_backend(attn_type, device, training=training)
        return _RIB_BACKENDS.get(name, name)

    def bias_parameters(self) -> BiasParameters:
        """``(q_pos / sqrt(R), k_pos)``, each ``(heads, N, R)``: the bias is their product."""
        with torch.autocast(self.to_q.device.type, enabled=False):
            hidden = F.relu(self.rib_coords @ self.to_hidden + self.hidden_b)
            q_pos = torch.einsum("nd,hdr->hnr", hidden, self.to_q)
            k_pos = torch.einsum("nd,hdr->hnr", hidden, self.to_k)
        return q_pos * self.rank**-0.5, k_pos

    def forward(self, x: Tensor, attn_type: str) -> Tensor:
        out = self.attend(x, attn_type)
        if self.gate_type is not None:
            out = out * torch.sigmoid(self.gate(x))
        return self.to_out(out)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, gate_type={self.gate_type!r}"


class RIBUpsampler(nn.Module):
    """The authors' ``Upsampler``: features and the low-resolution image to the output.

    - ``pixelshuffle_direct``: ``PS(up_conv(feat) + image repeated r^2 times)``.
    - ``pixelshuffle``: ``final_conv(PS(up_conv(lrelu(feature_conv(feat)))))`` plus the
      nearest-upsampled image (no activation after the shuffle).
    - ``nn+conv``: ``f(feat + f_img(image))``: conv, LeakyReLU(0.1), per x2 (or one x3) stage a
      nearest upsampling, conv and LeakyReLU, then conv to RGB; no image residual.
    """

    def __init__(self, *, dim: int, scale: int, upsampler_type: str, mid_dim: int) -> None:
        super().__init__()
        self.scale, self.upsampler_type = scale, upsampler_type
        if upsampler_type == "pixelshuffle_direct":
            self.up_conv = nn.Conv2d(dim, 3 * scale * scale, 3, padding=1)
        elif upsampler_type == "pixelshuffle":
            self.feature_conv = nn.Conv2d(dim, mid_dim, 3, padding=1)
            self.up_conv = nn.Conv2d(mid_dim, mid_dim * scale * scale, 3, padding=1)
            self.final_conv = nn.Conv2d(mid_dim, 3, 3, padding=1)
        else:
            factors = [3] if scale == 3 else [2] * int(math.log2(scale))
            layers: list[nn.Module] = [nn.Conv2d(dim, mid_dim, 3, padding=1), nn.LeakyReLU(0.1)]
            for factor in factors:
                layers += [
                    nn.Upsample(scale_factor=factor),
                    nn.Conv2d(mid_dim, mid_dim, 3, padding=1),
                    nn.LeakyReLU(0.1),
                ]
            self.f = nn.Sequential(*layers, nn.Conv2d(mid_dim, 3, 3, padding=1))
            self.f_img = nn.Sequential(
                nn.Conv2d(3, dim, 1), nn.Conv2d(dim, dim, 7, padding=3), nn.LeakyReLU(0.1), nn.Conv2d(dim, dim, 1)
            )

    def forward(self, feat: Tensor, image: Tensor) -> Tensor:
        r = self.scale
        if self.upsampler_type == "pixelshuffle_direct":
            return F.pixel_shuffle(self.up_conv(feat) + image.repeat_interleave(r * r, dim=1), r)
        if self.upsampler_type == "pixelshuffle":
            out = self.final_conv(F.pixel_shuffle(self.up_conv(F.leaky_relu(self.feature_conv(feat), 0.1)), r))
            return out + F.interpolate(image, scale_factor=r, mode="nearest")
        return self.f(feat + self.f_img(image))

    def extra_repr(self) -> str:
        return f"scale={self.scale}, upsampler_type={self.upsampler_type!r}"


class ESCRIB(_ESCNetwork):
    """ESC-RIB (preset ``ESC-RIB``): ESC's body with RIB window attention, a ConvFFN x4 block
    input, a normalised tail and a choice of upsampler. :meth:`convert` (the authors' name) folds
    the shared kernel's 8-fold symmetrisation, as :meth:`reparameterize`."""

    Config = ESCRIBConfig
    PROJ_RATIO = 4.0

    def _make_attention(self) -> nn.Module:
        config = self.config
        return RIBWindowAttention(
            **self._window_keywords(),
            rank=config.rank,
            hidden_dim=config.rib_hidden_dim,
            n_freqs=config.rib_n_freqs,
            gate_type=config.gate_type,
        )

    def _init_tail(self) -> None:
        config = self.config
        self.last = nn.Sequential(LayerNorm(config.dim), nn.Conv2d(config.dim, config.dim, 3, padding=1))
        self.upsampler = RIBUpsampler(
            dim=config.dim,
            scale=config.upscaling_factor,
            upsampler_type=config.upsampler_type,
            mid_dim=config.intermediate_dim,
        )

    def _tail(self, x: Tensor, feat: Tensor, skip: Tensor) -> Tensor:
        return self.upsampler(self.last(feat) + skip, x)

    def convert(self) -> ESCRIB:
        """The authors' name for :meth:`reparameterize`: ``plk_filter`` becomes its own
        symmetrisation (same key and shape), which the forward pass then skips. Returns the network."""
        return self.reparameterize()
