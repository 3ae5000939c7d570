"""Typed configurations of the ESC networks and the published presets, in one place.

Each network class takes one keyword-only configuration (``ESC(dim=64, ...)`` or
``ESC(ESCConfig(dim=64, ...))``); the keywords are the authors', so their option files and
checkpoints' hyper-parameters map one to one. Every rule on the values lives in
:meth:`ESCConfig.__post_init__`; what a family fixes (ESC-FP and ESC-Real always normalise
their conv blocks; ESC-Real's tail is x4) is a table on its configuration class.

The presets are the paper's networks with their exact parameter counts (checked by the
tests); :func:`esc_arch.build_preset` builds one. This module imports no network code.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, ClassVar

#: The attention backends (see :mod:`esc_arch.archs.attention`); the authors' option files
#: spell some with capitals.
ATTN_TYPES = ("naive", "sdpa", "flex", "flash", "chunked", "auto")
_ATTN_ALIASES = {"Naive": "naive", "SDPA": "sdpa", "Flex": "flex", "Flash": "flash"}


def canonical_attn_type(attn_type: str) -> str:
    """``attn_type`` in this project's spelling, or ``ValueError``."""
    name = _ATTN_ALIASES.get(attn_type, attn_type)
    if name not in ATTN_TYPES:
        accepted = ", ".join(repr(n) for n in [*ATTN_TYPES, *_ATTN_ALIASES])
        raise ValueError(f"attn_type must be one of {accepted}; got {attn_type!r}")
    return name


__all__ = [
    "ATTN_TYPES",
    "ESCConfig",
    "ESCFPConfig",
    "ESCLTEConfig",
    "ESCRIBConfig",
    "ESCRealConfig",
    "ESCRealMConfig",
    "UPSAMPLERS",
    "PRESETS",
    "Preset",
    "RIB_UPSAMPLERS",
    "LTE_QUERY_CHUNK",
    "RIB_RELEASED_WINDOW",
    "TILE_OVERLAP",
    "canonical_attn_type",
    "default_flashbias_rank",
    "detect_variant",
    "preset_config",
]


#: flash-attn's largest head dim; the authors' default FlashBias rank is this minus the head dim.
FLASH_MAX_HEAD_DIM = 256
#: ESC-RIB's released window (its checkpoints do not hold the window: assumed when loading one).
RIB_RELEASED_WINDOW = 64
#: Input pixels a tile of the tiled inference overlaps its neighbours by (at most the tile).
TILE_OVERLAP = 64
#: Output pixels an arbitrary-scale network (ESC-LTE) queries at a time (the authors' ``eval_bsize``).
LTE_QUERY_CHUNK = 30_000


def default_flashbias_rank(head_dim: int) -> int:
    """The authors' default FlashBias rank (ESC's FlashBias layout, ESC-RIB's ``rank``, the
    ``flash`` backend's folded bias): the largest that fits flash-attn's head-dim limit beside
    ``head_dim`` channels."""
    return FLASH_MAX_HEAD_DIM - head_dim


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")


class _Keywords:
    """What every configuration class offers: its keywords, and building from them with a
    ``TypeError`` naming an unknown one and the closest known one."""

    @classmethod
    def keywords(cls) -> tuple[str, ...]:
        """The accepted keywords, in order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_keywords(cls, **keywords: Any):
        """Build from keywords; an unknown one is a ``TypeError`` naming it and the closest known one."""
        accepted = cls.keywords()
        for name in keywords:
            if name not in accepted:
                close = difflib.get_close_matches(name, accepted, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise TypeError(f"{cls.family()}: unknown keyword {name!r}{hint}; accepted: {', '.join(accepted)}")
        return cls(**keywords)


@dataclass(frozen=True, kw_only=True)
class ESCConfig(_Keywords):
    """ESC, ESC-light and ESC-XL: the hyper-parameters of :class:`esc_arch.ESC`."""

    dim: int = 64  #: feature channels
    pdim: int = 16  #: channels mixed by ConvAttn's large and dynamic kernels
    kernel_size: int = 13  #: size of the shared large kernel
    n_blocks: int = 5  #: blocks (one window self-attention each)
    conv_blocks: int = 5  #: ConvFFN + ConvAttn pairs per block
    window_size: int = 32  #: self-attention window (tokens per side)
    num_heads: int = 4
    upscaling_factor: int = 2
    exp_ratio: float = 2.0  #: ConvFFN expansion
    attn_type: str = "auto"  #: naive | sdpa | flex | flash | chunked | auto (see esc_arch.archs.attention)
    use_ln: bool = False  #: layer norm before each ConvFFN of the conv blocks
    #: FlashBias layout: each attention holds rank-r factors of its bias matrix instead of the
    #: relative-position table (the authors' ``attn_type: FlashBias``, default rank 256 - head dim)
    flashbias_rank: int | None = None
    #: the authors' option files' flag; changes no parameter or output here (``reparameterize()``
    #: folds the kernel symmetrisation for deployment)
    deployment: bool = False

    #: keyword -> the only value this family accepts, and why.
    FIXED: ClassVar[dict[str, tuple[Any, str]]] = {}

    def __post_init__(self) -> None:
        for name in ("dim", "pdim", "kernel_size", "n_blocks", "conv_blocks", "window_size", "num_heads"):
            _positive_int(name, getattr(self, name))
        _positive_int("upscaling_factor", self.upscaling_factor)
        if self.pdim > self.dim:
            raise ValueError(f"pdim must be at most dim={self.dim}; got pdim={self.pdim}")
        if self.dim % self.num_heads:
            raise ValueError(f"dim must be divisible by num_heads={self.num_heads}; got dim={self.dim}")
        if self.kernel_size % 2 == 0 or self.kernel_size < 3:
            raise ValueError(f"kernel_size must be odd and at least 3; got {self.kernel_size}")
        if isinstance(self.exp_ratio, bool) or not isinstance(self.exp_ratio, int | float) or not self.exp_ratio > 0:
            raise ValueError(f"exp_ratio must be positive; got {self.exp_ratio!r}")
        if not isinstance(self.use_ln, bool):
            raise ValueError(f"use_ln must be true or false; got {self.use_ln!r}")
        if self.attn_type in ("FlashBias", "flashbias"):  # the authors' name for the layout, not a kernel
            object.__setattr__(self, "attn_type", "auto")
            if self.flashbias_rank is None:
                object.__setattr__(self, "flashbias_rank", default_flashbias_rank(self.dim // self.num_heads))
        object.__setattr__(self, "attn_type", canonical_attn_type(self.attn_type))
        if self.flashbias_rank is not None:
            _positive_int("flashbias_rank", self.flashbias_rank)
        family = self.family()
        for name, (value, reason) in self.FIXED.items():
            if getattr(self, name) != value:
                raise ValueError(f"{name} must be {value!r} for {family} ({reason}); got {getattr(self, name)!r}")
        self._check_family()

    def _check_family(self) -> None:
        """Rules of one family beyond :attr:`FIXED` (none for ESC)."""

    @classmethod
    def family(cls) -> str:
        """The network class this configures (``ESC``, ``ESCFP``, ``ESCReal``)."""
        return cls.__name__.removesuffix("Config")

    def as_dict(self) -> dict[str, Any]:
        """The keywords and their values (a new dict)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> ESCConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, kw_only=True)
class ESCFPConfig(ESCConfig):
    """ESC-FP: the hyper-parameters of :class:`esc_arch.ESCFP` (decomposed shared kernel)."""

    dim: int = 48
    num_heads: int = 3
    use_ln: bool = True

    FIXED: ClassVar[dict[str, tuple[Any, str]]] = {"use_ln": (True, "its conv blocks always normalise")}


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
        _positive_int("mid_dim", self.mid_dim)
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
        _positive_int("rank", self.rank)
        _positive_int("rib_hidden_dim", self.rib_hidden_dim)
        _positive_int("intermediate_dim", self.intermediate_dim)
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


@dataclass(frozen=True, kw_only=True)
class ESCLTEConfig(_Keywords):
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

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> ESCLTEConfig:
        """A copy with ``changes`` applied; ``attn_type`` is the encoder's."""
        if "attn_type" in changes:
            changes["encoder"] = changes.get("encoder", self.encoder).replace(attn_type=changes.pop("attn_type"))
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------- presets


@dataclass(frozen=True)
class Preset:
    """A published network: its configuration (without the scale) and exact parameter counts."""

    config: ESCConfig
    params: dict[int, int] = dataclasses.field(hash=False)  # scale -> exact parameter count

    @property
    def scales(self) -> tuple[int, ...]:
        return tuple(self.params)


_ESC = ESCConfig(dim=64, pdim=16, kernel_size=13, conv_blocks=5, window_size=32, num_heads=4, exp_ratio=1.25)

PRESETS: dict[str, Preset] = {
    "ESC": Preset(_ESC.replace(n_blocks=5), {2: 946_728, 3: 955_383, 4: 967_500}),
    "ESC-light": Preset(_ESC.replace(n_blocks=3), {2: 603_600, 3: 612_255, 4: 624_372}),
    "ESC-FP": Preset(
        ESCFPConfig(
            dim=48, pdim=16, kernel_size=13, n_blocks=5, conv_blocks=5, window_size=32, num_heads=3, exp_ratio=1.25
        ),  # fmt: skip
        {2: 523_675, 3: 530_170, 4: 539_263},
    ),
    "ESC-XL": Preset(
        _ESC.replace(dim=192, pdim=48, n_blocks=8, window_size=48, num_heads=12, use_ln=True),
        {2: 12_455_916, 3: 12_481_851, 4: 12_518_160},
    ),
    "ESC-Real": Preset(
        ESCRealConfig(
            dim=64, pdim=16, kernel_size=13, n_blocks=10, conv_blocks=5, window_size=32, num_heads=4, exp_ratio=2.0
        ),  # fmt: skip
        {4: 2_265_307},
    ),
    "ESC-Real-XL": Preset(  # the authors' ESC_Real_XL_DF2KOST_GAN
        ESCRealConfig(
            dim=128, pdim=32, kernel_size=13, n_blocks=16, conv_blocks=5, window_size=32, num_heads=8, exp_ratio=2.0
        ),  # fmt: skip
        {4: 13_105_027},
    ),
    "ESC-RIB": Preset(  # the authors' ESCRIB_DFLIP_X{2,3,4} (dslisleedh/SST)
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
    ),
}


def preset_config(name: str, scale: int) -> ESCConfig:
    """The configuration of preset ``name`` at ``scale``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; accepted: {', '.join(PRESETS)}")
    preset = PRESETS[name]
    if scale not in preset.scales:
        raise ValueError(f"preset {name!r} has no x{scale} model; accepted scales: {list(preset.scales)}")
    return preset.config.replace(upscaling_factor=scale)


def detect_variant(config: ESCConfig | ESCLTEConfig) -> str:
    """The published variant (``ESC``, ``ESC-light``, ``ESC-FP``, ``ESC-XL``, ``ESC-Real``,
    ``ESC-Real-XL``, ``ESC-RIB``, ``ESC-LTE``) that ``config`` is, whatever its attention backend, or
    ``"custom"``; a FlashBias layout of rank r adds ``-FB{r}`` (``ESC-FB48``)."""
    if isinstance(config, ESCLTEConfig):
        plain = config.replace(encoder=config.encoder.replace(attn_type="auto", upscaling_factor=2))
        return "ESC-LTE" if plain == ESCLTEConfig() else "custom-LTE"
    plain = config.replace(attn_type="auto", flashbias_rank=None)
    suffix = f"-FB{config.flashbias_rank}" if config.flashbias_rank is not None else ""
    for name, preset in PRESETS.items():
        scale = config.upscaling_factor
        if scale in preset.scales and plain == preset.config.replace(upscaling_factor=scale):
            return name + suffix
    return "custom" + suffix
