"""The rest of the published ESC family against reference tensors made with the authors' code
(tests/data/zoo, README there): ESCRealM at scales 1-8 with every upsampler, ESCReal with
DySample, FlashBias checkpoints (and a table converted to FlashBias), the authors' U-Net
discriminator. Built from the authors' keywords through BasicSR's registry and through
load_model from the checkpoint alone, on every CPU backend."""

import json
from pathlib import Path

import pytest
import torch

from esc_arch import NETWORKS, convert_state_dict, describe, load_model

ZOO = Path(__file__).parent.parent / "data" / "zoo"
CASES = sorted(p.stem for p in ZOO.glob("*.json") if json.loads(p.read_text())["arch"] in NETWORKS)
TOLERANCE = {"FlashBias": 1e-3}  # FlashBias and the discriminator: 1e-3 (the bound), others 1e-4


#: full-size cases of ../shared/golden/zoo left out of tests/data: the tiny FlashBias case
#: (``esc_fb_r16_tiny_x4_train_b2``) and the table converted at rank 48 cover their layout
FULL_SIZE = ["esc_fb_r48_x2_eval"]


def case(name: str, folder: Path = ZOO) -> tuple[dict, dict, dict]:
    spec = json.loads((folder / f"{name}.json").read_text())
    weights = torch.load(folder / f"{name}.pth", weights_only=True)["params_ema"]
    io = torch.load(folder / f"{name}_io.pt", weights_only=True)
    return spec, weights, io


def tolerance(spec: dict) -> float:
    return TOLERANCE.get(spec["config"].get("attn_type"), 1e-4)


def run(net: torch.nn.Module, spec: dict, io: dict) -> torch.Tensor:
    net.train(spec["mode"] == "train")
    with torch.no_grad():
        return net(io["input"])


@pytest.mark.parametrize("backend", ["naive", "sdpa", "auto"])
@pytest.mark.parametrize("name", CASES)
def test_zoo_case_through_basicsr_registry(name, backend):
    from basicsr.archs import build_network

    from esc_arch.basicsr_plugin import activate

    activate()
    spec, weights, io = case(name)
    net = build_network({"type": spec["arch"], **spec["config"]})  # the authors' keywords, unchanged
    net.set_attn_type(backend)
    net.load_state_dict(convert_state_dict(weights, net), strict=True)
    out = run(net, spec, io)
    assert out.shape == io["output"].shape
    assert (out - io["output"]).abs().max().item() < tolerance(spec)


#: the cases whose file holds the network they describe (not a table converted on loading)
STORED = [c for c in CASES if "loaded_from" not in json.loads((ZOO / f"{c}.json").read_text())]


@pytest.mark.parametrize("backend", ["naive", "sdpa", "auto"])
@pytest.mark.parametrize("name", STORED + FULL_SIZE)
def test_zoo_case_through_load_model(name, backend, reference_folder, tmp_path):
    spec, weights, io = case(name, reference_folder(name, "zoo"))
    path = tmp_path / f"{name}.pth"
    torch.save({"params_ema": weights}, path)
    net = load_model(path, attn_type=backend)
    assert type(net).__name__ == spec["arch"]
    expected = NETWORKS[spec["arch"]](**spec["config"]).config.replace(attn_type=backend)
    assert net.config == expected  # every hyper-parameter read from the tensors alone
    out = run(net, spec, io)
    assert (out - io["output"]).abs().max().item() < tolerance(spec)


@pytest.mark.slow
@pytest.mark.parametrize("name", [c for c in CASES if json.loads((ZOO / f"{c}.json").read_text())["mode"] == "eval"])
def test_zoo_case_with_flex(name):
    spec, weights, io = case(name)
    net = NETWORKS[spec["arch"]](**spec["config"])
    net.set_attn_type("flex")
    net.load_state_dict(convert_state_dict(weights, net), strict=True)
    assert (run(net, spec, io) - io["output"]).abs().max().item() < tolerance(spec)


def test_table_checkpoint_converts_to_flashbias_as_the_authors_do(caplog):
    import logging

    spec, weights, io = case("esc_table_to_fb_r48_x2_eval")
    assert "blocks.0.attn.relative_position_bias" in weights  # the file holds the table form
    net = NETWORKS["ESC"](**spec["config"])
    with pytest.raises(RuntimeError, match="flashbias_q"):
        net.load_state_dict(weights)  # plain torch: no hidden conversion
    with caplog.at_level(logging.INFO, logger="basicsr.esc"):
        net.load_state_dict(convert_state_dict(weights, net), strict=True)
    assert "relative-position tables to FlashBias factors of rank 48" in caplog.text
    assert tuple(net.blocks[0].attn.flashbias_q.shape) == (2, 256, 48)
    assert (run(net, spec, io) - io["output"]).abs().max().item() < 1e-3


def test_flashbias_trains_every_parameter_and_matches_the_table_gradient():
    """Factors of a table's bias matrix give the table network's output and input gradient;
    the factors themselves receive gradients through every CPU training backend."""
    from esc_arch.archs.attention import relative_position_bias

    torch.manual_seed(0)
    keywords = dict(dim=16, pdim=8, kernel_size=5, n_blocks=1, conv_blocks=1, window_size=4, num_heads=2)
    table_net = NETWORKS["ESC"](**keywords, attn_type="naive")
    table = table_net.blocks[0].attn.relative_position_bias
    with torch.no_grad():
        table.normal_()
    fb_net = NETWORKS["ESC"](**keywords, attn_type="FlashBias", flashbias_rank=16)
    fb_net.load_state_dict(convert_state_dict(table_net.state_dict(), fb_net), strict=True)
    attn = fb_net.blocks[0].attn
    matrix = attn.flashbias_q @ attn.flashbias_k.transpose(1, 2)
    assert torch.allclose(matrix, relative_position_bias(table, 4), atol=1e-4)  # rank 16 = N: exact
    x = torch.rand(2, 3, 10, 7)
    for backend in ("naive", "sdpa"):
        fb_net.set_attn_type(backend)
        fb_net.zero_grad()
        out = fb_net(x)
        torch.testing.assert_close(out, table_net(x), atol=1e-4, rtol=0)
        out.square().mean().backward()
        assert attn.flashbias_q.grad.abs().sum() > 0 and attn.flashbias_k.grad.abs().sum() > 0


def test_escrealm_any_input_size_and_metadata():
    torch.manual_seed(0)
    keywords = dict(dim=16, pdim=8, kernel_size=5, n_blocks=1, conv_blocks=1, window_size=4, num_heads=2, mid_dim=16)
    for scale, upsampler in [(1, "pixelshuffle"), (2, "dysample"), (3, "nearest+conv"), (4, "pixelshuffledirect")]:
        net = NETWORKS["ESCRealM"](**keywords, upscaling_factor=scale, upsampler=upsampler).eval()
        for height, width in [(1, 1), (5, 7), (9, 4)]:
            with torch.no_grad():
                assert net(torch.rand(1, 3, height, width)).shape == (1, 3, scale * height, scale * width)
        meta = net.to_img.MetaUpsample.tolist()
        assert meta[:3] == [2, ("conv", "pixelshuffledirect", "pixelshuffle", "nearest+conv", "dysample").index(
            upsampler), 4 if scale < 3 else scale]  # fmt: skip


@pytest.mark.parametrize(
    ("keywords", "match"),
    [
        (dict(upsampler="bilinear"), "upsampler must be one of conv, pixelshuffledirect"),
        (dict(upscaling_factor=5, upsampler="pixelshuffle"), "supports scales 2\\^n and 3; got x5"),
        (dict(upsampler="dysample", mid_dim=30), "mid_dim must be a multiple of DySample's 4 groups"),
        (dict(use_ln=False), "use_ln must be True for ESCRealM"),
    ],
)
def test_escrealm_bad_keywords(keywords, match):
    with pytest.raises(ValueError, match=match):
        NETWORKS["ESCRealM"](**keywords)


def test_discriminator_matches_the_authors_on_every_backend_and_in_bf16():
    from esc_arch.archs.discriminator_arch import DeepUNetDiscriminatorSN

    spec, weights, io = (
        json.loads((ZOO / "deep_unet_disc_f16.json").read_text()),
        torch.load(ZOO / "deep_unet_disc_f16.pth", weights_only=True)["params_ema"],
        torch.load(ZOO / "deep_unet_disc_f16_io.pt", weights_only=True),
    )
    for backend in ("naive", "sdpa", "auto"):
        net = DeepUNetDiscriminatorSN(**spec["config"], attn_type=backend).eval()
        net.load_state_dict(weights, strict=True)
        with torch.no_grad():
            assert (net(io["input"]) - io["output"]).abs().max().item() < 1e-3
            with torch.autocast("cpu", dtype=torch.bfloat16):  # the authors' precision, on a CPU
                low = net(io["input"]).float()
        assert (low - io["output"]).abs().max().item() < 0.05 * io["output"].abs().max().item()


@pytest.mark.parametrize("name", STORED)
def test_zoo_case_through_spandrel_and_export(name, tmp_path):
    """spandrel detects the layout with its scale and runs it; esc export writes a release file
    that loads back to the same network."""
    spandrel = pytest.importorskip("spandrel")
    import esc_arch
    from esc_arch.commands.export import export_checkpoint

    spec, weights, io = case(name)
    path = tmp_path / f"{name}.pth"
    torch.save({"params_ema": weights}, path)
    esc_arch.register_spandrel()
    model = spandrel.ModelLoader().load_from_file(str(path))
    assert model.architecture.id == "ESC" and model.scale == spec["config"]["upscaling_factor"]
    assert model.tiling == spandrel.ModelTiling.DISCOURAGED  # the dynamic kernels see the tile
    model.model.set_attn_type("naive")
    assert (run(model.model, spec, io) - io["output"]).abs().max().item() < tolerance(spec)
    release, row = export_checkpoint(path, tmp_path / "zoo")
    net = load_model(release, attn_type="naive")
    variant = describe(net).variant
    assert Path(release).name == f"{variant}_x{net.scale}.pth" and f"| {variant} |" in row
    assert (run(net, spec, io) - io["output"]).abs().max().item() < tolerance(spec)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["escrealm_x2_pixelshuffle", "escreal_x4_dysample", "esc_fb_r16_tiny_x4_train_b2"])
def test_zoo_case_through_onnx(name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from esc_arch.commands.onnx_export import export_onnx, pad_for_onnx

    spec, weights, io = case(name)
    net = NETWORKS[spec["arch"]](**spec["config"]).eval()
    net.load_state_dict(convert_state_dict(weights, net), strict=True)
    path = export_onnx(net, str(tmp_path / f"{name}.onnx"))
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    lq = pad_for_onnx(io["input"][:1], net.size_multiple)
    with torch.no_grad():
        expected = net(lq).numpy()
    out = session.run(None, {"lq": lq.numpy()})[0]
    assert out.shape == expected.shape and abs(out - expected).max() <= 1e-4


def test_community_variants_of_the_authors_layout_load(tmp_path):
    """traiNNer-redux's ESCRealM records MetaUpsample version 3 (same keys for the authors'
    five upsamplers); the authors' to_mobile() (also in neosr / traiNNer copies) stores the
    expanded bias `attn.rpe_bias (1, heads, N, N)` instead of the table: both load, same output."""
    from esc_arch.archs.attention import relative_position_bias

    spec, weights, io = case("escrealm_x2_pixelshuffle")
    traiNNer = dict(weights, **{"to_img.MetaUpsample": weights["to_img.MetaUpsample"].clone()})
    traiNNer["to_img.MetaUpsample"][0] = 3
    torch.save({"params_ema": traiNNer}, tmp_path / "escrealm.pth")
    net = load_model(tmp_path / "escrealm.pth", attn_type="naive")
    assert (run(net, spec, io) - io["output"]).abs().max().item() < 1e-4

    spec, weights, io = case("escreal_x4_dysample")
    mobile = {}
    for key, value in weights.items():
        if key.endswith("attn.relative_position_bias"):
            window = spec["config"]["window_size"]
            mobile[key.replace("relative_position_bias", "rpe_bias")] = relative_position_bias(value, window)[None]
        else:
            mobile[key] = value
    torch.save({"params_ema": mobile}, tmp_path / "mobile.pth")
    net = load_model(tmp_path / "mobile.pth", attn_type="sdpa")
    assert (run(net, spec, io) - io["output"]).abs().max().item() < 1e-4


def test_community_layouts_that_cannot_be_mapped_say_so(tmp_path):
    spec, weights, io = case("escrealm_x2_pixelshuffle")
    meta = weights["to_img.MetaUpsample"].clone()
    meta[0], meta[1] = 3, 9  # no trainer records upsampler 9
    torch.save({"params_ema": dict(weights, **{"to_img.MetaUpsample": meta})}, tmp_path / "t.pth")
    with pytest.raises(ValueError, match=r"t\.pth: .*upsampler 9 is none of the known ones .*pa_up"):
        load_model(tmp_path / "t.pth")
    real = torch.load(Path(__file__).parent.parent / "data" / "esc_real_x4_eval.pth", weights_only=True)
    short = {k: v for k, v in real["params_ema"].items() if not k.startswith(("to_img.8", "to_img.6"))}
    short["to_img.6.weight"] = torch.zeros(3, 64, 3, 3)  # the 7-layer tail's last convolution
    short["to_img.6.bias"] = torch.zeros(3)
    torch.save({"params_ema": short}, tmp_path / "n.pth")
    with pytest.raises(ValueError, match=r"n\.pth: .*to_img\.1,4,6\) is neither ESC-Real's .* cannot be loaded"):
        load_model(tmp_path / "n.pth")
