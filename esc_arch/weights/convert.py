"""Checkpoint conversion, explicit and logged: :func:`convert_state_dict`.

``net.load_state_dict(sd)`` is plain torch: it loads the exact layout of ``net`` and nothing
else. Every other layout this project accepts goes through :func:`convert_state_dict`
first, which returns a new state dict that loads into ``net`` with ``strict=True`` and logs
each conversion it made (logger ``basicsr.esc``, which lands in BasicSR's log).
:func:`esc_arch.load_model`, ``esc upscale``, spandrel and BasicSR's ``pretrain_network_g``
use it. Conversions, in order:

=================  ========================================================================
``module.``        prefixes written by (Distributed)DataParallel are removed
``.ignore``        keys that BasicSR's non-strict ``load_network`` renamed to ``<key>.ignore``
                   get their names back
family hook        the conversion the network's family declares (:class:`esc_arch.families.Family`
                   ``convert``): ESC-LTE's takes an ESC / ESC-light checkpoint (any scale) as
                   its encoder: every tensor but ``to_img`` becomes ``encoder.<key>``; the LTE
                   head is not in it (load with ``strict=False``: BasicSR's ``strict_load_g:
                   false``), as arbitrary-scale training can start from a fixed-scale ESC
``rpe_bias``       the expanded ``(1, heads, N, N)`` bias that the authors' ``to_mobile()`` (and
                   copies of it in neosr and traiNNer-redux) stores instead of the table goes
                   back into the ``(heads, (2w-1)^2)`` table (exact: every offset occurs)
table -> FlashBias each block's relative-position table, for a network with the FlashBias
                   layout of rank r: the expanded bias matrix ``B = U S V^T`` (truncated SVD,
                   per head) gives ``flashbias_q = U[:, :r] sqrt(S[:r])``, ``flashbias_k =
                   V[:, :r] sqrt(S[:r])``, as the authors' FlashBias fine-tuning starts (exact
                   when r reaches the rank of ``B``; the largest error is logged)
scale transfer     an x``a`` pixel-shuffle head (the family's ``pixel_shuffle_head``: ESC's and
                   ESC-FP's ``to_img``; ESC-RIB's ``upsampler.up_conv``, as the authors' ESC-RIB
                   loader does) becomes x``s``: for every input channel, kernel position and
                   colour, the ``a x a`` grid of sub-pixel values is resized to ``s x s``
                   (bilinear, ``align_corners=False``), as the paper starts its x3/x4 training
                   from x2 weights
=================  ========================================================================
"""

from __future__ import annotations

import logging
import math

import torch.nn.functional as F
from torch import Tensor, nn

from ..families import family_of

__all__ = ["convert_state_dict", "table_to_flashbias", "transfer_to_img"]

logger = logging.getLogger("basicsr.esc")


def transfer_to_img(tensor: Tensor, scale: int, channels: int = 3) -> Tensor:
    """An x``a`` pixel-shuffle head's weight or bias (first axis ``channels * a * a``) resized to x``scale``."""
    source = math.isqrt(tensor.shape[0] // channels)
    grid = tensor.reshape(channels, source, source, -1).permute(0, 3, 1, 2).float()  # (channels, rest, a, a)
    grid = F.interpolate(grid, size=(scale, scale), mode="bilinear", align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(channels * scale * scale, *tensor.shape[1:]).to(tensor.dtype)


def _is_pixel_shuffle_head(shape: tuple[int, ...], channels: int = 3) -> bool:
    source = math.isqrt(shape[0] // channels) if shape and shape[0] >= channels else 0
    return source > 0 and channels * source * source == shape[0]


def table_to_flashbias(table: Tensor, window_size: int, rank: int) -> tuple[Tensor, Tensor, float]:
    """FlashBias factors ``(q, k)`` of a relative-position table by truncated SVD
    (:func:`esc_arch.archs.flashbias.low_rank_factors`), and the largest absolute error of
    ``q k^T`` against the bias matrix."""
    from ..archs.flashbias import low_rank_factors
    from ..archs.position_bias import relative_position_bias

    bias = relative_position_bias(table.detach().float(), window_size).double()
    left, right, error = low_rank_factors(bias, rank)
    return left.to(table.dtype), right.to(table.dtype), error


def _expanded_bias_to_table(converted: dict[str, Tensor]) -> None:
    from ..archs.position_bias import relative_position_index

    expanded = [k for k in converted if k.endswith("attn.rpe_bias")]
    for key in expanded:
        bias = converted.pop(key)[0]  # (heads, N, N)
        window = math.isqrt(bias.shape[-1])
        index = relative_position_index(window).reshape(-1)
        table = bias.new_zeros(bias.shape[0], (2 * window - 1) ** 2)
        table[:, index] = bias.reshape(bias.shape[0], -1)
        converted[key.removesuffix("rpe_bias") + "relative_position_bias"] = table
    if expanded:
        logger.info(f"Converted checkpoint: {len(expanded)} expanded 'rpe_bias' matrices back to position tables.")


def _table_to_flashbias(converted: dict[str, Tensor], target: dict[str, Tensor]) -> None:
    tables = [k for k in converted if k.endswith("attn.relative_position_bias")]
    errors = []
    for key in tables:
        prefix = key.removesuffix("relative_position_bias")
        wanted = target.get(prefix + "flashbias_q")
        if wanted is None:
            continue
        heads, n, rank = wanted.shape
        if rank > n:
            raise ValueError(f"{key}: a FlashBias rank of {rank} exceeds the window's {n} tokens")
        left, right, error = table_to_flashbias(converted.pop(key), math.isqrt(n), rank)
        converted[prefix + "flashbias_q"], converted[prefix + "flashbias_k"] = left, right
        errors.append(error)
    if errors:
        logger.info(
            f"Converted checkpoint: {len(errors)} relative-position tables to FlashBias factors of rank "
            f"{rank} (truncated SVD, max abs error {max(errors):.2e})."
        )


def convert_state_dict(
    state_dict: dict[str, Tensor], net: nn.Module, *, scale_transfer: bool = True
) -> dict[str, Tensor]:
    """A copy of ``state_dict`` converted to ``net``'s layout (see the module docstring).

    With ``scale_transfer=False`` a checkpoint of another scale is refused (``ValueError``)
    instead of converted: transfer is for starting a training run, not for testing. Keys that
    no conversion applies to are passed through unchanged, so ``load_state_dict(strict=True)``
    still reports anything that does not fit.
    """
    target = net.state_dict()
    converted = dict(state_dict)

    prefixed = [k for k in converted if k.startswith("module.")]
    if prefixed:
        converted = {k.removeprefix("module."): v for k, v in converted.items()}
        logger.info(f"Converted checkpoint: removed the 'module.' prefix of {len(prefixed)} keys.")

    ignored = [k for k in converted if k.endswith(".ignore") and k.removesuffix(".ignore") in target]
    for key in ignored:
        converted[key.removesuffix(".ignore")] = converted.pop(key)
    if ignored:
        logger.info(f"Converted checkpoint: restored {len(ignored)} keys BasicSR had renamed to '<key>.ignore'.")

    family = family_of(net)
    if family is not None and family.convert is not None:  # the family's own conversion (logged by it)
        family.convert(converted, target)
    _expanded_bias_to_table(converted)
    _table_to_flashbias(converted, target)
    head = family.pixel_shuffle_head if family is not None else None
    prefix, channels = (head(net.config) if head is not None else None) or ("", 0)
    scale = net.config.upscaling_factor if prefix else None
    for name in (f"{prefix}.weight", f"{prefix}.bias") if prefix else ():
        tensor, expected = converted.get(name), target.get(name)
        if tensor is None or expected is None or tensor.shape == expected.shape:
            continue
        if not (_is_pixel_shuffle_head(tuple(tensor.shape), channels) and tensor.shape[1:] == expected.shape[1:]):
            continue  # not the same kind of head: leave it to load_state_dict to report
        source = math.isqrt(tensor.shape[0] // channels)
        if not scale_transfer:
            raise ValueError(
                f"the checkpoint is an x{source} network and this network is x{scale}; converting "
                f"between scales is for starting a training run (pretrain_network_g in a train "
                f"option file), not for testing: use x{scale} weights"
            )
        converted[name] = transfer_to_img(tensor, scale, channels)
        if name.endswith(".weight"):
            logger.info(
                f"Converted checkpoint: {prefix} from x{source} to x{scale} (bilinear resize of the sub-pixels)."
            )
    return converted
