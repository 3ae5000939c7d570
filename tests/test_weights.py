"""Using ESC weights anywhere: load_model, esc export, esc upscale on every image kind."""

import hashlib
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from esc_arch import ESC, PRESETS, build_preset, load_model
from esc_arch.config import detect_variant
from esc_arch.export import export_checkpoint
from esc_arch.imageio import read_image
from esc_arch.loading import infer_config

from conftest import DATA, load_golden

BIN = Path(sys.executable).parent
TINY = dict(dim=16, pdim=8, kernel_size=5, n_blocks=1, conv_blocks=2, window_size=8, num_heads=2, exp_ratio=1.25)


@pytest.mark.parametrize(
    ("name", "variant", "scale"),
    [("esc_x2_eval", "ESC", 2), ("esc_light_x4_eval", "ESC-light", 4), ("esc_fp_x3_eval", "ESC-FP", 3),
     ("esc_real_x4_eval", "custom", 4), ("esc_tiny_ln_x2_train_b2", "custom", 2)],
)  # fmt: skip
def test_golden_files_load_with_variant_and_scale(name, variant, scale):
    net = load_model(str(DATA / f"{name}.pth"), attn_type="sdpa")
    assert (net.variant, net.scale, net.training) == (variant, scale, False)
    reference, x, expected, case = load_golden(name)
    net.train(case["mode"] == "train")
    with torch.no_grad():
        assert (net(x) - expected).abs().max().item() < 1e-4


@pytest.mark.parametrize(("name", "scale"), [(n, s) for n, p in PRESETS.items() for s in p.scales])
def test_every_preset_is_detected(name, scale):
    net = build_preset(name, scale)
    config = infer_config(net.state_dict())
    assert config.family() == type(net).__name__ and config.upscaling_factor == scale
    assert config == net.config and detect_variant(config) == name == net.variant


def _tiny(tmp_path, scale=2):
    torch.manual_seed(0)
    net = ESC(**TINY, upscaling_factor=scale).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return net


def test_checkpoint_formats(tmp_path):
    from safetensors.torch import save_file

    net = _tiny(tmp_path)
    sd = net.state_dict()
    x = torch.rand(1, 3, 11, 13)
    with torch.no_grad():
        expected = net(x)
    files = {
        "zoo.pth": {"params_ema": sd, "params": {k: torch.zeros_like(v) for k, v in sd.items()}},
        "params.pth": {"params": sd},
        "bare.pth": sd,
        "ddp.pth": {"params": {f"module.{k}": v for k, v in sd.items()}},
    }
    for name, obj in files.items():
        torch.save(obj, tmp_path / name)
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "w.safetensors")
    for name in [*files, "w.safetensors"]:
        loaded = load_model(str(tmp_path / name))
        with torch.no_grad():
            assert torch.equal(loaded(x), expected), name


def test_pickled_files_are_refused_unless_allowed(tmp_path):
    sd = _tiny(tmp_path).state_dict()
    torch.save({"params": sd, "note": np.float64(3.0)}, tmp_path / "pickled.pth")
    with pytest.raises(ValueError, match="pickled Python objects .* allow_pickle=True"):
        load_model(str(tmp_path / "pickled.pth"))
    assert load_model(str(tmp_path / "pickled.pth"), allow_pickle=True).scale == 2


def test_not_an_esc_file(tmp_path):
    torch.save({"params": {"conv.weight": torch.ones(3, 3, 3, 3)}}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="other.pth: not an ESC state dict"):
        load_model(str(tmp_path / "other.pth"))


def test_training_state_export_load_round_trip(tmp_path):
    net = _tiny(tmp_path)
    exp = tmp_path / "experiments/run"
    (exp / "models").mkdir(parents=True)
    (exp / "training_states").mkdir()
    noise = {k: v + 1 for k, v in net.state_dict().items()}
    torch.save({"params": noise, "params_ema": net.state_dict()}, exp / "models/net_g_5.pth")
    torch.save({"epoch": 0, "iter": 5, "optimizers": [], "schedulers": []}, exp / "training_states/5.state")

    x = torch.rand(1, 3, 9, 10)
    with torch.no_grad():
        expected = net(x)
    with torch.no_grad():
        assert torch.equal(load_model(str(exp / "training_states/5.state"))(x), expected)

    state = str(exp / "training_states/5.state")
    out = subprocess.run([str(BIN / "esc"), "export", state, "-o", str(tmp_path / "zoo")],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    path = Path(out.splitlines()[0])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert path.name == "custom_x2.pth"  # the name test option files expect
    again, _ = export_checkpoint(state, str(tmp_path / "zoo2"), with_hash=True)
    assert Path(again).name == f"custom_x2-{digest[:8]}.pth"  # same weights, same bytes, BasicSR's name
    assert Path(again).read_bytes() == path.read_bytes()
    assert f"`{digest}`" in out and "| custom | x2 |" in out
    assert set(torch.load(path, weights_only=True)) == {"params_ema"}
    with torch.no_grad():
        assert torch.equal(load_model(str(path))(x), expected)

    half, _ = export_checkpoint(str(path), str(tmp_path / "zoo"), fp16=True, safetensors=True, name="tiny")
    assert Path(half).suffix == ".safetensors" and Path(half).name == "tiny.safetensors"
    with torch.no_grad():
        assert (load_model(half)(x) - expected).abs().max().item() < 1e-2


# --------------------------------------------------------------------------- esc upscale


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """One file of every kind esc upscale handles, made from a real photograph, plus bad files."""
    folder = tmp_path_factory.mktemp("images")
    bird = cv2.imread(str(DATA / "images/val/bird.png"))[40:88, 60:124]  # 48x64 BGR
    cv2.imwrite(str(folder / "rgb8.png"), bird)
    cv2.imwrite(str(folder / "rgb16.png"), bird.astype(np.uint16) * 257)
    cv2.imwrite(str(folder / "gray.png"), cv2.cvtColor(bird, cv2.COLOR_BGR2GRAY))
    alpha = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (48, 1))
    cv2.imwrite(str(folder / "rgba.png"), np.dstack([bird, alpha]))
    rgb = Image.fromarray(cv2.cvtColor(bird, cv2.COLOR_BGR2RGB))
    rgb.quantize(colors=32).save(folder / "palette.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    rgb.save(folder / "rotated.jpg", exif=exif, quality=95)
    (folder / "empty.png").write_bytes(b"")
    data = (folder / "rgb8.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "notes.jpg").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny_x2.pth"
    torch.save({"params_ema": _tiny(None).state_dict()}, path)
    return path


def test_upscale_every_image_kind(images, tiny_model, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([str(BIN / "esc"), "upscale", "-i", str(images), "-o", str(out), "-m", str(tiny_model),
                             "--suffix", "_sr"], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 3, result.stderr  # empty, truncated, not an image
    for bad in ("empty.png", "truncated.png", "notes.jpg"):
        assert f"failed: {images / bad}" in result.stderr
    assert "6 upscaled, 3 failed" in result.stderr
    assert "on cpu, fp32, attention sdpa (auto), tile none" in result.stderr  # the backend that runs

    def read(name):
        return cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)

    assert read("rgb8_sr.png").shape == (96, 128, 3) and read("rgb8_sr.png").dtype == np.uint8
    assert read("rgb16_sr.png").dtype == np.uint16 and read("rgb16_sr.png").max() > 255
    assert read("gray_sr.png").shape == (96, 128)
    rgba = read("rgba_sr.png")
    assert rgba.shape == (96, 128, 4)
    assert abs(int(rgba[:, 0, 3].mean()) - 0) <= 3 and abs(int(rgba[:, -1, 3].mean()) - 255) <= 3  # alpha resized
    assert read("palette_sr.png").shape == (96, 128, 3)
    assert read("rotated_sr.jpg").shape == (128, 96, 3)  # EXIF orientation applied: portrait
    # the 8-bit and 16-bit files agree
    assert np.abs(read("rgb16_sr.png") / 257.0 - read("rgb8_sr.png")).max() <= 1.5


def test_upscale_never_overwrites_inputs(images, tiny_model, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes((images / "rgb8.png").read_bytes())
    before = (folder / "a.png").read_bytes()
    result = subprocess.run([str(BIN / "esc"), "upscale", "-i", str(folder / "*.png"), "-o", str(folder), "-m",
                             str(tiny_model), "--suffix", ""], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 1 and "would overwrite an input" in result.stderr
    assert (folder / "a.png").read_bytes() == before


def test_upscale_tiled_matches_whole_image(tmp_path):
    (tmp_path / "b.png").write_bytes((DATA / "images/val/butterfly.png").read_bytes())  # 256x256: 4x4 tiles of 64
    model = str(DATA / "esc_x2_eval.pth")
    for name, extra in (("whole", []), ("tiled", ["--tile", "64", "--tile-overlap", "64"])):
        subprocess.run([str(BIN / "esc"), "upscale", "-i", str(tmp_path / "b.png"), "-o", str(tmp_path / name),
                        "-m", model, "--suffix", "", *extra], check=True, capture_output=True)  # fmt: skip
    whole = cv2.imread(str(tmp_path / "whole/b.png")).astype(np.float64)
    tiled = cv2.imread(str(tmp_path / "tiled/b.png")).astype(np.float64)
    psnr = 10 * np.log10(255**2 / max(((whole - tiled) ** 2).mean(), 1e-12))
    assert whole.shape == (512, 512, 3) and psnr >= 50


def test_upscale_bad_model_and_input_messages(tmp_path, tiny_model):
    result = subprocess.run([str(BIN / "esc"), "upscale", "-i", str(tmp_path / "nothing*.png"), "-o", str(tmp_path),
                             "-m", str(tiny_model)], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2 and "no input matches" in result.stderr
    result = subprocess.run([str(BIN / "esc"), "upscale", "-i", "x.png", "-o", str(tmp_path), "-m", "missing.pth"],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2 and "checkpoint 'missing.pth' does not exist" in result.stderr
    result = subprocess.run([str(BIN / "esc"), "upscale", "-i", "x.png", "-o", str(tmp_path), "-m", str(tiny_model),
                             "--attn-type", "flash"], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2 and "attn_type='flash'" in result.stderr and "Traceback" not in result.stderr


def test_read_image_applies_exif_orientation(images):
    assert read_image(str(images / "rotated.jpg")).shape == (64, 48, 3)
    assert read_image(str(images / "palette.png")).shape == (48, 64, 3)


# --------------------------------------------------------------------------- spandrel


@pytest.mark.parametrize(("name", "scale"), [(n, s) for n, p in PRESETS.items() for s in p.scales])
def test_spandrel_detects_every_preset(name, scale, tmp_path):
    spandrel = pytest.importorskip("spandrel")
    import esc_arch

    esc_arch.register_spandrel()
    esc_arch.register_spandrel()  # idempotent
    path = tmp_path / "w.pth"
    torch.save({"params_ema": build_preset(name, scale).state_dict()}, path)
    model = spandrel.ModelLoader().load_from_file(str(path))
    assert model.architecture.id == "ESC" and model.scale == scale and model.tags[0] == name
    assert model.size_requirements.multiple_of == PRESETS[name].config.window_size
    assert model.supports_bfloat16 and model.input_channels == model.output_channels == 3


def test_spandrel_output_matches_golden():
    spandrel = pytest.importorskip("spandrel")
    import esc_arch

    esc_arch.register_spandrel()
    model = spandrel.ModelLoader().load_from_file(str(DATA / "esc_fp_x3_eval.pth"))
    _, x, expected, _ = load_golden("esc_fp_x3_eval")
    model.model.eval()
    with torch.no_grad():
        # spandrel pads to the window like the paper's protocol and clamps to [0, 1]; compare with ours
        from esc_arch.inference import upscale

        assert (model(x) - upscale(model.model, x).clamp(0, 1)).abs().max().item() < 1e-4
        assert (model.model(x) - expected).abs().max().item() < 1e-4
