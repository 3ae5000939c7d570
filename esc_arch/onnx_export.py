"""ONNX export of ESC networks with dynamic height and width: :func:`export_onnx`.

The exported graph takes one image ``(1, 3, H, W)`` with ``H`` and ``W`` any multiples of the
network's window (the paper's test protocol pads whole images to that; :func:`pad_for_onnx`
does it), and returns ``(1, 3, s*H, s*W)``. Exported with torch's ``torch.export``-based
exporter (``dynamo=True``), opset 18, the ``sdpa`` attention backend (decomposed by the exporter
into MatMul/Softmax), the shared-kernel symmetrisation folded in (:meth:`reparameterize`).
Batch size is fixed at 1: the per-image dynamic kernels use a grouped convolution whose
group count would depend on the batch, which ONNX's Conv cannot express.
Weights are embedded in the one ``.onnx`` file (no ``.onnx.data`` beside it). Checked
against onnxruntime on CPU in ``tests/test_onnx.py``. ``esc onnx`` is the command line.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from .archs.esc_arch import reflect_pad
from .cli_util import guarded

__all__ = ["OPSET", "export_onnx", "pad_for_onnx", "run"]

OPSET = 18


def pad_for_onnx(lq: Tensor, window: int) -> Tensor:
    """Reflect-pad ``lq`` on the bottom/right to multiples of ``window`` (crop the output after)."""
    height, width = lq.shape[-2:]
    return reflect_pad(lq, (window - height % window) % window, (window - width % window) % window)


def export_onnx(net: nn.Module, path: str, *, opset: int = OPSET, max_size: int = 8192) -> str:
    """Write ``net`` (an ESC network) to ``path`` as ONNX with dynamic H and W (multiples of the
    window, up to ``max_size``). The network itself is not modified."""
    try:
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ImportError("ONNX export needs onnx and onnxscript: pip install 'esc_arch[onnx]'") from error
    model = copy.deepcopy(net).eval().float()
    model.set_attn_type("sdpa")
    model.reparameterize()
    window = model.size_multiple
    example = torch.rand(1, 3, 2 * window, 3 * window)
    rows = torch.export.Dim("rows", min=1, max=max(1, max_size // window))
    cols = torch.export.Dim("cols", min=1, max=max(1, max_size // window))
    torch.onnx.export(
        model,
        (example,),
        path,
        dynamo=True,
        opset_version=opset,
        input_names=["lq"],
        output_names=["sr"],
        dynamic_shapes=({2: window * rows, 3: window * cols},),
        external_data=False,
        verbose=False,
    )
    return path


# --------------------------------------------------------------------------- esc onnx


@guarded
def run(args) -> int:
    """``esc onnx`` (arguments: :mod:`esc_arch.cli`)."""
    from .loading import load_model

    net = load_model(args.model, allow_pickle=args.allow_pickle)
    export_onnx(net, args.output)
    print(f"{args.output}: {net.variant} x{net.scale}, opset {OPSET}, input 'lq' (1, 3, H, W) with H and W "
          f"multiples of {net.size_multiple}, output 'sr' (1, 3, {net.scale}H, {net.scale}W)")  # fmt: skip
    return 0
