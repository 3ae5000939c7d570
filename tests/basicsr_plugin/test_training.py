"""``basicsr train`` / ``basicsr test`` end to end on real images: LMDBs (``sr_data``) -> train
-> resume -> test in this process (quick tier), then through the console script: ``kill -9``
then resume, a 2-process gloo run, bf16 training (slow). The tiny ESC keeps each run to seconds
on a CPU. The checks that stop a bad run before any work are in test_checks.py."""

import os
import re
import signal
import socket
import subprocess
import time

import cv2
import pytest
import torch


def test_train_resume_test(basicsr_cli, write_options, train_options, tiny_network_g, tmp_path):
    """A few iterations with validation and a save, --auto_resume continues, basicsr test writes results."""
    option = write_options(tmp_path / "train.yml", train_options("tiny_x2"))
    result = basicsr_cli("train", "-opt", option, "--root", tmp_path / "runs", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    exp = tmp_path / "runs/experiments/tiny_x2"
    log = "".join(p.read_text() for p in exp.glob("train_*.log"))
    assert "# psnr:" in log and re.search(r"iter: +4, lr:\(1\.000e-03,\)", log)
    assert re.search(r"iter: +1, lr:\(5\.000e-04,\)", log)  # linear warm-up over warmup_iter=2
    checkpoint = torch.load(exp / "models/net_g_4.pth", weights_only=True)
    assert set(checkpoint) == {"params", "params_ema"}
    assert (exp / "training_states/4.state").is_file()
    assert not list(exp.rglob("*.tmp"))

    result = basicsr_cli("train", "-opt", option, "--root", tmp_path / "runs", "--auto_resume", "--force_yml",
                         "train:total_iter=6", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    logs = sorted(exp.glob("train_*.log"), key=lambda p: p.stat().st_mtime)
    assert "Resuming training from epoch: " in logs[-1].read_text() and "iter: 4." in logs[-1].read_text()
    assert (exp / "models/net_g_6.pth").is_file() and (exp / "training_states/6.state").is_file()

    test_opt = {
        "name": "tiny_x2_test",
        "model_type": "ESCModel",
        "scale": 2,
        "num_gpu": "auto",
        "datasets": {"test_1": dict(train_options("x")["datasets"]["val"])},
        "network_g": dict(tiny_network_g),
        "path": {"pretrain_network_g": str(exp / "models/net_g_latest.pth"), "param_key_g": "params_ema"},
        "val": {
            "save_img": True,
            "suffix": None,
            "tile": 64,
            "tile_overlap": 8,
            "metrics": {
                "psnr": {"type": "calculate_psnr", "crop_border": 2, "test_y_channel": True},
                "ssim": {"type": "calculate_ssim", "crop_border": 2, "test_y_channel": True},
            },
        },
    }
    test_file = write_options(tmp_path / "test.yml", test_opt)
    result = basicsr_cli("test", "-opt", test_file, cwd=tmp_path)  # --root defaults to the cwd
    assert result.returncode == 0, result.stderr[-2000:]
    results = tmp_path / "results/tiny_x2_test"
    saved = sorted(p.name for p in (results / "visualization/Set5").glob("*.png"))
    assert saved == ["birdx2_tiny_x2_test.png", "butterflyx2_tiny_x2_test.png"]  # BasicSR names by LQ file
    assert cv2.imread(str(results / "visualization/Set5/birdx2_tiny_x2_test.png")).shape == (288, 288, 3)
    test_log = "".join(p.read_text() for p in results.glob("test_*.log"))
    assert "# psnr:" in test_log and "# ssim:" in test_log


@pytest.mark.slow
def test_kill_9_then_auto_resume(run_command, basicsr_bin, write_options, train_options, tmp_path):
    option = write_options(
        tmp_path / "train.yml",
        train_options("killed", **{"train.total_iter": 10_000, "logger.save_checkpoint_freq": 1, "val": None}),
    )
    states = tmp_path / "experiments/killed/training_states"
    proc = subprocess.Popen([basicsr_bin, "train", "-opt", str(option)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline = time.time() + 300
        while time.time() < deadline and len(list(states.glob("*.state"))) < 3:
            time.sleep(0.2)
        assert len(list(states.glob("*.state"))) >= 3, "training did not save checkpoints"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    last = max(int(p.stem) for p in states.glob("*.state"))
    for state in states.glob("*.state"):  # every file that exists under its final name is complete
        torch.load(state, weights_only=True)
    for model in (tmp_path / "experiments/killed/models").glob("*.pth"):
        torch.load(model, weights_only=True)
    run_command([basicsr_bin, "train", "-opt", option, "--auto_resume", "--force_yml", f"train:total_iter={last + 1}"],
                tmp_path)  # fmt: skip
    logs = sorted((tmp_path / "experiments/killed").glob("train_*.log"), key=lambda p: p.stat().st_mtime)
    assert f"iter: {last}." in logs[-1].read_text()
    assert re.search(r"ESC window attention backend: \w+", logs[-1].read_text())  # said once per process
    assert (tmp_path / f"experiments/killed/models/net_g_{last + 1}.pth").is_file()


@pytest.mark.slow
def test_two_process_cpu_training(run_command, torchrun_bin, write_options, train_options, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    option = write_options(tmp_path / "train.yml", train_options("ddp", **{"train.total_iter": 3, "val": None}))
    run_command([torchrun_bin, "--nproc_per_node=2", f"--master_port={port}", "-m", "esc_arch.cli", "train",
                 "-opt", option, "--launcher", "pytorch"], tmp_path)  # fmt: skip
    log = "".join(p.read_text() for p in (tmp_path / "experiments/ddp").glob("train_*.log"))
    assert "World size (gpu number): 2" in log
    assert (tmp_path / "experiments/ddp/models/net_g_latest.pth").is_file()


@pytest.mark.slow
def test_bf16_training_with_gradient_clipping(run_command, basicsr_bin, write_options, train_options, tmp_path):
    opt = train_options("bf16", **{"train.total_iter": 2, "train.mixed_precision": "bf16", "train.grad_clip": 0.5,
                                   "val": None})  # fmt: skip
    run_command([basicsr_bin, "train", "-opt", write_options(tmp_path / "t.yml", opt)], tmp_path)
    log = "".join(p.read_text() for p in (tmp_path / "experiments/bf16").glob("train_*.log"))
    assert re.search(r"iter: +2, .*l_pix: [0-9.e+-]+ grad_norm: [0-9.e+-]+", log)
    params = torch.load(tmp_path / "experiments/bf16/models/net_g_latest.pth", weights_only=True)["params"]
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in params.values())
