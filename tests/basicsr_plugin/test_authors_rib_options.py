"""The authors' ESC-RIB test files (dslisleedh/SST ``options/test/ESCRIB_X{2,3,4}.yaml``) run with
``basicsr test``. Their content is rebuilt here key by key from the published files (the text is
not stored): ``model_type: ESRModel``, seven paired sets (DIV2K's without ``filename_tmpl``),
``network_g`` with ``attn_type: RIB``, release weights under ``params_ema`` with
``strict_load_g: true``, PSNR and SSIM on Y. Only data paths and hardware keys change, as for
the authors' 32 ESC files (test_authors_options.py)."""

import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch
import yaml

pytestmark = pytest.mark.slow

PHOTOS = sorted((Path(__file__).parent.parent / "data" / "images").glob("val/*.png"))
BASICSR = Path(sys.executable).parent / "basicsr"
SETS = ["Set5", "Set14", "B100", "Urban100", "Manga109", "DIV2K", "LSDIR"]


def authors_file(scale: int, data: Path, weights: Path) -> dict:
    datasets = {}
    for index, name in enumerate(SETS, 1):
        dataset = {"name": name, "type": "PairedImageDataset", "dataroot_gt": str(data / "HR")}
        if name == "DIV2K":  # the authors' DIV2K entry names its LR files like the HR ones
            dataset["dataroot_lq"] = str(data / f"X{scale}_same_names")
        else:
            dataset.update(dataroot_lq=str(data / f"X{scale}"), filename_tmpl=f"{{}}x{scale}")
        datasets[f"test_{index}"] = {**dataset, "io_backend": {"type": "disk"}}
    network_g = dict(type="ESCRIB", dim=64, pdim=16, kernel_size=13, n_blocks=5, conv_blocks=5, window_size=64,
                     num_heads=4, upscaling_factor=scale, exp_ratio=1.25, attn_type="RIB", rank=16,
                     rib_hidden_dim=32, rib_n_freqs=10, gate_type="DWC")  # fmt: skip
    metrics = {m: {"type": f"calculate_{m}", "crop_border": scale, "test_y_channel": True} for m in ("psnr", "ssim")}
    return {
        "name": f"ESCRIB_X{scale}",
        "model_type": "ESRModel",
        "scale": scale,
        "num_gpu": 0,  # hardware: the authors' file says 1
        "manual_seed": 0,
        "datasets": datasets,
        "network_g": network_g,
        "path": {"pretrain_network_g": str(weights), "param_key_g": "params_ema", "strict_load_g": True},
        "val": {"save_img": True, "suffix": None, "metrics": metrics},
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    (root / "HR").mkdir()
    for path in PHOTOS:
        hr = cv2.imread(str(path))[:96, :96]
        cv2.imwrite(str(root / "HR" / path.name), hr)
        for scale in (2, 3, 4):
            lr = cv2.resize(hr, (96 // scale, 96 // scale), interpolation=cv2.INTER_AREA)
            for folder, name in ((f"X{scale}", f"{path.stem}x{scale}.png"), (f"X{scale}_same_names", path.name)):
                (root / folder).mkdir(exist_ok=True)
                cv2.imwrite(str(root / folder / name), lr)
    return root


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_authors_escrib_test_file_runs(scale, data, tmp_path):
    from esc_arch.basicsr_plugin import activate

    activate()
    from basicsr.archs import build_network

    opt = authors_file(scale, data, tmp_path / f"ESCRIB_DFLIP_X{scale}.pth")
    torch.manual_seed(0)
    torch.save({"params_ema": build_network(dict(opt["network_g"])).state_dict()}, opt["path"]["pretrain_network_g"])
    (tmp_path / "authors.yml").write_text(yaml.safe_dump(opt))
    result = subprocess.run([str(BASICSR), "test", "-opt", str(tmp_path / "authors.yml"), "--root", str(tmp_path)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=1800)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    images = sorted((tmp_path / "results" / opt["name"] / "visualization").rglob("*.png"))
    assert len(images) == len(PHOTOS) * len(SETS)
    assert cv2.imread(str(images[0])).shape[:2] == (96, 96)
    assert result.stderr.count("# psnr:") == len(SETS)
