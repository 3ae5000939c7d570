"""ESC: Emulating Self-attention with Convolution for Efficient Image Super-Resolution.

Dongheon Lee, Seokju Yun, Youngmin Ro, ICCV 2025, arXiv:2503.06671.

Most token mixing is done by ConvAttn: one large kernel shared by every ConvAttn layer of
the network (long range) plus a small 3x3 kernel predicted per image and channel
(instance-dependent weighting). One windowed self-attention per block, over 32x32 windows,
keeps the transformer's representational power.

Two classes here, each configured by one typed, keyword-only configuration
(:mod:`esc_arch.config`):

- :class:`ESC` (ESC, ESC-light, ESC-XL): shared kernel ``plk_filter``, symmetrised under the
  8 symmetries of the square; nearest-neighbour global residual.
- :class:`ESCFP`: the shared kernel decomposed into ``lk_channel`` (1x1) and ``lk_spatial``
  (depthwise k x k); bicubic global residual.
- the real-world family (ESC-Real, ESCRealM) builds on these blocks in
  :mod:`esc_arch.archs.esc_real_arch`.

Parameter names follow the authors' checkpoints, which load with ``strict=True``; converting
other layouts (another scale, prefixes) is :func:`esc_arch.convert_state_dict`'s job, never a
load hook's. Plain torch: nothing here imports BasicSR (:mod:`esc_arch.basicsr_plugin`
registers these classes). The file reads top-down: small blocks first, the networks last.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Keywords, canonical_attn_type, default_flashbias_rank, positive_int
from .attention import attention, resolve_backend
from .position_bias import BiasParameters


@dataclass(frozen=True, kw_only=True)
class ESCConfig(Keywords):
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
            positive_int(name, getattr(self, name))
        positive_int("upscaling_factor", self.upscaling_factor)
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
            positive_int("flashbias_rank", self.flashbias_rank)
        family = self.family()
        for name, (value, reason) in self.FIXED.items():
            if getattr(self, name) != value:
                raise ValueError(f"{name} must be {value!r} for {family} ({reason}); got {getattr(self, name)!r}")
        self._check_family()

    def _check_family(self) -> None:
        """Rules of one family beyond :attr:`FIXED` (none for ESC)."""

    @classmethod
    def family(cls) -> str:
        """The network class this configures (``ESC``, ``ESCFP``, ``ESCReal``, ``ESCRealM``, ``ESCRIB``)."""
        return cls.__name__.removesuffix("Config")

    def plain(self) -> ESCConfig:
        """The published network this configures, without the choices that change no weight's
        meaning: the attention backend and the FlashBias layout."""
        return self.replace(attn_type="auto", flashbias_rank=None)


@dataclass(frozen=True, kw_only=True)
class ESCFPConfig(ESCConfig):
    """ESC-FP: the hyper-parameters of :class:`esc_arch.ESCFP` (decomposed shared kernel)."""

    dim: int = 48
    num_heads: int = 3
    use_ln: bool = True

    FIXED: ClassVar[dict[str, tuple[Any, str]]] = {"use_ln": (True, "its conv blocks always normalise")}


__all__ = [
    "DYNAMIC_KERNEL_FORMS",
    "ESC",
    "ESCFP",
    "pad_to_multiple",
    "reflect_pad",
    "set_dynamic_kernels",
    "symmetrize_kernel",
]

logger = logging.getLogger("basicsr.esc")


# --------------------------------------------------------------------------- helpers


def _reflect_indices(size: int, pad: int, device: torch.device) -> Tensor:
    """Indices of a length-``size`` axis extended by ``pad`` reflected samples at its end.

    The reflection (about the last sample, without repeating it) continues periodically with
    period ``2 * size - 2`` when ``pad >= size``; a length-1 axis is replicated.
    """
    index = torch.arange(size + pad, device=device)
    # the period as a tensor: an exported graph computes it from the dynamic size
    period = index.new_ones(()) * torch.sym_max(2 * size - 2, 1)
    index = index % period  # non-negative operands only
    return torch.where(index < size, index, period - index)


def _known_zero(value) -> bool:
    """``value == 0`` for an int; for a symbolic size (an export with dynamic shapes), whether
    it is zero for every size the export allows (never a guard on the sizes)."""
    if isinstance(value, torch.SymInt):
        from torch.fx.experimental.symbolic_shapes import statically_known_true

        return statically_known_true(value == 0)
    return value == 0


def reflect_pad(x: Tensor, bottom: int, right: int) -> Tensor:
    """Reflect-pad ``x`` on the bottom and right, for any pad size.

    Identical to ``F.pad(x, (0, right, 0, bottom), mode='reflect')`` whenever that is defined
    (pad smaller than the size); for larger pads (inputs smaller than half a window) the
    reflection continues periodically instead of failing. With symbolic sizes (an ONNX export
    with dynamic height and width) it is one index gather per axis, valid for every size.
    """
    if _known_zero(bottom) and _known_zero(right):  # also when exporting sizes that are window multiples
        return x
    height, width = x.shape[-2:]
    symbolic = any(isinstance(v, torch.SymInt) for v in (bottom, right, height, width))
    if not symbolic and bottom < height and right < width:
        return F.pad(x, (0, right, 0, bottom), mode="reflect")
    x = x.index_select(-2, _reflect_indices(height, bottom, x.device))
    return x.index_select(-1, _reflect_indices(width, right, x.device))


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """``x`` reflect-padded on the bottom and right (:func:`reflect_pad`) to multiples of
    ``multiple`` in height and width. (The pads are written with non-negative operands only:
    ONNX's Mod truncates like C where Python floors.)"""
    height, width = x.shape[-2:]
    return reflect_pad(x, (multiple - height % multiple) % multiple, (multiple - width % multiple) % multiple)


def symmetrize_kernel(kernel: Tensor) -> Tensor:
    """Mean of the kernel's 8 images under the symmetries of the square (spatial axes)."""
    transposed = kernel.transpose(-1, -2)
    images = [image for k in (kernel, transposed) for image in (k, k.flip(-1), k.flip(-2), k.flip(-1, -2))]
    return torch.stack(images).mean(dim=0)


def _check_input(x: Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"input must be a 4-D tensor (batch, 3, height, width); got shape {tuple(x.shape)}")
    if x.shape[1] != 3:
        raise ValueError(f"input must have 3 (RGB) channels; got {x.shape[1]} in shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"input must not be empty; got shape {tuple(x.shape)}")


# --------------------------------------------------------------------------- blocks


class LayerNorm(nn.Module):
    """LayerNorm over the channel axis of a ``(B, C, H, W)`` map (eps 1e-6)."""

    def __init__(self, dim: int, *, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.weight.shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class ConvFFN(nn.Module):
    """1x1 expansion, GELU, residual 3x3 depthwise convolution with GELU, 1x1 projection."""

    def __init__(self, *, dim: int, ratio: float) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.proj = nn.Conv2d(dim, hidden, 1)
        self.dwc = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.aggr = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.gelu(self.proj(x))
        x = F.gelu(self.dwc(x)) + x
        return self.aggr(x)


def _dynamic_kernel_predictor(pdim: int, hidden: int) -> nn.Sequential:
    """Global pooling and a two-layer 1x1 MLP giving one 3x3 kernel per channel."""
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(1),
        nn.Conv2d(pdim, hidden, 1),
        nn.GELU(),
        nn.Conv2d(hidden, pdim * 9, 1),
    )


#: How the per-sample dynamic kernels are applied (:func:`set_dynamic_kernels`): ``grouped``, one
#: grouped convolution with the batch folded into the groups (the fastest in eager torch; its
#: group count depends on the batch, so an ONNX graph of it has a fixed batch), or the
#: batch-free forms, whose ONNX attributes do not depend on the batch: ``shifts`` (the sum of the
#: k*k shifted maps, each times its kernel tap) and ``unfold`` (a fixed one-hot depthwise
#: convolution gathers the k*k taps, multiplied by the kernels and summed).
DYNAMIC_KERNEL_FORMS = ("grouped", "shifts", "unfold")


def _per_sample_depthwise(x: Tensor, kernels: Tensor, form: str = "grouped") -> Tensor:
    """Depthwise convolution of each sample with its own kernels ``(B, C, k, k)`` (zero padding
    ``k // 2``), in one of :data:`DYNAMIC_KERNEL_FORMS`."""
    batch, channels, height, width = x.shape
    size = kernels.shape[-1]
    if form == "shifts":
        pad = size // 2
        padded = F.pad(x, (pad, pad, pad, pad))
        taps = kernels.unsqueeze(-1).unsqueeze(-1)  # (B, C, k, k, 1, 1)
        out = None
        for i in range(size):
            for j in range(size):
                term = padded[:, :, i : i + height, j : j + width] * taps[:, :, i, j]
                out = term if out is None else out + term
        return out
    if form == "unfold":
        one_hot = torch.eye(size * size, dtype=x.dtype, device=x.device).view(size * size, 1, size, size)
        taps = F.conv2d(x, one_hot.repeat(channels, 1, 1, 1), padding=size // 2, groups=channels)
        taps = taps.view(batch, channels, size * size, height, width)
        return (taps * kernels.reshape(batch, channels, size * size, 1, 1)).sum(dim=2)
    out = F.conv2d(
        x.reshape(1, batch * channels, height, width),
        kernels.reshape(batch * channels, 1, size, size),
        padding=size // 2,
        groups=batch * channels,
    )
    return out.view(batch, channels, height, width)


def set_dynamic_kernels(net: nn.Module, form: str) -> nn.Module:
    """Apply the per-sample dynamic kernels of every ConvAttn of ``net`` in ``form`` (one of
    :data:`DYNAMIC_KERNEL_FORMS`; every form gives the same output within float rounding; a
    network is built ``grouped``). No parameter changes. Returns ``net``."""
    if form not in DYNAMIC_KERNEL_FORMS:
        raise ValueError(f"dynamic kernel form must be one of {', '.join(DYNAMIC_KERNEL_FORMS)}; got {form!r}")
    for module in net.modules():
        if isinstance(module, PLKConv | DecomposedPLKConv):
            module.dynamic_kernels = form
    return net


class PLKConv(nn.Module):
    """Shared large kernel plus per-sample dynamic 3x3 depthwise kernels (ESC, ESC-Real)."""

    def __init__(self, *, pdim: int) -> None:
        super().__init__()
        self.pdim = pdim
        self.dynamic_kernels = "grouped"  #: the form of the dynamic kernels (set_dynamic_kernels)
        self.dwc_proj = _dynamic_kernel_predictor(pdim, pdim // 2)
        nn.init.zeros_(self.dwc_proj[-1].weight)
        nn.init.zeros_(self.dwc_proj[-1].bias)

    def forward(self, x: Tensor, shared_kernel: Tensor) -> Tensor:
        dynamic = self.dwc_proj(x).view(x.shape[0], self.pdim, 3, 3)
        large = F.conv2d(x, shared_kernel, padding=shared_kernel.shape[-1] // 2)
        return large + _per_sample_depthwise(x, dynamic, self.dynamic_kernels)

    def extra_repr(self) -> str:
        return f"pdim={self.pdim}"


class DecomposedPLKConv(nn.Module):
    """ESC-FP's ConvAttn: shared 1x1 channel mix, then a per-sample depthwise k x k kernel
    (the shared spatial kernel plus the sample's dynamic 3x3 kernel at its centre)."""

    def __init__(self, *, pdim: int) -> None:
        super().__init__()
        self.pdim = pdim
        self.dynamic_kernels = "grouped"  #: the form of the dynamic kernels (set_dynamic_kernels)
        self.proj = _dynamic_kernel_predictor(pdim, pdim // 4)

    def forward(self, x: Tensor, shared_kernel: tuple[Tensor, Tensor]) -> Tensor:
        lk_channel, lk_spatial = shared_kernel
        size = lk_spatial.shape[-1]
        dynamic = self.proj(x).view(x.shape[0], self.pdim, 3, 3)
        if self.dynamic_kernels != "grouped":  # the shared k x k part is one fixed depthwise convolution
            x = F.conv2d(x, lk_channel)
            shared = F.conv2d(x, lk_spatial, padding=size // 2, groups=self.pdim)
            return shared + _per_sample_depthwise(x, dynamic, self.dynamic_kernels)
        border = (size - 3) // 2
        kernels = F.pad(dynamic, (border, border, border, border)) + lk_spatial.view(1, self.pdim, size, size)
        return _per_sample_depthwise(F.conv2d(x, lk_channel), kernels)

    def extra_repr(self) -> str:
        return f"pdim={self.pdim}"


#: The network's shared large kernel as its ConvAttn layers receive it: ESC's symmetrised
#: ``plk_filter``, or ESC-FP's ``(lk_channel, lk_spatial)`` pair.
SharedKernel = Tensor | tuple[Tensor, Tensor]


class ConvAttn(nn.Module):
    """Mixes the first ``pdim`` channels with the large and dynamic kernels, then a 1x1 ``aggr``."""

    def __init__(self, *, dim: int, pdim: int, plk: type[nn.Module] = PLKConv) -> None:
        super().__init__()
        self.pdim = pdim
        self.plk = plk(pdim=pdim)
        self.aggr = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor, shared_kernel: SharedKernel) -> Tensor:
        x1, rest = x.split([self.pdim, x.shape[1] - self.pdim], dim=1)
        return self.aggr(torch.cat([self.plk(x1, shared_kernel), rest], dim=1))


class WindowAttention(nn.Module):
    """Multi-head self-attention in non-overlapping windows with a relative position bias.

    The map is reflect-padded on the bottom and right to multiples of the window; tokens are
    row-major inside a window and windows row-major over the padded map. The bias is held as
    the ``(heads, (2w-1)^2)`` relative-position table, or, with ``flashbias_rank`` r, as the
    FlashBias factors ``flashbias_q``, ``flashbias_k`` ``(heads, w*w, r)`` (bias = q_f k_f^T).
    The backend is an argument of the call: the network passes its configuration's ``attn_type``.
    """

    def __init__(self, *, dim: int, window_size: int, num_heads: int, flashbias_rank: int | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self._init_bias(flashbias_rank)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.to_out = nn.Conv2d(dim, dim, 1)

    def _init_bias(self, flashbias_rank: int | None) -> None:
        num_heads, window_size = self.num_heads, self.window_size
        if flashbias_rank is None:
            self.relative_position_bias = nn.Parameter(torch.zeros(num_heads, (2 * window_size - 1) ** 2))
            if self.relative_position_bias.device.type != "meta":  # (load_model's shape check on the meta
                nn.init.normal_(self.relative_position_bias, std=0.001)  # device: random init there imports dynamo)
        else:  # zero factors: no bias until trained or converted from a table (as the authors)
            self.flashbias_q = nn.Parameter(torch.zeros(num_heads, window_size * window_size, flashbias_rank))
            self.flashbias_k = nn.Parameter(torch.zeros(num_heads, window_size * window_size, flashbias_rank))

    def forward(self, x: Tensor, attn_type: str) -> Tensor:
        return self.to_out(self.attend(x, attn_type))

    def backend(self, attn_type: str, device: torch.device, *, training: bool) -> str:
        """The kernel that runs for ``attn_type`` here (see :func:`resolve_backend`)."""
        return resolve_backend(attn_type, device, training=training)

    def attend(self, x: Tensor, attn_type: str) -> Tensor:
        """The heads' attention outputs merged back into a ``(B, dim, H, W)`` map (before ``to_out``)."""
        batch, _, height, width = x.shape
        w, heads, c = self.window_size, self.num_heads, self.dim // self.num_heads
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or self.to_qkv.weight.requires_grad)
        backend = self.backend(attn_type, x.device, training=needs_grad)

        # to_qkv is pointwise, so it commutes with the padding: project first, pad less
        qkv = pad_to_multiple(self.to_qkv(x), w)
        rows, cols = qkv.shape[-2] // w, qkv.shape[-1] // w
        qkv = qkv.view(batch, 3, heads, c, rows, w, cols, w)
        qkv = qkv.permute(1, 0, 4, 6, 2, 5, 7, 3).reshape(3, batch * rows * cols, heads, w * w, c)
        out = attention(qkv[0], qkv[1], qkv[2], self.bias_parameters(), w, backend)

        out = out.view(batch, rows, cols, heads, w, w, c)
        out = out.permute(0, 3, 6, 1, 4, 2, 5).reshape(batch, self.dim, rows * w, cols * w)
        return out[:, :, :height, :width]

    def bias_parameters(self) -> BiasParameters:
        """The relative-position table, or the FlashBias factor pair."""
        if hasattr(self, "flashbias_q"):
            return self.flashbias_q, self.flashbias_k
        return self.relative_position_bias

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}"


class Block(nn.Module):
    """ConvFFN, window attention, ``conv_blocks`` x (ConvFFN + ConvAttn), 3x3 conv; residual."""

    def __init__(self, config: ESCConfig, *, proj_ratio: float, plk: type[nn.Module], attention: nn.Module) -> None:
        super().__init__()
        dim, n = config.dim, config.conv_blocks
        self.ln_proj = LayerNorm(dim)
        self.proj = ConvFFN(dim=dim, ratio=proj_ratio)
        self.ln_attn = LayerNorm(dim)
        self.attn = attention
        self.lns = nn.ModuleList([LayerNorm(dim) if config.use_ln else nn.Identity() for _ in range(n)])
        self.pconvs = nn.ModuleList([ConvAttn(dim=dim, pdim=config.pdim, plk=plk) for _ in range(n)])
        self.convffns = nn.ModuleList([ConvFFN(dim=dim, ratio=config.exp_ratio) for _ in range(n)])
        self.ln_out = LayerNorm(dim)
        self.conv_out = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: Tensor, shared_kernel: SharedKernel, attn_type: str) -> Tensor:
        skip = x
        x = self.proj(self.ln_proj(x))
        x = x + self.attn(self.ln_attn(x), attn_type)
        for ln, convffn, pconv in zip(self.lns, self.convffns, self.pconvs, strict=True):
            x = x + pconv(convffn(ln(x)), shared_kernel)
        return self.conv_out(self.ln_out(x)) + skip


class ReflectConv2d(nn.Conv2d):
    """``nn.Conv2d`` with reflect padding that also works on inputs smaller than the padding
    (the reflection then continues periodically; identical to ``padding_mode='reflect'``
    wherever that is defined)."""

    def forward(self, x: Tensor) -> Tensor:
        ph, pw = self.padding
        if ph < x.shape[-2] and pw < x.shape[-1]:
            return super().forward(x)
        x = reflect_pad(reflect_pad(x.flip(-2, -1), ph, pw).flip(-2, -1), ph, pw)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


# --------------------------------------------------------------------------- networks


class _ESCNetwork(nn.Module):
    """What the three networks share: the configuration, the stem and the blocks, the shared
    large kernel (ESC's symmetrised ``plk_filter`` unless a class says otherwise) and the
    attention backend. Each class adds its tail (:meth:`_init_tail`, :meth:`_tail`)."""

    Config: ClassVar[type[ESCConfig]] = ESCConfig
    PROJ_RATIO: ClassVar[float] = 2.0  #: expansion of each block's first ConvFFN
    PLK: ClassVar[type[nn.Module]] = PLKConv  #: the ConvAttn kernel module

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        fields = dataclasses.fields(cls.Config)
        cls.__signature__ = inspect.Signature(
            [inspect.Parameter("config", inspect.Parameter.POSITIONAL_ONLY, default=None)]
            + [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default) for f in fields]
        )

    def __init__(self, config: ESCConfig | None = None, /, **keywords) -> None:
        super().__init__()
        name = type(self).__name__
        if config is None:
            config = self.Config.from_keywords(**keywords)
        elif keywords:
            raise TypeError(f"{name}: pass a {self.Config.__name__} or keywords, not both")
        elif type(config) is not self.Config:
            raise TypeError(f"{name} takes a {self.Config.__name__}; got {type(config).__name__}")
        self.config = config
        self._init_shared_kernel()
        self.proj = self._make_proj()
        self.blocks = nn.ModuleList(
            Block(config, proj_ratio=self.PROJ_RATIO, plk=self.PLK, attention=self._make_attention())
            for _ in range(config.n_blocks)
        )
        self._init_tail()

    def _window_keywords(self) -> dict[str, int]:
        """What every window attention takes from the configuration: ``dim``, ``window_size``, ``num_heads``."""
        config = self.config
        return {"dim": config.dim, "window_size": config.window_size, "num_heads": config.num_heads}

    def _make_attention(self) -> nn.Module:
        """One block's window attention (relative-position table or FlashBias factors)."""
        return WindowAttention(**self._window_keywords(), flashbias_rank=self.config.flashbias_rank)

    # ------------------------------------------------------------------ the shared large kernel
    def _init_shared_kernel(self) -> None:
        pdim, size = self.config.pdim, self.config.kernel_size
        self.plk_filter = nn.Parameter(torch.empty(pdim, pdim, size, size))
        nn.init.orthogonal_(self.plk_filter)
        self._plk_folded = False

    def shared_kernel(self) -> SharedKernel:
        """The kernel every ConvAttn layer uses: ``plk_filter`` symmetrised under the 8
        symmetries of the square (once folded by :meth:`reparameterize`, as stored)."""
        return self.plk_filter if self._plk_folded else symmetrize_kernel(self.plk_filter)

    @torch.no_grad()
    def reparameterize(self):
        """Fold the kernel symmetrisation into ``plk_filter`` once, for deployment.

        Outputs are unchanged (the stored kernel becomes its own symmetrisation, which the
        forward pass then skips). Further training would break the symmetry, so call this on
        a trained network only. Returns the network.
        """
        if not self._plk_folded:
            self.plk_filter.copy_(symmetrize_kernel(self.plk_filter))
            self._plk_folded = True
        return self

    # ------------------------------------------------------------------ forward
    def _make_proj(self) -> nn.Module:
        """The stem: a 3x3 convolution from RGB to ``dim`` channels."""
        return nn.Conv2d(3, self.config.dim, 3, padding=1)

    def _init_tail(self) -> None:
        raise NotImplementedError

    def _tail(self, x: Tensor, feat: Tensor, skip: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x)
        shared_kernel, attn_type = self.shared_kernel(), self.config.attn_type
        feat = self.proj(x)
        skip = feat
        for block in self.blocks:
            feat = block(feat, shared_kernel, attn_type)
        return self._tail(x, feat, skip)

    # ------------------------------------------------------------------ properties
    @property
    def upscaling_factor(self) -> int:
        """The upscaling factor (output size = ``scale`` x input size); also ``scale``."""
        return self.config.upscaling_factor

    scale = upscaling_factor

    @property
    def size_multiple(self) -> int:
        """Inputs of any size work; multiples of this (the window) avoid internal padding and
        match the paper's test protocol when the whole image is padded to it."""
        return self.config.window_size

    @property
    def attn_type(self) -> str:
        return self.config.attn_type

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """The constructor keywords (spandrel's ``store_hyperparameters`` convention):
        ``type(net)(**net.hyperparameters)`` builds the same network again."""
        return self.config.as_dict()

    def set_attn_type(self, attn_type: str) -> None:
        """Switch the attention backend of every block (no effect on parameters): the
        configuration's ``attn_type`` is the one every block runs."""
        self.config = self.config.replace(attn_type=attn_type)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config.as_dict().items())


class ESC(_ESCNetwork):
    """ESC, ESC-light and ESC-XL (presets in :mod:`esc_arch.config`): nearest-neighbour global
    residual, pixel-shuffle tail."""

    def _init_tail(self) -> None:
        dim, scale = self.config.dim, self.config.upscaling_factor
        self.last = nn.Conv2d(dim, dim, 3, padding=1)
        self.to_img = nn.Conv2d(dim, 3 * scale**2, 3, padding=1)

    def _tail(self, x: Tensor, feat: Tensor, skip: Tensor) -> Tensor:
        scale = self.config.upscaling_factor
        feat = self.last(feat) + skip
        out = self.to_img(feat) + x.repeat_interleave(scale**2, dim=1)
        return F.pixel_shuffle(out, scale)


class ESCFP(_ESCNetwork):
    """ESC-FP: the shared kernel decomposed into ``lk_channel`` (1x1) and ``lk_spatial``
    (depthwise), layer norms everywhere, bicubic global residual."""

    Config = ESCFPConfig
    PROJ_RATIO = 1.5
    PLK = DecomposedPLKConv

    def _init_shared_kernel(self) -> None:
        pdim, size = self.config.pdim, self.config.kernel_size
        self.lk_channel = nn.Parameter(torch.empty(pdim, pdim, 1, 1))
        self.lk_spatial = nn.Parameter(torch.empty(pdim, 1, size, size))
        nn.init.orthogonal_(self.lk_channel)
        nn.init.trunc_normal_(self.lk_spatial, std=0.02)

    def shared_kernel(self) -> SharedKernel:
        return self.lk_channel, self.lk_spatial

    def reparameterize(self) -> ESCFP:
        """Nothing to fold: ESC-FP's shared kernels are used as stored. Returns the network."""
        return self

    def _init_tail(self) -> None:
        dim, scale = self.config.dim, self.config.upscaling_factor
        self.ln_last = LayerNorm(dim)
        self.last = nn.Conv2d(dim, dim, 3, padding=1)
        self.to_img = nn.Conv2d(dim, 3 * scale**2, 3, padding=1)

    def _tail(self, x: Tensor, feat: Tensor, skip: Tensor) -> Tensor:
        scale = self.config.upscaling_factor
        feat = self.last(self.ln_last(feat)) + skip
        out = F.pixel_shuffle(self.to_img(feat), scale)
        return out + F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
