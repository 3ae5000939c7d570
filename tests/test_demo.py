"""``esc demo`` (esc_arch/basicsr_plugin/demo.py): the shipped option file and the flags, the bicubic gate,
and the whole job at toy size (real bundled photographs, BasicSR training, evaluation)."""

import copy
from pathlib import Path

import pytest
import yaml

from esc_arch.basicsr_plugin import demo
from esc_arch.basicsr_plugin.checks import check_options, read_lmdb_meta

DATA = {"gt_lmdb": "a.lmdb", "lq_lmdb": "b.lmdb", "val_gt": "v", "val_lq": "w"}


def shipped() -> dict:
    return yaml.safe_load(Path(demo.DEMO_OPTIONS).read_text())


def test_demo_reads_the_shipped_option_file(repo_root):
    assert Path(demo.DEMO_OPTIONS) == repo_root / "options/train_ESC_light_x2_demo.yml"
    opt = demo.demo_options(DATA, iters=10, batch=2, workers=0, lr=1e-3)
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
    opt["train"]["optim_g"]["lr"] = 5.0  # each call returns a new dict: editing one leaves the next alone
    assert demo.demo_options(DATA, iters=10, batch=2, workers=0, lr=1e-3) == expected


def test_demo_defaults_are_the_shipped_values():
    from esc_arch.cli import esc_parser

    args = esc_parser().parse_args(["demo"])
    opt = shipped()
    assert args.iters == opt["train"]["total_iter"] == 500
    assert args.batch == opt["datasets"]["train"]["batch_size_per_gpu"] == 4
    assert args.lr == opt["train"]["optim_g"]["lr"] == 2e-3
    defaults = demo.demo_options(DATA, iters=args.iters, batch=args.batch, workers=2, lr=args.lr)
    for key in ("train", "val", "logger", "network_g"):
        assert defaults[key] == opt[key]  # the flags' defaults reproduce the shipped file


def test_written_option_file_is_a_valid_basicsr_file(tmp_path):
    opt = demo.demo_options(DATA, iters=10, batch=2, workers=0, lr=1e-5)
    path = tmp_path / "train.yml"
    demo.write_options(opt, str(path))
    text = path.read_text()
    assert text.startswith("# Written by esc demo")
    assert yaml.safe_load(text) == opt and opt["train"]["optim_g"]["lr"] == 1e-5
    assert opt["model_type"] == "ESCModel" and opt["train"]["optim_g"]["type"] == "AdamW"


@pytest.mark.parametrize(("esc_psnr", "status"), [(30.5, 0), (30.0, 1), (29.5, 1)])
def test_exit_status_is_the_bicubic_gate(tmp_path, monkeypatch, capsys, esc_psnr, status):
    """Exit 0 only when ESC beats bicubic on the mean PSNR (here with prepared data and
    trained weights in place, so the job goes straight to the evaluation)."""
    workdir = tmp_path / "demo"
    weights = workdir / "experiments/ESC_light_x2_demo/models/net_g_3.pth"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"")
    rows = [
        {"image": "a", "bicubic_psnr": 31.0, "bicubic_ssim": 0.9, "ESC_psnr": esc_psnr + 1, "ESC_ssim": 0.9},
        {"image": "b", "bicubic_psnr": 29.0, "bicubic_ssim": 0.8, "ESC_psnr": esc_psnr - 1, "ESC_ssim": 0.8},
    ]
    monkeypatch.setattr(demo, "_data_ready", lambda data: True)
    monkeypatch.setattr(demo, "evaluate", lambda path, data: rows if path == str(weights) else None)
    assert demo.run_demo(str(workdir), iters=3, batch=2, workers=1) == status
    out, err = capsys.readouterr()
    assert "reusing prepared data" in out and "reusing trained weights" in out and "training" not in out
    assert f"ESC-light - bicubic: {esc_psnr - 30.0:+.2f} dB PSNR" in out
    assert ("did not beat bicubic" in err) == (status == 1)


def test_a_workdir_that_is_a_file_is_one_line(esc_cli, tmp_path):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    result = esc_cli("demo", "--workdir", tmp_path / "notes.txt")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"esc: error: --workdir {tmp_path / 'notes.txt'}: exists and is not a folder\n"


@pytest.mark.slow
def test_demo_runs_end_to_end_and_gates_on_bicubic(run_command, esc_bin, tmp_path):
    command = [esc_bin, "demo", "--workdir", tmp_path / "demo", "--iters", "2", "--batch", "2", "--workers", "2"]
    result = run_command(command, check=False)
    data = tmp_path / "demo/data"
    gt = read_lmdb_meta(str(data / "train_HR_sub.lmdb"))
    lq = read_lmdb_meta(str(data / "train_LR_bicubic_X2_sub.lmdb"))
    assert set(gt) == set(lq) and {k.rsplit("_s", 1)[0] for k in gt} == set(demo.TRAIN_IMAGES)
    assert sorted(p.stem for p in (data / "val/HR").glob("*.png")) == sorted(demo.VAL_IMAGES)
    assert not set(demo.TRAIN_IMAGES) & set(demo.VAL_IMAGES)  # held out

    opt = yaml.safe_load((tmp_path / "demo/train_ESC_light_x2_demo.yml").read_text())
    check_options(opt, "demo", is_train=True)
    assert opt["network_g"]["n_blocks"] == 3 and opt["train"]["total_iter"] == 2
    assert opt["datasets"]["train"]["dataroot_gt"] == str(data / "train_HR_sub.lmdb")

    out = result.stdout
    assert "training ESC-light x2 for 2 iterations" in out and "reusing" not in out
    assert "| image | bicubic PSNR / SSIM | ESC-light PSNR / SSIM |" in out
    for name in demo.VAL_IMAGES:
        assert f"| {name} | " in out
    weights = tmp_path / "demo/experiments/ESC_light_x2_demo/models/net_g_2.pth"
    assert weights.is_file()
    # Two iterations cannot beat bicubic: the job must say so and fail, not pretend.
    assert "ESC-light - bicubic: -" in out, out[-2000:]
    assert result.returncode == 1 and "did not beat bicubic" in result.stderr

    # A second run reuses the data and the weights, and says so instead of claiming to train.
    again = run_command(command, check=False)
    assert "reusing prepared data in" in again.stdout and "reusing trained weights" in again.stdout
    assert "net_g_2.pth (2 iterations; delete" in again.stdout
    assert "training ESC-light" not in again.stdout and "lmdb ->" not in again.stderr
    assert again.stdout.split("| image |", 1)[1] == out.split("| image |", 1)[1]  # the same weights, the same table
    assert again.returncode == 1
