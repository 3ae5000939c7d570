"""spandrel support for ESC checkpoints (spandrel 0.4.2 has no ESC): :func:`register_spandrel`.

>>> import esc_arch, spandrel
>>> esc_arch.register_spandrel()
>>> model = spandrel.ModelLoader().load_from_file("ESC_x4.pth")   # ImageModelDescriptor
>>> model.architecture.id, model.scale, model.tags                 # ('ESC', 4, ['ESC', ...])

Detects ESC, ESC-light, ESC-XL (class ESC), ESC-FP, ESC-Real, ESC-Real-XL (with its DySample
tail too), ESCRealM at any scale, ESC-RIB (with the released 64x64 window, which its files do
not hold), and FlashBias checkpoints, with the scale and every
hyper-parameter read from the tensors (:func:`esc_arch.loading.infer_config`), loaded through
:func:`esc_arch.convert_state_dict`. Declared: inputs
padded by spandrel to a multiple of the window (the paper's protocol), bfloat16 supported
(tested on CPU), float16 not declared (not verified here; no GPU), tiling *discouraged*:
ESC's dynamic kernels are predicted from the whole input, so a tile gives another output
than the whole image (docs/inference.md measures how far).
"""

from __future__ import annotations

__all__ = ["register_spandrel"]


def _architecture():
    from spandrel import Architecture, ImageModelDescriptor, ModelTiling, SizeRequirements

    from .convert import convert_state_dict
    from .loading import build_network, infer_config

    biases = ("relative_position_bias", "flashbias_q", "rpe_bias", "to_hidden")  # to_hidden: ESC-RIB's RIB MLP

    def detect(state_dict) -> bool:
        return (
            ("plk_filter" in state_dict or "lk_channel" in state_dict)
            and any(f"blocks.0.attn.{k}" in state_dict for k in biases)
            and ("proj.weight" in state_dict or "proj.1.weight" in state_dict)
        )

    class ESCArch(Architecture):
        def __init__(self) -> None:
            super().__init__(id="ESC", name="ESC", detect=detect)

        def load(self, state_dict):
            config = infer_config(state_dict)
            model = build_network(config)
            model.load_state_dict(convert_state_dict(state_dict, model), strict=True)
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
