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
