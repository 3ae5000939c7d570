"""bf16 on the CPU with the weights converted once (esc_arch.runtime.inference.for_precision), as
``esc upscale --precision bf16`` runs it: which tensors convert, every family's reference
checkpoint in bf16, the trained weights on real photos against fp32, and the command."""

import copy
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import esc_arch
from esc_arch.runtime.inference import for_precision, network_dtype, precision_context, upscale

DATA = Path(__file__).parent / "data"
#: every fixed-scale reference checkpoint of tests/data (ESC-LTE stays float32: its queries
#: compute coordinates; the discriminator is not an upscaler)
FIXED_SCALE = sorted(
    p.relative_to(DATA).as_posix()
    for p in [*DATA.glob("*.pth"), *DATA.glob("zoo/*.pth"), *DATA.glob("rib/*.pth")]
    if "disc" not in p.name and "lte" not in p.name
)
#: bf16 against fp32 with the trained ESC-light x2 weights on real photos (as under autocast)
TRAINED_FLOOR_DB = 50.0
#: the reference checkpoints hold random or briefly trained weights whose outputs span up to 20x
#: the image range; converted bf16 stays within 4 dB of autocast bf16 on them (measured 0-4 dB)
REFERENCE_FLOOR_DB = 28.0


def _psnr(a, b) -> float:
    return float(10 * torch.log10(1 / ((a.float().clamp(0, 1) - b.float().clamp(0, 1)) ** 2).mean()))


def _tensor(bgr: np.ndarray) -> torch.Tensor:
    """An 8-bit BGR image as ``esc upscale`` feeds it: RGB, NCHW, [0, 1]."""
    return torch.from_numpy(bgr[..., ::-1].astype(np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0).contiguous()


def _photo(image_dir, name: str, crop: int | None = None) -> torch.Tensor:
    bgr = cv2.imread(str(image_dir / "val" / f"{name}.png"))
    return _tensor(bgr if crop is None else bgr[:crop, :crop])


def test_weights_convert_once_and_the_bias_stays_float32(tiny_net):
    net = tiny_net()
    assert for_precision(net, "bf16", "cpu") is net
    dtypes = {name: p.dtype for name, p in net.named_parameters()}
    bias = {name for name in dtypes if name.endswith("relative_position_bias")}
    assert bias and all(dtypes[name] == torch.float32 for name in bias)
    assert {dtypes[name] for name in dtypes if name not in bias} == {torch.bfloat16}
    assert network_dtype(net) == torch.bfloat16
    with precision_context(net, "bf16", torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")  # a converted network needs no autocast


def test_flashbias_factors_and_dysample_positions_stay_float32():
    fb = for_precision(esc_arch.load_model(DATA / "zoo" / "esc_fb_r16_tiny_x4_train_b2.pth"), "bf16", "cpu")
    kept = {n: p.dtype for n, p in fb.named_parameters() if n.endswith(("flashbias_q", "flashbias_k"))}
    assert kept and set(kept.values()) == {torch.float32}
    dysample = for_precision(esc_arch.load_model(DATA / "zoo" / "escreal_x4_dysample.pth"), "bf16", "cpu")
    assert dysample.to_img.init_pos.dtype == torch.float32 and network_dtype(dysample) == torch.bfloat16


def test_a_converted_network_still_checks_the_precision_and_names_bf16(tiny_net):
    from esc_arch.runtime.inference import NonFiniteOutput

    net = for_precision(tiny_net(), "bf16", "cpu")
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="'fp16' needs a CUDA device"):
        upscale(net, x, precision="fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        upscale(net, x, precision="int8")
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(1e30)
    with pytest.raises(NonFiniteOutput, match="likely a bf16 overflow"):
        upscale(net, x, check_finite=True)  # no precision given: the network's own


@pytest.mark.parametrize(("precision", "device"), [("fp32", "cpu"), (None, "cpu"), ("bf16", "cuda"), ("fp16", "cuda")])
def test_other_precisions_and_devices_leave_the_network_as_it_is(tiny_net, precision, device):
    net = tiny_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for_precision(net, precision, device)
    after = net.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())


def test_an_arbitrary_scale_network_stays_float32_under_autocast():
    net = esc_arch.load_model(DATA / "zoo" / "esc_lte_x2.5_eval.pth")
    for_precision(net, "bf16", "cpu")
    assert {p.dtype for p in net.parameters()} == {torch.float32}
    with precision_context(net, "bf16", torch.device("cpu")):
        assert torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("name", FIXED_SCALE)
def test_every_reference_checkpoint_runs_converted_bf16(name, image_dir):
    """Every family (ESC, ESC-FP, FlashBias, ESC-Real with DySample, ESCRealM, ESC-RIB): the
    converted network runs bf16 end to end, finite and close to fp32."""
    net = esc_arch.load_model(DATA / name)
    x = _photo(image_dir, "bird", 40)
    fp32 = upscale(net, x)
    converted = for_precision(copy.deepcopy(net), "bf16", "cpu")
    out = upscale(converted, x, precision="bf16", check_finite=True)
    assert out.dtype == torch.float32 and out.shape == fp32.shape
    assert not torch.equal(out, fp32)  # bf16 did run
    assert _psnr(out, fp32) >= REFERENCE_FLOOR_DB, name


def test_dysample_samples_in_float32_in_a_bf16_network(image_dir):
    """DySample's sampling positions need float32 (bf16 holds x.5 only up to 128): a bf16
    ESC-Real with DySample on an image wider than 128 pixels stays close to fp32."""
    net = esc_arch.load_model(DATA / "zoo" / "escreal_x4_dysample.pth")
    x = _photo(image_dir, "bird")[..., :24, :160]
    fp32 = upscale(net, x)
    out = upscale(for_precision(copy.deepcopy(net), "bf16", "cpu"), x, check_finite=True)
    assert _psnr(out, fp32) >= 40


def test_lda_samples_in_float32_in_a_bf16_network():
    """The LDA upsampler's sampling positions need float32 (bf16 holds integers only up to 256):
    converted to bf16, its output columns beyond 256 are as close to fp32 as the first ones
    (with positions in bf16: 0.029 against 0.009 mean error)."""
    from esc_arch.archs.esc_real_arch import LDAUpsampler

    torch.manual_seed(0)
    upsampler = LDAUpsampler(16, 4).eval()
    x = torch.rand(1, 16, 12, 80)
    with torch.no_grad():
        fp32 = upsampler(x)
        out = copy.deepcopy(upsampler).to(torch.bfloat16)(x.to(torch.bfloat16)).float()
    error = (out - fp32).abs()
    assert out.shape == (1, 16, 48, 320)
    assert error[..., :256].mean() < 0.004 and error[..., 256:].mean() < 0.004


def test_trained_weights_stay_above_the_floor_on_photo_crops(image_dir):
    net = esc_arch.load_model(DATA / "ESC-light_x2_small.pth")
    converted = for_precision(copy.deepcopy(net), "bf16", "cpu")
    for name in ("butterfly", "bird"):
        x = _photo(image_dir, name, 96)
        assert _psnr(upscale(converted, x), upscale(net, x)) >= TRAINED_FLOOR_DB, name


@pytest.mark.slow  # two whole photographs, fp32 and bf16: ~30 s
def test_trained_weights_stay_above_the_floor_on_whole_photos(image_dir):
    net = esc_arch.load_model(DATA / "ESC-light_x2_small.pth")
    converted = for_precision(copy.deepcopy(net), "bf16", "cpu")
    for name in ("butterfly", "bird"):
        x = _photo(image_dir, name)
        assert _psnr(upscale(converted, x), upscale(net, x)) >= TRAINED_FLOOR_DB, name


def test_esc_upscale_bf16_runs_the_converted_network(esc_cli, image_dir, tmp_path, monkeypatch):
    from esc_arch.runtime import hardware

    monkeypatch.setattr(hardware, "native_bf16", lambda: True)
    model = DATA / "ESC-light_x2_small.pth"
    source = image_dir / "val" / "bird.png"
    crop = tmp_path / "in" / "bird.png"
    crop.parent.mkdir()
    cv2.imwrite(str(crop), cv2.imread(str(source))[:64, :48])
    result = esc_cli("upscale", "-i", crop, "-o", tmp_path / "out", "-m", model, "--precision", "bf16")
    assert result.returncode == 0, result.stderr
    written = cv2.imread(str(next((tmp_path / "out").iterdir())))
    net = for_precision(esc_arch.load_model(model), "bf16", "cpu")
    expected = upscale(net, _tensor(cv2.imread(str(crop))))[0]
    rgb = expected.clamp(0, 1).mul(255).round().permute(1, 2, 0).numpy()[..., ::-1]
    assert np.array_equal(written, rgb.astype(np.uint8))


@pytest.mark.slow  # compiles a tiny network with inductor, at two input sizes: ~1 min on 2 cores
def test_esc_upscale_compile_gives_the_eager_output(esc_cli, tiny_model, image_dir, tmp_path):
    """``--compile``: the network is compiled (dynamo traced graphs), the header says so, and each
    pixel of two images of different sizes is within one level of the eager run (inductor
    reorders float sums)."""
    from torch._dynamo.utils import counters

    photo = cv2.imread(str(image_dir / "val" / "bird.png"))
    inputs = tmp_path / "in"
    inputs.mkdir()
    cv2.imwrite(str(inputs / "a.png"), photo[:40, :56])
    cv2.imwrite(str(inputs / "b.png"), photo[:72, :24])
    outputs = {}
    for flag in ((), ("--compile",)):
        out = tmp_path / ("compiled" if flag else "eager")
        graphs = counters["stats"]["unique_graphs"]
        result = esc_cli("upscale", "-i", inputs, "-o", out, "-m", tiny_model, "--device", "cpu", *flag)
        assert result.returncode == 0, result.stderr
        assert (", fp32, compiled, attention" in result.stderr) == bool(flag)
        assert (counters["stats"]["unique_graphs"] > graphs) == bool(flag)
        outputs[bool(flag)] = [cv2.imread(str(path)).astype(int) for path in sorted(out.iterdir())]
    assert [o.shape for o in outputs[True]] == [o.shape for o in outputs[False]] == [(80, 112, 3), (144, 48, 3)]
    for compiled, eager in zip(outputs[True], outputs[False], strict=True):
        assert np.abs(compiled - eager).max() <= 1


def test_a_compiler_failure_stops_the_run_in_one_line_per_file(esc_cli, tiny_model, image_dir, tmp_path, monkeypatch):
    """A compiler that fails (here a backend that raises) would fail on every file: the first
    file names the error, the others are not run."""
    from esc_arch.runtime import inference

    def broken_backend(graph, example_inputs):
        raise RuntimeError("no C++ compiler found")

    def compile_network(net):
        net.compile(backend=broken_backend)
        return net

    monkeypatch.setattr(inference, "compile_network", compile_network)
    photo = cv2.imread(str(image_dir / "val" / "bird.png"))
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a", "b", "c"):
        cv2.imwrite(str(inputs / f"{name}.png"), photo[:16, :16])
    result = esc_cli("upscale", "-i", inputs, "-o", tmp_path / "out", "-m", tiny_model, "--device", "cpu", "--compile")
    assert result.returncode == 3
    failed = [line for line in result.stderr.splitlines() if line.startswith("failed: ")]
    assert failed[0].startswith(f"failed: {inputs / 'a.png'}: --compile: backend='broken_backend' raised:")
    assert failed[0].endswith("; run without --compile")
    assert failed[1:] == [f"failed: {inputs / n}.png: not run: --compile failed on {inputs / 'a.png'}" for n in "bc"]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_compile_refuses_an_arbitrary_scale_network(esc_cli, image_dir, tmp_path):
    model = DATA / "zoo" / "esc_lte_x2.5_eval.pth"
    result = esc_cli("upscale", "-i", image_dir / "val" / "bird.png", "-o", tmp_path, "-m", model, "--scale", "2",
                     "--compile")  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "esc: error: --compile: ESC-LTE runs its encoder and queries outside forward; it is not compiled"
    )
