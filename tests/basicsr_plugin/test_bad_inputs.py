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
from esc_arch.limits import NETWORK_LIMITS, OPTION_FILE_LIMITS

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
    # what BasicSR would create or rename outside the run's folder
    ({"name": "{tmp}/victim"}, r"name '\S+/victim': must be a folder name \(no '/', '\.\.' or absolute path\); it"),
    ({"name": "../../elsewhere"}, r"name '\.\./\.\./elsewhere': must be a folder name \(no '/'"),
    ({"name": ".."}, r"name '\.\.': must be a folder name"),
    ({"name": "."}, r"name '\.': must be a folder name"),
    ({"name": 5}, r"name 5 \(a number, not a string\): must be a folder name"),
    ({"datasets.val.name": "../up"}, r"datasets: val: name '\.\./up': must be a folder name .*validation images"),
    (
        {"path.results_root": "{tmp}/made"},
        r"path: results_root '\S+/made': BasicSR creates this folder; it must lie "
        r"inside the run's folder \S+/experiments/bad \(or leave it out",
    ),  # fmt: skip
    ({"path.visualization": "../vis"}, r"path: visualization '\.\./vis': BasicSR creates this folder"),
    ({"path.log_extra": "{tmp}/x"}, r"path: log_extra '\S+/x': BasicSR creates this folder"),
    # training that would invert or disable itself
    ({"train.grad_clip": -1}, r"train: grad_clip: -1 is not a positive number$"),
    ({"train.grad_clip": 0}, r"train: grad_clip: 0 is not a positive number$"),
    ({"train.scheduler.milestones": "abc"}, r"train: scheduler: milestones: 'abc' must be a list of positive integers"),
    ({"train.scheduler.milestones": [0, 5]}, r"train: scheduler: milestones: \[0, 5\] must be a list of positive"),
    ({"train.scheduler.gamma": "abc"}, r"train: scheduler: gamma: 'abc' must be a number$"),
    (
        {"train.scheduler.milestone": [5]},
        r"train: scheduler: unknown option 'milestone' for MultiStepLR \(did you mean "
        r"'milestones'\?\); accepted: milestones, gamma, restarts, restart_weights$",
    ),  # fmt: skip
    (
        {"train.scheduler": {"type": "CosineAnnealingRestartLR", "periods": [4], "restart_weights": ["x"]}},
        r"train: scheduler: restart_weights: \['x'\] must be a list of non-negative numbers$",
    ),
    (
        {"train.scheduler.type": "MultiStepLRR"},
        r"train: scheduler: type 'MultiStepLRR' is not a BasicSR scheduler "
        r"\(did you mean 'MultiStepLR'\?\); accepted: MultiStepLR, ",
    ),  # fmt: skip
    ({"manual_seed": "abc"}, r"manual_seed: 'abc' is not an integer from 0 to \d+$"),
    ({"manual_seed": -1}, r"manual_seed: -1 is not an integer from 0 to \d+$"),
    ({"train.optim_g.betas": "abc"}, r"train: optim_g: betas: 'abc' must be a pair of numbers in \[0, 1\)"),
    ({"train.optim_g.betas": [0.9, 1.5]}, r"train: optim_g: betas: \[0\.9, 1\.5\] must be a pair of numbers"),
    ({"train.optim_g.lr": float("inf")}, r"train: optim_g: lr: inf is not a positive number$"),
    # names BasicSR looks up in its registries
    (
        {"model_type": "ESCModle"},
        r"model_type 'ESCModle' is not a registered model \(did you mean 'ESCModel'\?\); "
        r"registered: ESCModel, .*ESCLTEModel.*SRModel",
    ),  # fmt: skip
    (
        {"train.pixel_opt.type": "L1Los"},
        r"train: pixel_opt: type 'L1Los' is not a registered loss \(did you mean "
        r"'L1Loss'\?\); registered: L1Loss, .*MSELoss",
    ),  # fmt: skip
    (
        {"datasets.train.type": "PairedImageDatset"},
        r"datasets: train: type 'PairedImageDatset' is not a registered "
        r"dataset \(did you mean 'PairedImageDataset'\?\); registered: "
        r"PairedImageDataset, .*DownsampleImageDataset",
    ),  # fmt: skip
    (
        {"val.metrics.psnr.type": "calculate_psnrr"},
        r"val: metrics: psnr: type 'calculate_psnrr' is not a registered "
        r"metric \(did you mean 'calculate_psnr'\?\)",
    ),  # fmt: skip
    # network_g within the checkpoint loader's limits, before anything is built
    ({"network_g.exp_ratio": float("inf")}, r"network_g: exp_ratio: inf is not a finite number$"),
    ({"network_g.exp_ratio": float("nan")}, r"network_g: exp_ratio: nan is not a finite number$"),
    ({"network_g.dim": 100_000}, rf"network_g: dim 100000 is out of range \(at most {NETWORK_LIMITS['dim']}\)$"),
    (
        {"network_g.n_blocks": 100_000},
        rf"network_g: n_blocks 100000 is out of range \(at most "
        rf"{NETWORK_LIMITS['n_blocks']}\)$",
    ),  # fmt: skip
]


@pytest.mark.parametrize(("changes", "message"), BAD_TRAIN_OPTIONS, ids=[next(iter(c)) for c, _ in BAD_TRAIN_OPTIONS])
def test_bad_training_options_stop_before_any_work(pairs, tmp_path, capsys, changes, message):
    opt = options(pairs)
    for key, value in changes.items():
        if value == "LR4":
            value = str(pairs / "LR4")
        if isinstance(value, str) and "{tmp}" in value:  # (never a real folder outside the test's own)
            value = value.replace("{tmp}", str(tmp_path))
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


def test_every_shipped_and_authors_option_file_passes_the_early_checks():
    """The run-folder, registry, training-value and network-limit checks refuse none of the
    published option files (BasicSR's own names are found without their ``_basicsr`` suffix:
    ``RealESRGANDataset``)."""
    from esc_arch.basicsr_plugin import checks
    from esc_arch.basicsr_plugin.option_yaml import read_option_file

    root = Path(__file__).parents[2]
    files = sorted([*root.glob("options/*.yml"), *root.glob("tests/data/authors_options/**/*.yml")])
    assert len(files) > 40
    for path in files:
        opt = read_option_file(path)
        is_train = "train" in opt
        checks.check_run_paths(opt, path.name, is_train=is_train, root=".")
        checks._check_seed(opt, path.name)
        checks._check_registries(opt, path.name, is_train=is_train)
        if is_train:
            checks._check_training_values(opt["train"], path.name)
        checks._check_network_values(opt["network_g"], path.name)


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
    from esc_arch.io.fileio import atomic_torch_save, atomic_write_text

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

    from esc_arch.weights import read_state_dict

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

    from esc_arch.weights import read_state_dict

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


def _error_lines(capsys) -> list[str]:
    """The lines of stderr that report an error or start a traceback (a one-line refusal is one)."""
    return [line for line in capsys.readouterr().err.splitlines() if "error:" in line or "Traceback" in line]


class _RunsCode:
    """Pickled as a call of ``os.system``: unpickling it would run the command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("kind", ["empty", "code", "weights", "bomb", "notes"])
def test_a_resume_state_that_is_not_one_is_one_line(pairs, tmp_path, capsys, kind):
    marker = tmp_path / "MARKER"
    state = tmp_path / "2.state"
    if kind == "empty":
        state.write_bytes(b"")
    elif kind == "code":
        torch.save({"iter": 2, "epoch": 0, "optimizers": [], "note": _RunsCode(f"touch {marker}")}, state)
    elif kind == "bomb":  # 4 MB of zeros deflated into a few KB: refused from the zip directory
        import zipfile

        torch.save({"iter": 2, "epoch": 0, "optimizers": [{"m": torch.zeros(1_000_000)}]}, tmp_path / "plain")
        with zipfile.ZipFile(tmp_path / "plain") as plain, zipfile.ZipFile(state, "w", zipfile.ZIP_DEFLATED) as z:
            for member in plain.infolist():
                z.writestr(member.filename, plain.read(member))
    elif kind == "notes":
        state.write_text("not a state\n")
    else:
        torch.save({"params": {"w": torch.ones(1)}}, state)
    opt = options(pairs)
    opt["path"]["resume_state"] = str(state)
    path = tmp_path / "resume.yml"
    path.write_text(yaml.safe_dump(opt))
    assert basicsr_main(["train", "-opt", str(path), "--root", str(tmp_path)]) == 1
    error = _error_lines(capsys)
    expected = {
        "empty": "not a training state (empty file)",
        "code": "holds pickled Python objects besides tensors and was refused (it could run code when loaded",
        "weights": "not a BasicSR training state (no 'iter' and 'optimizers')",
        "bomb": "member 'plain/data/0' inflates ",
        "notes": "not a training state (neither a torch zip nor a pickle file)",
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
    assert re.match(r"basicsr train: error: \S+/models/net_g_2\.pth: '\S+' has shape \(16, .*\); expected \(24, .*\); "
                    r"the file does not fit network_g \(ESC\): network_g must be the configuration it was trained with",
                    error[0]), error[0]  # fmt: skip


# --------------------------------------------------------------------------- option files beyond what is read


def _alias_bomb(anchors: int = 10, fan_out: int = 9) -> str:
    """Each anchor a list aliasing the previous one ``fan_out`` times: ``fan_out ** anchors``
    values once expanded, a few hundred bytes as written."""
    lines = [f"a0: &a0 [{', '.join(['x'] * fan_out)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * fan_out)}]" for i in range(1, anchors)]
    return "\n".join(lines) + "\n"


def _line_of(text: str, needle: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), 1) if needle in line)


_LIMITS = OPTION_FILE_LIMITS

#: (id, change of the option file's text, the one error line's expected content after the file's name)
BAD_OPTION_TEXT = [
    ("name-binary", lambda t: t.replace("name: bad\n", "name: !!binary aGVsbG8=\n", 1),
     r": name b'hello' \(binary data, not a string\): must be a folder name"),
    ("name-timestamp", lambda t: t.replace("name: bad\n", "name: 2001-12-14\n", 1),
     r": name 2001-12-14 \(a date, not a string\): must be a folder name"),
    ("int-key", lambda t: t + "1: 2\n", r", line {last}: the key '1' is not a string \(option keys are names"),
    ("bool-key", lambda t: t + "on: 2\n", r", line {last}: the key 'on' is not a string"),
    ("duplicate-key", lambda t: t.replace("  total_iter: 4\n", "  total_iter: 3\n  total_iter: 100000000\n", 1),
     r", line {dup}: the key 'total_iter' is given twice in one mapping \(lines {first} and {dup}\); keep one$"),
    ("alias-bomb", lambda t: t + _alias_bomb(),
     rf", line \d+: more than {_LIMITS['nodes']:,} values once its aliases are expanded \(an alias bomb\?\)"),
    ("self-alias", lambda t: t + "loop: &x {a: *x}\n",
     r", line {last}: the alias \*x is inside the mapping or list it names \(a self-reference\)$"),
    ("deep-flow", lambda t: t + "deep: " + "[" * 1000 + "]" * 1000 + "\n",
     rf", line {{last}}: nested deeper than {_LIMITS['depth']} mappings and lists"),
    ("deep-block", lambda t: t + "deep:\n" + "".join(f"{' ' * i}k{i}:\n" for i in range(1, 200)) + f"{' ' * 200}x: 1\n",
     rf", line \d+: nested deeper than {_LIMITS['depth']} mappings and lists"),
    ("too-large", lambda t: t + "big: [" + ", ".join(["1"] * (_LIMITS["bytes"] // 3 + 1)) + "]\n",
     rf": [\d,]+ bytes is too large for an option file \(at most {_LIMITS['bytes']:,}"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "message"), [c[1:] for c in BAD_OPTION_TEXT], ids=[c[0] for c in BAD_OPTION_TEXT])
def test_option_files_beyond_the_limits_stop_in_one_line(pairs, tmp_path, capsys, change, message):
    """Read within OPTION_FILE_LIMITS, aliases counted at their expanded size without being
    expanded; each refused in one line naming the file (and line), before anything is made."""
    import time

    text = change(yaml.safe_dump(options(pairs), sort_keys=False))
    path = tmp_path / "evil.yml"
    path.write_text(text)
    lines = {"last": len(text.splitlines())}
    if "total_iter: 3\n" in text:
        lines.update(first=_line_of(text, "total_iter: 3"), dup=_line_of(text, "total_iter: 100000000"))
    start = time.perf_counter()
    assert basicsr_main(["train", "-opt", str(path), "--root", str(tmp_path)]) == 2
    assert time.perf_counter() - start < 5  # refused while reading: nothing expanded, no big file parsed
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(f"basicsr train: error: {path}"), error
    assert re.search(re.escape(str(path)) + message.format(**lines), error[0]), error[0]
    assert not (tmp_path / "experiments").exists()


def test_the_node_count_is_exact_at_the_limit(tmp_path):
    """Every scalar, list and mapping counts one, an alias the expanded size of what it names."""
    from esc_arch.basicsr_plugin.checks import OptionError
    from esc_arch.basicsr_plugin.option_yaml import parse_value, read_option_file

    limit = _LIMITS["nodes"]
    # a mapping, two keys, two lists, 99 values in the first, aliases to it (100 nodes each) and zeros
    aliases, zeros = divmod(limit - 1 - 2 - 2 - 99, 100)
    text = f"a: &a [{', '.join(['1'] * 99)}]\nb: [{', '.join(['*a'] * aliases + ['0'] * zeros)}]\n"
    (tmp_path / "at.yml").write_text(text)
    assert len(read_option_file(tmp_path / "at.yml")["b"]) == aliases + zeros  # exactly `limit` nodes
    (tmp_path / "over.yml").write_text(text.removesuffix("]\n") + ", 0]\n")  # one more
    with pytest.raises(OptionError, match=rf"over\.yml, line 2: more than {limit:,} values"):
        read_option_file(tmp_path / "over.yml")
    with pytest.raises(OptionError, match=rf"^--force_yml: more than {limit:,} values"):
        parse_value("[" + ", ".join(["&a [" + ", ".join(["1"] * 200) + "]"] + ["*a"] * (limit // 200)) + "]")


def test_a_10_mb_option_file_is_refused_by_its_size_before_parsing(tmp_path):
    import time

    from esc_arch.basicsr_plugin.checks import OptionError
    from esc_arch.basicsr_plugin.option_yaml import read_option_file

    path = tmp_path / "flow.yml"
    path.write_text("big: [" + ", ".join(["1"] * 5_000_000) + "]\n")  # 15 MB: minutes of parsing
    size = path.stat().st_size
    start = time.perf_counter()
    with pytest.raises(OptionError, match=rf"flow\.yml: {size:,} bytes is too large .*at most {_LIMITS['bytes']:,}"):
        read_option_file(path)
    assert time.perf_counter() - start < 1


def test_basicsrs_own_parse_options_reads_within_the_limits(tmp_path, monkeypatch):
    """BasicSR's own ``parse_options`` (the same loader) refuses an alias bomb too."""
    from basicsr.utils import options as basicsr_options

    from esc_arch.basicsr_plugin import activate
    from esc_arch.basicsr_plugin.option_yaml import OptionFileError

    activate()
    path = tmp_path / "bomb.yml"
    path.write_text("name: x\n" + _alias_bomb())
    monkeypatch.setattr("sys.argv", ["train.py", "-opt", str(path)])
    with pytest.raises(OptionFileError, match="values once its aliases are expanded"):
        basicsr_options.parse_options(str(tmp_path), is_train=True)


# --------------------------------------------------------------------------- the run's folder


@pytest.mark.parametrize("how", ["train", "test", "force_yml"])
def test_a_name_outside_experiments_moves_and_makes_nothing(pairs, tmp_path, capsys, how):
    """``name: /abs`` made BasicSR rename that folder to *_archived_<time> (mkdir_and_rename)."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    opt = options(pairs)
    if how == "test":
        opt = {**opt, "datasets": {"test_1": opt["datasets"]["val"]}, "val": dict(opt["val"], suffix=None)}
        del opt["train"], opt["logger"]
    if how != "force_yml":
        opt["name"] = str(victim)
    path = tmp_path / "evil.yml"
    path.write_text(yaml.safe_dump(opt))
    root = tmp_path / "root"
    extra = ["--force_yml", f"name={victim}"] if how == "force_yml" else []
    command = "test" if how == "test" else "train"
    assert basicsr_main([command, "-opt", str(path), "--root", str(root), *extra]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [
        f"basicsr {command}: error: {path}: name '{victim}': must be a folder name (no '/', '..' or absolute path); "
        "it names the run's folder under experiments/ and results/"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.yml", "victim"]  # nothing renamed, nothing made
    assert sorted(p.name for p in victim.iterdir()) == ["keep.txt"]


def test_test_images_stay_in_the_results_folder(pairs, tmp_path, capsys):
    opt = options(pairs)
    test = {
        "name": "t", "model_type": "ESCModel", "scale": 2, "num_gpu": "auto", "network_g": dict(TINY_NET),
        "datasets": {"test_1": opt["datasets"]["val"]}, "path": {"pretrain_network_g": None},
        "val": {"save_img": True, "suffix": "x/../../../../escaped", "metrics": None},
    }  # fmt: skip
    path = tmp_path / "test.yml"
    path.write_text(yaml.safe_dump(test))
    assert basicsr_main(["test", "-opt", str(path), "--root", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [
        f"basicsr test: error: {path}: val: suffix 'x/../../../../escaped': must not hold '/' (it ends the saved "
        "images' names)"
    ]
    assert not (tmp_path / "results").exists()


def test_basicsrs_own_parse_options_keeps_the_run_in_its_folder(pairs, tmp_path, monkeypatch):
    """``python basicsr/train.py -opt evil.yml`` (BasicSR's parse, this project's check)."""
    import basicsr.train

    from esc_arch.basicsr_plugin.checks import OptionError

    victim = tmp_path / "victim"
    victim.mkdir()
    path = tmp_path / "evil.yml"
    path.write_text(yaml.safe_dump(dict(options(pairs), name=str(victim))))
    monkeypatch.setattr("sys.argv", ["train.py", "-opt", str(path)])
    with pytest.raises(OptionError, match=rf"evil\.yml: name '{re.escape(str(victim))}': must be a folder name"):
        basicsr.train.parse_options(str(tmp_path), is_train=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.yml", "victim"]


def test_an_unreadable_option_file_is_one_line(pairs, permissions, capsys):
    path = permissions.folder / "locked.yml"
    path.write_text(yaml.safe_dump(options(pairs)))
    path.chmod(0)
    with permissions.denied():
        code = basicsr_main(["train", "-opt", str(path), "--root", str(permissions.folder)])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"basicsr train: error: {path}: cannot be read (Permission denied)"
    ]
    assert sorted(p.name for p in permissions.folder.iterdir()) == ["locked.yml"]


# --------------------------------------------------------------------------- outputs


def _huge_weights(arch: str, scale: int, path: Path) -> dict:
    """Finite weights scaled by 1e30 (they pass the load check; the output is NaN), and network_g."""
    from esc_arch import NETWORKS

    network = dict(TINY_NET, type=arch, upscaling_factor=scale)
    net = NETWORKS[arch](**{k: v for k, v in network.items() if k != "type"})
    weights = {k: v * 1e30 if v.is_floating_point() else v for k, v in net.state_dict().items()}
    torch.save({"params": weights, "params_ema": weights}, path)
    return network


@pytest.mark.parametrize(("model", "arch", "scale"), [("ESCModel", "ESC", 2), ("ESCRealESRNetModel", "ESCReal", 4)])
def test_basicsr_test_refuses_non_finite_outputs(pairs, tmp_path, capsys, model, arch, scale):
    """Before: ``psnr: 6.7630`` and exit 0 for an all-NaN output."""
    network = _huge_weights(arch, scale, tmp_path / "huge.pth")
    test = {
        "name": "huge", "model_type": model, "scale": scale, "num_gpu": "auto", "network_g": network,
        "datasets": {"test_1": dict(options(pairs)["datasets"]["val"], dataroot_lq=str(pairs / f"LR{scale}"))},
        "path": {"pretrain_network_g": str(tmp_path / "huge.pth"), "param_key_g": "params_ema"},
        "val": {"save_img": False, "metrics": {"psnr": {"type": "calculate_psnr", "crop_border": scale}}},
    }  # fmt: skip
    if model == "ESCRealESRNetModel":  # its degradation settings, as in the published stage-1 file
        published = yaml.safe_load((Path(__file__).parents[2] / "options/train_ESC_Real_x4_MSE.yml").read_text())
        test.update({k: published[k] for k in published if k.endswith(("_prob", "_range", "_prob2", "_range2"))})
        test.update(gt_size=64)
    path = tmp_path / "test.yml"
    path.write_text(yaml.safe_dump(test))
    assert basicsr_main(["test", "-opt", str(path), "--root", str(tmp_path)]) == 1
    error = _error_lines(capsys)
    assert len(error) == 1, error
    assert re.fullmatch(
        rf"basicsr test: error: val: {re.escape(str(pairs))}/LR{scale}/t\d+\.png: the network's output holds "
        r"[\d,]+ non-finite value\(s\) \(NaN or Inf\) of [\d,]+: the weights drive the activations beyond float32's "
        r"range \(finite, but far too large\?\)",
        error[0],
    ), error[0]


def test_a_validation_with_non_finite_outputs_stops_the_training(pairs, tmp_path, capsys):
    """The EMA network (validated) gives NaN while the trained one learns: the run stops at that
    validation, naming the image and the last checkpoint, like a divergence."""
    from esc_arch import ESC

    net = ESC(**{k: v for k, v in TINY_NET.items() if k != "type"})
    huge = {k: v * 1e30 if v.is_floating_point() else v for k, v in net.state_dict().items()}
    torch.save({"params": net.state_dict(), "params_ema": huge}, tmp_path / "start.pth")
    opt = options(pairs)
    opt["path"]["pretrain_network_g"] = str(tmp_path / "start.pth")
    path = tmp_path / "train.yml"
    path.write_text(yaml.safe_dump(opt))
    assert basicsr_main(["train", "-opt", str(path), "--root", str(tmp_path)]) == 1
    error = _error_lines(capsys)
    assert len(error) == 1, error
    assert re.fullmatch(
        rf"basicsr train: error: iteration 2: validation on val: {re.escape(str(pairs))}/LR2/t\d+\.png: the "
        r"network's output holds .* \(NaN or Inf\) .*; training was stopped\. Last checkpoint: "
        r"\S+/experiments/bad/models/net_g_2\.pth \(iteration 2\)\.",
        error[0],
    ), error[0]
    assert not (tmp_path / "experiments/bad/models/net_g_4.pth").exists()


# --------------------------------------------------------------------------- resuming, continued


def test_auto_resume_after_changing_the_scale_is_one_line(pairs, tmp_path, capsys):
    """Before: the x2 weights were converted to x4 and the optimizer state then failed with a
    shape-mismatch traceback."""
    opt = options(pairs)
    opt["train"]["total_iter"] = 2
    path = tmp_path / "run.yml"
    path.write_text(yaml.safe_dump(opt))
    assert basicsr_main(["train", "-opt", str(path), "--root", str(tmp_path)]) == 0
    opt["train"]["total_iter"] = 4
    opt["scale"] = opt["network_g"]["upscaling_factor"] = 4
    for dataset in opt["datasets"].values():
        dataset["dataroot_lq"] = str(pairs / "LR4")
    path.write_text(yaml.safe_dump(opt))
    capsys.readouterr()
    assert basicsr_main(["train", "-opt", str(path), "--root", str(tmp_path), "--auto_resume"]) == 1
    error = [line for line in capsys.readouterr().err.splitlines() if "error" in line or "Traceback" in line]
    assert len(error) == 1, error
    assert re.match(r"basicsr train: error: \S+/experiments/bad/models/net_g_2\.pth: 'to_img\.weight' has shape "
                    r"\(12, 16, 3, 3\); expected \(48, 16, 3, 3\); the file does not fit "
                    r"network_g \(ESC\): network_g must be the configuration it was trained with",
                    error[0]), error[0]  # fmt: skip


def test_resume_state_of_another_run(pairs, tmp_path, basicsr_cli):
    """``path: resume_state`` naming another run's state: its networks are read beside it, and
    this run's folder is made (before: FileNotFoundError); without them, one line."""
    from esc_arch.weights import read_state_dict

    opt = options(pairs)
    opt["name"], opt["train"]["total_iter"] = "first", 2
    path = tmp_path / "first.yml"
    path.write_text(yaml.safe_dump(opt))
    assert basicsr_cli("train", "-opt", path, "--root", tmp_path, cwd=tmp_path).returncode == 0
    first = tmp_path / "experiments/first"
    opt["name"], opt["train"]["total_iter"] = "second", 4
    opt["path"]["resume_state"] = str(first / "training_states/2.state")
    path = tmp_path / "second.yml"
    path.write_text(yaml.safe_dump(opt))
    result = basicsr_cli("train", "-opt", path, "--root", tmp_path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    second = tmp_path / "experiments/second"
    assert sorted(p.name for p in (second / "models").glob("net_g_*.pth")) == ["net_g_4.pth", "net_g_latest.pth"]
    (log,) = second.glob("train_*.log")
    assert f"Loaded ESC from {first}/models/net_g_2.pth [params]" in log.read_text()
    assert "Resuming training from epoch: 0, iter: 2." in log.read_text()
    read_state_dict(second / "models/net_g_4.pth")

    (first / "models/net_g_2.pth").unlink()
    opt["name"] = "third"
    path.write_text(yaml.safe_dump(opt))
    result = basicsr_cli("train", "-opt", path, "--root", tmp_path, cwd=tmp_path)
    error = [line for line in result.stderr.splitlines() if "error" in line or "Traceback" in line]
    assert result.returncode == 1 and error == [
        f"basicsr train: error: resume_state '{first}/training_states/2.state': its network "
        f"{first}/models/net_g_2.pth is missing (a state's networks are read from the models/ folder beside its "
        "training_states/)"
    ]
    assert not (tmp_path / "experiments/third").exists()
