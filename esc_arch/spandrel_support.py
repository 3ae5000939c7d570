"""spandrel support for ESC checkpoints (spandrel 0.4.2 has no ESC): :func:`register_spandrel`.

>>> import esc_arch, spandrel
>>> esc_arch.register_spandrel()
>>> model = spandrel.ModelLoader().load_from_file("ESC_x4.pth")   # ImageModelDescriptor
>>> model.architecture.id, model.scale, model.tags                 # ('ESC', 4, ['ESC', ...])

Detects ESC, ESC-light, ESC-XL (class ESC), ESC-FP, ESC-Real, ESC-Real-XL (with its DySample
tail too), ESCRealM at any scale, ESC-RIB (with the released 64x64 window, which its files do
not hold), FlashBias checkpoints, and any family added with :func:`esc_arch.register_family`,
by :data:`esc_arch.families.FAMILIES` (every key of a fixed-scale family; ESC-LTE, of arbitrary
scale, is not offered), with the scale and every hyper-parameter read from the tensors, loaded
through the load path every door shares (:func:`esc_arch.weights.network_from_state_dict`:
weights holding NaN or Inf, tensors missing or of the wrong shape are refused with the same
line as ``esc upscale`` gives). The descriptor is read from :func:`esc_arch.describe`: inputs
padded by spandrel to a multiple of the window (the paper's protocol; the network pads its
windows itself for any size, but that gives another output near the right and bottom edges),
the precisions verified (bfloat16, tested on CPU; float16 not declared: not verified here, no
GPU), tiling *discouraged*:
ESC's dynamic kernels are predicted from the whole input, so a tile gives another output
than the whole image (docs/inference.md measures how far).
"""

from __future__ import annotations

__all__ = ["register_spandrel"]

#: hyper-parameter -> the tag it gives (after the variant's name)
_TAGS = {"dim": "{}dim", "n_blocks": "{}nb", "window_size": "w{}"}


def _architecture():
    from spandrel import Architecture, ImageModelDescriptor, ModelTiling, SizeRequirements

    from .families import describe, detect_family
    from .weights import network_from_state_dict

    def detect(state_dict) -> bool:  # a fixed-scale family of esc_arch.families.FAMILIES, every key held
        family = detect_family(state_dict)
        return family is not None and not family.arbitrary_scale

    class ESCArch(Architecture):
        def __init__(self) -> None:
            super().__init__(id="ESC", name="ESC", detect=detect)

        def load(self, state_dict):
            model = network_from_state_dict(state_dict, source="the state dict")
            described = describe(model)
            return ImageModelDescriptor(
                model,
                state_dict,
                architecture=self,
                purpose="SR",
                tags=[
                    described.variant,
                    *(tag.format(hp[k]) for k, tag in _TAGS.items() if k in (hp := model.hyperparameters)),
                ],
                supports_half="fp16" in described.precisions,
                supports_bfloat16="bf16" in described.precisions,
                scale=described.scale,
                input_channels=3,
                output_channels=3,
                # the paper's protocol: spandrel pads the image to the window (the network's own
                # padding of its windows works for any size but gives another output)
                size_requirements=SizeRequirements(multiple_of=described.size_multiple),
                tiling={"discouraged": ModelTiling.DISCOURAGED, "supported": ModelTiling.SUPPORTED}[described.tiling],
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
