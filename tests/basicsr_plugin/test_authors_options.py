"""The authors' own option files (tests/data/authors_options, their text kept) run with
``basicsr train`` / ``basicsr test`` at toy size, changing only data paths and hardware keys
(num_gpu, prefetch_mode, pin_memory, workers, batch and iteration counts)."""

import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch
import yaml

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent.parent
AUTHORS = HERE / "data" / "authors_options"
PHOTOS = sorted((HERE / "data" / "images").glob("*/*.png"))
BASICSR = Path(sys.executable).parent / "basicsr"


def _hardware(opt: dict, *, iterations: int = 2) -> dict:
    opt["num_gpu"] = 0
    for dataset in opt["datasets"].values():
        for key, value in (("prefetch_mode", None), ("pin_memory", False), ("num_worker_per_gpu", 0)):
            if key in dataset:
                dataset[key] = value
        if "batch_size_per_gpu" in dataset:
            dataset["batch_size_per_gpu"] = 1
    if "train" in opt:
        opt["train"]["total_iter"] = iterations
        opt["logger"].update(print_freq=1, save_checkpoint_freq=iterations)
        if "val" in opt:
            opt["val"]["val_freq"] = iterations
    return opt


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory) -> Path:
    """A benchmark set of two real photos (HR cropped to 96 px) with LR images at x2, x3, x4."""
    root = tmp_path_factory.mktemp("bench")
    (root / "HR").mkdir()
    for path in PHOTOS[-2:]:
        hr = cv2.imread(str(path))[:96, :96]
        cv2.imwrite(str(root / "HR" / path.name), hr)
        for scale in (2, 3, 4):
            (root / f"X{scale}").mkdir(exist_ok=True)
            lr = cv2.resize(hr, (96 // scale, 96 // scale), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(root / f"X{scale}" / f"{path.stem}x{scale}.png"), lr)
    return root


def _weights(network_g: dict, path: Path) -> Path:
    """Weights of the file's network, as the authors' release would hold them (params_ema)."""
    from esc_arch.basicsr_plugin import activate

    activate()  # adapts BasicSR before it is imported
    from basicsr.archs import build_network

    torch.manual_seed(0)
    net = build_network(dict(network_g))
    torch.save({"params_ema": net.state_dict()}, path)
    return path


def _run(command: str, opt: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "authors.yml"
    path.write_text(yaml.safe_dump(opt))
    result = subprocess.run([str(BASICSR), command, "-opt", str(path), "--root", str(tmp_path)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result


TEST_FILES = sorted(p.name for p in AUTHORS.glob("test_*.yaml"))


@pytest.mark.parametrize("name", TEST_FILES)
def test_authors_test_file_runs(name, benchmark, tmp_path):
    opt = _hardware(yaml.safe_load((AUTHORS / name).read_text()))
    scale = opt["scale"]
    for dataset in opt["datasets"].values():  # data paths only
        dataset["dataroot_lq"] = str(benchmark / f"X{scale}")
        if "dataroot_gt" in dataset:
            dataset["dataroot_gt"] = str(benchmark / "HR")
    opt["path"]["pretrain_network_g"] = str(_weights(opt["network_g"], tmp_path / "release.pth"))
    result = _run("test", opt, tmp_path)
    images = sorted((tmp_path / "results" / opt["name"] / "visualization").rglob("*.png"))
    if opt["val"]["save_img"]:
        assert len(images) == 2 * len(opt["datasets"])  # every image of every set, at scale x the LR size
        assert cv2.imread(str(images[0])).shape[:2] == (96, 96)
    else:
        assert images == []
    if "metrics" in opt["val"]:
        assert result.stderr.count("# psnr:") == len(opt["datasets"])


def test_authors_flashbias_finetuning_recipe_starts_from_table_weights(tmp_path, benchmark):
    """ESC_FB_R48_DIV2K_X2: ESC_DIV2K_X2 (table) weights into a FlashBias network with
    strict_load_g: true, on LMDB sub-images, validating on five sets."""
    from esc_arch.basicsr_plugin.data_prep import extract_subimages, make_bicubic_lr, make_lmdb

    opt = _hardware(yaml.safe_load((AUTHORS / "train_ESC_FB_R48_DIV2K_X2.yaml").read_text()))
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in PHOTOS:
        cv2.imwrite(str(photos / path.name), cv2.imread(str(path)))
    extract_subimages(str(photos), str(tmp_path / "HR_sub"), crop_size=128, step=64, workers=1)
    make_bicubic_lr(str(tmp_path / "HR_sub"), str(tmp_path / "X2_sub"), 2, workers=1)
    make_lmdb(str(tmp_path / "HR_sub"), str(tmp_path / "HR_sub.lmdb"))
    make_lmdb(str(tmp_path / "X2_sub"), str(tmp_path / "X2_sub.lmdb"))
    train = opt["datasets"]["train"]
    train.update(dataroot_gt=str(tmp_path / "HR_sub.lmdb"), dataroot_lq=str(tmp_path / "X2_sub.lmdb"))
    for phase in [p for p in opt["datasets"] if p.startswith("val")]:
        opt["datasets"][phase].update(dataroot_gt=str(benchmark / "HR"), dataroot_lq=str(benchmark / "X2"))
    table = {**opt["network_g"], "attn_type": "SDPA"}
    table.pop("flashbias_rank")
    opt["path"]["pretrain_network_g"] = str(_weights(table, tmp_path / "ESC_DIV2K_X2.pth"))
    result = _run("train", opt, tmp_path)
    assert "relative-position tables to FlashBias factors of rank 48" in result.stderr + _log(tmp_path, opt)
    saved = torch.load(tmp_path / "experiments" / opt["name"] / "models" / "net_g_latest.pth", weights_only=True)
    assert saved["params"]["blocks.0.attn.flashbias_q"].shape == (4, 1024, 48)


def _log(tmp_path: Path, opt: dict) -> str:
    return "".join(p.read_text() for p in (tmp_path / "experiments" / opt["name"]).glob("*.log"))


def test_authors_real_mse_file_trains_from_a_folder_without_meta_info(tmp_path):
    """ESC_Real_X4_MSE: RealHATMSEModel, a RealESRGANDataset with no meta_info (the folder is
    read), the published gt_size 256, deployment: True in network_g."""
    opt = _hardware(yaml.safe_load((AUTHORS / "train_ESC_Real_X4_MSE.yaml").read_text()), iterations=1)
    hr = tmp_path / "DF2KOST" / "sub"
    hr.mkdir(parents=True)
    for path in PHOTOS:
        cv2.imwrite(str(hr / path.name), cv2.imread(str(path)))
    opt["datasets"]["train"]["dataroot_gt"] = str(tmp_path / "DF2KOST")
    _run("train", opt, tmp_path)
    assert (tmp_path / "experiments" / opt["name"] / "models" / "net_g_latest.pth").is_file()
    assert "RealHATMSEModel" in _log(tmp_path, opt)
