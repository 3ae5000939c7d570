"""The command lines: ``esc`` (demo, upscale, export, onnx) and ``basicsr`` (train, test).

Every option of every command is declared here, with argparse only, so ``--help`` is
plain text, complete and fast (nothing heavy is imported until a command runs). Each
command's work lives in its own module, imported when the command runs:

- ``esc demo``: :mod:`esc_arch.basicsr_plugin.demo`; ``esc upscale``: :mod:`esc_arch.commands.upscale`;
  ``esc export``: :mod:`esc_arch.commands.export`; ``esc onnx``: :mod:`esc_arch.commands.onnx_export`;
- ``basicsr train|test``: :mod:`esc_arch.basicsr_plugin.pipeline` (BasicSR's own pipelines).

Multi-process training: ``torchrun --nproc_per_node=N -m esc_arch.cli train -opt FILE
--launcher pytorch`` (gloo on CPUs, NCCL on GPUs). Multi-process upscaling: ``torchrun
--nproc_per_node=N -m esc_arch.cli upscale ...`` (the files split between the processes).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .runtime.inference import TILE_OVERLAP

__all__ = ["basicsr_main", "esc_main"]

_PICKLE_HELP = "load checkpoints that hold pickled code (only files you trust)"
_WINDOW_HELP = "ESC-RIB's attention window, which its checkpoints do not hold (default: the released 64)"


def _command(target: str):
    """``module:function`` run with the parsed arguments, imported only then."""

    def run(args) -> int:
        module, _, function = target.partition(":")
        return getattr(importlib.import_module(module), function)(args)

    return run


#: esc subcommand -> the function that runs it, and its help texts
_ESC_COMMANDS = {
    "demo": dict(
        target="esc_arch.basicsr_plugin.demo:run",
        help="train ESC-light x2 on bundled photographs and compare with bicubic (no downloads)",
        description="Prepare 12 photographs bundled with scikit-image like DIV2K, train ESC-light x2 on\n"
        "the CPU with basicsr train, evaluate the EMA weights on two held-out photographs\n"
        "(PSNR/SSIM on Y, border 2) beside bicubic. Exits non-zero unless ESC beats bicubic.\n"
        "A second run reuses the prepared data and the trained weights in --workdir.",
    ),
    "upscale": dict(
        target="esc_arch.commands.upscale:run",
        help="super-resolve images with ESC weights",
        description="Super-resolve image files, folders or glob patterns with ESC weights.\n\n"
        "8- and 16-bit images keep their depth where the output format allows; grayscale\n"
        "stays grayscale; alpha is upscaled separately (bicubic); EXIF orientation is applied.\n"
        "Options, the model and the output names are checked before any image (one line,\n"
        "exit status 2); two inputs that would get the same output name are refused.\n"
        "A file that fails (unreadable, animated, over the size limits, out of memory) is\n"
        "reported and skipped; the exit status is the number of failed files. Outputs over\n"
        "4096x4096 pixels need --tile. Inputs are never overwritten; other existing files\n"
        "only with --overwrite.\n\n"
        "Videos: frames decoded, upscaled --batch at a time, encoded in order with their\n"
        "timestamps; audio copied; written under a temporary name, renamed when complete.\n"
        "Under torchrun (torchrun --nproc_per_node=N $(which esc) upscale ...) each process\n"
        "takes its share of the files; rank 0 prints the summary.",
        epilog="examples:\n"
        "An arbitrary-scale model (ESC-LTE) takes --scale (any positive number) or --size WxH;\n"
        "a fixed-scale model (ESC, ESC-Real, ...) runs at its own scale and refuses others.\n\n"
        "  esc upscale -i photo.jpg -o out/ -m ESC_x4.pth\n"
        "  esc upscale -i photo.jpg -o out/ -m ESC-LTE.pth --scale 3.5\n"
        "  esc upscale -i 'shots/**/*.png' -o out/ -m ESC-Real_x4.pth --tile 256 --precision bf16\n"
        "  esc upscale -i folder/ -o out/ -m net_g_latest.pth --format png --device cuda --precision fp16\n"
        "  esc upscale -i clip.mp4 -o out/ -m ESC_x4.pth --device cuda --precision fp16 --crf 16",
    ),
    "export": dict(
        target="esc_arch.commands.export:run",
        help="turn a training checkpoint into a model-zoo release file",
        description="Write params_ema only as {variant}_x{scale}.pth (the name the test option files\n"
        "expect under experiments/pretrained_models/; {variant}.pth for an arbitrary-scale\n"
        "model) and print its sha256 and a model-zoo row.",
    ),
    "onnx": dict(
        target="esc_arch.commands.onnx_export:run",
        help="export ESC weights to ONNX (dynamic batch, height and width)",
        description="Export to one ONNX file (opset 18, weights embedded): input 'lq' (B, 3, H, W),\n"
        "any B, H and W (the graph pads to the window and crops), output 'sr' (B, 3, s*H, s*W).\n"
        "ESC-LTE (any scale): inputs 'lq', 'coord' (B, Q, 2), 'cell' (B, Q, 2), output 'rgb'\n"
        "(B, Q, 3), Q dynamic. --fp16: weights, inputs and outputs in float16.",
    ),
}  # fmt: skip


def _parser(commands, name: str, *, target: str, **texts: str) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, formatter_class=argparse.RawDescriptionHelpFormatter, **texts)
    parser.set_defaults(func=_command(target))
    return parser


def _model_options(parser: argparse.ArgumentParser) -> None:
    """The options of a command that reads ESC weights."""
    parser.add_argument("-m", "--model", required=True, help="ESC weights (.pth or .safetensors)")
    parser.add_argument("--allow-pickle", action="store_true", help=_PICKLE_HELP)


def _window_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--window-size", type=int, default=None, help=_WINDOW_HELP)


def esc_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="esc", description="ESC super-resolution: demo, upscale, export, onnx.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = _parser(commands, "demo", **_ESC_COMMANDS["demo"])
    demo.add_argument("--workdir", default="esc_demo", help="where data, experiment and weights go (default: esc_demo)")
    demo.add_argument("--iters", type=int, default=500, help="training iterations (default: 500)")
    demo.add_argument("--batch", type=int, default=4, help="batch size (default: 4)")
    demo.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="data-preparation processes")
    demo.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate (default: 2e-3)")

    upscale = _parser(commands, "upscale", **_ESC_COMMANDS["upscale"])
    upscale.add_argument("-i", "--input", nargs="+", required=True, help="image files, folders or glob patterns")
    upscale.add_argument("-o", "--output", required=True, help="output folder")
    _model_options(upscale)
    upscale.add_argument("--tile", type=int, default=None, help="tile size in input pixels (default: whole image)")
    upscale.add_argument("--tile-overlap", type=int, default=None, help="tile overlap in input pixels, at most the "
                         f"tile (default: {TILE_OVERLAP}, or the tile if less)")  # fmt: skip
    upscale.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32", help="default: fp32")
    upscale.add_argument("--compile", action="store_true", help="torch.compile the network: tens of seconds per "
                         "input size; pays only where compiled passes are faster (docs/performance.md)")  # fmt: skip
    upscale.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    upscale.add_argument("--format", choices=["keep", "png"], default="keep", help="output format (default: keep)")
    upscale.add_argument("--suffix", default=None, help="added to output names (default: _{variant}_x{scale})")
    upscale.add_argument("--overwrite", action="store_true", help="replace output files that exist already "
                         "(default: refuse them, before any work; inputs are never replaced)")  # fmt: skip
    upscale.add_argument("--attn-type", default="auto", help="attention backend (docs/attention-backends.md)")
    upscale.add_argument("--scale", type=float, default=None, help="upscaling factor of an arbitrary-scale model "
                         "(any positive number, e.g. 3.5); a fixed-scale model accepts only its own")  # fmt: skip
    upscale.add_argument("--size", default=None, metavar="WxH", help="output width x height (arbitrary-scale "
                         "models), e.g. 1920x1080")  # fmt: skip
    _window_option(upscale)
    video = upscale.add_argument_group("videos (.mp4 .m4v .mkv .mov .avi .webm; needs the [video] extra, PyAV)")
    video.add_argument("--codec", default="libx264", help="video encoder (default: libx264; e.g. libx265, "
                       "libx264rgb, ffv1, libvpx-vp9)")  # fmt: skip
    video.add_argument("--crf", type=int, default=18, help="constant quality of libx264/libx265/libvpx-vp9/"
                       "libsvtav1, lower is better (default: 18)")  # fmt: skip
    video.add_argument("--pix-fmt", default="yuv420p", help="output pixel format (default: yuv420p)")
    video.add_argument("--container", choices=["mp4", "mkv", "mov"], default="mp4",
                       help="output container (default: mp4; mkv takes more subtitle codecs)")  # fmt: skip
    video.add_argument("--batch", type=int, default=4, help="frames upscaled at a time (default: 4)")

    export = _parser(commands, "export", **_ESC_COMMANDS["export"])
    export.add_argument("checkpoint", help="net_g_*.pth, a training state, a bare state dict or .safetensors")
    export.add_argument("-o", "--output", default=".", help="output folder (default: .)")
    export.add_argument("--name", default=None, help="file name stem (default: {variant}_x{scale})")
    export.add_argument("--hash", action="store_true", help="append -{sha256[:8]} to the name (BasicSR's model zoo)")
    export.add_argument("--fp16", action="store_true", help="store half-precision tensors")
    export.add_argument("--safetensors", action="store_true", help="write .safetensors instead of .pth")
    export.add_argument("--allow-pickle", action="store_true", help=_PICKLE_HELP)
    export.add_argument("--overwrite", action="store_true", help="replace a release file that exists already "
                        "(default: refuse it, before writing; the checkpoint read is never replaced)")  # fmt: skip
    _window_option(export)

    onnx = _parser(commands, "onnx", **_ESC_COMMANDS["onnx"])
    _model_options(onnx)
    onnx.add_argument("-o", "--output", required=True, help="output .onnx file")
    onnx.add_argument("--overwrite", action="store_true", help="replace an output file that exists already "
                      "(default: refuse it, before any work; the model read is never replaced)")  # fmt: skip
    onnx.add_argument("--fp16", action="store_true", help="float16 weights, inputs and outputs (for TensorRT, "
                      "DirectML, onnxruntime's CUDA provider; default: float32)")  # fmt: skip
    _window_option(onnx)
    return parser


def basicsr_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="basicsr",
        description="BasicSR's train and test pipelines with ESC registered (and BasicSR adapted to\n"
        "today's libraries and to CPUs). The option file is checked before any work.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help in (("train", "train a network (BasicSR's train_pipeline)"),
                       ("test", "test a network on benchmark sets (BasicSR's test_pipeline)")):  # fmt: skip
        sub = _parser(commands, name, target="esc_arch.basicsr_plugin.pipeline:run", help=help, description=help)
        sub.add_argument("-opt", required=True, metavar="OPTION_FILE", help="BasicSR option file (YAML)")
        sub.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none",
                         help="job launcher (default: none; pytorch with torchrun)")  # fmt: skip
        if name == "train":
            sub.add_argument("--auto_resume", action="store_true", help="resume from the run's latest state")
            sub.add_argument("--debug", action="store_true", help="debug run: prefix debug_, log every iteration")
        sub.add_argument("--local_rank", type=int, default=0, help=argparse.SUPPRESS)
        sub.add_argument("--force_yml", nargs="+", default=None, metavar="KEY=VALUE",
                         help="override options, e.g. train:ema_decay=0.999")  # fmt: skip
        sub.add_argument("--root", default=".", help="where experiments/, results/ and tb_logger/ go (default: .)")
        sub.set_defaults(auto_resume=False, debug=False)
    return parser


def esc_main(argv: list[str] | None = None) -> int:
    """Entry point of the ``esc`` command. The package's warnings (logger ``basicsr.esc``: the
    assumptions loading makes, such as ESC-RIB's window) are ``esc: note: ...`` lines on stderr."""
    from .commands.common import notes_on_stderr

    args = esc_parser().parse_args(argv)
    with notes_on_stderr():
        return args.func(args)


def basicsr_main(argv: list[str] | None = None) -> int:
    """Entry point of the ``basicsr`` command."""
    args = basicsr_parser().parse_args(argv)
    return args.func(args)


def _main() -> int:
    """``python -m esc_arch.cli train|test ...`` (for torchrun), ``... upscale ...`` (any esc
    subcommand) or ``... esc SUBCOMMAND``."""
    if len(sys.argv) > 1 and sys.argv[1] == "esc":
        return esc_main(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] in _ESC_COMMANDS:
        return esc_main(sys.argv[1:])
    return basicsr_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(_main())
