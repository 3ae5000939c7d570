"""End to end with BasicSR on real images: data scripts -> LMDB -> `basicsr train` -> resume -> `basicsr test`.

A tiny ESC (dim 16, one block, window 8) keeps each run to seconds on a CPU.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
import torch

from conftest import DATA, run, write

ROOT = Path(__file__).resolve().parent.parent
IMAGES = DATA / "images"
BIN = Path(sys.executable).parent
TINY_NET = dict(
    type="ESC", dim=16, pdim=8, kernel_size=5, n_blocks=1, conv_blocks=2, window_size=8, num_heads=2,
    upscaling_factor=2, exp_ratio=1.25, attn_type="auto",
)  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Training LMDBs and a validation set, made by the datasets/ scripts from real photographs."""
    root = tmp_path_factory.mktemp("data")
    run(
        [
            sys.executable,
            str(ROOT / "datasets/prepare_sr_lmdb.py"),
            "--hr",
            str(IMAGES / "train"),
            "--name",
            "T4",
            "--out",
            str(root / "T4"),
            "--scales",
            "2",
            "--crop-size",
            "96",
            "--step",
            "48",
            "--workers",
            "2",
        ],
        root,
    )
    run([sys.executable, str(ROOT / "datasets/prepare_benchmark.py"), "--hr", f"Set5={IMAGES / 'val'}", "--out",
         str(root), "--scales", "2", "--workers", "1"], root)  # fmt: skip
    return root


def train_options(data: Path, name: str, **changes) -> dict:
    opt = {
        "name": name,
        "model_type": "ESCModel",
        "scale": 2,
        "num_gpu": "auto",
        "manual_seed": 0,
        "datasets": {
            "train": {
                "name": "T4",
                "type": "PairedImageDataset",
                "dataroot_gt": str(data / "T4/T4_HR_sub.lmdb"),
                "dataroot_lq": str(data / "T4/T4_LR_bicubic_X2_sub.lmdb"),
                "io_backend": {"type": "lmdb"},
                "gt_size": 32,
                "use_hflip": True,
                "use_rot": True,
                "num_worker_per_gpu": 0,
                "batch_size_per_gpu": 2,
                "dataset_enlarge_ratio": 1,
                "prefetch_mode": None,
            },
            "val": {
                "name": "Set5",
                "type": "PairedImageDataset",
                "dataroot_gt": str(data / "Set5/HR"),
                "dataroot_lq": str(data / "Set5/LR_bicubic/X2"),
                "filename_tmpl": "{}x2",
                "io_backend": {"type": "disk"},
            },
        },
        "network_g": dict(TINY_NET),
        "path": {"pretrain_network_g": None, "strict_load_g": True, "resume_state": None},
        "train": {
            "ema_decay": 0.9,
            "optim_g": {"type": "AdamW", "lr": 1e-3, "weight_decay": 0, "betas": [0.9, 0.9]},
            "scheduler": {"type": "MultiStepLR", "milestones": [100], "gamma": 0.5},
            "total_iter": 4,
            "warmup_iter": 2,
            "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0, "reduction": "mean"},
        },
        "val": {
            "val_freq": 2,
            "save_img": False,
            "metrics": {"psnr": {"type": "calculate_psnr", "crop_border": 2, "test_y_channel": True}},
        },
        "logger": {"print_freq": 1, "save_checkpoint_freq": 2, "use_tb_logger": False, "wandb": {"project": None}},
    }
    for key, value in changes.items():
        node = opt
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return opt


def test_data_scripts_make_basicsr_layouts(data):
    from esc_arch.basicsr_plugin.checks import read_lmdb_meta

    gt, lq = read_lmdb_meta(str(data / "T4/T4_HR_sub.lmdb")), read_lmdb_meta(str(data / "T4/T4_LR_bicubic_X2_sub.lmdb"))
    assert set(gt) == set(lq) and len(gt) > 20
    assert all(gt[k][:2] == (96, 96) and lq[k][:2] == (48, 48) for k in gt)
    assert "t1_s001" in gt
    bird_lr = cv2.imread(str(data / "Set5/LR_bicubic/X2/birdx2.png"))
    assert bird_lr.shape == (144, 144, 3)
    # idempotent: a second run keeps every output as it is
    stamp = (data / "T4/T4_HR_sub.lmdb/data.mdb").stat().st_mtime_ns
    script = str(ROOT / "datasets/prepare_sr_lmdb.py")
    out = run([sys.executable, script, "--hr", str(IMAGES / "train"), "--name", "T4", "--out", str(data / "T4"),
               "--scales", "2", "--crop-size", "96", "--step", "48"], data)  # fmt: skip
    assert "done" in out.stdout
    assert (data / "T4/T4_HR_sub.lmdb/data.mdb").stat().st_mtime_ns == stamp


def test_data_script_reports_bad_images(tmp_path):
    folder = tmp_path / "hr"
    folder.mkdir()
    (folder / "good.png").write_bytes((IMAGES / "train/t1.png").read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    result = run([sys.executable, str(ROOT / "datasets/prepare_sr_lmdb.py"), "--hr", str(folder), "--name", "x",
                  "--out", str(tmp_path / "out"), "--scales", "2", "--crop-size", "64", "--step", "64"],
                 tmp_path, check=False)  # fmt: skip
    assert result.returncode == 1
    assert "broken.png: unreadable or empty image" in result.stderr
    assert list((tmp_path / "out/x_HR_sub").glob("good_s*.png"))  # the good image was still processed


def test_train_resume_test(data, tmp_path):
    """A few iterations with validation and a save, --auto_resume continues, basicsr test writes results."""
    option = write(tmp_path / "train.yml", train_options(data, "tiny_x2"))
    first = run([str(BIN / "basicsr"), "train", "-opt", str(option), "--root", str(tmp_path / "runs")], tmp_path)
    exp = tmp_path / "runs/experiments/tiny_x2"
    log = "".join(p.read_text() for p in exp.glob("train_*.log"))
    assert "ESC window attention backend: sdpa (auto on cpu)" in log
    assert "# psnr:" in log and re.search(r"iter: +4, lr:\(1\.000e-03,\)", log)
    assert re.search(r"iter: +1, lr:\(5\.000e-04,\)", log)  # linear warm-up over warmup_iter=2
    checkpoint = torch.load(exp / "models/net_g_4.pth", weights_only=True)
    assert set(checkpoint) == {"params", "params_ema"}
    assert (exp / "training_states/4.state").is_file()
    assert not list(exp.rglob("*.tmp"))
    assert first.returncode == 0

    again = run([str(BIN / "basicsr"), "train", "-opt", str(option), "--root", str(tmp_path / "runs"), "--auto_resume",
                 "--force_yml", "train:total_iter=6"], tmp_path)  # fmt: skip
    assert again.returncode == 0
    logs = sorted(exp.glob("train_*.log"), key=lambda p: p.stat().st_mtime)
    assert "Resuming training from epoch: " in logs[-1].read_text() and "iter: 4." in logs[-1].read_text()
    assert (exp / "models/net_g_6.pth").is_file() and (exp / "training_states/6.state").is_file()

    test_opt = {
        "name": "tiny_x2_test",
        "model_type": "ESCModel",
        "scale": 2,
        "num_gpu": "auto",
        "datasets": {"test_1": dict(train_options(data, "x")["datasets"]["val"])},
        "network_g": dict(TINY_NET),
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
    test_file = write(tmp_path / "test.yml", test_opt)
    run([str(BIN / "basicsr"), "test", "-opt", str(test_file)], tmp_path)  # --root defaults to the cwd
    results = tmp_path / "results/tiny_x2_test"
    saved = sorted(p.name for p in (results / "visualization/Set5").glob("*.png"))
    assert saved == ["birdx2_tiny_x2_test.png", "butterflyx2_tiny_x2_test.png"]  # BasicSR names by LQ file
    assert cv2.imread(str(results / "visualization/Set5/birdx2_tiny_x2_test.png")).shape == (288, 288, 3)
    test_log = "".join(p.read_text() for p in results.glob("test_*.log"))
    assert "# psnr:" in test_log and "# ssim:" in test_log


def test_kill_9_then_auto_resume(data, tmp_path):
    option = write(
        tmp_path / "train.yml",
        train_options(data, "killed", **{"train.total_iter": 10_000, "logger.save_checkpoint_freq": 1, "val": None}),
    )
    states = tmp_path / "experiments/killed/training_states"
    proc = subprocess.Popen([str(BIN / "basicsr"), "train", "-opt", str(option)], cwd=tmp_path,
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
    resumed = run([str(BIN / "basicsr"), "train", "-opt", str(option), "--auto_resume",
                   "--force_yml", f"train:total_iter={last + 1}"], tmp_path)  # fmt: skip
    assert resumed.returncode == 0
    logs = sorted((tmp_path / "experiments/killed").glob("train_*.log"), key=lambda p: p.stat().st_mtime)
    assert f"iter: {last}." in logs[-1].read_text()
    assert (tmp_path / f"experiments/killed/models/net_g_{last + 1}.pth").is_file()


def test_two_process_cpu_training(data, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    option = write(tmp_path / "train.yml", train_options(data, "ddp", **{"train.total_iter": 3, "val": None}))
    run([str(BIN / "torchrun"), "--nproc_per_node=2", f"--master_port={port}", "-m", "esc_arch.cli", "train",
         "-opt", str(option), "--launcher", "pytorch"], tmp_path)  # fmt: skip
    log = "".join(p.read_text() for p in (tmp_path / "experiments/ddp").glob("train_*.log"))
    assert "World size (gpu number): 2" in log
    assert (tmp_path / "experiments/ddp/models/net_g_latest.pth").is_file()


# --------------------------------------------------------------------------- robustness: one clear message each


def _fails(tmp_path, opt, *extra) -> str:
    option = write(tmp_path / "bad.yml", opt)
    result = run([str(BIN / "basicsr"), "train", "-opt", str(option), *extra], tmp_path, check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    return result.stderr.strip().splitlines()[-1]


def test_scale_mismatch_is_reported(data, tmp_path):
    opt = train_options(data, "bad", scale=3, **{"network_g.upscaling_factor": 3})
    message = _fails(tmp_path, opt)
    assert "LR/HR sizes of" in message and "do not match scale 3" in message and "T4_LR_bicubic_X2_sub.lmdb" in message


def test_missing_lmdb_is_reported(data, tmp_path):
    opt = train_options(data, "bad", **{"datasets.train.dataroot_lq": str(tmp_path / "nowhere.lmdb")})
    assert "nowhere.lmdb' does not exist" in _fails(tmp_path, opt)


def test_corrupt_lmdb_is_reported(data, tmp_path):
    import shutil

    broken = tmp_path / "broken.lmdb"
    shutil.copytree(data / "T4/T4_LR_bicubic_X2_sub.lmdb", broken)
    (broken / "data.mdb").write_bytes(b"\0" * 4096)
    opt = train_options(data, "bad", **{"datasets.train.dataroot_lq": str(broken)})
    message = _fails(tmp_path, opt)
    assert "broken.lmdb' cannot be read (corrupt?)" in message


def test_missing_image_is_reported(data, tmp_path):
    import shutil

    lq = tmp_path / "lq"
    shutil.copytree(data / "Set5/LR_bicubic/X2", lq)
    (lq / "butterflyx2.png").unlink()
    opt = train_options(data, "bad", **{"datasets.val.dataroot_lq": str(lq)})
    message = _fails(tmp_path, opt)
    assert "LR image(s) missing" in message and "butterflyx2" in message


def test_unknown_network_option_is_reported(data, tmp_path):
    opt = train_options(data, "bad", **{"network_g.num_head": 2})
    message = _fails(tmp_path, opt)
    assert "network_g: unknown option 'num_head' for ESC" in message and "num_heads" in message


def test_checkpoint_of_another_architecture_is_reported(data, tmp_path):
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 12, 3))
    torch.save({"params": other.state_dict()}, tmp_path / "rrdb.pth")
    opt = train_options(data, "bad", **{"path.pretrain_network_g": str(tmp_path / "rrdb.pth")})
    message = _fails(tmp_path, opt)
    assert "rrdb.pth' does not hold the ESC network" in message


def test_missing_option_file_and_bad_force_yml(tmp_path, data):
    result = run([str(BIN / "basicsr"), "train", "-opt", "nope.yml"], tmp_path, check=False)
    assert result.returncode == 2 and "option file 'nope.yml' does not exist" in result.stderr
    message = _fails(tmp_path, train_options(data, "bad"), "--force_yml", "train:totl_iter=3")
    assert "'train:totl_iter' is not an option" in message


def test_bf16_training_with_gradient_clipping(data, tmp_path):
    opt = train_options(data, "bf16", **{"train.total_iter": 2, "train.mixed_precision": "bf16", "train.grad_clip": 0.5,
                                         "val": None})  # fmt: skip
    run([str(BIN / "basicsr"), "train", "-opt", str(write(tmp_path / "t.yml", opt))], tmp_path)
    log = "".join(p.read_text() for p in (tmp_path / "experiments/bf16").glob("train_*.log"))
    assert re.search(r"iter: +2, .*l_pix: [0-9.e+-]+ grad_norm: [0-9.e+-]+", log)
    params = torch.load(tmp_path / "experiments/bf16/models/net_g_latest.pth", weights_only=True)["params"]
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in params.values())


def test_fp16_on_cpu_is_a_clear_error(data, tmp_path):
    opt = train_options(data, "fp16", **{"train.mixed_precision": "fp16"})
    assert "'fp16' needs a CUDA device" in _fails(tmp_path, opt)
