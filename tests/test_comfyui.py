"""The ComfyUI folder (comfyui/), tested without ComfyUI by calling what ComfyUI calls: its
custom-node import (the folder's ``__init__.py`` as a module, ``NODE_CLASS_MAPPINGS`` read),
"Load Upscale Model" (``load_from_state_dict`` on the file's tensors, the
``ImageModelDescriptor`` check), "Upscale Image (using Model)" (tiles of 512 with overlap 32,
feathered, through the descriptor's ``__call__``), and the folder's own nodes on real inputs."""

from __future__ import annotations

import importlib.util
import itertools
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import esc_arch
from esc_arch.runtime.inference import query_upscale, upscale

spandrel = pytest.importorskip("spandrel")

ROOT = Path(__file__).parents[1]
DATA = ROOT / "tests" / "data"
#: ComfyUI's "Upscale Image (using Model)": its tile and overlap (input pixels)
TILE, OVERLAP = 512, 32
#: the PSNR floor of that tiling against the whole image (docs/inference.md, "ComfyUI")
TILED_PSNR_FLOOR = 50.0

#: every fixed-scale reference checkpoint of tests/data (the discriminator and ESC-LTE are not
#: image-to-image models of one scale)
FIXED_SCALE = sorted(
    p.relative_to(DATA).as_posix()
    for p in [*DATA.glob("*.pth"), *DATA.glob("zoo/*.pth"), *DATA.glob("rib/*.pth")]
    if "disc" not in p.name and "lte" not in p.name
)


@pytest.fixture
def custom_node():
    """The folder imported as ComfyUI imports a custom node: its ``__init__.py`` by file
    location, under the folder's name in ``custom_nodes`` (here ``ComfyUI-ESC``)."""
    name = "ComfyUI-ESC"
    spec = importlib.util.spec_from_file_location(name, ROOT / "comfyui" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]


def _comfy_state_dict(path: Path) -> dict:
    """The tensors as ComfyUI's loader reads a file: ``torch.load(weights_only=True)``, a lone
    top-level entry (``params_ema``) unwrapped."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    if len(data) == 1 and isinstance(next(iter(data.values())), dict):
        data = next(iter(data.values()))
    return data


def _load_upscale_model(path: Path):
    """ComfyUI's "Load Upscale Model"."""
    model = spandrel.ModelLoader().load_from_state_dict(_comfy_state_dict(path)).eval()
    if not isinstance(model, spandrel.ImageModelDescriptor):
        raise TypeError("Upscale model must be a single-image model.")
    return model


def _comfy_tiled(model, image: torch.Tensor, tile: int = TILE, overlap: int = OVERLAP) -> torch.Tensor:
    """ComfyUI's tiled upscale of a ``(1, 3, H, W)`` image: tiles of ``tile`` starting every
    ``tile - overlap`` pixels (the last one flush with the border), each tile's output weighted
    by a linear ramp over ``overlap * scale`` pixels at each of its edges, the weighted sum
    divided by the summed weights. An image within one tile runs whole."""
    scale = model.scale
    _, _, height, width = image.shape
    if height <= tile and width <= tile:
        return model(image)
    out = torch.zeros(1, 3, height * scale, width * scale)
    weights = torch.zeros_like(out)

    def starts(size: int) -> list[int]:
        if size <= tile:
            return [0]
        found = list(range(0, size - overlap, tile - overlap))
        return found + [size - tile] if found[-1] + tile < size else found

    for y, x in itertools.product(starts(height), starts(width)):
        y, x = max(0, min(height - overlap, y)), max(0, min(width - overlap, x))
        part = model(image[:, :, y : y + min(tile, height - y), x : x + min(tile, width - x)])
        mask = torch.ones_like(part)
        feather = overlap * scale
        for axis in (2, 3):
            if feather >= mask.shape[axis]:
                continue
            for t in range(feather):
                mask.narrow(axis, t, 1).mul_((t + 1) / feather)
                mask.narrow(axis, mask.shape[axis] - 1 - t, 1).mul_((t + 1) / feather)
        rows, cols = slice(y * scale, y * scale + part.shape[2]), slice(x * scale, x * scale + part.shape[3])
        out[:, :, rows, cols] += part * mask
        weights[:, :, rows, cols] += mask
    return out / weights


def _photo(height: int, width: int) -> torch.Tensor:
    """A real photograph larger than one tile: Set5's bird (288x288) enlarged x2 (bicubic) and
    cropped to ``height`` x ``width``, ``(1, 3, H, W)`` RGB in [0, 1]."""
    bgr = cv2.imread(str(DATA / "images" / "val" / "bird.png"))
    bgr = cv2.resize(bgr, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)[:height, :width]
    return torch.from_numpy(bgr[..., ::-1].astype(np.float32) / 255).permute(2, 0, 1)[None].contiguous()


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(1 / (a - b).pow(2).mean().item())


# --------------------------------------------------------------------------- the custom node's import


def test_importing_the_folder_registers_esc_and_exports_its_nodes(custom_node):
    assert "ESC" in spandrel.MAIN_REGISTRY
    mappings = custom_node.NODE_CLASS_MAPPINGS
    assert set(mappings) == {"ESCModelLoader", "ESCUpscale"} == set(custom_node.NODE_DISPLAY_NAME_MAPPINGS)
    for node in mappings.values():  # ComfyUI's node conventions
        assert set(node.INPUT_TYPES()) == {"required"}
        assert isinstance(node.RETURN_TYPES, tuple) and callable(getattr(node(), node.FUNCTION))
        assert isinstance(node.CATEGORY, str)
    assert mappings["ESCUpscale"].RETURN_TYPES == ("IMAGE",)
    assert mappings["ESCModelLoader"].RETURN_TYPES == mappings["ESCUpscale"].INPUT_TYPES()["required"]["esc_model"]


def test_the_folder_imports_only_esc_arch_s_public_modules():
    import ast

    allowed = {"esc_arch", "esc_arch.runtime.inference", "torch", "__future__", "nodes", "folder_paths", "comfy"}
    for path in (ROOT / "comfyui").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert all(n in allowed for n in names), f"{path.name} imports {names}"


# --------------------------------------------------------------------------- "Load Upscale Model"


@pytest.mark.parametrize("name", FIXED_SCALE)
def test_comfyui_s_loader_loads_every_fixed_scale_reference_checkpoint(custom_node, name):
    model = _load_upscale_model(DATA / name)
    described = esc_arch.describe(esc_arch.load_model(DATA / name))  # the package's one load path
    assert model.architecture.id == "ESC" and model.scale == described.scale and model.tags[0] == described.variant
    assert model.size_requirements.multiple_of == described.size_multiple
    assert not model.supports_half  # fp16 is not verified on a CPU


@pytest.mark.parametrize("name", FIXED_SCALE)
def test_comfyui_s_loader_runs_as_the_paper_s_protocol(custom_node, name):
    model = _load_upscale_model(DATA / name)
    reference = esc_arch.load_model(DATA / name)
    m = (
        model.size_requirements.multiple_of
    )  # padded by less than its size: spandrel then reflects, as the paper's protocol
    x = torch.rand(1, 3, m // 2 + 5, m // 2 + 9)
    with torch.no_grad():
        torch.testing.assert_close(model(x), upscale(reference, x).clamp(0, 1), atol=1e-5, rtol=0)


def test_comfyui_s_loader_refuses_esc_lte(custom_node):
    with pytest.raises(spandrel.UnsupportedModelError):
        _load_upscale_model(DATA / "zoo" / "esc_lte_x2.5_eval.pth")


# --------------------------------------------------------------------------- "Upscale Image (using Model)"


def test_the_tiling_loop_covers_the_image_with_comfyui_s_tiles():
    """The loop above on an identity "model": every output pixel is the input's, so the weights
    cover the image; an image of 600 pixels takes tiles at 0 and 88."""

    class Identity:
        scale = 1

        def __call__(self, x):
            return x.clone()

    x = torch.rand(1, 3, 600, 530)
    torch.testing.assert_close(_comfy_tiled(Identity(), x), x)


def test_tiled_upscale_of_a_photo_larger_than_a_tile_stays_near_the_whole_image(custom_node, tiny_net, tmp_path):
    """ComfyUI's tiles (512, overlap 32) of a 576x560 photo through a small ESC: at least
    TILED_PSNR_FLOOR from the whole-image output."""
    torch.save({"params_ema": tiny_net("ESC").state_dict()}, tmp_path / "tiny.pth")
    model = _load_upscale_model(tmp_path / "tiny.pth")
    photo = _photo(576, 560)
    tiled, whole = _comfy_tiled(model, photo), model(photo)
    assert tiled.shape == whole.shape == (1, 3, 1152, 1120)
    assert _psnr(tiled, whole) >= TILED_PSNR_FLOOR


@pytest.mark.slow
def test_tiled_upscale_with_trained_weights_stays_near_the_whole_image(custom_node):
    """The same with the trained ESC-light x2 of tests/data (window 32) on a 576x560 photo."""
    model = _load_upscale_model(DATA / "ESC-light_x2_small.pth")
    photo = _photo(576, 560)
    tiled, whole = _comfy_tiled(model, photo), model(photo)
    assert _psnr(tiled, whole) >= TILED_PSNR_FLOOR


# --------------------------------------------------------------------------- the folder's own nodes


def _image(height: int, width: int, batch: int = 1) -> torch.Tensor:
    """A ComfyUI IMAGE: ``(B, H, W, 3)`` float in [0, 1], from the photo."""
    return _photo(height, width).expand(batch, -1, -1, -1).movedim(1, -1).contiguous()


@pytest.fixture
def tiny_lte_file(tiny_config, perturbed, tmp_path) -> Path:
    path = tmp_path / "lte.pth"
    net = perturbed(esc_arch.ESCLTE(encoder=tiny_config, hidden_dim=16, mlp_hidden=(24, 8)))
    torch.save({"params_ema": net.state_dict()}, path)
    return path


def _lte_at_any_scale_and_size(custom_node, path: Path) -> None:
    nodes = custom_node.NODE_CLASS_MAPPINGS
    (net,) = nodes["ESCModelLoader"]().load(str(path))
    assert esc_arch.describe(net).arbitrary_scale
    image = _image(20, 27, batch=2)
    (out,) = nodes["ESCUpscale"]().upscale(net, image, scale=3.5)
    assert out.shape == (2, 70, 94, 3) and 0 <= out.min() and out.max() <= 1
    expected = query_upscale(esc_arch.load_model(path), image.movedim(-1, 1), scale=3.5).clamp(0, 1)
    torch.testing.assert_close(out, expected.movedim(1, -1))
    (out,) = nodes["ESCUpscale"]().upscale(net, image, width=50, height=31)
    assert out.shape == (2, 31, 50, 3)


def test_esc_lte_at_any_scale_and_size(custom_node, tiny_lte_file):
    _lte_at_any_scale_and_size(custom_node, tiny_lte_file)


def test_the_reference_esc_lte_at_any_scale_and_size(custom_node):
    _lte_at_any_scale_and_size(custom_node, DATA / "zoo" / "esc_lte_x2.5_eval.pth")


def test_esc_rib_with_its_window(custom_node):
    nodes = custom_node.NODE_CLASS_MAPPINGS
    path = DATA / "rib" / "escrib_tiny_x2_gate_linear_pixelshuffle.pth"
    (net,) = nodes["ESCModelLoader"]().load(str(path), window_size=16)
    assert net.config.window_size == 16
    image = _image(40, 37)
    (out,) = nodes["ESCUpscale"]().upscale(net, image, tile=0)
    expected = upscale(esc_arch.load_model(path, window_size=16), image.movedim(-1, 1)).clamp(0, 1)
    assert out.shape == (1, 80, 74, 3)
    torch.testing.assert_close(out, expected.movedim(1, -1))


@pytest.mark.parametrize(
    ("model", "kwargs", "message"),
    [
        ("lte", dict(tile=64), r"^custom-LTE is not tiled \(its encoder sees the whole input\); set tile to 0$"),
        ("lte", dict(width=50), r"^give both width and height, or neither \(0 and 0: scale\); got 50x0$"),
        ("esc_tiny_ln_x2_train_b2.pth", dict(width=50, height=20),
         r"^custom upscales by x2 only; set width and height to 0$"),
        ("esc_tiny_ln_x2_train_b2.pth", dict(image=torch.rand(1, 3, 8, 8)),
         r"^image must be a ComfyUI IMAGE \(batch, height, width, 3\); got shape \(1, 3, 8, 8\)$"),
    ],
    ids=["lte tiled", "width alone", "size for a fixed scale", "NCHW image"],
)  # fmt: skip
def test_the_upscale_node_refuses_with_one_line(custom_node, tiny_lte_file, model, kwargs, message):
    nodes = custom_node.NODE_CLASS_MAPPINGS
    (net,) = nodes["ESCModelLoader"]().load(str(tiny_lte_file if model == "lte" else DATA / model))
    kwargs = {"image": _image(16, 16), **kwargs}
    with pytest.raises(ValueError, match=message):
        nodes["ESCUpscale"]().upscale(net, **kwargs)


def test_the_loader_refuses_what_load_model_refuses(custom_node, tmp_path):
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"broken\.pth: "):
        custom_node.NODE_CLASS_MAPPINGS["ESCModelLoader"]().load(str(tmp_path / "broken.pth"))
