"""ESC-RIB through the tools: esc export names its release, esc upscale takes --window-size
(the window is not in its files), spandrel detects it, ONNX matches onnxruntime."""

import cv2
import numpy as np
import pytest
import torch

from esc_arch import build_preset, load_model
from esc_arch.runtime.inference import upscale

RIB_CASE = "escrib_tiny_x2_gate_linear_pixelshuffle"  # tests/data/rib: window 16


@pytest.fixture
def rib_file(data_dir):
    return data_dir / "rib" / f"{RIB_CASE}.pth"


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_export_names_the_release(esc_cli, tmp_path, scale):
    torch.save({"params": build_preset("ESC-RIB", scale).state_dict()}, tmp_path / "net_g_5.pth")
    result = esc_cli("export", tmp_path / "net_g_5.pth", "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / f"ESC-RIB_x{scale}.pth").is_file()
    assert f"| ESC-RIB | x{scale} |" in result.stdout


def test_upscale_takes_the_window(esc_cli, rib_file, image_dir, tmp_path):
    (tmp_path / "in").mkdir()
    bird = cv2.imread(str(image_dir / "val/bird.png"))[:37, :45]
    cv2.imwrite(str(tmp_path / "in" / "b.png"), bird)
    outputs = {}
    for window in ("16", "8"):
        out = tmp_path / f"w{window}"
        result = esc_cli("upscale", "-i", tmp_path / "in", "-o", out, "-m", rib_file, "--window-size", window,
                         "--suffix", "")  # fmt: skip
        assert result.returncode == 0, result.stderr
        outputs[window] = cv2.imread(str(out / "b.png"))
    assert outputs["16"].shape == (74, 90, 3)
    net = load_model(rib_file, window_size=16)
    lq = torch.from_numpy(cv2.cvtColor(bird, cv2.COLOR_BGR2RGB)).permute(2, 0, 1)[None].float() / 255
    expected = (upscale(net, lq).clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert np.abs(outputs["16"].astype(int) - cv2.cvtColor(expected, cv2.COLOR_RGB2BGR)).max() <= 1
    assert np.abs(outputs["16"].astype(int) - outputs["8"]).max() > 1  # the window changes the network


def test_upscale_bad_window_is_one_line(esc_cli, rib_file, data_dir, tmp_path):
    result = esc_cli("upscale", "-i", tmp_path, "-o", tmp_path / "o", "-m", data_dir / "esc_x2_eval.pth",
                     "--window-size", "16")  # fmt: skip
    assert result.returncode != 0
    assert "window_size 16 does not fit these tensors" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_spandrel_runs_the_released_window(rib_file, tmp_path):
    spandrel = pytest.importorskip("spandrel")
    import esc_arch

    esc_arch.register_spandrel()
    model = spandrel.ModelLoader().load_from_file(str(rib_file))
    assert model.architecture.id == "ESC" and model.scale == 2 and "w64" in model.tags
    assert model.size_requirements.multiple_of == 64
    x = torch.rand(1, 3, 20, 28)
    reference = load_model(rib_file)  # the released window, as spandrel has no way to ask
    with torch.no_grad():
        assert (model.model.eval()(x) - reference(x)).abs().max().item() < 1e-5


@pytest.mark.slow
def test_onnx_matches_onnxruntime_on_odd_sizes(rib_file, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from esc_arch.commands.onnx_export import export_onnx, pad_for_onnx

    net = load_model(rib_file, window_size=16)
    session = ort.InferenceSession(export_onnx(net, str(tmp_path / "rib.onnx")), providers=["CPUExecutionProvider"])
    for size in ((21, 35), (40, 17)):
        lq = pad_for_onnx(torch.rand(1, 3, *size), net.size_multiple)
        with torch.no_grad():
            expected = net(lq).numpy()
        out = session.run(None, {"lq": lq.numpy()})[0]
        assert out.shape == expected.shape and np.abs(out - expected).max() <= 1e-4
