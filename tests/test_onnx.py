"""ONNX export with dynamic height and width (esc_arch/onnx_export.py), checked against
onnxruntime on real images. Exports take tens of seconds: the whole module is slow."""

import cv2
import numpy as np
import pytest
import torch

from esc_arch.commands.onnx_export import OPSET, export_onnx, pad_for_onnx

pytestmark = pytest.mark.slow
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.mark.parametrize("name", ["esc_x2_eval", "esc_fp_x3_eval", "esc_real_x4_eval"])
def test_onnx_matches_torch_on_real_images(golden, image_dir, name, tmp_path):
    import onnx
    from basicsr.utils import img2tensor

    net = golden(name, "sdpa").net
    path = export_onnx(net, str(tmp_path / f"{name}.onnx"))
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert onnx.load(path).opset_import[0].version == OPSET
    for image, size in (("bird", (70, 45)), ("butterfly", (33, 100))):  # two different padded sizes
        bgr = cv2.imread(str(image_dir / f"val/{image}.png"))[: size[0], : size[1]]
        lq = pad_for_onnx(img2tensor(bgr.astype(np.float32) / 255.0, bgr2rgb=True).unsqueeze(0), net.size_multiple)
        with torch.no_grad():
            expected = net(lq).numpy()
        out = session.run(None, {"lq": lq.numpy()})[0]
        assert out.shape == expected.shape
        assert np.abs(out - expected).max() <= 1e-4


def test_esc_onnx_command(run_command, esc_bin, data_dir, tmp_path):
    out = run_command([esc_bin, "onnx", "-m", data_dir / "esc_light_x4_eval.pth", "-o", tmp_path / "m.onnx"]).stdout
    assert "ESC-light x4, opset 18" in out and "multiples of 32" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # weights embedded: no m.onnx.data
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {"lq": np.random.rand(1, 3, 32, 64).astype(np.float32)})[0].shape == (1, 3, 128, 256)


def test_kill_9_during_esc_onnx_leaves_nothing(esc_bin, data_dir, tmp_path):
    """A real ``kill -9`` while ``esc onnx`` writes its file: nothing is left in the folder, not
    even a hidden temporary, and the next run writes the file."""
    import os
    import signal
    import subprocess
    import time

    out = tmp_path / "out"
    out.mkdir()
    command = [esc_bin, "onnx", "-m", str(data_dir / "esc_light_x4_eval.pth"), "-o", str(out / "m.onnx")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:  # until it writes into out/
            fds = f"/proc/{process.pid}/fd"
            targets = []
            for fd in os.listdir(fds) if os.path.isdir(fds) else []:
                try:
                    targets.append(os.readlink(f"{fds}/{fd}"))
                except OSError:  # closed meanwhile
                    pass
            if os.listdir(out) or any(target.startswith(str(out)) for target in targets):
                break
            time.sleep(0.05)
        assert process.poll() is None, "esc onnx ended before it opened its output"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert os.listdir(out) == []
    subprocess.run(command, check=True, capture_output=True)
    assert os.listdir(out) == ["m.onnx"]


# --------------------------------------------------------------------------- dynamic batch and size, fp16

#: (batch, height, width) of the comparisons: batches 1 and 3, sizes that are no window multiple
#: (one smaller than the window), none of them the export's example (2, 2w+3, 3w+5)
BATCHES_AND_SIZES = ((1, 13, 21), (3, 20, 9), (1, 5, 3))


def _check_full(path: str) -> None:
    import onnx

    onnx.checker.check_model(onnx.load(path), full_check=True)


def _fixed_scale_networks(tiny_net, data_dir) -> dict:
    from esc_arch import load_model

    return {
        "ESC": lambda: tiny_net("ESC"),
        "ESCFP": lambda: tiny_net("ESCFP", upscaling_factor=3),
        "ESCReal": lambda: tiny_net("ESCReal"),
        "ESCRealM x1 (unshuffle, DySample)": lambda: load_model(data_dir / "zoo" / "escrealm_x1_dysample.pth"),
        "ESCRIB window 16": lambda: load_model(
            data_dir / "rib" / "escrib_tiny_x2_gate_linear_pixelshuffle.pth", window_size=16
        ),
    }


@pytest.mark.parametrize("family", ["ESC", "ESCFP", "ESCReal", "ESCRealM x1 (unshuffle, DySample)", "ESCRIB window 16"])
def test_any_batch_and_size_matches_torch(tiny_net, data_dir, family, tmp_path):
    """One export per fixed-scale family: batches 1 and 3 at sizes that are not window
    multiples, against torch's whole-image run (the paper's protocol), max abs <= 1e-4."""
    from esc_arch.runtime.inference import upscale

    net = _fixed_scale_networks(tiny_net, data_dir)[family]().eval()
    path = export_onnx(net, str(tmp_path / "m.onnx"))
    _check_full(path)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for batch, height, width in BATCHES_AND_SIZES:
        lq = torch.rand(batch, 3, height, width)
        with torch.no_grad():
            expected = upscale(net, lq).numpy()
        out = session.run(None, {"lq": lq.numpy()})[0]
        assert out.shape == expected.shape and out.dtype == np.float32
        assert np.abs(out - expected).max() <= 1e-4, (batch, height, width)


def test_esc_lte_any_batch_and_size_matches_torch(tiny_config, perturbed, tmp_path):
    from esc_arch import ESCLTE
    from esc_arch.archs.esc_lte_arch import make_coord

    net = perturbed(ESCLTE(encoder=tiny_config, hidden_dim=16, mlp_hidden=(24, 8))).eval()
    path = export_onnx(net, str(tmp_path / "lte.onnx"))
    _check_full(path)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for (batch, height, width), (out_h, out_w) in zip(BATCHES_AND_SIZES, ((30, 47), (41, 20), (5, 9)), strict=True):
        lq = torch.rand(batch, 3, height, width)
        coord = make_coord(out_h, out_w)[None].expand(batch, -1, -1).contiguous()
        cell = torch.tensor([2 / out_h, 2 / out_w]).expand(batch, coord.shape[1], 2).contiguous()
        with torch.no_grad():
            expected = (net((lq - 0.5) / 0.5, coord, cell) * 0.5 + 0.5).numpy()
        out = session.run(None, {"lq": lq.numpy(), "coord": coord.numpy(), "cell": cell.numpy()})[0]
        assert out.shape == (batch, out_h * out_w, 3)
        assert np.abs(out - expected).max() <= 1e-4, (batch, height, width)


#: fp16 ONNX against torch fp32, trained weights, real photos (PSNR, dB)
FP16_PSNR_FLOOR = 45.0


def test_esc_onnx_fp16_with_trained_weights_on_real_photos(esc_cli, data_dir, image_dir, tmp_path):
    """``esc onnx --fp16`` of the trained ESC-light x2: float16 weights, input and output, the
    full checker passes, and onnxruntime's CPU provider runs a batch of two photos of an odd size
    within FP16_PSNR_FLOOR of torch fp32."""
    import onnx

    from esc_arch import load_model
    from esc_arch.runtime.inference import upscale

    model = data_dir / "ESC-light_x2_small.pth"
    result = esc_cli("onnx", "-m", model, "-o", tmp_path / "fp16.onnx", "--fp16")
    assert result.returncode == 0, result.stderr
    assert "ESC-light x2, opset 18, float16, input 'lq' (B, 3, H, W), any B, H and W" in result.stdout
    graph = onnx.load(str(tmp_path / "fp16.onnx"))
    onnx.checker.check_model(graph, full_check=True)
    float16 = onnx.TensorProto.FLOAT16
    assert [v.type.tensor_type.elem_type for v in (*graph.graph.input, *graph.graph.output)] == [float16, float16]
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
    assert {t.data_type for t in graph.graph.initializer} & floats == {float16}  # every weight in float16
    photos = []
    for name in ("bird", "butterfly"):
        bgr = cv2.imread(str(image_dir / "val" / f"{name}.png"))[:125, :97]
        photos.append(torch.from_numpy(bgr[..., ::-1].astype(np.float32) / 255).permute(2, 0, 1))
    lq = torch.stack(photos)
    with torch.no_grad():
        expected = upscale(load_model(model), lq).clamp(0, 1).numpy()
    session = ort.InferenceSession(str(tmp_path / "fp16.onnx"), providers=["CPUExecutionProvider"])
    out = session.run(None, {"lq": lq.numpy().astype(np.float16)})[0]
    assert out.dtype == np.float16 and out.shape == expected.shape == (2, 3, 250, 194)
    for o, e in zip(out.astype(np.float32).clip(0, 1), expected, strict=True):
        psnr = 10 * np.log10(1 / np.mean((o - e) ** 2))
        assert psnr >= FP16_PSNR_FLOOR, psnr


def test_esc_lte_fp16_graph(tiny_config, perturbed, tmp_path):
    """ESC-LTE's fp16 export: image, queries and output in float16, the full checker passes, and
    onnxruntime's CPU provider runs a batch of two (a tiny random network: within 0.05 of fp32;
    the query coordinates themselves are float16)."""
    import onnx

    from esc_arch import ESCLTE
    from esc_arch.archs.esc_lte_arch import make_coord

    net = perturbed(ESCLTE(encoder=tiny_config, hidden_dim=16, mlp_hidden=(24, 8))).eval()
    path = export_onnx(net, str(tmp_path / "lte16.onnx"), fp16=True)
    graph = onnx.load(path)
    onnx.checker.check_model(graph, full_check=True)
    types = [v.type.tensor_type.elem_type for v in (*graph.graph.input, *graph.graph.output)]
    assert types == [onnx.TensorProto.FLOAT16] * 4
    lq, coord = torch.rand(2, 3, 13, 21), make_coord(30, 47)[None].expand(2, -1, -1).contiguous()
    cell = torch.tensor([2 / 30, 2 / 47]).expand(2, coord.shape[1], 2).contiguous()
    with torch.no_grad():
        expected = (net((lq - 0.5) / 0.5, coord, cell) * 0.5 + 0.5).numpy()
    feed = {"lq": lq.numpy(), "coord": coord.numpy(), "cell": cell.numpy()}
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out = session.run(None, {k: v.astype(np.float16) for k, v in feed.items()})[0]
    assert out.dtype == np.float16 and out.shape == (2, 30 * 47, 3)
    assert np.abs(out.astype(np.float32) - expected).max() <= 0.05
