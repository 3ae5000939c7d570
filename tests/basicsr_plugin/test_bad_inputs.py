"""Bad inputs to ``basicsr train`` / ``basicsr test`` and the data scripts: each stops before
any work with one line naming the culprit (file or key), or is handled without loss."""

import logging
import os
import re
import shutil
from pathlib import Path

import cv2
import pytest
import torch
import yaml

from esc_arch.cli import basicsr_main

IMAGES = Path(__file__).parent.parent / "data" / "images"
TINY_NET = dict(
    type="ESC", dim=16, pdim=8, kernel_size=5, n_blocks=1, conv_blocks=1, window_size=8, num_heads=2,
    upscaling_factor=2, exp_ratio=1.25, attn_type="sdpa",
)  # fmt: skip


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    """HR crops of the real training photos and their x2 and x4 LR images, on disk."""
    root = tmp_path_factory.mktemp("pairs")
    for folder in ("HR", "LR2", "LR4"):
        (root / folder).mkdir()
    for path in sorted((IMAGES / "train").glob("*.png")):
        hr = cv2.imread(str(path))[:64, :64]
        cv2.imwrite(str(root / "HR" / path.name), hr)
        for scale in (2, 4):
            cv2.imwrite(
                str(root / f"LR{scale}" / path.name), cv2.resize(hr, (64 // scale, 64 // scale), cv2.INTER_AREA)
            )
    return root


def options(pairs: Path) -> dict:
    dataset = {
        "name": "T4", "type": "PairedImageDataset", "dataroot_gt": str(pairs / "HR"),
        "dataroot_lq": str(pairs / "LR2"), "io_backend": {"type": "disk"},
    }  # fmt: skip
    return {
        "name": "bad", "model_type": "ESCModel", "scale": 2, "num_gpu": "auto", "manual_seed": 0,
        "datasets": {
            "train": dict(dataset, gt_size=32, use_hflip=True, use_rot=True, num_worker_per_gpu=0,
                          batch_size_per_gpu=2, dataset_enlarge_ratio=1),
            "val": dict(dataset, name="val"),
        },
        "network_g": dict(TINY_NET),
        "path": {"pretrain_network_g": None, "strict_load_g": True, "resume_state": None},
        "train": {
            "ema_decay": 0.9, "optim_g": {"type": "AdamW", "lr": 1e-3}, "total_iter": 4, "warmup_iter": 0,
            "scheduler": {"type": "MultiStepLR", "milestones": [100], "gamma": 0.5},
            "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0},
        },
        "val": {"val_freq": 2, "save_img": False, "metrics": {"psnr": {"type": "calculate_psnr", "crop_border": 2}}},
        "logger": {"print_freq": 1, "save_checkpoint_freq": 2, "use_tb_logger": False},
    }  # fmt: skip


def _set(opt: dict, key: str, value) -> None:
    *parents, last = key.split(".")
    for part in parents:
        opt = opt[part]
    if value is _DELETE:
        del opt[last]
    else:
        opt[last] = value


_DELETE = object()

#: (option changes, the one error line's expected content)
BAD_TRAIN_OPTIONS = [
    ({"train.ema_deacy": 0.999}, r"train: unknown option 'ema_deacy' \(did you mean 'ema_decay'\?\)"),
    ({"val.val_frq": 5}, r"val: unknown option 'val_frq' \(did you mean 'val_freq'\?\)"),
    ({"datasets.train.use_hfilp": True}, r"datasets: train: unknown option 'use_hfilp' \(did you mean 'use_hflip'"),
    ({"path.pretrain_netwrok_g": "x.pth"}, r"path: unknown option 'pretrain_netwrok_g'"),
    ({"logger.print_frequency": 5}, r"logger: unknown option 'print_frequency' \(did you mean 'print_freq'"),
    ({"train.total_iter": 0}, r"train: total_iter: 0 is not a positive integer"),
    ({"train.total_iter": -5}, r"train: total_iter: -5 is not a positive integer"),
    ({"train.total_iter": "four"}, r"train: total_iter: 'four' is not a positive integer"),
    ({"train.total_iter": _DELETE}, r"train: 'total_iter' is missing"),
    ({"scale": _DELETE}, r"'scale' is missing"),
    ({"datasets.train.dataroot_gt": _DELETE}, r"datasets: train: 'dataroot_gt' is missing"),
    ({"train.optim_g.lr": "1e-3"}, r"train: optim_g: lr: '1e-3' is not a positive number"),
    ({"logger.save_checkpoint_freq": 0}, r"logger: save_checkpoint_freq: 0 is not a positive integer"),
    ({"train.ema_decay": 1.5}, r"train: ema_decay: 1.5 must be a number in \[0, 1\)"),
    ({"datasets.train.gt_size": 33}, r"datasets: train: gt_size 33 is not a multiple of scale 2"),
    ({"datasets.train.batch_size_per_gpu": 16}, r"batch_size_per_gpu 16 is larger than the 4 training images"),
    (
        {"datasets.train.gt_size": 128},
        r"4 of 4 HR training image\(s\) are smaller than gt_size 128, e.g. .*t\d+\.png' \(64x64\)",
    ),
    ({"datasets.train.dataroot_lq": "LR4"}, r"LR/HR sizes do not match scale 2: LR .*LR4/t\d+\.png is 16x16"),
    ({"network_g.type": "ESCX"}, r"network_g: type 'ESCX' is not a registered network \(did you mean 'ESC'\?\)$"),
]


@pytest.mark.parametrize(("changes", "message"), BAD_TRAIN_OPTIONS, ids=[next(iter(c)) for c, _ in BAD_TRAIN_OPTIONS])
def test_bad_training_options_stop_before_any_work(pairs, tmp_path, capsys, changes, message):
    opt = options(pairs)
    for key, value in changes.items():
        if value == "LR4":
            value = str(pairs / "LR4")
        _set(opt, key, value)
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump(opt))
    assert basicsr_main(["train", "-opt", str(path), "--root", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    error = err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("basicsr train: error: ") and str(path) in error[0]
    assert not out.strip()  # no stray line (BasicSR's registry prints one for an unknown name)
    assert re.search(message, error[0]), error[0]
    assert not (tmp_path / "experiments").exists()  # nothing was started


def test_unknown_key_far_from_any_known_one_is_a_warning(pairs):
    from esc_arch.basicsr_plugin.checks import check_options

    opt = options(pairs)
    opt["train"]["my_note"] = "kept for later"
    assert check_options(opt, "x.yml", is_train=True) == [
        "x.yml: train: option 'my_note' is not read by BasicSR or this project's models"
    ]
    assert check_options(options(pairs), "x.yml", is_train=True) == []  # the shipped keys are all known


def test_every_shipped_option_file_has_only_known_keys():
    from esc_arch.basicsr_plugin.checks import _check_keys

    files = sorted(Path(__file__).parents[2].glob("options/*.yml"))
    assert len(files) > 20  # the shipped option files were found
    for path in files:
        assert _check_keys(yaml.safe_load(path.read_text()), path.name) == [], path


def test_basicsr_test_refuses_lr_images_of_another_scale(pairs, tmp_path, capsys):
    opt = options(pairs)
    test = {
        "name": "bad_test", "model_type": "ESCModel", "scale": 2, "num_gpu": "auto",
        "datasets": {"test_1": dict(opt["datasets"]["val"], dataroot_lq=str(pairs / "LR4"))},
        "network_g": dict(TINY_NET), "path": {"pretrain_network_g": None},
        "val": {"save_img": False, "suffix": None, "metrics": {"psnr": {"type": "calculate_psnr", "crop_border": 2}}},
    }  # fmt: skip
    path = tmp_path / "test.yml"
    path.write_text(yaml.safe_dump(test))
    assert basicsr_main(["test", "-opt", str(path), "--root", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert "LR/HR sizes do not match scale 2" in error and "LR4" in error and "\n" not in error
    assert not (tmp_path / "results").exists()


def test_an_empty_image_in_a_disk_dataset_names_the_file(pairs, tmp_path):
    from basicsr.data import build_dataset

    from esc_arch.basicsr_plugin import activate

    activate()
    hr = tmp_path / "HR"
    shutil.copytree(pairs / "HR", hr)
    (hr / "t15.png").write_bytes(b"")
    dataset = build_dataset({
        "name": "T4", "type": "PairedImageDataset", "dataroot_gt": str(hr), "dataroot_lq": str(pairs / "LR2"),
        "io_backend": {"type": "disk"}, "phase": "val", "scale": 2,
    })  # fmt: skip
    index = [Path(p["gt_path"]).name for p in dataset.paths].index("t15.png")
    with pytest.raises(ValueError, match=r"PairedImageDataset: .*t15\.png.*cannot decode the image"):
        dataset[index]
    assert dataset[(index + 1) % len(dataset)]["gt"].shape[-1] == 64  # the others still load


def test_auto_resume_falls_back_from_a_corrupt_latest_state(tmp_path, capsys):
    import basicsr.train

    run = tmp_path / "experiments" / "run"
    (run / "models").mkdir(parents=True)
    (run / "training_states").mkdir()
    for it in (2, 4):
        torch.save({"params": {}}, run / "models" / f"net_g_{it}.pth")
        torch.save(
            {"epoch": 0, "iter": it, "optimizers": [], "schedulers": []}, run / "training_states" / f"{it}.state"
        )
    (run / "training_states" / "4.state").write_bytes(b"PK\x03\x04 truncated by a crash")
    (run / "models" / ".net_g_6.pth.abc123.tmp").write_bytes(b"half a save")
    paths = {"training_states": str(run / "training_states"), "models": str(run / "models")}
    opt = {"auto_resume": True, "name": "run", "path": paths, "network_g": {}, "is_train": True}
    state = basicsr.train.load_resume_state(opt)
    assert state["iter"] == 2 and opt["path"]["resume_state"].endswith("2.state")
    err = capsys.readouterr().err
    assert "4.state cannot be used" in err and "trying the previous state" in err
    assert "removed 1 unfinished save(s)" in err and not (run / "models" / ".net_g_6.pth.abc123.tmp").exists()
    for it in (2, 4):
        (run / "training_states" / f"{it}.state").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="none of the 2 training states"):
        basicsr.train.load_resume_state(dict(opt, path=dict(opt["path"], resume_state=None)))


# --------------------------------------------------------------------------- data scripts


def _truncated_jpeg(path: Path) -> None:
    img = cv2.imread(str(IMAGES / "val" / "butterfly.png"))
    ok, data = cv2.imencode(".jpg", img)
    path.write_bytes(data.tobytes()[: len(data) // 2])


def test_truncated_jpeg_is_refused_by_data_preparation(tmp_path):
    from esc_arch.basicsr_plugin.data_prep import PreparationError, extract_subimages

    hr = tmp_path / "hr"
    hr.mkdir()
    shutil.copy(IMAGES / "val" / "bird.png", hr / "bird.png")
    _truncated_jpeg(hr / "cut.jpg")
    assert cv2.imread(str(hr / "cut.jpg")) is not None  # OpenCV alone decodes it (half grey), silently
    with pytest.raises(PreparationError, match=r"cut\.jpg: unreadable or truncated image"):
        extract_subimages(str(hr), str(tmp_path / "sub"), crop_size=64, step=32, thresh_size=0, workers=1)


def test_lmdb_refuses_to_start_without_disk_space(tmp_path, monkeypatch):
    from esc_arch.basicsr_plugin import data_prep

    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(IMAGES / "val" / "bird.png", folder / "bird.png")
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(data_prep.shutil, "disk_usage", lambda _: usage._replace(free=10))
    with pytest.raises(data_prep.PreparationError, match=r"GiB needed, 0\.0 GiB free"):
        data_prep.make_lmdb(str(folder), str(tmp_path / "x.lmdb"))
    assert not (tmp_path / "x.lmdb").exists() and not (tmp_path / "x.partial.lmdb").exists()


def test_outputs_get_the_umask_permissions(tmp_path):
    from esc_arch.fileio import atomic_torch_save, atomic_write_text

    mask = os.umask(0o022)
    try:
        atomic_torch_save({"w": torch.ones(1)}, tmp_path / "a.pth")
        atomic_write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(mask)
    assert {oct((tmp_path / n).stat().st_mode & 0o777) for n in ("a.pth", "b.txt")} == {"0o644"}
    assert sorted(os.listdir(tmp_path)) == ["a.pth", "b.txt"]  # no temporary file left


def test_release_file_as_pretrain_without_param_key(tmp_path, caplog):
    """A release holds params_ema only; BasicSR's default param_key_g is params. It loads, and
    the log says which entry was used (before: 'no state dict found', although it has one)."""
    import logging

    from esc_arch.loading import read_state_dict

    weights = {"w": torch.ones(2)}
    torch.save({"params_ema": weights}, tmp_path / "ESC_x2.pth")
    with caplog.at_level(logging.WARNING, logger="basicsr.esc"):
        loaded = read_state_dict(tmp_path / "ESC_x2.pth", param_key="params")
    assert torch.equal(loaded["w"], weights["w"])
    assert "no 'params' entry; loading 'params_ema'" in caplog.text


def test_truncated_image_in_a_disk_dataset_stops_before_training(pairs, tmp_path, capsys):
    hr = tmp_path / "HR"
    shutil.copytree(pairs / "HR", hr)
    _truncated_jpeg(hr / "t15.jpg")  # OpenCV would decode it half grey, silently
    (hr / "t15.png").unlink()
    lr = tmp_path / "LR2"
    shutil.copytree(pairs / "LR2", lr)
    (lr / "t15.png").rename(lr / "t15.jpg")
    opt = options(pairs)
    opt["datasets"]["train"].update(dataroot_gt=str(hr), dataroot_lq=str(lr))
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump(opt))
    assert basicsr_main(["train", "-opt", str(path), "--root", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert "t15.jpg is empty or truncated" in error and "\n" not in error


# --------------------------------------------------------------------------- option files that would run code

#: YAML tags that build Python objects (PyYAML's full loader runs the first three as the file is read).
CODE_TAGS = [
    "!!python/object/apply:os.system ['touch {marker}']",
    "!!python/object/apply:subprocess.check_call [['touch', '{marker}']]",
    "!!python/object/new:subprocess.Popen [['touch', '{marker}']]",
    "!!python/name:os.system",
]


@pytest.mark.parametrize("command", ["train", "test"])
@pytest.mark.parametrize("tag", CODE_TAGS, ids=["apply-os.system", "apply-check_call", "new-Popen", "name"])
def test_an_option_file_cannot_run_code(pairs, tmp_path, capsys, command, tag):
    marker = tmp_path / "MARKER"
    opt = options(pairs)
    text = yaml.safe_dump(opt, sort_keys=False).replace("name: bad\n", f"name: {tag.format(marker=marker)}\n", 1)
    path = tmp_path / "evil.yml"
    path.write_text(text)
    line = text.splitlines().index(f"name: {tag.format(marker=marker)}") + 1
    assert basicsr_main([command, "-opt", str(path), "--root", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert not marker.exists()  # nothing ran
    assert len(error) == 1, error
    assert error[0].startswith(f"basicsr {command}: error: {path}, line {line}: the tag !!python/")
    assert "is not allowed" in error[0]


def test_force_yml_values_are_data_not_code(pairs, tmp_path, capsys):
    from esc_arch.basicsr_plugin.checks import OptionError
    from esc_arch.basicsr_plugin.option_yaml import parse_value

    marker = tmp_path / "MARKER"
    assert parse_value("[__import__('os').system, 1]") == ["__import__('os').system", 1]  # strings, not calls
    assert [parse_value(v) for v in ("~", "None", "true", "4", "0.5", "!!float 1e-3", "[1, 2]", "abc")] == [
        None, None, True, 4, 0.5, 1e-3, [1, 2], "abc",
    ]  # fmt: skip
    with pytest.raises(OptionError, match="not valid YAML"):
        parse_value("[1, 2")
    path = tmp_path / "ok.yml"
    path.write_text(yaml.safe_dump(options(pairs)))
    code = f"[__import__('os').system('touch {marker}')]"  # BasicSR's eval ran this
    args = ["train", "-opt", str(path), "--root", str(tmp_path), "--force_yml"]
    assert basicsr_main([*args, f"train:total_iter={code}"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "total_iter: [\"__import__('os')" in error[0], error  # read as a list of a string
    entry = "name=!!python/name:os.system"
    assert basicsr_main([*args, entry]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [
        f"basicsr train: error: --force_yml {entry!r}: the tag !!python/name:os.system is not allowed (option files "
        "are read as plain YAML; no Python object is built from them)"
    ]
    assert not marker.exists() and not (tmp_path / "experiments").exists()


def test_basicsrs_own_parse_options_reads_safely(pairs, tmp_path, monkeypatch):
    """BasicSR's ``parse_options`` (``python basicsr/train.py -opt ...``) gets the same loader."""
    from basicsr.utils import options as basicsr_options

    from esc_arch.basicsr_plugin import activate

    activate()
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.yml"
    path.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    monkeypatch.setattr("sys.argv", ["train.py", "-opt", str(path)])
    with pytest.raises(yaml.constructor.ConstructorError, match="python/object/apply:os.system"):
        basicsr_options.parse_options(str(tmp_path), is_train=True)
    assert basicsr_options._postprocess_yml_value("[open, 2]") == ["open", 2]  # no eval
    assert not marker.exists()


# --------------------------------------------------------------------------- divergence


def test_a_diverging_training_stops_at_the_first_non_finite_loss(pairs, tmp_path, capsys, monkeypatch):
    """The rate jumps from 1e-3 to 1e5 after iteration 3 (a checkpoint at 2): the run stops at
    the first non-finite loss or weight with one line, and the checkpoint of iteration 2 stays."""
    import basicsr.utils.logger

    from esc_arch.loading import read_state_dict

    # BasicSR opens its log file on its first logger call of a process: a fresh one, as in `basicsr train`
    monkeypatch.setattr(basicsr.utils.logger, "initialized_logger", {})
    monkeypatch.setattr(logging.getLogger("basicsr"), "handlers", [])
    opt = options(pairs)
    opt["train"].update(total_iter=20, scheduler={"type": "MultiStepLR", "milestones": [3], "gamma": 1e8})
    opt["logger"]["save_checkpoint_freq"] = 2
    opt["val"]["val_freq"] = 100
    path = tmp_path / "diverge.yml"
    path.write_text(yaml.safe_dump(opt))
    assert basicsr_main(["train", "-opt", str(path), "--root", str(tmp_path)]) == 1
    stderr = capsys.readouterr().err
    error = [line for line in stderr.splitlines() if "error:" in line]
    assert len(error) == 1, error
    match = re.match(r"basicsr train: error: iteration (\d+): (.*); training diverged and was stopped\. Last "
                     r"checkpoint \(finite\): (\S+) \(iteration (\d+)\)", error[0])  # fmt: skip
    assert match, error[0]
    stopped, saved = int(match.group(1)), int(match.group(4))
    assert 3 < stopped < 20 and saved == stopped - 1 - (stopped - 1) % 2
    assert sum("training diverged" in line for line in stderr.splitlines()) == 1  # not again from the logger
    (log,) = (tmp_path / "experiments" / "bad").glob("train_*.log")  # the run's log keeps it
    assert error[0].removeprefix("basicsr train: error: ") in log.read_text()
    assert re.match(r"(l_pix (nan|inf)|a weight of network_g became NaN or Inf)", match.group(2)), error[0]
    models = tmp_path / "experiments" / "bad" / "models"
    assert sorted(int(p.stem.split("_")[-1]) for p in models.glob("net_g_*.pth")) == list(range(2, saved + 1, 2))
    for kind in ("params", "params_ema"):
        read_state_dict(models / f"net_g_{saved}.pth", param_key=kind)  # finite (read_state_dict checks)


def test_basicsr_test_refuses_non_finite_weights(pairs, tmp_path, capsys):
    from esc_arch import ESC

    net = ESC(**{k: v for k, v in TINY_NET.items() if k != "type"})
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    weights["to_img.weight"].view(-1)[3] = float("nan")
    torch.save({"params_ema": weights}, tmp_path / "nan.pth")
    test = {
        "name": "nan_test", "model_type": "ESCModel", "scale": 2, "num_gpu": "auto",
        "datasets": {"test_1": options(pairs)["datasets"]["val"]}, "network_g": dict(TINY_NET),
        "path": {"pretrain_network_g": str(tmp_path / "nan.pth"), "param_key_g": "params_ema"},
        "val": {"save_img": False, "metrics": {"psnr": {"type": "calculate_psnr", "crop_border": 2}}},
    }  # fmt: skip
    path = tmp_path / "test.yml"
    path.write_text(yaml.safe_dump(test))
    assert basicsr_main(["test", "-opt", str(path), "--root", str(tmp_path)]) != 0
    error = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(error) == 1 and "nan.pth: 'to_img.weight' holds 1 non-finite value(s) (NaN or Inf)" in error[0], error


# --------------------------------------------------------------------------- resuming


class _RunsCode:
    """Pickled as a call of ``os.system``: unpickling it would run the command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("kind", ["empty", "code", "weights"])
def test_a_resume_state_that_is_not_one_is_one_line(pairs, tmp_path, capsys, kind):
    marker = tmp_path / "MARKER"
    state = tmp_path / "2.state"
    if kind == "empty":
        state.write_bytes(b"")
    elif kind == "code":
        torch.save({"iter": 2, "epoch": 0, "optimizers": [], "note": _RunsCode(f"touch {marker}")}, state)
    else:
        torch.save({"params": {"w": torch.ones(1)}}, state)
    opt = options(pairs)
    opt["path"]["resume_state"] = str(state)
    path = tmp_path / "resume.yml"
    path.write_text(yaml.safe_dump(opt))
    assert basicsr_main(["train", "-opt", str(path), "--root", str(tmp_path)]) == 1
    error = [line for line in capsys.readouterr().err.splitlines() if "error:" in line or "Traceback" in line]
    expected = {
        "empty": "not a training state (empty file)",
        "code": "holds pickled Python objects besides tensors and was refused (it could run code when loaded",
        "weights": "not a BasicSR training state (no 'iter' and 'optimizers')",
    }[kind]
    assert len(error) == 1 and error[0].startswith(f"basicsr train: error: {state}: {expected}"), error
    assert not marker.exists()


def test_auto_resume_after_changing_the_network_is_one_line(pairs, tmp_path, capsys):
    opt = options(pairs)
    opt["train"]["total_iter"] = 2
    path = tmp_path / "run.yml"
    path.write_text(yaml.safe_dump(opt))
    assert basicsr_main(["train", "-opt", str(path), "--root", str(tmp_path)]) == 0
    opt["train"]["total_iter"] = 4
    opt["network_g"]["dim"] = 24
    path.write_text(yaml.safe_dump(opt))
    capsys.readouterr()
    assert basicsr_main(["train", "-opt", str(path), "--root", str(tmp_path), "--auto_resume"]) == 1
    error = [line for line in capsys.readouterr().err.splitlines() if "error" in line or "mismatch" in line]
    assert len(error) == 1, error
    assert re.match(r"basicsr train: error: checkpoint '\S+/models/net_g_2\.pth' does not hold the ESC network of "
                    r"network_g: '\S+' has shape \(16, .*\); expected \(24, .*\); network_g must be the "
                    r"configuration it was trained with", error[0]), error[0]  # fmt: skip
