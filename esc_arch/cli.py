"""Command lines: ``basicsr train|test`` (BasicSR's pipelines with ESC registered) and ``esc``.

``basicsr train -opt options/train_ESC_x2.yml [--auto_resume] [--debug] [--launcher pytorch]
[--force_yml key:sub=value ...] [--root DIR]`` runs BasicSR's own ``train_pipeline`` after
adapting BasicSR and registering ESC; experiments, results and TensorBoard logs go under
``--root`` (default: the current directory), data paths stay relative to the current
directory as in BasicSR. Multi-process: ``torchrun --nproc_per_node=N -m esc_arch.cli train
-opt ... --launcher pytorch`` (gloo on CPUs, NCCL on GPUs).
"""

from __future__ import annotations

import argparse
import os
import sys
from os import path as osp

__all__ = ["basicsr_main", "esc_main"]

_PIPELINES = {"train": True, "test": False}  # subcommand -> is_train


def _load_options(option_file: str, force_yml: list[str] | None) -> dict:
    import yaml
    from basicsr.utils.options import _postprocess_yml_value, ordered_yaml

    from .checks import OptionError

    if not osp.isfile(option_file):
        raise OptionError(f"option file {option_file!r} does not exist")
    with open(option_file) as f:
        try:
            opt = yaml.load(f, Loader=ordered_yaml()[0])
        except yaml.YAMLError as error:
            raise OptionError(f"{option_file}: not valid YAML: {error}") from error
    if not isinstance(opt, dict):
        raise OptionError(f"{option_file}: not a BasicSR option file (top level is not a mapping)")
    for entry in force_yml or []:  # the same overrides BasicSR applies, without exec
        keys, _, value = entry.partition("=")
        *parents, last = keys.strip().split(":")
        node = opt
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict) or last not in node:
            raise OptionError(f"--force_yml {entry!r}: {keys.strip()!r} is not an option of {option_file}")
        node[last] = _postprocess_yml_value(value.strip())
    return opt


def _pipeline_argv(argv: list[str]) -> tuple[str, str, list[str]]:
    if not argv or argv[0] not in _PIPELINES:
        raise SystemExit(
            "usage: basicsr {train,test} -opt OPTION_FILE [--auto_resume] [--debug] "
            "[--launcher {none,pytorch,slurm}] [--force_yml KEY=VALUE ...] [--root DIR]"
        )
    command, rest = argv[0], list(argv[1:])
    root = os.getcwd()
    if "--root" in rest:
        at = rest.index("--root")
        if at + 1 >= len(rest):
            raise SystemExit("basicsr: error: --root needs a folder")
        root = rest[at + 1]
        del rest[at : at + 2]
    return command, osp.abspath(root), rest


def basicsr_main(argv: list[str] | None = None) -> int:
    """Entry point of the ``basicsr`` command."""
    argv = sys.argv[1:] if argv is None else argv
    command, root, rest = _pipeline_argv(argv)

    import esc_arch  # noqa: F401  (adapts BasicSR, registers ESC and ESCModel)

    from .checks import OptionError, check_options

    parser = argparse.ArgumentParser(prog=f"basicsr {command}", add_help=True)
    parser.add_argument("-opt", required=True)
    parser.add_argument("--force_yml", nargs="+", default=None)
    known, _ = parser.parse_known_args(rest)
    try:
        opt = _load_options(known.opt, known.force_yml)
        check_options(opt, known.opt, is_train=_PIPELINES[command])
    except (OptionError, FileNotFoundError) as error:
        print(f"basicsr {command}: error: {error}", file=sys.stderr)
        return 2

    from basicsr.test import test_pipeline
    from basicsr.train import train_pipeline

    os.makedirs(root, exist_ok=True)
    sys.argv = [f"basicsr {command}", *rest]
    try:
        (train_pipeline if command == "train" else test_pipeline)(root)
    except ValueError as error:  # raised by ESCModel / the checks with a message for the user
        if os.environ.get("ESC_TRACEBACK"):
            raise
        print(f"basicsr {command}: error: {error}", file=sys.stderr)
        return 1
    return 0


def esc_main(argv: list[str] | None = None) -> int:
    """Entry point of the ``esc`` command (``esc demo``, ``esc upscale``, ``esc export``)."""
    from . import demo, upscale

    parser = argparse.ArgumentParser(prog="esc", description="ESC super-resolution tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo.add_parser(commands)
    upscale.add_parsers(commands)
    args = parser.parse_args(argv)
    return args.func(args)


def _main() -> int:
    """``python -m esc_arch.cli train|test ...`` (for torchrun) or ``... esc SUBCOMMAND``."""
    if len(sys.argv) > 1 and sys.argv[1] == "esc":
        return esc_main(sys.argv[2:])
    return basicsr_main()


if __name__ == "__main__":
    sys.exit(_main())
