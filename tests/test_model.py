"""ESCModel pieces on their own: test-time padding and tiling, precision, optimizers, atomic saves."""

import os

import cv2
import numpy as np
import pytest
import torch
from basicsr.utils import img2tensor

from esc_arch.basicsr_plugin.models import ESCModel
from esc_arch.fileio import atomic_torch_save
from esc_arch.inference import autocast, tile_spans, upscale
from esc_arch.loading import read_state_dict

from conftest import DATA, load_golden


def _bird_lr() -> torch.Tensor:
    img = cv2.imread(str(DATA / "images/val/bird.png"))
    lr = cv2.resize(img, (144, 144), interpolation=cv2.INTER_AREA)
    return img2tensor(lr.astype(np.float32) / 255.0, bgr2rgb=True).unsqueeze(0)


def _psnr(a, b) -> float:
    return float(10 * torch.log10(1 / ((a.clamp(0, 1) - b.clamp(0, 1)) ** 2).mean()))


def test_whole_image_padding_is_the_papers_protocol():
    net, *_ = load_golden("esc_x2_eval", "sdpa")
    x = _bird_lr()[..., :50, :70]
    padded = torch.nn.functional.pad(x, (0, 96 - 70, 0, 64 - 50), mode="reflect")
    with torch.no_grad():
        expected = net(padded)[..., :100, :140]
    assert torch.allclose(upscale(net, x), expected, atol=1e-6)


def test_tiled_inference_matches_whole_image():
    net, *_ = load_golden("esc_x2_eval", "sdpa")
    x = _bird_lr()
    whole = upscale(net, x)
    tiled = upscale(net, x, tile=64, overlap=64)
    assert tiled.shape == whole.shape == (1, 3, 288, 288)
    assert _psnr(tiled, whole) >= 50


def test_tile_spans_cover_each_pixel_once():
    spans = list(tile_spans(150, 64, 32))
    assert [(a, b) for a, b, _, _ in spans] == [(0, 64), (64, 128), (128, 150)]
    assert spans[1][2:] == (32, 150)


def test_bad_tile_and_precision():
    net, *_ = load_golden("esc_x2_eval", "sdpa")
    with pytest.raises(ValueError, match="tile must be positive"):
        upscale(net, _bird_lr(), tile=0)
    with pytest.raises(ValueError, match="'fp16' needs a CUDA device"):
        autocast("fp16", torch.device("cpu"))
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16"):
        autocast("int8", torch.device("cpu"))


def test_bf16_inference_is_close_to_fp32():
    net, *_ = load_golden("esc_x2_eval", "sdpa")
    x = _bird_lr()[..., :64, :64]
    assert _psnr(upscale(net, x, precision="bf16"), upscale(net, x)) >= 35


def test_optimizers_by_name():
    model = ESCModel.__new__(ESCModel)
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(model.get_optimizer("AdamW", params, 5e-4, betas=(0.9, 0.9)), torch.optim.AdamW)
    with pytest.raises(ValueError, match="'Adamw' is not a torch.optim optimizer; accepted: .*'AdamW'"):
        model.get_optimizer("Adamw", params, 1e-3)


def test_setup_optimizers_leaves_the_options_intact():
    """BasicSR pops 'type' from the optimiser options it is given; ours must survive a rebuild."""
    model = ESCModel.__new__(ESCModel)
    model.net_g, model.optimizers = torch.nn.Linear(2, 2), []
    optim_g = {"type": "AdamW", "lr": 1e-3, "betas": [0.9, 0.9]}
    model.opt = {"train": {"optim_g": dict(optim_g), "optim_d": {"type": "Adam", "lr": 1e-4}}}
    model.setup_optimizers()
    model.setup_optimizers()  # again, from the same options
    assert model.opt["train"]["optim_g"] == optim_g and model.opt["train"]["optim_d"] == {"type": "Adam", "lr": 1e-4}
    assert [type(o) for o in model.optimizers] == [torch.optim.AdamW, torch.optim.AdamW]


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "net_g_1.pth"
    atomic_torch_save({"params": {"w": torch.ones(2)}}, str(path))

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"params": {"w": torch.zeros(2)}}, str(path))
    assert os.listdir(tmp_path) == ["net_g_1.pth"]
    assert torch.equal(torch.load(path, weights_only=True)["params"]["w"], torch.ones(2))


def test_read_state_dict_param_keys_as_basicsr(tmp_path):
    sd = {"module.a": torch.ones(1)}
    torch.save({"params": sd}, tmp_path / "p.pth")
    torch.save({"params_ema": {"b": torch.ones(1)}, "params": sd}, tmp_path / "e.pth")
    torch.save(sd, tmp_path / "bare.pth")
    # falls back to params; prefixes are convert_state_dict's job
    assert list(read_state_dict(str(tmp_path / "p.pth"), param_key="params_ema")) == ["module.a"]
    assert list(read_state_dict(str(tmp_path / "e.pth"), param_key="params_ema")) == ["b"]
    assert list(read_state_dict(str(tmp_path / "bare.pth"), param_key=None)) == ["module.a"]
    torch.save({"params": {"x": np.float64(1.0)}}, tmp_path / "pickled.pth")
    assert list(read_state_dict(str(tmp_path / "e.pth"), param_key="params")) == ["module.a"]
    with pytest.raises(ValueError, match="pickled Python objects besides tensors and was refused"):
        read_state_dict(str(tmp_path / "pickled.pth"))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        read_state_dict(str(tmp_path / "missing.pth"))
