"""convert_state_dict (esc_arch/weights/convert.py): the x2 -> x3/x4 scale transfer of ``to_img``,
explicit and logged (plain ``load_state_dict`` never converts)."""

import logging

import pytest
import torch

from esc_arch import ESC, convert_state_dict


def test_scale_transfer_through_convert_state_dict(golden, data_dir, caplog):
    x2_weights = torch.load(data_dir / "esc_x2_eval.pth", weights_only=True)["params_ema"]
    _, x, expected, case = golden("esc_x4_from_x2_eval")
    net = ESC(**case["config"], attn_type="naive").eval()
    with pytest.raises(RuntimeError, match="size mismatch for to_img.weight"):
        net.load_state_dict(x2_weights, strict=True)  # plain torch: no hidden conversion
    with caplog.at_level(logging.INFO, logger="basicsr.esc"):
        net.load_state_dict(convert_state_dict(x2_weights, net), strict=True)
    assert "to_img from x2 to x4" in caplog.text
    assert x2_weights["to_img.weight"].shape[0] == 12  # the caller's dict is not converted in place
    # the authors' transfer, as they stored it (every other tensor is esc_x2_eval.pth's, unchanged)
    authors = torch.load(data_dir / "esc_x4_from_x2_eval_to_img.pt", weights_only=True)
    assert torch.allclose(net.to_img.weight, authors["to_img.weight"], atol=1e-6)
    assert torch.allclose(net.to_img.bias, authors["to_img.bias"], atol=1e-6)
    with torch.no_grad():
        assert (net(x) - expected).abs().max().item() < 1e-4
    with pytest.raises(ValueError, match="x2 network and this network is x4"):
        convert_state_dict(x2_weights, net, scale_transfer=False)


def test_scale_transfer_to_fp_x2_to_x3(tiny_net, tiny_config):
    src = tiny_net("ESCFP", upscaling_factor=2)
    dst = tiny_net("ESCFP", upscaling_factor=3, perturb=False)
    dst.load_state_dict(convert_state_dict(src.state_dict(), dst), strict=True)
    assert dst.to_img.weight.shape[0] == 27
    for key, value in src.state_dict().items():  # everything but the tail is taken as it is
        if not key.startswith("to_img."):
            assert torch.equal(dst.state_dict()[key], value), key
    # a constant sub-pixel grid stays constant when resized
    grid = torch.ones(12, tiny_config["dim"], 3, 3)
    state = dict(src.state_dict(), **{"to_img.weight": grid, "to_img.bias": torch.ones(12)})
    dst.load_state_dict(convert_state_dict(state, dst))
    assert torch.allclose(dst.to_img.weight, torch.ones_like(dst.to_img.weight))


@pytest.fixture(scope="module")
def trained_table_svd(data_dir):
    """A trained table (ESC-light x2, block 0), its bias matrix and the bias's full SVD (float64)."""
    from esc_arch.archs.position_bias import relative_position_bias

    table = torch.load(data_dir / "ESC-light_x2_small.pth", weights_only=True)["params_ema"]
    table = table["blocks.0.attn.relative_position_bias"]
    bias = relative_position_bias(table, 32).double()
    return table, bias, torch.linalg.svd(bias)


@pytest.mark.parametrize("rank", [48, 240])
def test_table_to_flashbias_matches_the_full_svd(trained_table_svd, rank):
    """The randomized truncated SVD gives the full SVD's truncation on a trained table: the same
    reported error within 1% and the same bias within 5% of that error; twice the same factors
    (fixed seed)."""
    from esc_arch.weights.convert import table_to_flashbias

    table, bias, (u, s, vh) = trained_table_svd
    root = s[:, :rank].sqrt().unsqueeze(1)
    full = (u[:, :, :rank] * root) @ (vh[:, :rank, :].transpose(1, 2) * root).transpose(1, 2)
    full_error = (bias - full).abs().max().item()
    left, right, error = table_to_flashbias(table, 32, rank)
    assert left.shape == right.shape == (4, 1024, rank) and left.dtype == table.dtype
    assert abs(error - full_error) <= 0.01 * full_error, (error, full_error)
    approx = left.double() @ right.double().transpose(1, 2)
    assert (approx - full).abs().max().item() < 0.05 * full_error
    again = table_to_flashbias(table, 32, rank)
    assert torch.equal(again[0], left) and torch.equal(again[1], right)


def test_table_to_flashbias_is_exact_at_full_rank():
    from esc_arch.weights.convert import table_to_flashbias

    torch.manual_seed(0)
    table = torch.randn(2, 15 * 15)
    for rank in (64, 40):  # the sketch covers every column: the full SVD
        left, right, error = table_to_flashbias(table, 8, rank)
        assert left.shape == (2, 64, rank)
    assert table_to_flashbias(table, 8, 64)[2] < 1e-5
