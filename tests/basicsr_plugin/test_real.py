"""ESC-Real training on the CPU: Real-ESRGAN degradations from real photographs, both stages from
the committed option files at toy size (train, save, --auto_resume), and testing on LQ-only
images with NIQE."""

import copy
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "tests" / "data" / "images"


@pytest.fixture
def tiny_real(tiny_config) -> dict:
    """``network_g`` of the tiny ESCReal (exp_ratio 2, ESC-Real's)."""
    return dict(type="ESCReal", **dict(tiny_config, exp_ratio=2.0), upscaling_factor=4, attn_type="auto")


@pytest.fixture(scope="module")
def real_data(tmp_path_factory, data_script):
    """Multiscale sub-images and the meta-info list, made by the datasets/ script from T91 photos."""
    root = tmp_path_factory.mktemp("real")
    assert data_script("prepare_realesrgan_data").main(
        ["--hr", str(IMAGES / "train"), "--name", "T4", "--out", str(root / "T4"), "--factors", "1", "0.5",
         "--crop-size", "96", "--step", "96", "--min-size", "64", "--workers", "1"]
    ) == 0  # fmt: skip
    return root


def test_multiscale_preparation(real_data):
    meta = (real_data / "T4/meta_info_T4_multiscale_sub.txt").read_text().split()
    assert meta and all((real_data / "T4" / line).is_file() for line in meta)
    assert any("T050_s" in line for line in meta) and any(line.startswith("T4_multiscale_sub/t1_s") for line in meta)
    names = {p.name for p in (real_data / "T4/T4_multiscale").iterdir()}
    stems = [p.stem for p in (IMAGES / "train").glob("*.png")]
    assert len(stems) == 4 and names == {f"{s}{f}.png" for s in stems for f in ("", "T050")}


def train_options(stage: str, data: Path, name: str, network_g: dict) -> dict:
    """options/train_ESC_Real_x4_{stage}.yml at toy size (a copy)."""
    opt = copy.deepcopy(yaml.safe_load((ROOT / f"options/train_ESC_Real_x4_{stage}.yml").read_text()))
    opt.update(name=name, gt_size=64, queue_size=4, network_g=dict(network_g))
    train_set = opt["datasets"]["train"]
    train_set.update(
        dataroot_gt=str(data / "T4"),
        meta_info=str(data / "T4/meta_info_T4_multiscale_sub.txt"),
        gt_size=64,
        num_worker_per_gpu=0,
        batch_size_per_gpu=2,
    )
    opt["train"].update(total_iter=4)
    opt["train"]["scheduler"]["milestones"] = [3]
    opt["logger"].update(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False)
    if stage == "GAN":
        opt["network_d"]["num_feat"] = 8
    return opt


def dataset_sample(data: Path, seed: int, network_g: dict) -> dict:
    from basicsr.data.realesrgan_dataset import RealESRGANDataset

    opt = train_options("MSE", data, "x", network_g)
    dataset_opt = dict(opt["datasets"]["train"], phase="train", scale=4)
    random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
    dataset = RealESRGANDataset(dataset_opt)
    batch = [dataset[i] for i in range(2)]
    return {k: torch.stack([b[k] for b in batch]) for k in ("gt", "kernel1", "kernel2", "sinc_kernel")}, opt


def degrade(data: Path, seed: int, network_g: dict):
    from esc_arch.basicsr_plugin.models.esc_real_model import RealESRGANDegradation

    sample, opt = dataset_sample(data, seed, network_g)
    degradation = RealESRGANDegradation(dict(opt, scale=4), "cpu")
    random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
    return degradation(sample["gt"], sample["kernel1"], sample["kernel2"], sample["sinc_kernel"])


def test_degradation_pairs_are_sized_ranged_and_reproducible(real_data, tiny_real):
    gt, gt_usm, lq = degrade(real_data, 1, tiny_real)
    assert gt.shape == gt_usm.shape == (2, 3, 64, 64) and lq.shape == (2, 3, 16, 16)
    for t in (gt, lq):
        assert t.dtype == torch.float32 and 0 <= t.min() and t.max() <= 1
    torch.testing.assert_close(lq * 255, (lq * 255).round(), atol=1e-4, rtol=0)  # 8-bit levels
    assert (gt_usm - gt).abs().mean() > 1e-3  # sharpened target differs from the plain one
    # the LR input is a degraded version of the HR crop, not noise: it correlates with it
    small = torch.nn.functional.interpolate(gt, size=(16, 16), mode="area")
    corr = torch.corrcoef(torch.stack([small.flatten(), lq.flatten()]))[0, 1]
    assert corr > 0.5
    again = degrade(real_data, 1, tiny_real)
    for a, b in zip((gt, gt_usm, lq), again, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    other = degrade(real_data, 2, tiny_real)
    assert not torch.equal(lq, other[2])


def test_training_pair_pool_swaps_batches_once_full():
    from esc_arch.basicsr_plugin.models.esc_real_model import TrainingPairPool

    pool = TrainingPairPool(4)
    batches = [torch.full((2, 1, 2, 2), float(i)) for i in range(4)]
    out = [pool(b, b * 4) for b in batches]
    assert torch.equal(out[0][0], batches[0]) and torch.equal(out[1][0], batches[1])  # filling
    # once full, a batch is swapped with pairs drawn from the pool: never the batch just given
    assert {float(v) for v in out[2][0].flatten()} <= {0.0, 1.0}
    assert {float(v) for v in out[3][0].flatten()} <= {0.0, 1.0, 2.0}
    # nothing is lost or duplicated: what came out after filling plus the pool is what went in
    per_pair = [float(lq[i, 0, 0, 0]) for lq, _ in out[2:] for i in range(2)] + pool.lq[:, 0, 0, 0].tolist()
    assert sorted(per_pair) == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0]
    for lq, gt in [*out, (pool.lq, pool.gt)]:
        torch.testing.assert_close(gt, lq * 4)  # pairs stay together
    with pytest.raises(ValueError, match="multiple of the batch size"):
        TrainingPairPool(5)(batches[0], batches[0])


@pytest.fixture
def basicsr(run_command):
    """``basicsr(*args, cwd)``: ``python -m esc_arch.cli`` (the ``basicsr`` command) as a subprocess."""
    return lambda *args, cwd: run_command([sys.executable, "-m", "esc_arch.cli", *args], cwd, check=False)


def make_vgg19_stand_in(folder: Path) -> None:
    """A file shaped like torchvision's VGG19 weights (random features, zero classifier stored as
    one broadcast value): what BasicSR's perceptual loss loads, in a few MB."""
    from torchvision.models import vgg19

    state = {}
    for key, value in vgg19().state_dict().items():
        if key.startswith("classifier"):
            state[key] = torch.zeros(1).expand(value.shape)
        else:
            state[key] = value.half() if value.dim() > 1 else value
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "vgg19-dcbb9e9d.pth")


def train_then_resume(basicsr, write_options, opt: dict, cwd: Path) -> str:
    """Train 2 iterations, then ``--auto_resume`` to 4; returns the run's training logs."""
    path = cwd / f"{opt['name']}.yml"
    for total_iter, extra in ((2, []), (4, ["--auto_resume"])):
        opt["train"]["total_iter"] = total_iter
        result = basicsr("train", "-opt", write_options(path, opt), *extra, cwd=cwd)
        assert result.returncode == 0, result.stderr[-3000:]
    return "".join(p.read_text() for p in (cwd / "experiments" / opt["name"]).glob("train_*.log"))


@pytest.mark.slow
def test_both_stages_train_save_resume_and_test_on_lq_only_images(basicsr, write_options, real_data, tiny_real,
                                                                   tmp_path):  # fmt: skip
    # stage 1 (L1): 2 iterations, then --auto_resume to 4
    log = train_then_resume(basicsr, write_options, train_options("MSE", real_data, "real_mse", tiny_real), tmp_path)
    assert "Resuming training from epoch" in log and "iter:       4" in log
    assert (tmp_path / "experiments/real_mse/models/net_g_4.pth").is_file()

    # stage 2 (GAN) from the stage-1 weights: the VGG19 file is required first
    gan = train_options("GAN", real_data, "real_gan", tiny_real)
    gan["path"]["pretrain_network_g"] = str(tmp_path / "experiments/real_mse/models/net_g_latest.pth")
    missing = basicsr("train", "-opt", write_options(tmp_path / "gan.yml", gan), cwd=tmp_path)
    assert missing.returncode == 2
    assert str(tmp_path / "experiments/pretrained_models/vgg19-dcbb9e9d.pth") in missing.stderr
    make_vgg19_stand_in(tmp_path / "experiments/pretrained_models")
    mixed = copy.deepcopy(gan)
    mixed["name"], mixed["train"]["mixed_precision"] = "real_gan_bf16", "bf16"
    refused = basicsr("train", "-opt", write_options(tmp_path / "gan_bf16.yml", mixed), cwd=tmp_path)
    assert refused.returncode != 0 and "ESCRealESRGANModel trains in fp32" in refused.stderr
    log = train_then_resume(basicsr, write_options, gan, tmp_path)
    for term in ("l_g_pix", "l_g_percep", "l_g_gan", "l_d_real", "l_d_fake", "Resuming training"):
        assert term in log
    models = tmp_path / "experiments/real_gan/models"
    assert (models / "net_g_4.pth").is_file() and (models / "net_d_4.pth").is_file()
    assert set(torch.load(models / "net_g_4.pth", weights_only=True)) == {"params", "params_ema"}

    # test on LQ-only photographs with NIQE (options/test_ESC_Real_x4.yml at toy size)
    test = yaml.safe_load((ROOT / "options/test_ESC_Real_x4.yml").read_text())
    test["network_g"] = dict(tiny_real)
    test["datasets"]["test_1"]["dataroot_lq"] = str(IMAGES / "val")  # holds SOURCE.txt too
    test["path"]["pretrain_network_g"] = str(models / "net_g_latest.pth")
    result = basicsr("test", "-opt", write_options(tmp_path / "test.yml", test), cwd=tmp_path)
    assert result.returncode == 2 and "holds files that are not images: SOURCE.txt" in result.stderr
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in (IMAGES / "val").glob("*.png"):
        (photos / path.name).write_bytes(path.read_bytes())
    test["datasets"]["test_1"]["dataroot_lq"] = str(photos)
    result = basicsr("test", "-opt", write_options(tmp_path / "test.yml", test), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = sorted((tmp_path / "results/test_ESC_Real_x4/visualization/RealPhotos").glob("*.png"))
    assert [p.name for p in outputs] == ["bird_test_ESC_Real_x4.png", "butterfly_test_ESC_Real_x4.png"]
    import cv2

    assert cv2.imread(str(outputs[0])).shape == (288 * 4, 288 * 4, 3)
    assert "# niqe:" in "".join(p.read_text() for p in (tmp_path / "results/test_ESC_Real_x4").glob("*.log"))


def test_real_option_files_follow_the_published_recipe():
    mse = yaml.safe_load((ROOT / "options/train_ESC_Real_x4_MSE.yml").read_text())
    gan = yaml.safe_load((ROOT / "options/train_ESC_Real_x4_GAN.yml").read_text())
    assert mse["train"]["optim_g"] == {"type": "AdamW", "lr": 5e-4, "weight_decay": 0, "betas": [0.9, 0.9]}
    assert mse["train"]["scheduler"] == {"type": "MultiStepLR", "milestones": [100000], "gamma": 0.4}
    assert mse["train"]["total_iter"] == 1_000_000 and mse["datasets"]["train"]["batch_size_per_gpu"] == 12
    assert mse["gt_size"] == mse["datasets"]["train"]["gt_size"] == 256
    for key in ("optim_g", "optim_d"):
        assert gan["train"][key] == {"type": "Adam", "lr": 1e-4, "weight_decay": 0, "betas": [0.9, 0.99]}
    assert gan["train"]["scheduler"] == {"type": "MultiStepLR", "milestones": [400000], "gamma": 0.5}
    assert gan["train"]["perceptual_opt"]["layer_weights"] == {
        "conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1, "conv4_4": 1, "conv5_4": 1,
    }  # fmt: skip
    assert gan["train"]["gan_opt"]["gan_type"] == "vanilla" and gan["train"]["gan_opt"]["loss_weight"] == 0.1
    assert gan["network_d"] == {"type": "UNetDiscriminatorSN", "num_in_ch": 3, "num_feat": 64, "skip_connection": True}
    from esc_arch import ESCRealConfig, preset_config

    for opt in (mse, gan):
        config = {k: v for k, v in opt["network_g"].items() if k != "type"}
        assert opt["network_g"]["type"] == "ESCReal" and config["attn_type"] == "auto"
        assert ESCRealConfig.from_keywords(**config) == preset_config("ESC-Real", 4)


@pytest.mark.slow
def test_gan_stage_with_the_authors_discriminator_and_model_name(basicsr, write_options, real_data, tiny_real,
                                                                 tmp_path):  # fmt: skip
    """network_d: DeepUNetDiscriminatorSN (two self-attentions, on the CPU) under the authors'
    model name RealHATGANModel: both networks train and are saved."""
    gan = train_options("GAN", real_data, "real_gan_deep", tiny_real)
    gan["model_type"] = "RealHATGANModel"
    gan["network_d"] = {"type": "DeepUNetDiscriminatorSN", "num_in_ch": 3, "num_feat": 8, "skip_connection": True}
    gan["train"]["total_iter"] = 2
    gan["path"]["pretrain_network_g"] = None  # from scratch: the test is about the discriminator
    make_vgg19_stand_in(tmp_path / "experiments/pretrained_models")
    result = basicsr("train", "-opt", write_options(tmp_path / "gan.yml", gan), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    models = tmp_path / "experiments/real_gan_deep/models"
    saved = torch.load(models / "net_d_latest.pth", weights_only=True)["params"]
    assert "sa1.to_qkv.weight" in saved and "sa2.to_out.weight_orig" in saved
    assert "l_d_real" in result.stderr and (models / "net_g_latest.pth").is_file()
