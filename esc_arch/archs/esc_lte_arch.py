"""Arbitrary-scale ESC: the ESC body as the encoder of an LTE head (ESCLTE).

LTE ("Local Texture Estimator for Implicit Representation Function", Lee and Jin, CVPR 2022)
on the LIIF code base: the encoder's features give, per LR pixel, amplitudes (``coef``) and
frequencies (``freq``, 3x3 convolutions to ``hidden_dim``); a query point at continuous
coordinates mixes the four nearest LR pixels' sinusoids of its relative position, shifted by a
phase from the cell size (``phase``, linear, no bias), through an MLP (``imnet``), weighted by
the opposite areas, plus the bilinearly sampled input. Parameter names are the authors'
(``encoder.*``, ``coef``, ``freq``, ``phase``, ``imnet.layers.*``).

Semantics of :meth:`ESCLTE.forward` are the authors': the input is normalised as
``(x - 0.5) / 0.5``; ``coord`` are query points in [-1, 1] (row, column), ``cell`` the query
pixel's size in the same units (``2/H``, ``2/W``); the output ``(B, queries, 3)`` is still
normalised. :func:`esc_arch.archs.esc_lte_arch.make_coord` gives the pixel centres of an
output grid.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Keywords
from .esc_arch import ESCConfig, _ESCNetwork


@dataclass(frozen=True, kw_only=True)
class ESCLTEConfig(Keywords):
    """Arbitrary-scale ESC (:class:`esc_arch.ESCLTE`): the encoder's ESC keywords (its
    ``upscaling_factor`` is unused: the encoder has no ``to_img``) and the LTE head's sizes.
    Defaults: the authors' ESC-LTE (the ESC preset as encoder, hidden 256, MLP 256-256-256)."""

    encoder: ESCConfig = dataclasses.field(default_factory=lambda: ESCConfig(exp_ratio=1.25))
    hidden_dim: int = 256  #: channels of coef and freq (even: half are frequencies per axis)
    mlp_hidden: tuple[int, ...] = (256, 256, 256)  #: the MLP's hidden widths

    def __post_init__(self) -> None:
        if isinstance(self.encoder, dict):
            object.__setattr__(self, "encoder", ESCConfig.from_keywords(**self.encoder))
        if type(self.encoder) is not ESCConfig:
            raise ValueError(f"encoder must be an ESC configuration; got {type(self.encoder).__name__}")
        if isinstance(self.mlp_hidden, list | tuple):
            object.__setattr__(self, "mlp_hidden", tuple(self.mlp_hidden))
        if not isinstance(self.hidden_dim, int) or self.hidden_dim <= 0 or self.hidden_dim % 2:
            raise ValueError(f"hidden_dim must be a positive even integer; got {self.hidden_dim!r}")
        if (
            not isinstance(self.mlp_hidden, tuple)
            or not self.mlp_hidden
            or any(not isinstance(w, int) or isinstance(w, bool) or w <= 0 for w in self.mlp_hidden)
        ):
            raise ValueError(f"mlp_hidden must be a list of positive integers; got {self.mlp_hidden!r}")

    @classmethod
    def family(cls) -> str:
        return "ESCLTE"

    @property
    def attn_type(self) -> str:
        return self.encoder.attn_type

    @property
    def window_size(self) -> int:
        """The encoder's window."""
        return self.encoder.window_size

    def plain(self) -> ESCLTEConfig:
        """The published network this configures, without the encoder's attention backend,
        FlashBias layout and (unused) upscaling factor."""
        return self.replace(encoder=self.encoder.plain().replace(upscaling_factor=2))

    def replace(self, **changes: Any) -> ESCLTEConfig:
        """A copy with ``changes`` applied; ``attn_type`` is the encoder's."""
        if "attn_type" in changes:
            changes["encoder"] = changes.get("encoder", self.encoder).replace(attn_type=changes.pop("attn_type"))
        return dataclasses.replace(self, **changes)


__all__ = ["ESCEncoder", "ESCLTE", "ESCLTEConfig", "make_coord"]


def make_coord(height: int, width: int, *, device=None) -> Tensor:
    """The ``(height * width, 2)`` pixel centres of a grid in [-1, 1], row then column."""
    rows = (torch.arange(height, device=device, dtype=torch.float32) * 2 + 1) / height - 1
    cols = (torch.arange(width, device=device, dtype=torch.float32) * 2 + 1) / width - 1
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).view(-1, 2)


class ESCEncoder(_ESCNetwork):
    """ESC without its ``to_img``: features ``last(blocks(proj(x))) + proj(x)`` of ``dim`` channels."""

    def _init_tail(self) -> None:
        self.last = nn.Conv2d(self.config.dim, self.config.dim, 3, padding=1)

    def _tail(self, x: Tensor, feat: Tensor, skip: Tensor) -> Tensor:
        return self.last(feat) + skip


def _nearest(maps: Tensor, grid: Tensor) -> Tensor:
    """``maps`` ``(B, C, H, W)`` at the nearest pixel of each point of ``grid`` ``(B, 1, Q, 2)``:
    ``(B, Q, C)``."""
    return F.grid_sample(maps, grid, mode="nearest", align_corners=False)[:, :, 0].transpose(1, 2)


class _MLP(nn.Module):
    """LIIF's MLP: Linear + ReLU per hidden width, then a Linear to RGB (``layers.{0,2,...}``)."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], out_dim: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(in_dim, width), nn.ReLU()]
            in_dim = width
        self.layers = nn.Sequential(*layers, nn.Linear(in_dim, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class ESCLTE(nn.Module):
    """ESC + LTE: one model for any scale (see the module docstring)."""

    Config = ESCLTEConfig

    def __init__(self, config: ESCLTEConfig | None = None, /, **keywords) -> None:
        super().__init__()
        if config is None:
            config = ESCLTEConfig.from_keywords(**keywords)
        elif keywords:
            raise TypeError("ESCLTE: pass an ESCLTEConfig or keywords, not both")
        elif not isinstance(config, ESCLTEConfig):
            raise TypeError(f"ESCLTE takes an ESCLTEConfig; got {type(config).__name__}")
        self.config = config
        hidden = self.config.hidden_dim
        self.encoder = ESCEncoder(self.config.encoder)
        dim = self.config.encoder.dim
        self.coef = nn.Conv2d(dim, hidden, 3, padding=1)
        self.freq = nn.Conv2d(dim, hidden, 3, padding=1)
        self.phase = nn.Linear(2, hidden // 2, bias=False)
        self.imnet = _MLP(hidden, self.config.mlp_hidden)

    @property
    def attn_type(self) -> str:
        return self.config.attn_type

    @property
    def size_multiple(self) -> int:
        """The encoder's window (inputs of any size work)."""
        return self.encoder.size_multiple

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """The constructor keywords (spandrel's ``store_hyperparameters`` convention; the
        encoder's as a mapping): ``ESCLTE(**net.hyperparameters)`` builds the same network again."""
        return self.config.as_dict()

    def reparameterize(self) -> None:
        """Fold the encoder's kernel symmetrisation for deployment (:meth:`ESC.reparameterize`)."""
        self.encoder.reparameterize()

    def set_attn_type(self, attn_type: str) -> None:
        """Switch the encoder's attention backend (no effect on parameters)."""
        self.encoder.set_attn_type(attn_type)
        self.config = self.config.replace(encoder=self.encoder.config)

    def features(self, lq: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The encoder's features, their amplitudes and their frequencies (for :meth:`query`)."""
        feat = self.encoder(lq)
        return feat, self.coef(feat), self.freq(feat)

    def query(self, lq: Tensor, features: tuple[Tensor, Tensor, Tensor], coord: Tensor, cell: Tensor) -> Tensor:
        """RGB (normalised) at ``coord`` ``(B, Q, 2)`` for cells ``cell`` ``(B, Q, 2)``."""
        feat, coef, freq = features
        height, width = feat.shape[-2:]
        batch, queries = coord.shape[:2]
        centres = make_coord(height, width, device=feat.device).to(feat.dtype)
        centres = centres.t().reshape(1, 2, height, width).expand(feat.shape[0], 2, height, width)
        # (height, width) as a tensor computed from the sizes, so that an export keeps it dynamic
        hw = torch.stack([feat.new_ones(()) * height, feat.new_ones(()) * width]).to(coord.dtype)
        rel_cell = cell * hw
        phase = self.phase(rel_cell.reshape(batch * queries, 2)).view(batch, queries, -1)
        preds, areas = [], []
        for dy in (-1, 1):
            for dx in (-1, 1):
                shifted = coord + (coord.new_tensor([dy, dx]) / hw + 1e-6)
                grid = shifted.clamp(-1 + 1e-6, 1 - 1e-6).flip(-1).unsqueeze(1)
                q_coef, q_freq, q_coord = (_nearest(t, grid) for t in (coef, freq, centres))
                rel_coord = (coord - q_coord) * hw
                # each frequency pair (fy, fx) times the relative position, plus the cell's phase
                q_freq = (q_freq.view(batch, queries, -1, 2) * rel_coord.unsqueeze(-2)).sum(-1) + phase
                basis = torch.cat([torch.cos(math.pi * q_freq), torch.sin(math.pi * q_freq)], dim=-1)
                preds.append(self.imnet((q_coef * basis).reshape(batch * queries, -1)).view(batch, queries, -1))
                # LIIF's area + 1e-9, scaled by 1e3 (the weights are ratios of areas): an ONNX
                # optimiser folds "x + 1e-9" into x (a constant within 1e-8 of zero), which
                # turned 0 / 0 into NaN where all four areas are zero (odd integer scales)
                areas.append((rel_coord[..., 0] * rel_coord[..., 1]).abs() * 1e3 + 1e-6)
        total = torch.stack(areas).sum(dim=0)
        out = sum(pred * (area / total).unsqueeze(-1) for pred, area in zip(preds, reversed(areas), strict=True))
        grid = coord.flip(-1).unsqueeze(1)
        base = F.grid_sample(lq, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out + base[:, :, 0].transpose(1, 2)

    def forward(self, lq: Tensor, coord: Tensor, cell: Tensor) -> Tensor:
        """The authors' ``LTE.forward``: ``lq`` normalised as ``(x - 0.5) / 0.5``; output ``(B, Q, 3)``."""
        return self.query(lq, self.features(lq), coord, cell)
