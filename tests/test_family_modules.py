"""A family is one module: a toy family, declared in this test file alone and added through the
public entry (:func:`esc_arch.register_family`), loads through every door: ``load_model``,
``esc upscale``, ``esc export``, spandrel, ONNX export and BasicSR's registry. No file of the
package knows it. Also: each family module declares what the doors need, and the package's
families are listed once."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import esc_arch
from esc_arch import families
from esc_arch.config import Keywords, canonical_attn_type, positive_int
from esc_arch.families.family import Family, Preset, Weights, has_all, tensor

PACKAGE = Path(esc_arch.__file__).parent


# --------------------------------------------------------------------------- the toy family


@dataclass(frozen=True, kw_only=True)
class ToyConfig(Keywords):
    """A two-convolution pixel-shuffle network: all a family needs, nothing of ESC's."""

    dim: int = 8
    upscaling_factor: int = 2
    window_size: int = 4  #: the size multiple of the protocol (the network pads itself)
    attn_type: str = "auto"

    def __post_init__(self) -> None:
        for name in ("dim", "upscaling_factor", "window_size"):
            positive_int(name, getattr(self, name))
        object.__setattr__(self, "attn_type", canonical_attn_type(self.attn_type))

    @classmethod
    def family(cls) -> str:
        return "ToySR"

    def plain(self) -> ToyConfig:
        return self.replace(attn_type="auto")


class ToySR(nn.Module):
    def __init__(self, config: ToyConfig | None = None, /, **keywords) -> None:
        super().__init__()
        self.config = config if config is not None else ToyConfig.from_keywords(**keywords)
        scale = self.config.upscaling_factor
        self.toy_head = nn.Conv2d(3, self.config.dim, 3, padding=1)
        self.toy_tail = nn.Conv2d(self.config.dim, 3 * scale * scale, 3, padding=1)

    @property
    def size_multiple(self) -> int:
        return self.config.window_size

    @property
    def attn_type(self) -> str:
        return self.config.attn_type

    @property
    def hyperparameters(self) -> dict:
        return self.config.as_dict()

    def set_attn_type(self, attn_type: str) -> None:
        self.config = self.config.replace(attn_type=attn_type)

    def reparameterize(self) -> ToySR:
        return self

    def forward(self, x):
        height, width = x.shape[-2:]
        multiple = self.config.window_size
        x = F.pad(x, (0, -width % multiple, 0, -height % multiple), mode="replicate")
        out = F.pixel_shuffle(self.toy_tail(F.gelu(self.toy_head(x))), self.config.upscaling_factor)
        return out[..., : height * self.config.upscaling_factor, : width * self.config.upscaling_factor]


def _read(state_dict, attn_type, window_size):
    head, tail = tensor(state_dict, "toy_head.weight", 4), tensor(state_dict, "toy_tail.weight", 4)
    keywords = {"dim": head.shape[0], "upscaling_factor": math.isqrt(tail.shape[0] // 3), "attn_type": attn_type}
    return keywords, {"dim": "toy_head.weight", "upscaling_factor": "toy_tail.weight"}


TOY = Family(
    ToyConfig,
    ToySR,
    "toy_head.weight",
    has_all("toy_tail.weight"),
    _read,
    what="a ToySR",
    pixel_shuffle_head=lambda config: ("toy_tail", 3),
    presets={"Toy-S": Preset(ToyConfig(dim=8), {2: 1_100}, (Weights("TOY_X2.pth", 2, "https://example.org/toy"),))},
)


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The toy family registered (the package's list restored afterwards), and a trained-looking
    x2 checkpoint of it as a BasicSR model-zoo file."""
    monkeypatch.setattr(families, "FAMILIES", list(families.FAMILIES))
    esc_arch.register_family(TOY)
    net = ToySR(dim=8)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    path = tmp_path / "toy_x2.pth"
    torch.save({"params_ema": net.state_dict()}, path)
    return net.eval(), path


def _photo(image_dir, size=24) -> torch.Tensor:
    bgr = cv2.imread(str(image_dir / "val" / "bird.png"))[:size, : size + 5]
    return torch.from_numpy(bgr[..., ::-1].copy()).permute(2, 0, 1).float().div(255)[None]


def test_the_toy_loads_through_load_model_with_its_description(toy, image_dir):
    reference, path = toy
    net = esc_arch.load_model(path)
    assert type(net) is ToySR and net.config == ToyConfig(dim=8) and not net.training
    assert sum(p.numel() for p in net.parameters()) == TOY.presets["Toy-S"].params[2]
    described = esc_arch.describe(net)
    assert (described.family, described.variant, described.scale, described.size_multiple) == ("ToySR", "Toy-S", 2, 4)
    lq = _photo(image_dir)
    with torch.no_grad():
        torch.testing.assert_close(net(lq), reference(lq))
    assert esc_arch.PRESETS["Toy-S"].weights[0].file == "TOY_X2.pth" and "ToySR" in esc_arch.NETWORKS


def test_the_toy_runs_through_esc_upscale_and_esc_export(toy, image_dir, tmp_path, esc_cli):
    _, path = toy
    result = esc_cli("upscale", "-i", image_dir / "val" / "bird.png", "-o", tmp_path / "out", "-m", path)
    assert result.returncode == 0, result.stderr
    assert "Toy-S x2 (1,100 parameters)" in result.stderr
    source, output = (
        cv2.imread(str(image_dir / "val" / "bird.png")),
        cv2.imread(str(tmp_path / "out/bird_Toy-S_x2.png")),
    )
    assert output.shape == (2 * source.shape[0], 2 * source.shape[1], 3)
    result = esc_cli("export", path, "-o", tmp_path / "zoo")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "zoo" / "Toy-S_x2.pth").is_file()


def test_the_toy_loads_through_spandrel(toy, image_dir):
    spandrel = pytest.importorskip("spandrel")
    reference, path = toy
    esc_arch.register_spandrel()
    descriptor = spandrel.ModelLoader().load_from_file(str(path))
    assert type(descriptor.model) is ToySR and descriptor.scale == 2 and descriptor.tags[0] == "Toy-S"
    assert descriptor.size_requirements.multiple_of == 4
    lq = _photo(image_dir)  # 24 x 29: spandrel pads it to the window as the paper's protocol does
    from esc_arch.runtime.inference import upscale

    torch.testing.assert_close(descriptor(lq), upscale(reference, lq).clamp(0, 1))


def test_the_toy_is_refused_as_every_family_is(toy, tmp_path):
    reference, _ = toy
    state_dict = reference.state_dict()
    state_dict["toy_tail.bias"] = torch.full_like(state_dict["toy_tail.bias"], float("nan"))
    torch.save({"params_ema": state_dict}, tmp_path / "nan.pth")
    with pytest.raises(ValueError, match=r"nan\.pth: 'toy_tail\.bias' holds 12 non-finite value\(s\)"):
        esc_arch.load_model(tmp_path / "nan.pth")
    del state_dict["toy_tail.weight"]
    torch.save({"params_ema": {"toy_head.weight": state_dict["toy_head.weight"]}}, tmp_path / "half.pth")
    with pytest.raises(ValueError, match=r"half\.pth: not a ToySR state dict: 'toy_tail\.weight' is missing"):
        esc_arch.load_model(tmp_path / "half.pth")


def test_the_toy_exports_to_onnx(toy, image_dir, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from esc_arch.commands.onnx_export import export_onnx

    reference, path = toy
    export_onnx(esc_arch.load_model(path), str(tmp_path / "toy.onnx"), max_size=64)
    lq = _photo(image_dir, size=16)[..., :16, :20]
    (out,) = ort.InferenceSession(str(tmp_path / "toy.onnx")).run(None, {"lq": lq.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), reference(lq), atol=1e-5, rtol=1e-4)


def test_the_toy_is_in_basicsrs_registry_and_loads_by_the_shared_path(toy):
    pytest.importorskip("basicsr")
    from esc_arch.basicsr_plugin import activate

    activate()
    from basicsr.archs import build_network
    from basicsr.utils.registry import ARCH_REGISTRY

    reference, path = toy
    assert ARCH_REGISTRY.get("ToySR") is ToySR
    net = build_network({"type": "ToySR", "dim": 8, "upscaling_factor": 2})
    from esc_arch.weights import load_weights, read_state_dict

    load_weights(net, read_state_dict(path, param_key="params"), source=str(path))
    loaded, expected = net.state_dict(), reference.state_dict()
    assert loaded.keys() == expected.keys() and all(torch.equal(loaded[k], expected[k]) for k in expected)


# --------------------------------------------------------------------------- the package's families


def test_the_package_lists_each_family_module_once():
    """One module per family under esc_arch/families/, each one line of FAMILIES (besides the
    generic family.py)."""
    modules = sorted(p.stem for p in (PACKAGE / "families").glob("*.py") if p.stem not in ("__init__", "family"))
    source = (PACKAGE / "families" / "__init__.py").read_text()
    assert modules and all(source.count(f"    {m}.FAMILY,\n") == 1 for m in modules)
    assert len(families.FAMILIES) == len(modules) == len({f.network for f in families.FAMILIES})


@pytest.mark.parametrize("family", families.FAMILIES, ids=lambda f: f.name)
def test_each_family_declares_what_the_doors_need(family):
    assert family.config.family() == family.name == family.network.__name__
    assert set(family.precisions) <= {"fp32", "bf16", "fp16"} and "fp32" in family.precisions
    assert family.tiling in ("discouraged", "none") and family.arbitrary_scale == (family.tiling == "none")
    assert family.window_in_file == (family.default_window is None)
    for name, preset in family.presets.items():
        for weights in preset.weights:
            assert weights.scale in preset.scales and weights.source.startswith("https://")
        for scale, count in preset.params.items():
            net = families.build_network(preset.config.replace(upscaling_factor=scale))
            assert sum(p.numel() for p in net.parameters()) == count, (name, scale)
            assert families.detect_variant(net.config) == name
