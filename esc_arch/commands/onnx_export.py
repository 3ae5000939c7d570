"""ONNX export of ESC networks with dynamic batch, height and width: :func:`export_onnx`.

The exported graph takes a batch of images ``(B, 3, H, W)`` in [0, 1], any ``B``, ``H`` and
``W``: it reflect-pads them on the bottom and right to multiples of the network's window and
crops the output to ``(B, 3, s*H, s*W)`` (the paper's protocol, inside the graph). Exported with
torch's ``torch.export``-based exporter (``dynamo=True``), opset 18, the ``sdpa`` attention
backend (decomposed by the exporter into MatMul/Softmax), the shared-kernel symmetrisation
folded in (:meth:`reparameterize`), the per-sample dynamic kernels in a batch-free form
(:data:`EXPORT_DYNAMIC_KERNELS`: a grouped convolution with the batch folded into its groups
would fix the batch, since ONNX's Conv ``group`` is an attribute). ``fp16``: weights, inputs and
outputs in float16. Weights are embedded in the one ``.onnx`` file (no ``.onnx.data`` beside
it). Checked against onnxruntime on CPU in ``tests/test_onnx.py``. ``esc onnx`` is the command
line.

The arbitrary-scale ESC-LTE exports with three inputs, every size dynamic: ``lq`` ``(B, 3, H, W)``
in [0, 1], ``coord`` ``(B, Q, 2)`` (query points in [-1, 1], row then column: the pixel centres
of the output grid, ``make_coord``) and ``cell`` ``(B, Q, 2)`` (``2/H_out, 2/W_out``); output
``rgb`` ``(B, Q, 3)`` in [0, 1] (not clamped). Q is dynamic: query a whole output at once, or in
chunks (each call runs the encoder again).
"""

from __future__ import annotations

import copy
from os import path as osp

import torch
from torch import Tensor, nn

from ..archs.esc_arch import pad_to_multiple, reflect_pad, set_dynamic_kernels
from ..families import describe
from ..io.fileio import atomic_path
from .common import check_not_an_input, check_output_file, guarded

__all__ = ["EXPORT_DYNAMIC_KERNELS", "OPSET", "export_onnx", "pad_for_onnx", "run"]

OPSET = 18
#: the batch-free form of the dynamic kernels an export uses (measured fastest under onnxruntime)
EXPORT_DYNAMIC_KERNELS = "unfold"


def pad_for_onnx(lq: Tensor, window: int) -> Tensor:
    """Reflect-pad ``lq`` on the bottom/right to multiples of ``window`` (the paper's protocol;
    the exported graph does it itself, so this is needed only to compare with a whole-image run)."""
    return pad_to_multiple(lq, window)


class _AnySize(nn.Module):
    """A fixed-scale network on any size: the image reflect-padded on the bottom and right to
    multiples of ``multiple``, the output cropped to ``scale`` times the input (the paper's
    protocol, :func:`esc_arch.runtime.inference.upscale`'s whole-image run, inside the graph)."""

    def __init__(self, net: nn.Module, multiple: int, scale: int) -> None:
        super().__init__()
        self.net, self.multiple, self.scale = net, multiple, scale

    def forward(self, lq: Tensor) -> Tensor:
        height, width = lq.shape[-2:]
        m = self.multiple
        # the padded size as a multiple of m, so that the exporter knows the network's own
        # window padding is none (its size is then statically a multiple of the window)
        padded = reflect_pad(lq, (height + m - 1) // m * m - height, (width + m - 1) // m * m - width)
        return self.net(padded)[:, :, : self.scale * height, : self.scale * width]


class _ImageQueries(nn.Module):
    """ESC-LTE on an image in [0, 1] and its queries, RGB in [0, 1] out (the authors'
    normalisation inside the graph)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, lq: Tensor, coord: Tensor, cell: Tensor) -> Tensor:
        return self.net((lq - 0.5) / 0.5, coord, cell) * 0.5 + 0.5


def export_onnx(
    net: nn.Module,
    path: str,
    *,
    opset: int = OPSET,
    max_size: int = 8192,
    max_batch: int = 1024,
    fp16: bool = False,
    dynamic_kernels: str = EXPORT_DYNAMIC_KERNELS,
    overwrite: bool = True,
) -> str:
    """Write ``net`` (an ESC network) to ``path`` as ONNX with a dynamic batch (up to
    ``max_batch``) and dynamic height and width (any size up to ``max_size``; the graph pads to
    the window and crops), and for ESC-LTE a dynamic number of queries; ``fp16``: weights,
    inputs and outputs in float16. The per-sample dynamic kernels are exported in the
    batch-free form ``dynamic_kernels`` (:func:`esc_arch.archs.esc_arch.set_dynamic_kernels`).
    The network itself is not modified. Without ``overwrite``, a file that appears at ``path``
    while it is written is kept (:class:`esc_arch.io.fileio.OutputExists`)."""
    try:
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ImportError("ONNX export needs onnx and onnxscript: pip install 'esc_arch[onnx]'") from error
    if dynamic_kernels == "grouped":
        raise ValueError(
            "dynamic_kernels 'grouped' folds the batch into a convolution's groups; export a batch-free form"
        )
    model = copy.deepcopy(net).eval().float()
    model.set_attn_type("sdpa")
    model.reparameterize()
    set_dynamic_kernels(model, dynamic_kernels)
    dtype = torch.float16 if fp16 else torch.float32
    model = model.to(dtype)
    described = describe(net)
    window = described.size_multiple
    # examples of batch 2 and sizes that are not window multiples: an example size of 1, or a
    # multiple, would be taken for a property of every input
    example = torch.rand(2, 3, 2 * window + 3, 3 * window + 5, dtype=dtype)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    image = {
        0: batch,
        2: torch.export.Dim("height", min=1, max=max_size),
        3: torch.export.Dim("width", min=1, max=max_size),
    }
    if described.arbitrary_scale:  # ESC-LTE: image, query points and cells
        from ..archs.esc_lte_arch import make_coord

        coord = make_coord(5 * window, 7 * window)[None].expand(2, -1, -1).to(dtype).contiguous()
        cell = torch.full_like(coord, 2 / (5 * window))
        queries = torch.export.Dim("queries", min=1, max=2**31 - 2)
        model = _ImageQueries(model).eval()
        arguments, names = (example, coord, cell), ["lq", "coord", "cell"]
        dynamic = (image, {0: batch, 1: queries}, {0: batch, 1: queries})
        outputs = ["rgb"]
    else:
        model = _AnySize(model, window, described.scale).eval()
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
    export_onnx(net, args.output, fp16=args.fp16, overwrite=args.overwrite)
    described = describe(net)
    dtype = "float16" if args.fp16 else "float32"
    if described.arbitrary_scale:
        print(f"{args.output}: {described.variant} (any scale), opset {OPSET}, {dtype}, inputs 'lq' (B, 3, H, W) in "
              "[0, 1], any B, H and W, 'coord' (B, Q, 2) and 'cell' (B, Q, 2); output 'rgb' (B, Q, 3); see "
              "docs/inference.md")  # fmt: skip
        return 0
    scale = described.scale
    print(f"{args.output}: {described.variant} x{scale}, opset {OPSET}, {dtype}, input 'lq' (B, 3, H, W), any B, H "
          f"and W (padded to multiples of {described.size_multiple} inside), output 'sr' (B, 3, {scale}H, "
          f"{scale}W)")  # fmt: skip
    return 0
