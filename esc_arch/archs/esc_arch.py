"""ESC: Emulating Self-attention with Convolution for Efficient Image Super-Resolution.

Dongheon Lee, Seokju Yun, Youngmin Ro, ICCV 2025, arXiv:2503.06671.

Most token mixing is done by ConvAttn: one large kernel shared by every ConvAttn layer of
the network (long range) plus a small 3x3 kernel predicted per image and channel
(instance-dependent weighting). One windowed self-attention per block, over 32x32 windows,
keeps the transformer's representational power.

Three classes, registered in BasicSR's ``ARCH_REGISTRY``:

- :class:`ESC` (ESC, ESC-light, ESC-XL): shared kernel ``plk_filter``, symmetrised under the
  8 symmetries of the square; nearest-neighbour global residual.
- :class:`ESCFP`: the shared kernel decomposed into ``lk_channel`` (1x1) and ``lk_spatial``
  (depthwise k x k); bicubic global residual.
- :class:`ESCReal`: the real-world x4 model, with a second input branch and a
  nearest-upsampling convolutional tail.

Parameter names follow the authors' checkpoints, which load with ``strict=True``.
The file reads top-down: small blocks first, the networks last.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn

from .attention import attention, canonical_attn_type, resolve_backend

__all__ = ["ESC", "ESCFP", "ESCReal", "reflect_pad"]

logger = logging.getLogger("basicsr.esc")


# --------------------------------------------------------------------------- helpers


def _reflect_indices(size: int, pad: int, device: torch.device) -> Tensor:
    """Indices of a length-``size`` axis extended by ``pad`` reflected samples at its end.

    The reflection (about the last sample, without repeating it) continues periodically with
    period ``2 * size - 2`` when ``pad >= size``; a length-1 axis is replicated.
    """
    period = max(2 * size - 2, 1)
    index = torch.arange(size + pad, device=device) % period  # non-negative operands only
    return torch.where(index < size, index, period - index)


def reflect_pad(x: Tensor, bottom: int, right: int) -> Tensor:
    """Reflect-pad ``x`` on the bottom and right, for any pad size.

    Identical to ``F.pad(x, (0, right, 0, bottom), mode='reflect')`` whenever that is defined
    (pad smaller than the size); for larger pads (inputs smaller than half a window) the
    reflection continues periodically instead of failing.
    """
    if bottom == 0 and right == 0:  # statically true when exporting sizes that are window multiples
        return x
    height, width = x.shape[-2:]
    if bottom < height and right < width:
        return F.pad(x, (0, right, 0, bottom), mode="reflect")
    x = x.index_select(-2, _reflect_indices(height, bottom, x.device))
    return x.index_select(-1, _reflect_indices(width, right, x.device))


def symmetrize_kernel(kernel: Tensor) -> Tensor:
    """Mean of the kernel's 8 images under the symmetries of the square (spatial axes)."""
    transposed = kernel.transpose(-1, -2)
    images = [image for k in (kernel, transposed) for image in (k, k.flip(-1), k.flip(-2), k.flip(-1, -2))]
    return torch.stack(images).mean(dim=0)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")


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


def _per_sample_depthwise(x: Tensor, kernels: Tensor) -> Tensor:
    """Depthwise convolution of each sample with its own kernels ``(B, C, k, k)``."""
    batch, channels, height, width = x.shape
    size = kernels.shape[-1]
    out = F.conv2d(
        x.reshape(1, batch * channels, height, width),
        kernels.reshape(batch * channels, 1, size, size),
        padding=size // 2,
        groups=batch * channels,
    )
    return out.view(batch, channels, height, width)


class PLKConv(nn.Module):
    """Shared large kernel plus per-sample dynamic 3x3 depthwise kernels (ESC, ESC-Real)."""

    def __init__(self, *, pdim: int) -> None:
        super().__init__()
        self.pdim = pdim
        self.dwc_proj = _dynamic_kernel_predictor(pdim, pdim // 2)
        nn.init.zeros_(self.dwc_proj[-1].weight)
        nn.init.zeros_(self.dwc_proj[-1].bias)

    def forward(self, x: Tensor, lk_filter: Tensor) -> Tensor:
        dynamic = self.dwc_proj(x).view(x.shape[0], self.pdim, 3, 3)
        return F.conv2d(x, lk_filter, padding=lk_filter.shape[-1] // 2) + _per_sample_depthwise(x, dynamic)

    def extra_repr(self) -> str:
        return f"pdim={self.pdim}"


class DecomposedPLKConv(nn.Module):
    """ESC-FP's ConvAttn: shared 1x1 channel mix, then a per-sample depthwise k x k kernel
    (the shared spatial kernel plus the sample's dynamic 3x3 kernel at its centre)."""

    def __init__(self, *, pdim: int) -> None:
        super().__init__()
        self.pdim = pdim
        self.proj = _dynamic_kernel_predictor(pdim, pdim // 4)

    def forward(self, x: Tensor, lk_channel: Tensor, lk_spatial: Tensor) -> Tensor:
        size = lk_spatial.shape[-1]
        dynamic = self.proj(x).view(x.shape[0], self.pdim, 3, 3)
        border = (size - 3) // 2
        kernels = F.pad(dynamic, (border, border, border, border)) + lk_spatial.view(1, self.pdim, size, size)
        return _per_sample_depthwise(F.conv2d(x, lk_channel), kernels)

    def extra_repr(self) -> str:
        return f"pdim={self.pdim}"


class ConvAttn(nn.Module):
    """Mixes the first ``pdim`` channels with the large and dynamic kernels, then a 1x1 ``aggr``."""

    def __init__(self, *, dim: int, pdim: int, decomposed: bool = False) -> None:
        super().__init__()
        self.pdim = pdim
        self.plk = DecomposedPLKConv(pdim=pdim) if decomposed else PLKConv(pdim=pdim)
        self.aggr = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor, *lk_filters: Tensor) -> Tensor:
        x1, rest = x.split([self.pdim, x.shape[1] - self.pdim], dim=1)
        return self.aggr(torch.cat([self.plk(x1, *lk_filters), rest], dim=1))


class WindowAttention(nn.Module):
    """Multi-head self-attention in non-overlapping windows with a relative position bias.

    The map is reflect-padded on the bottom and right to multiples of the window; tokens are
    row-major inside a window and windows row-major over the padded map.
    """

    def __init__(self, *, dim: int, window_size: int, num_heads: int, attn_type: str) -> None:
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.attn_type = canonical_attn_type(attn_type)
        self.relative_position_bias = nn.Parameter(torch.randn(num_heads, (2 * window_size - 1) ** 2) * 0.001)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.to_out = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        batch, _, height, width = x.shape
        w, heads, c = self.window_size, self.num_heads, self.dim // self.num_heads
        backend = resolve_backend(self.attn_type, x.device)

        # to_qkv is pointwise, so it commutes with the padding: project first, pad less. (Pads are
        # written with non-negative operands only: ONNX Mod truncates like C, Python floors.)
        qkv = reflect_pad(self.to_qkv(x), (w - height % w) % w, (w - width % w) % w)
        rows, cols = qkv.shape[-2] // w, qkv.shape[-1] // w
        qkv = qkv.view(batch, 3, heads, c, rows, w, cols, w)
        qkv = qkv.permute(1, 0, 4, 6, 2, 5, 7, 3).reshape(3, batch * rows * cols, heads, w * w, c)
        out = attention(qkv[0], qkv[1], qkv[2], self.relative_position_bias, w, backend)

        out = out.view(batch, rows, cols, heads, w, w, c).permute(0, 3, 6, 1, 4, 2, 5)
        out = out.reshape(batch, self.dim, rows * w, cols * w)[:, :, :height, :width]
        return self.to_out(out)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}, attn_type={self.attn_type!r}"
        )


class Block(nn.Module):
    """ConvFFN, window attention, ``conv_blocks`` x (ConvFFN + ConvAttn), 3x3 conv; residual."""

    def __init__(
        self,
        *,
        dim: int,
        pdim: int,
        conv_blocks: int,
        window_size: int,
        num_heads: int,
        exp_ratio: float,
        attn_type: str,
        use_ln: bool,
        proj_ratio: float = 2.0,
        decomposed: bool = False,
    ) -> None:
        super().__init__()
        self.ln_proj = LayerNorm(dim)
        self.proj = ConvFFN(dim=dim, ratio=proj_ratio)
        self.ln_attn = LayerNorm(dim)
        self.attn = WindowAttention(dim=dim, window_size=window_size, num_heads=num_heads, attn_type=attn_type)
        self.lns = nn.ModuleList([LayerNorm(dim) if use_ln else nn.Identity() for _ in range(conv_blocks)])
        self.pconvs = nn.ModuleList([ConvAttn(dim=dim, pdim=pdim, decomposed=decomposed) for _ in range(conv_blocks)])
        self.convffns = nn.ModuleList([ConvFFN(dim=dim, ratio=exp_ratio) for _ in range(conv_blocks)])
        self.ln_out = LayerNorm(dim)
        self.conv_out = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: Tensor, *lk_filters: Tensor) -> Tensor:
        skip = x
        x = self.proj(self.ln_proj(x))
        x = x + self.attn(self.ln_attn(x))
        for ln, convffn, pconv in zip(self.lns, self.convffns, self.pconvs, strict=True):
            x = x + pconv(convffn(ln(x)), *lk_filters)
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


class _ESCBase(nn.Module):
    """Constructor checks, input checks and size requirements shared by the three networks."""

    #: Classes whose layer norms in the conv blocks cannot be switched off.
    _always_ln = False

    def _init_hyperparameters(
        self,
        *,
        dim: int,
        pdim: int,
        kernel_size: int,
        n_blocks: int,
        conv_blocks: int,
        window_size: int,
        num_heads: int,
        upscaling_factor: int,
        exp_ratio: float,
        attn_type: str,
        use_ln: bool,
    ) -> None:
        _check_positive(
            dim=dim,
            pdim=pdim,
            kernel_size=kernel_size,
            n_blocks=n_blocks,
            conv_blocks=conv_blocks,
            window_size=window_size,
            num_heads=num_heads,
            upscaling_factor=upscaling_factor,
        )
        if pdim > dim:
            raise ValueError(f"pdim must be at most dim={dim}; got pdim={pdim}")
        if dim % num_heads:
            raise ValueError(f"dim must be divisible by num_heads={num_heads}; got dim={dim}")
        if kernel_size % 2 == 0 or kernel_size < 3:
            raise ValueError(f"kernel_size must be odd and at least 3; got {kernel_size}")
        if not exp_ratio > 0:
            raise ValueError(f"exp_ratio must be positive; got {exp_ratio!r}")
        if self._always_ln and not use_ln:
            raise ValueError(f"use_ln must be True for {type(self).__name__} (its conv blocks always normalise)")
        self.dim = dim
        self.pdim = pdim
        self.kernel_size = kernel_size
        self.n_blocks = n_blocks
        self.conv_blocks = conv_blocks
        self.window_size = window_size
        self.num_heads = num_heads
        self.upscaling_factor = upscaling_factor
        self.exp_ratio = exp_ratio
        self.attn_type = canonical_attn_type(attn_type)
        self.use_ln = use_ln

    @property
    def scale(self) -> int:
        """The upscaling factor (output size = ``scale`` x input size)."""
        return self.upscaling_factor

    @property
    def size_multiple(self) -> int:
        """Inputs of any size work; multiples of this (the window) avoid internal padding and
        match the paper's test protocol when the whole image is padded to it."""
        return self.window_size

    def _make_blocks(self, *, use_ln: bool, proj_ratio: float = 2.0, decomposed: bool = False) -> nn.ModuleList:
        return nn.ModuleList(
            Block(
                dim=self.dim,
                pdim=self.pdim,
                conv_blocks=self.conv_blocks,
                window_size=self.window_size,
                num_heads=self.num_heads,
                exp_ratio=self.exp_ratio,
                attn_type=self.attn_type,
                use_ln=use_ln,
                proj_ratio=proj_ratio,
                decomposed=decomposed,
            )
            for _ in range(self.n_blocks)
        )

    def set_attn_type(self, attn_type: str) -> None:
        """Switch the attention backend of every block (no effect on parameters)."""
        self.attn_type = canonical_attn_type(attn_type)
        for module in self.modules():
            if isinstance(module, WindowAttention):
                module.attn_type = self.attn_type

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, pdim={self.pdim}, kernel_size={self.kernel_size}, n_blocks={self.n_blocks}, "
            f"conv_blocks={self.conv_blocks}, window_size={self.window_size}, num_heads={self.num_heads}, "
            f"upscaling_factor={self.upscaling_factor}, exp_ratio={self.exp_ratio}, "
            f"attn_type={self.attn_type!r}, use_ln={self.use_ln}"
        )


class _SymmetricKernelMixin:
    """The shared ``plk_filter``, symmetrised at every call unless folded for deployment."""

    plk_filter: nn.Parameter
    _plk_folded: bool

    def _init_plk_filter(self, pdim: int, kernel_size: int) -> None:
        self.plk_filter = nn.Parameter(torch.empty(pdim, pdim, kernel_size, kernel_size))
        nn.init.orthogonal_(self.plk_filter)
        self._plk_folded = False

    def shared_kernel(self) -> Tensor:
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


def _to_img_for_scale(state_dict: dict, prefix: str, scale: int) -> None:
    """Convert an x``a`` ``to_img`` conv found in ``state_dict`` to x``scale`` in place.

    For every (input channel, kernel row, kernel column) and colour, the ``a x a`` grid of
    sub-pixel values is resized to ``scale x scale`` with bilinear interpolation
    (``align_corners=False``). BasicSR's non-strict ``load_network`` renames mismatched keys
    to ``<key>.ignore``; those are converted too.
    """
    for name in ("weight", "bias"):
        key = f"{prefix}to_img.{name}"
        if key not in state_dict and f"{key}.ignore" in state_dict:
            state_dict[key] = state_dict.pop(f"{key}.ignore")
        tensor = state_dict.get(key)
        if tensor is None or tensor.shape[0] == 3 * scale * scale:
            continue
        source = round((tensor.shape[0] / 3) ** 0.5)
        if 3 * source * source != tensor.shape[0]:
            continue  # not a pixel-shuffle head: leave it to load_state_dict to report
        grid = tensor.reshape(3, source, source, -1).permute(0, 3, 1, 2).float()  # (3, rest, a, a)
        grid = F.interpolate(grid, size=(scale, scale), mode="bilinear", align_corners=False)
        converted = grid.permute(0, 2, 3, 1).reshape(3 * scale * scale, *tensor.shape[1:]).to(tensor.dtype)
        state_dict[key] = converted
        if name == "weight":
            logger.info(f"Converted {key} from x{source} to x{scale} (bilinear resize of the sub-pixel grid).")


class _ScaleTransferMixin:
    """Lets an x2 state dict load into an x3/x4 network (``load_state_dict``, BasicSR's
    ``load_network``), converting ``to_img`` as the paper's x3/x4 training does."""

    upscaling_factor: int

    def _register_scale_transfer(self) -> None:
        self.register_load_state_dict_pre_hook(self._convert_to_img)

    def _convert_to_img(self, module, state_dict, prefix, *args) -> None:
        _to_img_for_scale(state_dict, prefix, self.upscaling_factor)


@ARCH_REGISTRY.register()
class ESC(_SymmetricKernelMixin, _ScaleTransferMixin, _ESCBase):
    """ESC, ESC-light and ESC-XL (see :mod:`esc_arch.presets`)."""

    def __init__(
        self,
        *,
        dim: int = 64,
        pdim: int = 16,
        kernel_size: int = 13,
        n_blocks: int = 5,
        conv_blocks: int = 5,
        window_size: int = 32,
        num_heads: int = 4,
        upscaling_factor: int = 2,
        exp_ratio: float = 2.0,
        attn_type: str = "auto",
        use_ln: bool = False,
    ) -> None:
        super().__init__()
        self._init_hyperparameters(
            dim=dim,
            pdim=pdim,
            kernel_size=kernel_size,
            n_blocks=n_blocks,
            conv_blocks=conv_blocks,
            window_size=window_size,
            num_heads=num_heads,
            upscaling_factor=upscaling_factor,
            exp_ratio=exp_ratio,
            attn_type=attn_type,
            use_ln=use_ln,
        )
        self._init_plk_filter(pdim, kernel_size)
        self.proj = nn.Conv2d(3, dim, 3, padding=1)
        self.blocks = self._make_blocks(use_ln=use_ln)
        self.last = nn.Conv2d(dim, dim, 3, padding=1)
        self.to_img = nn.Conv2d(dim, 3 * upscaling_factor**2, 3, padding=1)
        self._register_scale_transfer()

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x)
        kernel = self.shared_kernel()
        feat = self.proj(x)
        skip = feat
        for block in self.blocks:
            feat = block(feat, kernel)
        feat = self.last(feat) + skip
        out = self.to_img(feat) + x.repeat_interleave(self.upscaling_factor**2, dim=1)
        return F.pixel_shuffle(out, self.upscaling_factor)


@ARCH_REGISTRY.register()
class ESCFP(_ScaleTransferMixin, _ESCBase):
    """ESC-FP: decomposed shared kernel, layer norms everywhere, bicubic global residual."""

    _always_ln = True

    def __init__(
        self,
        *,
        dim: int = 48,
        pdim: int = 16,
        kernel_size: int = 13,
        n_blocks: int = 5,
        conv_blocks: int = 5,
        window_size: int = 32,
        num_heads: int = 3,
        upscaling_factor: int = 2,
        exp_ratio: float = 2.0,
        attn_type: str = "auto",
        use_ln: bool = True,
    ) -> None:
        super().__init__()
        self._init_hyperparameters(
            dim=dim,
            pdim=pdim,
            kernel_size=kernel_size,
            n_blocks=n_blocks,
            conv_blocks=conv_blocks,
            window_size=window_size,
            num_heads=num_heads,
            upscaling_factor=upscaling_factor,
            exp_ratio=exp_ratio,
            attn_type=attn_type,
            use_ln=use_ln,
        )
        self.lk_channel = nn.Parameter(torch.empty(pdim, pdim, 1, 1))
        self.lk_spatial = nn.Parameter(torch.empty(pdim, 1, kernel_size, kernel_size))
        nn.init.orthogonal_(self.lk_channel)
        nn.init.trunc_normal_(self.lk_spatial, std=0.02)
        self.proj = nn.Conv2d(3, dim, 3, padding=1)
        self.blocks = self._make_blocks(use_ln=True, proj_ratio=1.5, decomposed=True)
        self.ln_last = LayerNorm(dim)
        self.last = nn.Conv2d(dim, dim, 3, padding=1)
        self.to_img = nn.Conv2d(dim, 3 * upscaling_factor**2, 3, padding=1)
        self._register_scale_transfer()

    def reparameterize(self) -> ESCFP:
        """Nothing to fold: ESC-FP's shared kernels are used as stored. Returns the network."""
        return self

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x)
        feat = self.proj(x)
        skip = feat
        for block in self.blocks:
            feat = block(feat, self.lk_channel, self.lk_spatial)
        feat = self.last(self.ln_last(feat)) + skip
        out = F.pixel_shuffle(self.to_img(feat), self.upscaling_factor)
        return out + F.interpolate(x, scale_factor=self.upscaling_factor, mode="bicubic", align_corners=False)


@ARCH_REGISTRY.register()
class ESCReal(_SymmetricKernelMixin, _ESCBase):
    """ESC-Real: the real-world x4 model (reflect-padded input branch, upsampling tail)."""

    _always_ln = True

    def __init__(
        self,
        *,
        dim: int = 64,
        pdim: int = 16,
        kernel_size: int = 13,
        n_blocks: int = 10,
        conv_blocks: int = 5,
        window_size: int = 32,
        num_heads: int = 4,
        upscaling_factor: int = 4,
        exp_ratio: float = 2.0,
        attn_type: str = "auto",
        use_ln: bool = True,
    ) -> None:
        super().__init__()
        if upscaling_factor != 4:
            raise ValueError(
                f"upscaling_factor must be 4 for ESCReal (its tail is fixed at x4); got {upscaling_factor!r}"
            )
        self._init_hyperparameters(
            dim=dim,
            pdim=pdim,
            kernel_size=kernel_size,
            n_blocks=n_blocks,
            conv_blocks=conv_blocks,
            window_size=window_size,
            num_heads=num_heads,
            upscaling_factor=upscaling_factor,
            exp_ratio=exp_ratio,
            attn_type=attn_type,
            use_ln=use_ln,
        )
        self._init_plk_filter(pdim, kernel_size)
        self.proj = nn.Conv2d(3, dim, 3, padding=1)
        self.blocks = self._make_blocks(use_ln=True)
        self.last = nn.Conv2d(dim, dim, 3, padding=1)
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
        self.skip = nn.Sequential(
            nn.Conv2d(3, dim * 2, 1),
            ReflectConv2d(dim * 2, dim * 2, 7, padding=3, groups=dim * 2, padding_mode="reflect"),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(dim * 2, dim, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x)
        kernel = self.shared_kernel()
        feat = self.proj(x)
        skip = feat
        for block in self.blocks:
            feat = block(feat, kernel)
        feat = self.last(feat) + skip + self.skip(x)
        return self.to_img(feat)
