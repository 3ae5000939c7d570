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
