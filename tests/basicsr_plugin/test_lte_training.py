"""ESC-LTE in BasicSR: ``ArbitraryScaleDataset`` (LIIF's recipe, on real photos), the
``psnr_liif`` metric, and ``ESCLTEModel`` end to end (train, resume, start from an ESC body,
test at a non-integer scale) through ``basicsr`` in this process on the tiny network."""

import copy
import math
import re

import cv2
import numpy as np
import pytest
import torch

from esc_arch.io.arbitrary_scale import downsample, liif_psnr, shave


@pytest.fixture
def lte_network_g(tiny_config) -> dict:
    return {"type": "ESCLTE", "encoder": dict(tiny_config), "hidden_dim": 16, "mlp_hidden": [16]}


@pytest.fixture
def lte_options(image_dir, lte_network_g, with_changes):
    """``lte_options(name, **changes)``: training options of the tiny ESC-LTE on the four
    training photographs (folder), validated on the two validation photographs at x2.5."""

    def make(name: str, **changes) -> dict:
        opt = {
            "name": name,
            "model_type": "ESCLTEModel",
            "num_gpu": "auto",
            "manual_seed": 0,
            "datasets": {
                "train": {
                    "name": "T4",
                    "type": "ArbitraryScaleDataset",
                    "dataroot_gt": str(image_dir / "train"),
                    "io_backend": {"type": "disk"},
                    "inp_size": 16,
                    "scale_min": 1,
                    "scale_max": 4,
                    "sample_q": 128,
                    "use_hflip": True,
                    "use_rot": True,
                    "num_worker_per_gpu": 0,
                    "batch_size_per_gpu": 2,
                    "dataset_enlarge_ratio": 2,
                    "prefetch_mode": None,
                },
                "val": {
                    "name": "Val_x2.5",
                    "type": "ArbitraryScaleDataset",
                    "dataroot_gt": str(image_dir / "val"),
                    "test_scale": 2.5,
                    "protocol": "benchmark",
                    "io_backend": {"type": "disk"},
                },
            },  # fmt: skip
            "network_g": copy.deepcopy(lte_network_g),
            "path": {"pretrain_network_g": None, "strict_load_g": True, "resume_state": None},
            "train": {
                "ema_decay": 0.9,
                "optim_g": {"type": "Adam", "lr": 2e-4},
                "scheduler": {"type": "MultiStepLR", "milestones": [100], "gamma": 0.5},
                "total_iter": 4,
                "warmup_iter": -1,
                "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0, "reduction": "mean"},
            },
            "val": {
                "val_freq": 2,
                "save_img": False,
                "chunk": 5000,
                "metrics": {"psnr": {"type": "calculate_psnr_liif"}},
            },  # fmt: skip
            "logger": {"print_freq": 1, "save_checkpoint_freq": 2, "use_tb_logger": False, "wandb": {"project": None}},
        }
        return with_changes(opt, **changes)

    return make


def _dataset(opt: dict):
    from esc_arch.basicsr_plugin.data import ArbitraryScaleDataset

    return ArbitraryScaleDataset(opt)


def test_training_items_follow_the_recipe(lte_options, image_dir):
    opt = dict(lte_options("x")["datasets"]["train"], phase="train", use_hflip=False, use_rot=False)
    dataset = _dataset(opt)
    assert len(dataset) == 4
    np.random.seed(3)
    sizes = set()
    for index in range(4):
        item = dataset[index]
        assert item["lq"].shape == (3, 16, 16) and item["gt"].shape == (128, 3)
        assert item["coord"].shape == item["cell"].shape == (128, 2)
        size = round(2 / item["cell"][0, 0].item())  # the HR crop's side
        assert 16 <= size <= 64 and torch.all(item["cell"] == 2 / size)
        sizes.add(size)
        # each queried value is the HR crop's pixel at that coordinate: find the crop in the photo
        rows, cols = (((item["coord"] + 1) * size - 1) / 2).round().long().unbind(-1)
        assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) == 128  # without replacement
        photo = cv2.imread(str(dataset.paths[index]))[..., ::-1].astype(np.float32) / 255
        lq_again = None
        for top in range(photo.shape[0] - size + 1):
            for left in range(photo.shape[1] - size + 1):
                crop = photo[top : top + size, left : left + size]
                if np.allclose(crop[rows.numpy(), cols.numpy()], item["gt"].numpy(), atol=1e-6):
                    lq_again = crop
                    break
            if lq_again is not None:
                break
        assert lq_again is not None, "the queried pixels are not a crop of the photo"
    assert len(sizes) > 1  # scales differ between items


def test_validation_items_and_the_liif_protocol(lte_options, image_dir):
    opt = dict(lte_options("x")["datasets"]["val"], phase="val", test_scale=3.7)
    item = _dataset(opt)[0]  # bird.png, 288x288
    h = math.floor(288 / 3.7)
    assert item["lq"].shape == (3, h, h) and item["gt"].shape == (3, round(h * 3.7), round(h * 3.7))
    assert (shave(3.7, "benchmark"), shave(2, "benchmark"), shave(4, "div2k")) == (4, 2, 10)
    hr = torch.rand(3, 40, 40, dtype=torch.float64)
    noisy = hr.clone()
    noisy[:, 4:-4, 4:-4] += 0.01
    noisy[:, :4] += 0.5  # inside the border: not counted
    y = 0.01 * (65.738 + 129.057 + 25.064) / 256
    assert liif_psnr(noisy, hr, scale=3.7) == pytest.approx(-10 * math.log10(y * y), abs=1e-9)
    assert liif_psnr(noisy, hr, scale=2.5, protocol="div2k") == pytest.approx(40.0, abs=1e-9)  # RGB, border 9
    with pytest.raises(ValueError, match="protocol must be one of benchmark, div2k"):
        liif_psnr(hr, hr, scale=2, protocol="set5")
    lr, cropped = downsample(np.zeros((10, 11, 3), np.uint8), 2.5)
    assert lr.shape == (4, 4, 3) and cropped.shape == (10, 10, 3)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sample_q": 300}, "sample_q 300 is more than the 256 pixels of the smallest HR crop"),
        ({"scale_min": 3, "scale_max": 2}, "need 0 < scale_min <= scale_max"),
    ],
)
def test_bad_training_data_options(lte_options, changes, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        _dataset(dict(lte_options("x")["datasets"]["train"], phase="train", **changes))


def test_small_photos_get_the_largest_scale_they_allow(lte_options, tmp_path, image_dir):
    cv2.imwrite(str(tmp_path / "small.png"), cv2.imread(str(image_dir / "val/bird.png"))[:40, :50])
    dataset = _dataset(dict(lte_options("x")["datasets"]["train"], phase="train", dataroot_gt=str(tmp_path),
                            scale_min=2, scale_max=4, sample_q=64))  # fmt: skip
    np.random.seed(0)
    sizes = {round(2 / dataset[0]["cell"][0, 0].item()) for _ in range(12)}
    assert max(sizes) == 40 and min(sizes) >= 32  # crops of 32 to 64 pixels wanted; at most the image's 40
    dataset = _dataset(dict(lte_options("x")["datasets"]["train"], phase="train", dataroot_gt=str(tmp_path),
                            scale_min=3, scale_max=4))  # fmt: skip
    with pytest.raises(ValueError, match=r"small.png: image 40x50 is smaller than the 48-pixel crop of scale_min 3"):
        dataset[0]


def test_train_resume_and_test_at_a_non_integer_scale(basicsr_cli, write_options, lte_options, tmp_path):
    option = write_options(tmp_path / "train.yml", lte_options("tiny_lte"))
    result = basicsr_cli("train", "-opt", option, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    exp = tmp_path / "experiments/tiny_lte"
    log = "".join(p.read_text() for p in exp.glob("train_*.log"))
    assert re.search(r"# psnr: +\d+\.\d+", log) and "Validation Val_x2.5" in log
    losses = [float(v) for v in re.findall(r"l_pix: ([\d.e+-]+)", log)]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    checkpoint = torch.load(exp / "models/net_g_4.pth", weights_only=True)
    assert set(checkpoint) == {"params", "params_ema"} and "coef.weight" in checkpoint["params_ema"]

    result = basicsr_cli("train", "-opt", option, "--auto_resume", "--force_yml", "train:total_iter=6", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    logs = sorted(exp.glob("train_*.log"), key=lambda p: p.stat().st_mtime)
    assert "Resuming training from epoch: " in logs[-1].read_text() and "iter: 4." in logs[-1].read_text()
    assert (exp / "models/net_g_6.pth").is_file()

    test = lte_options("tiny_lte_test")
    del test["train"], test["logger"]
    test["datasets"] = {"test_1": dict(test["datasets"]["val"], name="Val_x3.7", test_scale=3.7)}
    test["path"] = {"pretrain_network_g": str(exp / "models/net_g_latest.pth"), "param_key_g": "params_ema"}
    test["val"] = {"save_img": True, "suffix": None, "metrics": test["val"]["metrics"]}
    result = basicsr_cli("test", "-opt", write_options(tmp_path / "test.yml", test), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = cv2.imread(str(tmp_path / "results/tiny_lte_test/visualization/Val_x3.7/bird_tiny_lte_test.png"))
    h = math.floor(288 / 3.7)
    assert out.shape == (round(h * 3.7), round(h * 3.7), 3)
    test_log = "".join(p.read_text() for p in (tmp_path / "results/tiny_lte_test").glob("test_*.log"))
    assert re.search(r"Validation Val_x3.7\s+# psnr: +\d+\.\d+", test_log)


def test_training_starts_from_an_esc_body(basicsr_cli, write_options, lte_options, tiny_net, tmp_path):
    esc = tiny_net()
    torch.save({"params_ema": esc.state_dict()}, tmp_path / "esc_x2.pth")
    opt = lte_options("from_esc", **{"train.total_iter": 1, "val": None, "logger.save_checkpoint_freq": 1})
    opt["path"].update(pretrain_network_g=str(tmp_path / "esc_x2.pth"), param_key_g="params_ema")
    result = basicsr_cli("train", "-opt", write_options(tmp_path / "strict.yml", opt), cwd=tmp_path)
    assert result.returncode != 0 and "set path: strict_load_g: false" in result.stderr
    opt["path"]["strict_load_g"] = False
    result = basicsr_cli("train", "-opt", write_options(tmp_path / "train.yml", opt), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    log = "".join(p.read_text() for p in (tmp_path / "experiments/from_esc").glob("train_*.log"))
    assert "an ESC body" in log and "as the encoder of ESCLTE" in log
    # one step at 2e-4 from the ESC body: the encoder's shared kernel barely moved
    trained = torch.load(tmp_path / "experiments/from_esc/models/net_g_1.pth", weights_only=True)["params"]
    assert (trained["encoder.plk_filter"] - esc.plk_filter.detach()).abs().max() < 1e-2


def test_option_checks_for_arbitrary_scale(basicsr_cli, write_options, lte_options, tmp_path):
    for changes, message in (
        ({"datasets.val.test_scale": None}, "datasets: val: 'test_scale' is missing (a positive number)"),
        ({"datasets.val.protocol": "urban"}, "datasets: val: protocol: 'urban' is not one of benchmark, div2k"),
        ({"datasets.train.scale_min": 5}, "datasets: train: scale_min 5 is above scale_max 4"),
        ({"datasets.train.sampleq": 5}, "unknown option 'sampleq' (did you mean 'sample_q'?)"),
        ({"val.tile": 64}, "val: tile is for fixed-scale networks"),
        ({"network_g.hiden_dim": 64}, "unknown option 'hiden_dim' for ESCLTE (did you mean 'hidden_dim'?)"),
        ({"network_g.hidden_dim": 15}, "network_g: hidden_dim must be a positive even integer; got 15"),
    ):
        option = write_options(tmp_path / "bad.yml", lte_options("bad", **changes))
        result = basicsr_cli("train", "-opt", option, cwd=tmp_path)
        assert result.returncode != 0 and message in result.stderr, (changes, result.stderr[-500:])


@pytest.fixture
def lr_folders(image_dir, tmp_path) -> dict[int, str]:
    """x2 and x4 LR folders of the validation photographs (MATLAB-bicubic style: the HR
    cropped to a multiple of the scale, then downsampled)."""
    folders = {}
    for scale in (2, 4):
        folder = tmp_path / f"LR_X{scale}"
        folder.mkdir()
        for path in sorted((image_dir / "val").glob("*.png")):
            lr, _ = downsample(cv2.imread(str(path)), scale)
            cv2.imwrite(str(folder / path.name), lr)
        folders[scale] = str(folder)
    return folders


def test_validation_lr_of_another_scale_is_refused(basicsr_cli, write_options, lte_options, lr_folders, tmp_path):
    """An x4 LR folder given for test_scale 2 would be scored against a crop of the HR: refused
    before any work, as the fixed-scale paired dataset refuses it; the x2 folder is accepted."""
    opt = lte_options("lr4", **{"datasets.val.test_scale": 2, "datasets.val.dataroot_lq": lr_folders[4]})
    result = basicsr_cli("train", "-opt", write_options(tmp_path / "lr4.yml", opt), cwd=tmp_path)
    error = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.returncode == 2 and len(error) == 1, result.stderr[-800:]
    assert re.search(r"datasets: val: LR/HR sizes do not match scale 2: LR \S*LR_X4/\w+\.png is \d+x\d+", error[0])
    assert not (tmp_path / "experiments").exists()
    val = dict(opt["datasets"]["val"], phase="val")
    message = r"bird\.png: LR/HR sizes do not match scale 2: LR \S+LR_X4/bird\.png is 72x72, HR is 288x288"
    with pytest.raises(ValueError, match=message):
        _dataset(val)[0]
    item = _dataset(dict(val, dataroot_lq=lr_folders[2]))[0]  # bird.png, 288x288
    assert item["lq"].shape == (3, 144, 144) and item["gt"].shape == (3, 288, 288)


@pytest.mark.slow
def test_two_process_cpu_training(run_command, torchrun_bin, write_options, lte_options, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    option = write_options(tmp_path / "train.yml", lte_options("ddp_lte", **{"train.total_iter": 2, "val.val_freq": 2}))
    run_command([torchrun_bin, "--nproc_per_node=2", f"--master_port={port}", "-m", "esc_arch.cli", "train",
                 "-opt", option, "--launcher", "pytorch"], tmp_path)  # fmt: skip
    log = "".join(p.read_text() for p in (tmp_path / "experiments/ddp_lte").glob("train_*.log"))
    assert "World size (gpu number): 2" in log and re.search(r"# psnr: +\d+\.\d+", log)
    assert (tmp_path / "experiments/ddp_lte/models/net_g_latest.pth").is_file()


def test_basicsr_test_refuses_non_finite_outputs(basicsr_cli, write_options, lte_options, lte_network_g, tmp_path):
    """Finite weights scaled by 1e30 pass the load check and give NaN; before, ``basicsr test``
    reported a PSNR and exited 0."""
    from esc_arch import NETWORKS

    net = NETWORKS["ESCLTE"](**{k: v for k, v in lte_network_g.items() if k != "type"})
    huge = {k: v * 1e30 if v.is_floating_point() else v for k, v in net.state_dict().items()}
    torch.save({"params_ema": huge}, tmp_path / "huge.pth")
    test = lte_options("huge_lte")
    del test["train"], test["logger"]
    test["datasets"] = {"test_1": dict(test["datasets"]["val"], name="Val_x3")}
    test["path"] = {"pretrain_network_g": str(tmp_path / "huge.pth"), "param_key_g": "params_ema"}
    test["val"] = {"save_img": False, "suffix": None, "metrics": test["val"]["metrics"]}
    result = basicsr_cli("test", "-opt", write_options(tmp_path / "test.yml", test), cwd=tmp_path)
    error = [line for line in result.stderr.splitlines() if "error:" in line or "Traceback" in line]
    assert result.returncode == 1 and len(error) == 1, result.stderr
    assert re.fullmatch(
        r"basicsr test: error: Val_x3: \S+/images/val/\w+\.png: the network's output holds [\d,]+ non-finite "
        r"value\(s\) \(NaN or Inf\) of [\d,]+: .*",
        error[0],
    ), error[0]
