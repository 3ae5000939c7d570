"""Every shipped option file is generated, parses, builds its network, and agrees with its scale."""

import subprocess
import sys
from pathlib import Path

import pytest

from esc_arch import PRESETS
from esc_arch.cli import _load_options

ROOT = Path(__file__).resolve().parent.parent
OPTION_FILES = sorted((ROOT / "options").glob("*.yml"))


def test_all_variants_and_scales_are_shipped():
    names = {p.name for p in OPTION_FILES}
    for stem in ("ESC", "ESC_light", "ESC_FP", "ESC_XL"):
        for scale in (2, 3, 4):
            assert {f"train_{stem}_x{scale}.yml", f"test_{stem}_x{scale}.yml"} <= names


def test_option_files_equal_the_generator_output(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts/make_options.py"), "--out", str(tmp_path)], check=True)
    for path in OPTION_FILES:
        assert (tmp_path / path.name).read_text() == path.read_text(), f"{path.name}: run scripts/make_options.py"


@pytest.mark.parametrize("path", OPTION_FILES, ids=lambda p: p.name)
def test_option_file_parses_and_builds(path):
    from basicsr.archs import build_network

    opt = _load_options(str(path), None)
    net = build_network(opt["network_g"])
    assert net.upscaling_factor == opt["scale"]
    params = sum(p.numel() for p in net.parameters())
    assert params in {count for preset in PRESETS.values() for count in preset.params.values()}
    if "_Real_" in path.name:  # the Real-ESRGAN recipe: tests/test_real.py
        assert opt["model_type"] == {"MSE": "ESCRealESRNetModel", "GAN": "ESCRealESRGANModel"}.get(
            path.stem.rsplit("_", 1)[-1], "ESCModel"
        )
        return
    assert opt["model_type"] == "ESCModel"
    if path.name.endswith("_small.yml"):  # the CPU-budget recipe: tests/test_quality_small.py
        assert opt["train"]["mixed_precision"] == "bf16" and opt["datasets"]["train"]["gt_size"] == 32 * opt["scale"]
        assert [d["name"] for k, d in opt["datasets"].items() if k != "train"] == ["Set5", "Set14"]
        return
    if path.name.startswith("train_"):
        assert opt["train"]["optim_g"]["type"] == "AdamW" and opt["train"]["ema_decay"] == 0.999
        assert opt["datasets"]["train"]["gt_size"] == {2: 128, 3: 192, 4: 256}[opt["scale"]]
        assert not Path(opt["datasets"]["train"]["dataroot_gt"]).is_absolute()
        if opt["scale"] != 2:
            assert "_x2_" in opt["path"]["pretrain_network_g"]
    else:
        assert [d["name"] for d in opt["datasets"].values()] == ["Set5", "Set14", "B100", "Urban100", "Manga109"]
        assert all(m["crop_border"] == opt["scale"] for m in opt["val"]["metrics"].values())
