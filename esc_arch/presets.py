"""The published ESC configurations, by name and scale.

>>> from esc_arch.presets import build_preset
>>> net = build_preset("ESC-light", scale=4)

Parameter counts (exact, as in the paper's table) are listed beside each preset and checked
by the test suite.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from .archs import ESC, ESCFP, ESCReal

__all__ = ["PRESETS", "Preset", "build_preset", "preset_config"]


@dataclass(frozen=True)
class Preset:
    """A named published configuration: its class, constructor keywords and scales."""

    arch: type[nn.Module]
    config: dict = field(hash=False)
    params: dict[int, int] = field(hash=False)  # scale -> exact parameter count

    @property
    def scales(self) -> tuple[int, ...]:
        return tuple(self.params)


_ESC_BASE = dict(dim=64, pdim=16, kernel_size=13, conv_blocks=5, window_size=32, num_heads=4, exp_ratio=1.25)

PRESETS: dict[str, Preset] = {
    "ESC": Preset(ESC, dict(_ESC_BASE, n_blocks=5), {2: 946_728, 3: 955_383, 4: 967_500}),
    "ESC-light": Preset(ESC, dict(_ESC_BASE, n_blocks=3), {2: 603_600, 3: 612_255, 4: 624_372}),
    "ESC-FP": Preset(
        ESCFP,
        dict(dim=48, pdim=16, kernel_size=13, n_blocks=5, conv_blocks=5, window_size=32, num_heads=3, exp_ratio=1.25),
        {2: 523_675, 3: 530_170, 4: 539_263},
    ),
    "ESC-XL": Preset(
        ESC,
        dict(
            dim=192,
            pdim=48,
            kernel_size=13,
            n_blocks=8,
            conv_blocks=5,
            window_size=48,
            num_heads=12,
            exp_ratio=1.25,
            use_ln=True,
        ),
        {2: 12_455_916, 3: 12_481_851, 4: 12_518_160},
    ),
    "ESC-Real": Preset(
        ESCReal,
        dict(dim=64, pdim=16, kernel_size=13, n_blocks=10, conv_blocks=5, window_size=32, num_heads=4, exp_ratio=2.0),
        {4: 2_265_307},
    ),
}


def preset_config(name: str, scale: int) -> dict:
    """Constructor keywords of preset ``name`` at ``scale`` (a new dict each call)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; accepted: {', '.join(PRESETS)}")
    preset = PRESETS[name]
    if scale not in preset.scales:
        raise ValueError(f"preset {name!r} has no x{scale} model; accepted scales: {list(preset.scales)}")
    return dict(preset.config, upscaling_factor=scale)


def build_preset(name: str, scale: int, *, attn_type: str = "auto") -> nn.Module:
    """Build the published network ``name`` (``ESC``, ``ESC-light``, ``ESC-FP``, ``ESC-XL``,
    ``ESC-Real``) at ``scale`` with freshly initialised weights."""
    config = preset_config(name, scale)
    return PRESETS[name].arch(**config, attn_type=attn_type)
