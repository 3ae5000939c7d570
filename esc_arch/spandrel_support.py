"""spandrel support for ESC checkpoints (spandrel 0.4.2 has no ESC): :func:`register_spandrel`.

>>> import esc_arch, spandrel
>>> esc_arch.register_spandrel()
>>> model = spandrel.ModelLoader().load_from_file("ESC_x4.pth")   # ImageModelDescriptor
>>> model.architecture.id, model.scale, model.tags                 # ('ESC', 4, ['ESC', ...])

Detects ESC, ESC-light, ESC-XL (class ESC), ESC-FP, ESC-Real, ESC-Real-XL (with its DySample
tail too), ESCRealM at any scale, ESC-RIB (with the released 64x64 window, which its files do
not hold), and FlashBias checkpoints, by the family table :data:`esc_arch.loading.FAMILIES`
(every key of a fixed-scale row; ESC-LTE, of arbitrary scale, is not offered), with the scale
and every hyper-parameter read from the tensors, loaded through the load path every door shares
(:func:`esc_arch.loading.network_from_state_dict`: weights holding NaN or Inf, tensors missing or
of the wrong shape are refused with the same line as ``esc upscale`` gives). Declared: inputs
padded by spandrel to a multiple of the window (the paper's protocol), bfloat16 supported
(tested on CPU), float16 not declared (not verified here; no GPU), tiling *discouraged*:
ESC's dynamic kernels are predicted from the whole input, so a tile gives another output
than the whole image (docs/inference.md measures how far).
"""

from __future__ import annotations

__all__ = ["register_spandrel"]


def _architecture():
    from spandrel import Architecture, ImageModelDescriptor, ModelTiling, SizeRequirements

    from .loading import detect_family, network_from_state_dict

    def detect(state_dict) -> bool:  # a fixed-scale family of esc_arch.loading.FAMILIES, every key held
        family = detect_family(state_dict)
        return family is not None and family.fixed_scale

    class ESCArch(Architecture):
        def __init__(self) -> None:
            super().__init__(id="ESC", name="ESC", detect=detect)

        def load(self, state_dict):
            model = network_from_state_dict(state_dict, source="the state dict")
            config = model.config
            return ImageModelDescriptor(
                model,
                state_dict,
                architecture=self,
                purpose="SR",
                tags=[model.variant, f"{config.dim}dim", f"{config.n_blocks}nb", f"w{config.window_size}"],
                supports_half=False,
                supports_bfloat16=True,
                scale=config.upscaling_factor,
                input_channels=3,
                output_channels=3,
                size_requirements=SizeRequirements(multiple_of=model.size_multiple),
                tiling=ModelTiling.DISCOURAGED,
            )

    return ESCArch()


def register_spandrel() -> None:
    """Add ESC to spandrel's ``MAIN_REGISTRY`` (idempotent); needs ``pip install spandrel``."""
    try:
        from spandrel import MAIN_REGISTRY, ArchSupport
    except ImportError as error:
        raise ImportError("register_spandrel() needs spandrel: pip install 'esc_arch[spandrel]'") from error
    if "ESC" not in MAIN_REGISTRY:
        MAIN_REGISTRY.add(ArchSupport.from_architecture(_architecture()))
