"""The embedded default job (`esc demo`) at toy size: real bundled photographs, BasicSR training, evaluation."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from esc_arch.basicsr_plugin.checks import check_options, read_lmdb_meta
from esc_arch.demo import DEMO_OPTIONS, TRAIN_IMAGES, VAL_IMAGES, demo_options, write_options

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent


def esc_demo(workdir: Path) -> subprocess.CompletedProcess:
    command = [str(BIN / "esc"), "demo", "--workdir", str(workdir), "--iters", "2", "--batch", "2", "--workers", "2"]
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_demo_runs_end_to_end_and_gates_on_bicubic(tmp_path):
    result = esc_demo(tmp_path / "demo")
    data = tmp_path / "demo/data"
    gt = read_lmdb_meta(str(data / "train_HR_sub.lmdb"))
    lq = read_lmdb_meta(str(data / "train_LR_bicubic_X2_sub.lmdb"))
    assert set(gt) == set(lq) and {k.rsplit("_s", 1)[0] for k in gt} == set(TRAIN_IMAGES)
    assert sorted(p.stem for p in (data / "val/HR").glob("*.png")) == sorted(VAL_IMAGES)
    assert not set(TRAIN_IMAGES) & set(VAL_IMAGES)  # held out

    opt = yaml.safe_load((tmp_path / "demo/train_ESC_light_x2_demo.yml").read_text())
    check_options(opt, "demo", is_train=True)
    assert opt["network_g"]["n_blocks"] == 3 and opt["train"]["total_iter"] == 2
    assert opt["datasets"]["train"]["dataroot_gt"] == str(data / "train_HR_sub.lmdb")

    out = result.stdout
    assert "training ESC-light x2 for 2 iterations" in out and "reusing" not in out
    assert "| image | bicubic PSNR / SSIM | ESC-light PSNR / SSIM |" in out
    for name in VAL_IMAGES:
        assert f"| {name} | " in out
    weights = tmp_path / "demo/experiments/ESC_light_x2_demo/models/net_g_2.pth"
    assert weights.is_file()
    # Two iterations cannot beat bicubic: the job must say so and fail, not pretend.
    if "ESC-light - bicubic: -" in out:
        assert result.returncode == 1 and "did not beat bicubic" in result.stderr
    else:
        assert result.returncode == 0

    # A second run reuses the data and the weights, and says so instead of claiming to train.
    again = esc_demo(tmp_path / "demo")
    assert "reusing prepared data in" in again.stdout and "reusing trained weights" in again.stdout
    assert "net_g_2.pth (2 iterations; delete" in again.stdout
    assert "training ESC-light" not in again.stdout and "lmdb ->" not in again.stderr
    assert again.stdout.split("| image |", 1)[1] == out.split("| image |", 1)[1]  # the same weights, the same table
    assert again.returncode == result.returncode


def shipped() -> dict:
    return yaml.safe_load(Path(DEMO_OPTIONS).read_text())


def test_demo_reads_the_shipped_option_file():
    assert Path(DEMO_OPTIONS) == ROOT / "options/train_ESC_light_x2_demo.yml"
    data = {"gt_lmdb": "a.lmdb", "lq_lmdb": "b.lmdb", "val_gt": "v", "val_lq": "w"}
    opt = demo_options(data, iters=10, batch=2, workers=0, lr=1e-3)
    expected = copy.deepcopy(shipped())  # the shipped file with only these edits
    train_set, val_set = expected["datasets"]["train"], expected["datasets"]["val"]
    train_set.update(dataroot_gt="a.lmdb", dataroot_lq="b.lmdb", batch_size_per_gpu=2, num_worker_per_gpu=0)
    val_set.update(dataroot_gt="v", dataroot_lq="w")
    expected["train"]["optim_g"]["lr"] = 1e-3
    expected["train"]["scheduler"]["milestones"] = [7]  # 350 of 500 in the shipped file
    expected["train"]["total_iter"] = 10
    expected["val"]["val_freq"] = 11
    expected["logger"]["save_checkpoint_freq"] = 10
    assert opt == expected
    assert demo_options(data, iters=10, batch=2, workers=0, lr=1e-3) == opt  # a new copy each time


def test_demo_defaults_are_the_shipped_values():
    from esc_arch.cli import esc_parser

    args = esc_parser().parse_args(["demo"])
    opt = shipped()
    assert args.iters == opt["train"]["total_iter"] == 500
    assert args.batch == opt["datasets"]["train"]["batch_size_per_gpu"] == 4
    assert args.lr == opt["train"]["optim_g"]["lr"] == 2e-3
    data = {"gt_lmdb": "a.lmdb", "lq_lmdb": "b.lmdb", "val_gt": "v", "val_lq": "w"}
    defaults = demo_options(data, iters=args.iters, batch=args.batch, workers=2, lr=args.lr)
    for key in ("train", "val", "logger", "network_g"):
        assert defaults[key] == opt[key]  # the flags' defaults reproduce the shipped file


def test_written_option_file_is_a_valid_basicsr_file(tmp_path):
    opt = demo_options({"gt_lmdb": "a.lmdb", "lq_lmdb": "b.lmdb", "val_gt": "v", "val_lq": "w"}, iters=10, batch=2,
                       workers=0, lr=1e-5)  # fmt: skip
    path = tmp_path / "train.yml"
    write_options(opt, str(path))
    text = path.read_text()
    assert text.startswith("# Written by esc demo")
    assert yaml.safe_load(text) == opt and opt["train"]["optim_g"]["lr"] == 1e-5
    assert opt["model_type"] == "ESCModel" and opt["train"]["optim_g"]["type"] == "AdamW"
