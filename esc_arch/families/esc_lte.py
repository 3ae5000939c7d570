"""ESC-LTE, the authors' arbitrary-scale ESC: class :class:`esc_arch.ESCLTE` (configuration
:class:`esc_arch.ESCLTEConfig`, both in ``archs/esc_lte_arch.py``), an ESC encoder and LTE's
head. Its files come from the LIIF/LTE code base (``{'model': {'name', 'args', 'sd'}}``) or
BasicSR; an ESC body loads as its encoder (the conversion below)."""

from __future__ import annotations

import logging
import re

from torch import Tensor

from ..archs.esc_arch import ESC, ESCConfig
from ..archs.esc_lte_arch import ESCLTE, ESCLTEConfig
from ..limits import NETWORK_LIMITS
from .esc import ESC_BODY, read_body
from .family import Family, Preset, configure, has_all, tensor

__all__ = ["ENCODER", "FAMILY"]

logger = logging.getLogger("basicsr.esc")


def _read_encoder(state_dict: dict[str, Tensor], attn_type: str, window_size: int | None) -> tuple[dict, dict]:
    """An ESC body without ``to_img`` (the encoder's upscaling_factor is unused)."""
    return read_body(state_dict, attn_type)


#: ESC-LTE's encoder (``encoder.*``): an ESC body without ``to_img``.
ENCODER = Family(ESCConfig, ESC, "plk_filter", ESC_BODY, _read_encoder)


def _read(state_dict: dict[str, Tensor], attn_type: str, window_size: int | None) -> tuple[dict, dict]:
    """The encoder's configuration from ``encoder.*``, the head's sizes from ``coef`` and
    ``imnet.layers.{0,2,...}``."""
    encoder = {k.removeprefix("encoder."): v for k, v in state_dict.items() if k.startswith("encoder.")}
    try:
        encoder_config = configure(ENCODER, encoder, attn_type, None)
    except ValueError as error:
        raise ValueError(f"the encoder (encoder.*): {error}") from error
    layers = sorted(int(m.group(1)) for k in state_dict if (m := re.fullmatch(r"imnet\.layers\.(\d+)\.weight", k)))
    if layers != list(range(0, 2 * len(layers), 2)) or not layers:  # Linear, ReLU, Linear, ..., Linear
        raise ValueError(f"imnet.layers.*.weight are numbered {layers}; expected 0, 2, 4, ... (Linear, ReLU, ...)")
    hidden = tensor(state_dict, "coef.weight", 4).shape[0]
    widths = [tensor(state_dict, f"imnet.layers.{i}.weight", 2).shape[0] for i in layers]
    most = NETWORK_LIMITS["dim"] * 4
    for key, value in (("coef.weight", hidden), *((f"imnet.layers.{2 * i}.weight", w) for i, w in enumerate(widths))):
        if value > most:
            raise ValueError(f"{key!r}: {value} channels is out of range (at most {most})")
    return {"encoder": encoder_config, "hidden_dim": hidden, "mlp_hidden": tuple(widths[:-1])}, {}


def _esc_body_to_encoder(converted: dict[str, Tensor], target: dict[str, Tensor]) -> None:
    """An ESC / ESC-light checkpoint (any scale): every tensor but ``to_img`` becomes
    ``encoder.<key>``; the LTE head is not in it (load with ``strict=False``: BasicSR's
    ``strict_load_g: false``), as arbitrary-scale training can start from a fixed-scale ESC."""
    if "proj.weight" not in converted:
        return
    dropped = [k for k in converted if k.startswith("to_img.")]
    body = {f"encoder.{k}": v for k, v in converted.items() if not k.startswith("to_img.")}
    converted.clear()
    converted.update(body)
    head = sum(1 for k in target if not k.startswith("encoder."))
    logger.info(
        f"Converted checkpoint: an ESC body ({len(body)} tensors) as the encoder of ESCLTE; its to_img "
        f"({len(dropped)} tensors) dropped; the LTE head ({head} tensors) keeps its initialisation."
    )


FAMILY = Family(
    ESCLTEConfig,
    ESCLTE,
    "coef.weight",
    has_all("encoder.proj.weight"),
    _read,
    what="an ESC-LTE",
    convert=_esc_body_to_encoder,
    arbitrary_scale=True,
    tiling="none",
    custom="custom-LTE",
    presets={"ESC-LTE": Preset(ESCLTEConfig(), {})},
)
