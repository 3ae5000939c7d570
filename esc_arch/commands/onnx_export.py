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

The arbitrary-scale ESC-LTE exports with three inputs, every size dynamic: ``lq`` ``(1, 3, H, W)``
in [0, 1] (H, W multiples of the window), ``coord`` ``(1, Q, 2)`` (query points in [-1, 1], row
then column: the pixel centres of the output grid, ``make_coord``) and ``cell`` ``(1, Q, 2)``
(``2/H_out, 2/W_out``); output ``rgb`` ``(1, Q, 3)`` in [0, 1] (not clamped). Q is dynamic:
query a whole output at once, or in chunks (each call runs the encoder again).
"""

from __future__ import annotations

import copy
from os import path as osp

import torch
from torch import Tensor, nn

from ..archs.esc_arch import pad_to_multiple
from ..families import describe
from ..io.fileio import atomic_path
from .common import check_not_an_input, check_output_file, guarded

__all__ = ["OPSET", "export_onnx", "pad_for_onnx", "run"]

OPSET = 18


def pad_for_onnx(lq: Tensor, window: int) -> Tensor:
    """Reflect-pad ``lq`` on the bottom/right to multiples of ``window`` (crop the output after)."""
    return pad_to_multiple(lq, window)


class _ImageQueries(nn.Module):
    """ESC-LTE on an image in [0, 1] and its queries, RGB in [0, 1] out (the authors'
    normalisation inside the graph)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, lq: Tensor, coord: Tensor, cell: Tensor) -> Tensor:
        return self.net((lq - 0.5) / 0.5, coord, cell) * 0.5 + 0.5


def export_onnx(net: nn.Module, path: str, *, opset: int = OPSET, max_size: int = 8192, overwrite: bool = True) -> str:
    """Write ``net`` (an ESC network) to ``path`` as ONNX with dynamic H and W (multiples of the
    window, up to ``max_size``), and for ESC-LTE a dynamic number of queries. The network
    itself is not modified. Without ``overwrite``, a file that appears at ``path`` while it is
    written is kept (:class:`esc_arch.io.fileio.OutputExists`)."""
    try:
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ImportError("ONNX export needs onnx and onnxscript: pip install 'esc_arch[onnx]'") from error
    model = copy.deepcopy(net).eval().float()
    model.set_attn_type("sdpa")
    model.reparameterize()
    described = describe(net)
    window = described.size_multiple
    example = torch.rand(1, 3, 2 * window, 3 * window)
    rows = torch.export.Dim("rows", min=1, max=max(1, max_size // window))
    cols = torch.export.Dim("cols", min=1, max=max(1, max_size // window))
    image = {2: window * rows, 3: window * cols}
    if described.arbitrary_scale:  # ESC-LTE: image, query points and cells
        from ..archs.esc_lte_arch import make_coord

        coord = make_coord(5 * window, 7 * window)[None]
        cell = torch.full_like(coord, 2 / (5 * window))
        queries = torch.export.Dim("queries", min=1, max=2**31 - 2)
        model = _ImageQueries(model).eval()
        arguments, names, dynamic = (example, coord, cell), ["lq", "coord", "cell"], (image, {1: queries}, {1: queries})
        outputs = ["rgb"]
    else:
        arguments, names, dynamic, outputs = (example,), ["lq"], (image,), ["sr"]
    with atomic_path(path, suffix=".onnx", replace=overwrite) as tmp:  # an interrupted export leaves nothing
        torch.onnx.export(
            model,
            arguments,
            tmp,
            dynamo=True,
            opset_version=opset,
            input_names=names,
            output_names=outputs,
            dynamic_shapes=dynamic,
            external_data=False,
            verbose=False,
        )
    return path


# --------------------------------------------------------------------------- esc onnx


@guarded
def run(args) -> int:
    """``esc onnx`` (arguments: :mod:`esc_arch.cli`)."""
    from ..weights import load_model

    check_output_file(args.output)
    check_not_an_input(args.output, args.model, "the model (-m)", "choose another -o", "-o")
    if not args.overwrite and osp.lexists(args.output):
        raise ValueError(f"-o {args.output}: exists already; pass --overwrite to replace it, or choose another -o")
    net = load_model(args.model, allow_pickle=args.allow_pickle, window_size=args.window_size)
    export_onnx(net, args.output, overwrite=args.overwrite)
    described = describe(net)
    if described.arbitrary_scale:
        print(f"{args.output}: {described.variant} (any scale), opset {OPSET}, inputs 'lq' (1, 3, H, W) in [0, 1] "
              f"with H and W multiples of {described.size_multiple}, 'coord' (1, Q, 2) and 'cell' (1, Q, 2); output "
              "'rgb' (1, Q, 3); see docs/inference.md")  # fmt: skip
        return 0
    scale = described.scale
    print(f"{args.output}: {described.variant} x{scale}, opset {OPSET}, input 'lq' (1, 3, H, W) with H and W "
          f"multiples of {described.size_multiple}, output 'sr' (1, 3, {scale}H, {scale}W)")  # fmt: skip
    return 0
