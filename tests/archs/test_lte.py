"""Arbitrary-scale ESC (esc_arch/archs/esc_lte_arch.py) against reference tensors made with the
authors' code (tests/data/zoo/esc_lte_*; README there), and its whole-image upscaling."""

import json
from pathlib import Path

import cv2
import pytest
import torch

from esc_arch.archs import ESCLTEConfig
from esc_arch.archs.esc_lte_arch import ESCLTE, make_coord
from esc_arch.runtime.inference import query_upscale

ZOO = Path(__file__).parent.parent / "data" / "zoo"
IMAGES = Path(__file__).parent.parent / "data" / "images"


def case(name: str, folder: Path = ZOO):
    spec = json.loads((folder / f"{name}.json").read_text())
    weights = torch.load(folder / f"{name}.pth", weights_only=True)["params"]
    return spec, weights, torch.load(folder / f"{name}_io.pt", weights_only=True)


@pytest.mark.parametrize("backend", ["naive", "sdpa"])
@pytest.mark.parametrize("name", ["esc_lte_x2.5_eval", "esc_lte_x6_eval"])
def test_lte_matches_the_authors_through_the_registry(name, backend, reference_folder):
    """x2.5 is in tests/data; x6 (other weights, an integer grid) is read from ../shared/golden."""
    from esc_arch.basicsr_plugin import activate

    activate()
    from basicsr.archs import build_network

    spec, weights, io = case(name, reference_folder(name, "zoo"))
    net = build_network({"type": "ESCLTE", **spec["config"]}).eval()
    net.encoder.set_attn_type(backend)
    net.load_state_dict(weights, strict=True)
    assert sum(p.numel() for p in net.parameters()) == 1_433_631
    with torch.no_grad():
        out = net((io["input"] - 0.5) / 0.5, io["coord"], io["cell"])  # the authors' normalisation
    assert out.shape == io["output"].shape
    assert (out - io["output"]).abs().max().item() < 1e-4


def test_a_batch_of_two_equals_two_single_calls():
    spec, weights, io = case("esc_lte_x2.5_eval")
    net = ESCLTE(**spec["config"]).eval()
    net.load_state_dict(weights)
    torch.manual_seed(0)
    pair = torch.cat([io["input"], torch.rand_like(io["input"])])
    coord, cell = io["coord"].expand(2, -1, -1), io["cell"].expand(2, -1, -1)
    with torch.no_grad():
        both = net((pair - 0.5) / 0.5, coord, cell)
        singles = [net((pair[i : i + 1] - 0.5) / 0.5, coord[:1], cell[:1]) for i in range(2)]
    torch.testing.assert_close(both, torch.cat(singles), atol=1e-5, rtol=0)


@pytest.mark.slow  # the authors' full ESC-LTE on whole images at several scales
def test_whole_image_upscaling_to_any_scale_or_size_in_chunks():
    spec, weights, io = case("esc_lte_x2.5_eval")
    net = ESCLTE(**spec["config"]).eval()
    net.load_state_dict(weights)
    photo = cv2.imread(str(IMAGES / "val" / "bird.png"))[100:160, 100:190, ::-1].copy()  # a real 60x90 photo
    x = torch.from_numpy(photo).permute(2, 0, 1).float().div(255).unsqueeze(0)
    out = query_upscale(net, x, scale=3.5, chunk=4096)
    assert out.shape == (1, 3, 210, 315)
    torch.testing.assert_close(
        out, query_upscale(net, x, scale=3.5, chunk=10**6), atol=1e-5, rtol=0
    )  # chunks change nothing
    assert query_upscale(net, x, size=(101, 77)).shape == (1, 3, 101, 77)
    with pytest.raises(ValueError, match="either scale or size"):
        query_upscale(net, x)
    with pytest.raises(ValueError, match="scale must be positive"):
        query_upscale(net, x, scale=-2)


def test_the_query_grid_and_the_configuration():
    coord = make_coord(2, 4)
    assert coord[0].tolist() == [-0.5, -0.75] and coord[-1].tolist() == [0.5, 0.75]  # pixel centres, row first
    config = ESCLTEConfig(encoder={"dim": 32, "pdim": 8, "num_heads": 2}, hidden_dim=64, mlp_hidden=[32])
    assert config.encoder.dim == 32 and config.mlp_hidden == (32,)
    with pytest.raises(ValueError, match="hidden_dim must be a positive even integer"):
        ESCLTEConfig(hidden_dim=15)
    with pytest.raises(TypeError, match="unknown keyword 'dimm'"):
        ESCLTEConfig(encoder={"dimm": 3})


def test_hyperparameters_rebuild_the_network_and_survive_a_file(tmp_path):
    from esc_arch import load_model

    net = ESCLTE(encoder=dict(dim=16, pdim=8, kernel_size=5, n_blocks=1, conv_blocks=1, window_size=8, num_heads=2),
                 hidden_dim=16, mlp_hidden=(8, 8))  # fmt: skip
    assert ESCLTE(**net.hyperparameters).config == net.config
    torch.save({"params_ema": net.state_dict()}, tmp_path / "lte.pth")
    assert load_model(tmp_path / "lte.pth").hyperparameters == net.hyperparameters
