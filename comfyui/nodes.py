"""ComfyUI nodes for what spandrel cannot load: ESC-LTE (any scale or size) and ESC-RIB with a
window other than the released 64. Both load through :func:`esc_arch.load_model`, the load
path of every door, and run with :mod:`esc_arch.runtime.inference` in float32.

ComfyUI's conventions: ``INPUT_TYPES``, ``RETURN_TYPES``, ``FUNCTION``, ``CATEGORY``; ``IMAGE``
tensors are ``(B, H, W, C)`` float in [0, 1]. ComfyUI's ``folder_paths`` and
``comfy.model_management`` are used where present (inside ComfyUI); without them a model name
is a file path and the device is the CPU.
"""

from __future__ import annotations

import torch

import esc_arch
from esc_arch.runtime.inference import query_upscale, upscale

#: ComfyUI's model folder these nodes list (the one "Load Upscale Model" lists).
MODEL_FOLDER = "upscale_models"
#: The largest output side the upscale node accepts (as ``esc upscale``'s whole-image bound).
MAX_SIDE = 16384


def _model_names() -> list[str]:
    try:
        import folder_paths
    except ImportError:  # outside ComfyUI
        return []
    return folder_paths.get_filename_list(MODEL_FOLDER)


def _model_path(name: str) -> str:
    try:
        import folder_paths
    except ImportError:  # outside ComfyUI: the name is a path
        return name
    path = folder_paths.get_full_path(MODEL_FOLDER, name)
    if path is None:
        raise FileNotFoundError(f"{name}: not in ComfyUI's {MODEL_FOLDER} folder")
    return path


def _device() -> torch.device:
    try:
        from comfy import model_management
    except ImportError:  # outside ComfyUI
        return torch.device("cpu")
    return model_management.get_torch_device()


class ESCModelLoader:
    """Any ESC file (fixed-scale or ESC-LTE) through :func:`esc_arch.load_model`;
    ``window_size`` is ESC-RIB's window (0: the released 64; refused for other families)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_name": (_model_names(),),
                "window_size": ("INT", {"default": 0, "min": 0, "max": 1024, "step": 8}),
            }
        }

    RETURN_TYPES = ("ESC_MODEL",)
    FUNCTION = "load"
    CATEGORY = "loaders"

    def load(self, model_name: str, window_size: int = 0):
        net = esc_arch.load_model(_model_path(model_name), window_size=window_size or None)
        return (net,)


class ESCUpscale:
    """An ``IMAGE`` upscaled by an ``ESC_MODEL``: ESC-LTE by ``scale`` (any positive number) or
    to ``width`` x ``height`` (both non-zero); a fixed-scale model at its own scale (``scale``
    and the size ignored), whole or in tiles of ``tile`` input pixels (0: whole)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "esc_model": ("ESC_MODEL",),
                "image": ("IMAGE",),
                "scale": ("FLOAT", {"default": 2.0, "min": 0.01, "max": 64.0, "step": 0.01}),
                "width": ("INT", {"default": 0, "min": 0, "max": MAX_SIDE}),
                "height": ("INT", {"default": 0, "min": 0, "max": MAX_SIDE}),
                "tile": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 8}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"
    CATEGORY = "image/upscaling"

    def upscale(
        self, esc_model, image: torch.Tensor, scale: float = 2.0, width: int = 0, height: int = 0, tile: int = 0
    ):
        if image.dim() != 4 or image.shape[-1] != 3:
            raise ValueError(f"image must be a ComfyUI IMAGE (batch, height, width, 3); got shape {tuple(image.shape)}")
        if (width == 0) != (height == 0):
            raise ValueError(f"give both width and height, or neither (0 and 0: scale); got {width}x{height}")
        described = esc_arch.describe(esc_model)
        device = _device()
        net = esc_model.to(device).eval()
        lq = image.movedim(-1, 1).to(device=device, dtype=torch.float32)
        with torch.no_grad():
            if described.arbitrary_scale:
                if tile:
                    raise ValueError(
                        f"{described.variant} is not tiled (its encoder sees the whole input); set tile to 0"
                    )
                size = (height, width) if width else None
                out = query_upscale(net, lq, scale=None if size else scale, size=size)
            else:
                if width:
                    raise ValueError(
                        f"{described.variant} upscales by x{described.scale} only; set width and height to 0"
                    )
                out = upscale(net, lq, tile=tile or None)
        return (out.clamp(0, 1).movedim(1, -1).to(image.device),)


NODE_CLASS_MAPPINGS = {"ESCModelLoader": ESCModelLoader, "ESCUpscale": ESCUpscale}
NODE_DISPLAY_NAME_MAPPINGS = {"ESCModelLoader": "Load ESC Model", "ESCUpscale": "Upscale Image (ESC, any scale)"}
