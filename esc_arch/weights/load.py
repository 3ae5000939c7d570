"""Building the network a state dict holds, and loading weights into a network: the load
path every door shares (:func:`load_model`, the spandrel architecture, BasicSR's ``ESCModel``,
``esc export``, ``esc onnx``, ``basicsr test``).

In order: the file read safely (:func:`esc_arch.weights.files.read_state_dict`), every tensor
finite, the configuration read from the tensors (:func:`infer_config`: the family from
:data:`esc_arch.families.FAMILIES`, its hyper-parameters by its reader, each within
:data:`esc_arch.limits.NETWORK_LIMITS`), the conversions (:func:`esc_arch.convert_state_dict`,
each logged), every tensor present with its shape (checked against the network built on the
meta device, which allocates nothing), then ``load_state_dict`` (strict, or BasicSR's
non-strict loading where an option file asks for it). Every failure is one ``ValueError`` line
starting with the file's path.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..families import build_network, detect_family
from ..families.family import configure
from ..limits import NETWORK_LIMITS
from .convert import convert_state_dict
from .files import check_finite, read_state_dict

logger = logging.getLogger("basicsr.esc")

__all__ = [
    "TensorMismatch",
    "check_tensors",
    "infer_config",
    "load_model",
    "load_weights",
    "network_from_state_dict",
    "prepare_state_dict",
]


def infer_config(state_dict: dict[str, Tensor], *, attn_type: str = "auto", window_size: int | None = None) -> Any:
    """The network's configuration, read off the tensors' names and shapes (the family is the
    first of :data:`esc_arch.families.FAMILIES` whose keys it holds; its reader gives the
    hyper-parameters); ``module.`` prefixes are ignored. ``ValueError`` (naming the key) for
    tensors of the wrong rank, blocks not numbered 0, 1, 2, ..., or values beyond
    :data:`esc_arch.limits.NETWORK_LIMITS`; nothing is allocated.

    ``window_size``: the window of a family whose files do not hold it (ESC-RIB; None: its
    default, logged); for the other families it must be the window the tensors hold."""
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    integer = isinstance(window_size, int) and not isinstance(window_size, bool)
    if window_size is not None and not (integer and 0 < window_size <= NETWORK_LIMITS["window_size"]):
        raise ValueError(f"window_size must be an integer in [1, {NETWORK_LIMITS['window_size']}]; got {window_size!r}")
    family = detect_family(state_dict, complete=False)
    if family is None:
        raise ValueError("not an ESC state dict (no plk_filter / lk_channel)")
    config = configure(family, state_dict, attn_type, window_size)
    held = config.window_size
    if window_size is not None and family.window_in_file and held != window_size:
        raise ValueError(
            f"window_size {window_size} does not fit these tensors: their attention holds a {held}x{held} "
            "window (only ESC-RIB's window is free)"
        )
    return config


# --------------------------------------------------------------------------- loading


class TensorMismatch(ValueError):
    """The tensors do not fit the network: one missing, unexpected, or of another shape (what a
    non-strict load, BasicSR's ``strict_load_g: false``, gets past)."""


def check_tensors(state_dict: dict[str, Tensor], expected: dict[str, Tensor]) -> None:
    """:class:`TensorMismatch` naming the first key missing, unexpected, or of the wrong shape."""
    missing = [k for k in expected if k not in state_dict]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise TensorMismatch(f"{missing[0]!r} is missing{more}")
    unexpected = [k for k in state_dict if k not in expected]
    if unexpected:
        more = f", and {len(unexpected) - 1} more" if len(unexpected) > 1 else ""
        raise TensorMismatch(f"unexpected tensor {unexpected[0]!r} (not part of this ESC network{more})")
    for key, reference in expected.items():
        tensor = state_dict[key]
        if tuple(tensor.shape) != tuple(reference.shape):
            raise TensorMismatch(f"{key!r} has shape {tuple(tensor.shape)}; expected {tuple(reference.shape)}")
        if reference.is_floating_point() and not tensor.is_floating_point():
            raise TensorMismatch(f"{key!r} holds {tensor.dtype} values; expected floating point")


def prepare_state_dict(
    state_dict: Mapping[str, Tensor],
    net: nn.Module,
    *,
    source: str,
    strict: bool = True,
    scale_transfer: bool = True,
) -> dict[str, Tensor]:
    """``state_dict`` ready for ``net.load_state_dict``: every tensor finite
    (:func:`check_finite`), converted to ``net``'s layout (:func:`esc_arch.convert_state_dict`,
    each conversion logged), then checked against ``net``'s tensors (which may live on the meta
    device). ``strict``: every tensor present with its shape (:func:`check_tensors`); else, as
    BasicSR's non-strict loading, a tensor of another shape is left out (logged) and missing or
    unexpected names are left to ``load_state_dict(strict=False)``. Each failure is one
    ``ValueError`` line starting with ``source``."""
    check_finite(state_dict, source)
    try:
        converted = convert_state_dict(dict(state_dict), net, scale_transfer=scale_transfer)
        expected = net.state_dict()
        if strict:
            check_tensors(converted, expected)
            return converted
        for key in [k for k in converted if k in expected]:
            if tuple(converted[key].shape) != tuple(expected[key].shape):
                logger.warning(f"{source}: {key!r} has shape {tuple(converted[key].shape)}, the network's "
                               f"{tuple(expected[key].shape)}; left out (non-strict loading)")  # fmt: skip
                del converted[key]
        return converted
    except (ValueError, RuntimeError) as error:
        kind = TensorMismatch if isinstance(error, TensorMismatch) else ValueError
        raise kind(f"{source}: {' '.join(str(error).split())}") from error


def load_weights(
    net: nn.Module,
    state_dict: Mapping[str, Tensor],
    *,
    source: str,
    strict: bool = True,
    scale_transfer: bool = True,
) -> None:
    """Load ``state_dict`` into the built network ``net`` by the load path every door shares
    (:func:`prepare_state_dict`, then ``load_state_dict``); one ``ValueError`` line starting
    with ``source`` for anything that does not fit."""
    converted = prepare_state_dict(state_dict, net, source=source, strict=strict, scale_transfer=scale_transfer)
    try:
        net.load_state_dict(converted, strict=strict)
    except RuntimeError as error:
        raise ValueError(f"{source}: {' '.join(str(error).split())}") from error


def network_from_state_dict(
    state_dict: Mapping[str, Tensor],
    *,
    source: str,
    attn_type: str = "auto",
    window_size: int | None = None,
) -> nn.Module:
    """The network ``state_dict`` holds, built and loaded: the load path every door shares
    (:func:`load_model` after reading a file, the spandrel architecture on the state dict it is
    handed). In order: every tensor finite (:func:`check_finite`), the configuration read from
    the tensors within the limits (:func:`infer_config`), the conversions (logged), every tensor
    present with its shape (checked against the network built on the meta device, which
    allocates nothing), then ``load_state_dict(strict=True)``. Each failure is one
    ``ValueError`` line starting with ``source`` (the file's path, or what the caller calls it).
    Returned in train mode on the CPU, as a freshly built network is."""
    check_finite(state_dict, source)
    try:
        config = infer_config(dict(state_dict), attn_type=attn_type, window_size=window_size)
    except ValueError as error:
        raise ValueError(f"{source}: {' '.join(str(error).split())}") from error
    try:  # the expected tensors' names and shapes, without allocating them
        with torch.device("meta"):
            reference = build_network(config)
    except (RuntimeError, NotImplementedError):  # a module that needs real values to initialise
        reference = None  # (the configuration is within LIMITS: building it is affordable)
    net = reference if reference is not None else build_network(config)
    converted = prepare_state_dict(state_dict, net, source=source)
    if reference is not None:
        net = build_network(config)
    try:
        net.load_state_dict(converted, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{source}: {' '.join(str(error).split())}") from error
    return net


def load_model(
    path: str | os.PathLike,
    *,
    attn_type: str = "auto",
    device: str | torch.device = "cpu",
    allow_pickle: bool = False,
    window_size: int | None = None,
) -> nn.Module:
    """Build the network stored in ``path`` and load it (:func:`network_from_state_dict`), in
    eval mode.

    The returned module has ``.config``; :func:`esc_arch.describe` tells its variant (preset
    name or ``"custom"``), scale and needs. ``window_size`` builds ESC-RIB with another window
    than the released 64 (its checkpoints do not hold it); for the other families it must match
    the tensors.
    """
    state_dict = read_state_dict(path, allow_pickle=allow_pickle)
    net = network_from_state_dict(state_dict, source=os.fspath(path), attn_type=attn_type, window_size=window_size)
    return net.to(device).eval()
