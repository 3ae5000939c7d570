"""Parity with reference tensors made by the authors' implementation (tests/data/)."""

import json

import cv2
import numpy as np
import pytest
import torch

from esc_arch import NETWORKS

#: every exact backend; flex compiles (torch.compile), so its cases are in the slow tier
BACKENDS = ["naive", "sdpa", pytest.param("flex", marks=pytest.mark.slow), "auto"]


def test_every_golden_case_has_its_files(data_dir):
    cases = sorted(p.stem for p in data_dir.glob("*.json"))
    assert cases
    for name in cases:
        weights = json.loads((data_dir / f"{name}.json").read_text()).get("loaded_from") or f"{name}.pth"
        assert (data_dir / weights).is_file() and (data_dir / f"{name}_io.pt").is_file(), name


@pytest.mark.parametrize("backend", BACKENDS)
def test_golden_output(golden, golden_name, backend):
    net, x, expected, case = golden(golden_name, backend)
    assert list(x.shape) == case["input_shape"]
    with torch.no_grad():
        out = net(x)
    assert list(out.shape) == case["output_shape"]
    assert (out - expected).abs().max().item() < 1e-4


def test_golden_checkpoints_load_as_plain_torch(data_dir):
    """Each stored .pth holds ``params_ema`` only, pure tensors, in the authors' layout: it loads
    with plain ``load_state_dict(strict=True)``, without convert_state_dict (which the parity test
    uses, and which could hide a renamed parameter). Cases naming another's file in ``loaded_from``
    store none."""
    stored = [p for p in sorted(data_dir.glob("*.json")) if p.with_suffix(".pth").is_file()]
    assert len(stored) >= 5
    for spec in stored:
        case = json.loads(spec.read_text())
        checkpoint = torch.load(spec.with_suffix(".pth"), weights_only=True)
        assert list(checkpoint) == ["params_ema"], spec.name
        net = NETWORKS[case["arch"]](**case["config"])
        net.load_state_dict(checkpoint["params_ema"], strict=True)


@pytest.mark.slow  # whole photographs through ESC-light, twice per backend: 20-40 s each
@pytest.mark.parametrize("backend", BACKENDS)
def test_bf16_autocast_stays_within_50_db_of_fp32_naive_on_real_images(data_dir, image_dir, backend):
    """bf16 = the unchanged network under torch.autocast('cpu', bfloat16), as BasicSR users run it
    (the quick tier checks bf16 on a crop: tests/test_inference.py).

    Trained weights are needed (random ones amplify their inputs far outside [0, 1]): the
    ESC-light x2 weights of benchmarks/quality_small.py, exported with esc export."""
    from basicsr.utils import img2tensor

    from esc_arch import load_model

    weights = data_dir / "ESC-light_x2_small.pth"
    net, reference = load_model(weights), load_model(weights)
    net.set_attn_type(backend)
    reference.set_attn_type("naive")
    for name in ("butterfly", "bird"):
        bgr = cv2.imread(str(image_dir / "val" / f"{name}.png"))
        x = img2tensor(bgr.astype(np.float32) / 255.0, bgr2rgb=True).unsqueeze(0)
        with torch.no_grad():
            expected = reference(x).clamp(0, 1)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = net(x)
        mse = ((out.float().clamp(0, 1) - expected) ** 2).mean().item()
        assert mse > 0  # bf16 did run (the output is fp32 after the fp32 residual path)
        assert 10 * np.log10(1 / mse) >= 50, (name, backend, 10 * np.log10(1 / mse))
