"""The chunked backend on a map of exactly one window (q, k, v are then views of the
projection, not copies) equals naive attention, in inference and in training."""

import pytest
import torch

from esc_arch.archs.esc_arch import WindowAttention


@pytest.mark.parametrize("size", [(16, 16), (16, 32), (20, 18)])
def test_chunked_equals_naive_on_one_window_and_more(size):
    attn = WindowAttention(dim=32, window_size=16, num_heads=2)
    x = torch.rand(1, 32, *size)
    with torch.no_grad():
        expected = attn(x, "naive")
        assert (attn(x, "chunked") - expected).abs().max().item() < 1e-5
    x.requires_grad_(True)
    attn(x, "chunked").square().sum().backward()
    chunked = x.grad.clone()
    x.grad = None
    attn(x, "naive").square().sum().backward()
    assert (chunked - x.grad).abs().max().item() < 1e-4
