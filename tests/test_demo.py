"""The embedded default job (`esc demo`) at toy size: real bundled photographs, BasicSR training, evaluation."""

import subprocess
import sys
from pathlib import Path

import yaml

from esc_arch.checks import check_options, read_lmdb_meta
from esc_arch.demo import TRAIN_IMAGES, VAL_IMAGES, demo_options

BIN = Path(sys.executable).parent


def test_demo_runs_end_to_end_and_gates_on_bicubic(tmp_path):
    result = subprocess.run(
        [
            str(BIN / "esc"),
            "demo",
            "--workdir",
            str(tmp_path / "demo"),
            "--iters",
            "2",
            "--batch",
            "2",
            "--workers",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    data = tmp_path / "demo/data"
    gt = read_lmdb_meta(str(data / "train_HR_sub.lmdb"))
    lq = read_lmdb_meta(str(data / "train_LR_bicubic_X2_sub.lmdb"))
    assert set(gt) == set(lq) and {k.rsplit("_s", 1)[0] for k in gt} == set(TRAIN_IMAGES)
    assert sorted(p.stem for p in (data / "val/HR").glob("*.png")) == sorted(VAL_IMAGES)
    assert not set(TRAIN_IMAGES) & set(VAL_IMAGES)  # held out

    opt = yaml.safe_load((tmp_path / "demo/train_ESC_light_x2_demo.yml").read_text())
    check_options(opt, "demo", is_train=True)
    assert opt["network_g"]["n_blocks"] == 3 and opt["train"]["total_iter"] == 2

    out = result.stdout
    assert "| image | bicubic PSNR / SSIM | ESC-light PSNR / SSIM |" in out
    for name in VAL_IMAGES:
        assert f"| {name} | " in out
    assert (tmp_path / "demo/experiments/ESC_light_x2_demo/models/net_g_2.pth").is_file()
    # Two iterations cannot beat bicubic: the job must say so and fail, not pretend.
    if "ESC-light - bicubic: -" in out:
        assert result.returncode == 1 and "did not beat bicubic" in result.stderr
    else:
        assert result.returncode == 0


def test_demo_options_are_a_valid_basicsr_file():
    text = demo_options({"gt_lmdb": "a.lmdb", "lq_lmdb": "b.lmdb", "val_gt": "v", "val_lq": "w"}, iters=10, batch=2,
                        workers=0)  # fmt: skip
    opt = yaml.safe_load(text)
    assert opt["model_type"] == "ESCModel" and opt["train"]["optim_g"]["type"] == "AdamW"
    assert opt["train"]["scheduler"]["milestones"] == [7]
