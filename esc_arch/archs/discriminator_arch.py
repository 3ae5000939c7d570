"""The authors' discriminator for ESC-Real's GAN stage: :class:`DeepUNetDiscriminatorSN`.

Real-ESRGAN's U-Net discriminator with spectral normalisation, plus two global
self-attentions without position encoding: ``sa2`` on the deepest (1/8) features, 8 heads, and
``sa1`` on the 1/4 features, 4 heads, whose output replaces that level's skip connection.
Each self-attention is a bias-free 1x1 ``to_qkv`` and a spectrally normalised 1x1 ``to_out``.
The authors force a bf16 CUDA flash kernel; here the attention runs in the input's dtype and
autocast decides the precision. It has no bias, so ``attn_type`` (any of
:data:`esc_arch.config.ATTN_TYPES`) chooses between two computations only: ``naive`` (explicit
scores) and, for every other value, ``F.scaled_dot_product_attention`` (fused where torch has a
kernel; without a bias there is nothing for ``flex``, ``flash`` or ``chunked`` to add).
Parameter names are the authors' (``weight_orig``/``weight_u``/``weight_v`` of
``torch.nn.utils.spectral_norm``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import spectral_norm

from ..config import canonical_attn_type

__all__ = ["DeepUNetDiscriminatorSN", "SelfAttention"]


class SelfAttention(nn.Module):
    """Multi-head self-attention over all positions of a ``(B, C, H, W)`` map, added by the caller."""

    def __init__(self, dim: int, *, num_heads: int, attn_type: str = "auto") -> None:
        super().__init__()
        self.num_heads, self.attn_type = num_heads, canonical_attn_type(attn_type)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.to_out = spectral_norm(nn.Conv2d(dim, dim, 1))

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        heads = self.num_heads
        qkv = self.to_qkv(x).view(batch, 3, heads, channels // heads, height * width).transpose(-1, -2)
        q, k, v = qkv.unbind(1)  # (B, heads, HW, c)
        if self.attn_type == "naive":
            out = ((q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)).softmax(-1) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(batch, channels, height, width)
        return self.to_out(out.to(x.dtype))


class DeepUNetDiscriminatorSN(nn.Module):
    """U-Net discriminator with spectral normalisation and two self-attentions (see module)."""

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, skip_connection: bool = True, *, attn_type="auto"):
        super().__init__()
        norm = spectral_norm
        self.skip_connection = skip_connection
        self.conv0 = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.conv1 = norm(nn.Conv2d(num_feat, num_feat * 2, 4, 2, 1, bias=False))
        self.conv2 = norm(nn.Conv2d(num_feat * 2, num_feat * 4, 4, 2, 1, bias=False))
        self.conv3 = norm(nn.Conv2d(num_feat * 4, num_feat * 8, 4, 2, 1, bias=False))
        self.sa1 = SelfAttention(num_feat * 4, num_heads=4, attn_type=attn_type)
        self.sa2 = SelfAttention(num_feat * 8, num_heads=8, attn_type=attn_type)
        self.conv4 = norm(nn.Conv2d(num_feat * 8, num_feat * 4, 3, 1, 1, bias=False))
        self.conv5 = norm(nn.Conv2d(num_feat * 4, num_feat * 2, 3, 1, 1, bias=False))
        self.conv6 = norm(nn.Conv2d(num_feat * 2, num_feat, 3, 1, 1, bias=False))
        self.conv7 = norm(nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=False))
        self.conv8 = norm(nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(num_feat, 1, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        act = lambda t: F.leaky_relu(t, negative_slope=0.2)  # noqa: E731
        up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)  # noqa: E731
        x0 = act(self.conv0(x))
        x1 = act(self.conv1(x0))
        x2 = act(self.conv2(x1))
        x3 = act(self.conv3(x2))
        x3 = x3 + self.sa2(x3)
        x4 = act(self.conv4(up(x3)))
        if self.skip_connection:
            x4 = x4 + self.sa1(x2)
        x5 = act(self.conv5(up(x4)))
        if self.skip_connection:
            x5 = x5 + x1
        x6 = act(self.conv6(up(x5)))
        if self.skip_connection:
            x6 = x6 + x0
        out = act(self.conv8(act(self.conv7(x6))))
        return self.conv9(out)
