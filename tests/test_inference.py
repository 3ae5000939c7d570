"""Whole-image and tiled upscaling (esc_arch/runtime/inference.py): the paper's padding protocol, tiles
against the whole image, precisions."""

import cv2
import numpy as np
import pytest
import torch

from esc_arch.runtime.inference import autocast, tile_spans, upscale


@pytest.fixture
def bird_lr(image_dir) -> torch.Tensor:
    """The bird photograph downscaled to 144x144 (RGB, NCHW, [0, 1])."""
    from basicsr.utils import img2tensor

    img = cv2.imread(str(image_dir / "val/bird.png"))
    lr = cv2.resize(img, (144, 144), interpolation=cv2.INTER_AREA)
    return img2tensor(lr.astype(np.float32) / 255.0, bgr2rgb=True).unsqueeze(0)


def _psnr(a, b) -> float:
    return float(10 * torch.log10(1 / ((a.clamp(0, 1) - b.clamp(0, 1)) ** 2).mean()))


def test_whole_image_padding_is_the_papers_protocol(golden, bird_lr):
    net = golden("esc_x2_eval", "sdpa").net
    x = bird_lr[..., :50, :70]
    padded = torch.nn.functional.pad(x, (0, 96 - 70, 0, 64 - 50), mode="reflect")
    with torch.no_grad():
        expected = net(padded)[..., :100, :140]
    assert torch.allclose(upscale(net, x), expected, atol=1e-6)


def test_tiled_inference_matches_whole_image(golden, bird_lr):
    net = golden("esc_x2_eval", "sdpa").net
    whole = upscale(net, bird_lr)
    tiled = upscale(net, bird_lr, tile=64, overlap=64)
    assert tiled.shape == whole.shape == (1, 3, 288, 288)
    assert _psnr(tiled, whole) >= 50


def test_tile_spans_cover_each_pixel_once():
    spans = list(tile_spans(150, 64, 32))
    assert [(a, b) for a, b, _, _ in spans] == [(0, 64), (64, 128), (128, 150)]
    assert spans[1][2:] == (32, 150)


def test_bad_tile_and_precision(golden, bird_lr):
    net = golden("esc_x2_eval", "sdpa").net
    with pytest.raises(ValueError, match="tile must be positive"):
        upscale(net, bird_lr, tile=0)
    with pytest.raises(ValueError, match="'fp16' needs a CUDA device"):
        autocast("fp16", torch.device("cpu"))
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16"):
        autocast("int8", torch.device("cpu"))


def test_bf16_inference_is_close_to_fp32(golden, bird_lr):
    net = golden("esc_x2_eval", "sdpa").net
    x = bird_lr[..., :64, :64]
    fp32, bf16 = upscale(net, x), upscale(net, x, precision="bf16")
    assert not torch.equal(bf16, fp32)  # bf16 did run
    assert _psnr(bf16, fp32) >= 35


@pytest.mark.parametrize(("tile", "where"), [(None, ""), (16, "tile 1 of 4 (input rows 0-15, columns 0-15): ")])
@pytest.mark.parametrize(("precision", "cause"), [
    ("fp32", "the weights drive the activations beyond float32's range (finite, but far too large?)"),
    ("bf16", "likely a bf16 overflow in the activations; try --precision fp32"),
])  # fmt: skip
def test_an_output_that_is_not_finite_is_one_line(tiny_net, tile, where, precision, cause):
    """``check_finite``: each output (the whole image's, or each tile's, named) is checked, and
    the likely cause given; without it, as before, the output is returned as it is."""
    from esc_arch.runtime.inference import NonFiniteOutput

    net = tiny_net().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(1e30)
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(NonFiniteOutput) as info:
        upscale(net, x, tile=tile, overlap=8, precision=precision, check_finite=True)
    values = 3 * (64 if tile is None else 32) ** 2
    assert str(info.value) == (f"{where}the network's output holds {values:,} non-finite value(s) (NaN or Inf) of "
                               f"{values:,}: {cause}")  # fmt: skip
    assert not torch.isfinite(upscale(net, x, tile=tile, overlap=8, precision=precision)).any()
