"""ESC-LTE (arbitrary scale) everywhere an ESC checkpoint goes: ``load_model`` (our files and
the LIIF code base's), ``convert_state_dict`` (an ESC body as the encoder), ``esc upscale
--scale / --size``, ``esc export`` and ``esc onnx``. The network itself: tests/archs/test_lte.py."""

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from esc_arch import ESCLTE, ESCLTEConfig, build_preset, convert_state_dict, describe, infer_config, load_model
from esc_arch.runtime.inference import query_upscale

ZOO = Path(__file__).parent / "data" / "zoo"


@pytest.fixture(scope="module")
def reference():
    """The authors' ESC-LTE weights (x2.5 reference case) and its inputs and outputs."""
    weights = torch.load(ZOO / "esc_lte_x2.5_eval.pth", weights_only=True)["params"]
    return weights, torch.load(ZOO / "esc_lte_x2.5_eval_io.pt", weights_only=True)


@pytest.fixture
def tiny_lte(tiny_config, perturbed):
    return perturbed(ESCLTE(encoder=tiny_config, hidden_dim=16, mlp_hidden=(24, 8)))


@pytest.fixture
def photo(image_dir, tmp_path) -> Path:
    """A real 60x90 photograph."""
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), cv2.imread(str(image_dir / "val" / "bird.png"))[100:160, 100:190])
    return path


@pytest.mark.parametrize("case", ["esc_lte_x2.5_eval", "esc_lte_x6_eval"])
@pytest.mark.parametrize("layout", ["basicsr", "liif"])
def test_load_model_reads_ours_and_the_liif_layout(case, layout, reference_folder, tmp_path, caplog):
    folder = reference_folder(case, "zoo")  # x6: ../shared/golden/zoo
    weights = torch.load(folder / f"{case}.pth", weights_only=True)["params"]
    io = torch.load(folder / f"{case}_io.pt", weights_only=True)
    path = tmp_path / "lte.pth"
    if layout == "liif":  # the authors' esc_arb save: {'model': {'name', 'args', 'sd'}}
        torch.save({"model": {"name": "lte", "args": {"hidden_dim": 256}, "sd": weights}, "epoch": 1000}, path)
    else:
        torch.save({"params_ema": weights}, path)
    with caplog.at_level(logging.INFO, logger="basicsr.esc"):
        net = load_model(path)
    assert ("LIIF-style file (model 'lte')" in caplog.text) == (layout == "liif")
    described = describe(net)
    assert (
        type(net) is ESCLTE and described.variant == "ESC-LTE" and described.arbitrary_scale and described.scale is None
    )
    assert net.config == ESCLTEConfig()
    with torch.no_grad():
        out = net((io["input"] - 0.5) / 0.5, io["coord"], io["cell"])
    assert (out - io["output"]).abs().max().item() < 1e-4


def test_infer_config_reads_a_custom_head(tiny_lte):
    config = infer_config(tiny_lte.state_dict(), attn_type="naive")
    assert config == tiny_lte.config.replace(attn_type="naive")
    assert config.mlp_hidden == (24, 8) and config.hidden_dim == 16 and config.encoder.dim == 16
    assert describe(ESCLTE(config)).variant == "custom-LTE"


def test_bad_lte_files_are_one_line_naming_the_key(tiny_lte, tmp_path):
    state = tiny_lte.state_dict()
    gap = {k.replace("imnet.layers.4.", "imnet.layers.6."): v for k, v in state.items()}
    torch.save(gap, tmp_path / "gap.pth")
    with pytest.raises(ValueError, match=r"gap.pth: imnet.layers.\*.weight are numbered \[0, 2, 6\]"):
        load_model(tmp_path / "gap.pth")
    torch.save({k: v for k, v in state.items() if k != "freq.weight"}, tmp_path / "nofreq.pth")
    with pytest.raises(ValueError, match=r"nofreq.pth: 'freq.weight' is missing"):
        load_model(tmp_path / "nofreq.pth")
    torch.save({k: v for k, v in state.items() if k != "encoder.plk_filter"}, tmp_path / "noenc.pth")
    with pytest.raises(ValueError, match=r"noenc.pth: the encoder \(encoder.\*\): not an ESC state dict"):
        load_model(tmp_path / "noenc.pth")


def test_an_esc_body_becomes_the_encoder(caplog):
    esc = build_preset("ESC-light", 2)
    lte = ESCLTE(encoder=esc.config)
    with caplog.at_level(logging.INFO, logger="basicsr.esc"):
        converted = convert_state_dict(esc.state_dict(), lte)
    assert "an ESC body (242 tensors) as the encoder of ESCLTE; its to_img (2 tensors) dropped" in caplog.text
    missing, unexpected = lte.load_state_dict(converted, strict=False)
    assert not unexpected and sorted({k.split(".")[0] for k in missing}) == ["coef", "freq", "imnet", "phase"]
    torch.testing.assert_close(lte.encoder.plk_filter, esc.plk_filter, rtol=0, atol=0)


@pytest.mark.slow  # the full ESC-LTE through esc upscale at several scales and sizes
def test_esc_upscale_by_any_scale_or_to_a_size(esc_cli, reference, photo, tmp_path):
    model = tmp_path / "ESC-LTE.pth"
    torch.save({"params_ema": reference[0]}, model)
    out = tmp_path / "out"
    result = esc_cli("upscale", "-i", photo, "-o", out, "-m", model, "--scale", "3.5")
    assert result.returncode == 0, result.stderr
    assert "ESC-LTE x3.5 (1,433,631 parameters)" in result.stderr
    sr = cv2.imread(str(out / "photo_ESC-LTE_x3.5.png"))
    assert sr.shape == (210, 315, 3)
    # the same pixels as the network's own whole-image call (de-normalised, clamped, rounded)
    net = load_model(model)
    x = torch.from_numpy(cv2.imread(str(photo))[..., ::-1].copy()).permute(2, 0, 1).float().div(255)[None]
    expected = (
        query_upscale(net, x, scale=3.5)[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()[..., ::-1]
    )
    assert np.abs(sr.astype(int) - expected).max() <= 1
    result = esc_cli("upscale", "-i", photo, "-o", out, "-m", model, "--size", "101x77")
    assert result.returncode == 0 and cv2.imread(str(out / "photo_ESC-LTE_101x77.png")).shape == (77, 101, 3)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--scale", "2.5"], "--scale 2.5: custom is a fixed x2 network; other scales need an arbitrary-scale model"),
        (["--scale", "4"], "--scale 4: custom is a fixed x2 network"),
        (["--size", "100x100"], "--size: custom is a fixed x2 network; --size needs an arbitrary-scale model"),
        (["--scale", "0"], "--scale 0: must be a positive number"),
        (["--scale", "nan"], "--scale nan: must be a positive number"),
        (["--scale", "100"], "--scale 100: at most 64"),
        (["--size", "100"], "--size '100': expected WIDTHxHEIGHT in pixels"),
        (["--size", "0x10"], "--size '0x10': expected WIDTHxHEIGHT in pixels"),
    ],
)
def test_scale_options_of_a_fixed_scale_model(esc_cli, tiny_net, photo, tmp_path, arguments, message):
    model = tmp_path / "tiny_x2.pth"
    torch.save({"params_ema": tiny_net().state_dict()}, model)
    result = esc_cli("upscale", "-i", photo, "-o", tmp_path / "out", "-m", model, *arguments)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_fixed_scale_model_accepts_its_own_scale(esc_cli, tiny_net, photo, tmp_path):
    model = tmp_path / "tiny_x2.pth"
    torch.save({"params_ema": tiny_net().state_dict()}, model)
    result = esc_cli("upscale", "-i", photo, "-o", tmp_path / "out", "-m", model, "--scale", "2")
    assert result.returncode == 0 and cv2.imread(str(tmp_path / "out" / "photo_custom_x2.png")).shape == (120, 180, 3)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "custom-LTE upscales by any factor: give --scale (e.g. --scale 3.5) or --size WxH, one of them"),
        (["--scale", "2", "--size", "9x9"], "give --scale (e.g. --scale 3.5) or --size WxH, not both"),
        (["--scale", "2", "--tile", "64"], "--tile: custom-LTE runs its encoder on the whole input"),
    ],
)
def test_scale_options_of_an_arbitrary_scale_model(esc_cli, tiny_lte, photo, tmp_path, arguments, message):
    model = tmp_path / "lte.pth"
    torch.save({"params_ema": tiny_lte.state_dict()}, model)
    result = esc_cli("upscale", "-i", photo, "-o", tmp_path / "out", "-m", model, *arguments)
    assert result.returncode == 2 and message in result.stderr


def test_esc_export_names_an_arbitrary_scale_release(esc_cli, reference, tmp_path):
    checkpoint = tmp_path / "net_g_100.pth"
    torch.save({"params": reference[0]}, checkpoint)
    result = esc_cli("export", checkpoint, "-o", tmp_path / "zoo")
    assert result.returncode == 0, result.stderr
    assert "| ESC-LTE | any | 1,433,631 | fp32 | `ESC-LTE.pth` |" in result.stdout
    assert describe(load_model(tmp_path / "zoo" / "ESC-LTE.pth")).variant == "ESC-LTE"


@pytest.mark.slow
def test_onnx_with_dynamic_image_and_query_sizes(esc_cli, tiny_lte, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from esc_arch.archs.esc_lte_arch import make_coord

    model = tmp_path / "lte.pth"
    torch.save({"params_ema": tiny_lte.state_dict()}, model)
    result = esc_cli("onnx", "-m", model, "-o", tmp_path / "lte.onnx")
    assert result.returncode == 0 and "inputs 'lq' (B, 3, H, W)" in result.stdout
    session = ort.InferenceSession(str(tmp_path / "lte.onnx"), providers=["CPUExecutionProvider"])
    net = tiny_lte.eval()
    # sizes other than the export's; odd integer scales (x1, x3, x5) put queries on the edge pixels' centres,
    # where all four areas of the local ensemble are zero
    cases = (((16, 24), (37, 61)), ((8, 40), (20, 100)), ((16, 24), (16, 24)), ((8, 16), (24, 48)), ((8, 8), (40, 40)))
    for (height, width), (out_h, out_w) in cases:
        lq = torch.rand(1, 3, height, width)
        coord = make_coord(out_h, out_w)[None]
        cell = torch.tensor([2 / out_h, 2 / out_w]).expand(1, coord.shape[1], 2).contiguous()
        with torch.no_grad():
            expected = net((lq - 0.5) / 0.5, coord, cell) * 0.5 + 0.5
        out = session.run(None, {"lq": lq.numpy(), "coord": coord.numpy(), "cell": cell.numpy()})[0]
        assert out.shape == (1, out_h * out_w, 3)
        assert np.isfinite(out).all(), (
            f"NaN at {np.argwhere(~np.isfinite(out[0]).all(-1))[:3].ravel()} of {out_h}x{out_w}"
        )
        assert np.abs(out - expected.numpy()).max() < 1e-4  # every pixel, the last row and column included


def test_a_large_output_says_its_size_first_and_shows_query_progress(esc_cli, tiny_lte, photo, tmp_path):
    calls = []
    out = query_upscale(
        tiny_lte.eval(), torch.rand(1, 3, 12, 10), size=(250, 130), chunk=10_000, progress=lambda *a: calls.append(a)
    )
    assert out.shape == (1, 3, 250, 130) and calls == [(10_000, 32_500), (20_000, 32_500), (30_000, 32_500),
                                                       (32_500, 32_500)]  # fmt: skip
    model = tmp_path / "lte.pth"
    torch.save({"params_ema": tiny_lte.state_dict()}, model)
    result = esc_cli("upscale", "-i", photo, "-o", tmp_path / "out", "-m", model, "--size", "400x300")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.replace("\r", "\n").splitlines()  # a line of its own, not after the images' bar
    assert f"{photo}: 90x60 -> 400x300 (120,000 pixels, queried in 4 chunks of 30,000)" in lines
    assert "  queries: " in result.stderr and "/120k [" in result.stderr  # the progress bar of the queries


def test_a_query_chunk_that_is_not_finite_fails_its_file(esc_cli, tiny_lte, photo, tmp_path):
    """Finite weights whose outputs are not (every weight x 1e30): the first chunk named, the
    file failed, nothing written."""
    model = tmp_path / "lte.pth"
    torch.save({"params_ema": {k: v * 1e30 if v.dim() > 1 else v for k, v in tiny_lte.state_dict().items()}}, model)
    result = esc_cli("upscale", "-i", photo, "-o", tmp_path / "out", "-m", model, "--size", "400x300")
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[-2:] == [
        f"failed: {photo}: query chunk 1 of 4 (output pixels 0-29,999): the network's output holds 90,000 "
        "non-finite value(s) (NaN or Inf) of 90,000: the weights drive the activations beyond float32's range "
        "(finite, but far too large?)",
        "0 upscaled, 1 failed",
    ]
    assert list((tmp_path / "out").iterdir()) == []
    checked = []
    query_upscale(tiny_lte.eval(), torch.rand(1, 3, 12, 10), size=(250, 130), chunk=10_000,
                            check=lambda rgb, start: checked.append((start, tuple(rgb.shape))))  # fmt: skip
    assert checked == [(0, (1, 10_000, 3)), (10_000, (1, 10_000, 3)), (20_000, (1, 10_000, 3)),
                       (30_000, (1, 2_500, 3))]  # fmt: skip
