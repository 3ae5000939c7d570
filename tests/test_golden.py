"""Parity with reference tensors made by the authors' implementation (tests/data/)."""

import pytest
import torch

from conftest import DATA, GOLDEN_CASES, load_golden

BACKENDS = ["naive", "sdpa", "flex", "auto"]


def test_every_golden_case_is_collected():
    assert len(GOLDEN_CASES) == 7


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", GOLDEN_CASES)
def test_golden_output(name, backend):
    net, x, expected, case = load_golden(name, backend)
    assert list(x.shape) == case["input_shape"]
    with torch.no_grad():
        out = net(x)
    assert list(out.shape) == case["output_shape"]
    assert (out - expected).abs().max().item() < 1e-4


def test_golden_checkpoints_are_tensors_only():
    # torch.load(weights_only=True) inside load_golden would raise otherwise; check the layout too.
    net, *_ = load_golden("esc_x2_eval")
    assert set(net.state_dict()) == set(torch.load(DATA / "esc_x2_eval.pth", weights_only=True)["params_ema"])


@pytest.mark.parametrize("backend", ["naive", "sdpa", "flex", "auto"])
def test_bf16_autocast_stays_within_50_db_of_fp32_naive_on_real_images(backend):
    """bf16 = the unchanged network under torch.autocast('cpu', bfloat16), as BasicSR users run it.

    Trained weights are needed (random ones amplify their inputs far outside [0, 1]): the
    ESC-light x2 weights of benchmarks/quality_small.py, exported with esc export."""
    import cv2
    import numpy as np
    from basicsr.utils import img2tensor

    from esc_arch import load_model

    weights = DATA / "ESC-light_x2_small.pth"
    net, reference = load_model(weights), load_model(weights)
    net.set_attn_type(backend)
    reference.set_attn_type("naive")
    for name in ("butterfly", "bird"):
        bgr = cv2.imread(str(DATA / "images/val" / f"{name}.png"))
        x = img2tensor(bgr.astype(np.float32) / 255.0, bgr2rgb=True).unsqueeze(0)
        with torch.no_grad():
            expected = reference(x).clamp(0, 1)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = net(x)
        mse = ((out.float().clamp(0, 1) - expected) ** 2).mean().item()
        assert mse > 0  # bf16 did run (the output is fp32 after the fp32 residual path)
        assert 10 * np.log10(1 / mse) >= 50, (name, backend, 10 * np.log10(1 / mse))
