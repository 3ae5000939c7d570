"""Early option-file checks (esc_arch/basicsr_plugin/checks.py): a bad ``basicsr train`` /
``basicsr test`` stops with one clear line naming the file or key. Run in this process through
``basicsr_main``; tests/test_cli.py runs the console script itself."""

import shutil

import cv2
import pytest
import torch
import yaml

from esc_arch.basicsr_plugin.checks import OptionError, check_options


@pytest.fixture
def fails(basicsr_cli, write_options, tmp_path):
    """``fails(opt, *extra)``: ``basicsr train`` on ``opt`` must fail without a traceback;
    returns the last line of its error output."""

    def run(opt: dict, *extra) -> str:
        option = write_options(tmp_path / "bad.yml", opt)
        result = basicsr_cli("train", "-opt", option, *extra, cwd=tmp_path)
        assert result.returncode != 0
        assert "Traceback" not in result.stderr, result.stderr[-2000:]
        return result.stderr.strip().splitlines()[-1]

    return run


def test_scale_mismatch_is_reported(fails, train_options):
    opt = train_options("bad", scale=3, **{"network_g.upscaling_factor": 3, "datasets.train.gt_size": 48})
    message = fails(opt)
    assert "LR/HR sizes of" in message and "do not match scale 3" in message and "T4_LR_bicubic_X2_sub.lmdb" in message


def test_an_lmdb_sub_image_smaller_than_the_patch_is_refused(train_options, sr_data, tmp_path):
    """A small photo kept whole (prepare_sr_lmdb.py --min-size below gt_size) beside full crops:
    refused before training, not when BasicSR draws it."""
    from esc_arch.basicsr_plugin.data_prep import make_lmdb

    hr = cv2.imread(str(sr_data / "Set5/HR/butterfly.png"))
    for name, (h, w) in {"big_a": (96, 96), "big_b": (96, 96), "small": (72, 118)}.items():
        for folder, scale in (("HR", 1), ("X2", 2)):
            (tmp_path / folder).mkdir(exist_ok=True)
            crop = hr[:h, :w] if scale == 1 else cv2.resize(hr[:h, :w], (w // 2, h // 2), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(tmp_path / folder / f"{name}.png"), crop)
    for folder in ("HR", "X2"):
        make_lmdb(str(tmp_path / folder), str(tmp_path / f"{folder}.lmdb"))
    lmdbs = {"datasets.train.dataroot_gt": str(tmp_path / "HR.lmdb")}
    lmdbs["datasets.train.dataroot_lq"] = str(tmp_path / "X2.lmdb")
    with pytest.raises(OptionError) as error:
        check_options(train_options("bad", **lmdbs, **{"datasets.train.gt_size": 96}), "x.yml", is_train=True)
    message = str(error.value)
    assert "1 of 3 HR training image(s) are smaller than gt_size 96, e.g. 'small' (72x118)" in message, message
    assert "HR.lmdb" in message and "--min-size 96" in message
    opt = train_options("ok", **lmdbs, **{"datasets.train.gt_size": 72, "datasets.train.batch_size_per_gpu": 1})
    assert check_options(opt, "x.yml", is_train=True) == []


def test_missing_lmdb_is_reported(fails, train_options, tmp_path):
    opt = train_options("bad", **{"datasets.train.dataroot_lq": str(tmp_path / "nowhere.lmdb")})
    assert "nowhere.lmdb' does not exist" in fails(opt)


def test_corrupt_lmdb_is_reported(fails, train_options, sr_data, tmp_path):
    broken = tmp_path / "broken.lmdb"
    shutil.copytree(sr_data / "T4/T4_LR_bicubic_X2_sub.lmdb", broken)
    (broken / "data.mdb").write_bytes(b"\0" * 4096)
    opt = train_options("bad", **{"datasets.train.dataroot_lq": str(broken)})
    assert "broken.lmdb' cannot be read (corrupt?)" in fails(opt)


def test_missing_image_is_reported(fails, train_options, sr_data, tmp_path):
    lq = tmp_path / "lq"
    shutil.copytree(sr_data / "Set5/LR_bicubic/X2", lq)
    (lq / "butterflyx2.png").unlink()
    opt = train_options("bad", **{"datasets.val.dataroot_lq": str(lq)})
    message = fails(opt)
    assert "LR image(s) missing" in message and "butterflyx2" in message


def test_unknown_network_option_is_reported(fails, train_options):
    opt = train_options("bad", **{"network_g.num_head": 2})
    message = fails(opt)
    assert "network_g: unknown option 'num_head' for ESC" in message and "num_heads" in message


def test_checkpoint_of_another_architecture_is_reported(fails, train_options, tmp_path):
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 12, 3))
    torch.save({"params": other.state_dict()}, tmp_path / "rrdb.pth")
    opt = train_options("bad", **{"path.pretrain_network_g": str(tmp_path / "rrdb.pth")})
    line = fails(opt)  # the shape check's line (as load_model's), then the hint about network_g
    assert line.startswith(f"basicsr train: error: {tmp_path / 'rrdb.pth'}: 'plk_filter' is missing (and "), line
    assert "; the file does not fit network_g (ESC): network_g must be the configuration it was trained" in line


def test_fp16_on_cpu_is_a_clear_error(fails, train_options):
    assert "'fp16' needs a CUDA device" in fails(train_options("fp16", **{"train.mixed_precision": "fp16"}))


def test_cpu_runs_keep_freed_memory(fails, train_options, monkeypatch):
    """On the CPU ``basicsr train`` sets glibc's thresholds once, first thing (an ESC-light x2
    small-set run spent a third of its CPU time in the kernel without)."""
    from esc_arch.runtime import allocator

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(True) or True)
    opt = train_options("bad", scale=3, **{"network_g.upscaling_factor": 3, "datasets.train.gt_size": 48})
    assert "do not match scale 3" in fails(opt)
    assert calls == [True]


def test_missing_option_file_and_bad_force_yml(basicsr_cli, fails, train_options, tmp_path):
    result = basicsr_cli("train", "-opt", "nope.yml", cwd=tmp_path)
    assert result.returncode == 2 and "option file 'nope.yml' does not exist" in result.stderr
    message = fails(train_options("bad"), "--force_yml", "train:totl_iter=3")
    assert "'train:totl_iter' is not an option" in message


def test_option_errors_stop_before_any_work(basicsr_cli, write_options, train_options, tmp_path):
    option = write_options(tmp_path / "bad.yml", train_options("bad", **{"network_g.num_head": 2}))
    result = basicsr_cli("train", "-opt", option, cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("basicsr train: error: ")
    assert not (tmp_path / "experiments").exists()


def test_crop_strip_and_suffix_options_are_checked(repo_root, sr_data):
    opt = yaml.safe_load((repo_root / "options/test_ESC_light_x2.yml").read_text())
    opt["path"]["pretrain_network_g"] = None
    for dataset in opt["datasets"].values():  # every set: the prepared bird and butterfly
        dataset.update(dataroot_gt=str(sr_data / "Set5/HR"), dataroot_lq=str(sr_data / "Set5/LR_bicubic/X2"))
    check_options(opt, "x.yml", is_train=False)
    bad = dict(opt, val=dict(opt["val"], crop_strip={"size": "big"}))
    with pytest.raises(OptionError, match="crop_strip must be a mapping"):
        check_options(bad, "x.yml", is_train=False)
    no_suffix = dict(opt, val={k: v for k, v in opt["val"].items() if k != "suffix"})
    with pytest.raises(OptionError, match="needs a 'suffix'"):
        check_options(no_suffix, "x.yml", is_train=False)
