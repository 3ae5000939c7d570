"""``basicsr train`` and ``basicsr test``: BasicSR's own ``train_pipeline`` / ``test_pipeline``
with the option file read once, checked before any work, and handed to BasicSR.

The option file is read here as plain data (YAML's safe loader, key order kept; ``--force_yml``
overrides applied without ``eval`` or ``exec``), checked (:mod:`.checks`), and prepared exactly as BasicSR's
``parse_options`` prepares it (distributed set-up, seed, experiment paths under ``root``);
BasicSR's pipelines then take that parse (:func:`.compat.parsed_options`) and ``sys.argv``
is never read or rewritten.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from os import path as osp

import torch

from ..runtime import allocator
from . import activate

__all__ = ["load_options", "prepare_options", "run"]


def load_options(option_file: str, force_yml: list[str] | None = None) -> dict:
    """The option file as plain data (:func:`.option_yaml.read_option_file`: no Python object
    is built from it), with ``--force_yml KEY:SUB=VALUE`` overrides (values read as YAML)."""
    from .checks import OptionError
    from .option_yaml import parse_value, read_option_file

    opt = read_option_file(option_file)
    for entry in force_yml or []:
        keys, _, value = entry.partition("=")
        *parents, last = keys.strip().split(":")
        node = opt
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict) or last not in node:
            raise OptionError(f"--force_yml {entry!r}: {keys.strip()!r} is not an option of {option_file}")
        node[last] = parse_value(value, where=f"--force_yml {entry!r}")
    return opt


def prepare_options(opt: dict, args: argparse.Namespace, *, root: str, is_train: bool) -> dict:
    """What BasicSR's ``parse_options`` does after reading the file, on ``opt`` in place."""
    import torch
    from basicsr.utils import set_random_seed
    from basicsr.utils.dist_util import get_dist_info, init_dist

    opt["dist"] = args.launcher != "none"
    if opt["dist"]:
        if args.launcher == "slurm" and "dist_params" in opt:
            init_dist(args.launcher, **opt["dist_params"])
        else:
            init_dist(args.launcher)
    opt["rank"], opt["world_size"] = get_dist_info()
    if opt.get("manual_seed") is None:
        opt["manual_seed"] = random.randint(1, 10000)
    set_random_seed(opt["manual_seed"] + opt["rank"])
    opt["auto_resume"] = args.auto_resume
    opt["is_train"] = is_train
    if args.debug and not opt["name"].startswith("debug"):
        opt["name"] = "debug_" + opt["name"]
    if opt.get("num_gpu", "auto") == "auto":
        opt["num_gpu"] = torch.cuda.device_count()
    for phase, dataset in opt["datasets"].items():
        dataset["phase"] = phase.split("_")[0]
        if "scale" in opt:
            dataset["scale"] = opt["scale"]
        for key in ("dataroot_gt", "dataroot_lq"):
            if dataset.get(key) is not None:
                dataset[key] = osp.expanduser(dataset[key])
    paths = opt.setdefault("path", {})
    for key, value in paths.items():
        if value is not None and ("resume_state" in key or "pretrain_network" in key):
            paths[key] = osp.expanduser(value)
    if is_train:
        experiments_root = osp.join(root, "experiments", opt["name"])
        paths.update(
            experiments_root=experiments_root,
            models=osp.join(experiments_root, "models"),
            training_states=osp.join(experiments_root, "training_states"),
            log=experiments_root,
            visualization=osp.join(experiments_root, "visualization"),
        )
        if "debug" in opt["name"]:
            if "val" in opt:
                opt["val"]["val_freq"] = 8
            opt["logger"]["print_freq"] = 1
            opt["logger"]["save_checkpoint_freq"] = 8
    else:
        results_root = osp.join(root, "results", opt["name"])
        paths.update(results_root=results_root, log=results_root, visualization=osp.join(results_root, "visualization"))
    return opt


def _last_line(error: Exception) -> str:
    """The message of an error, without the worker traceback that a DataLoader adds."""
    message = str(error).strip()
    return message.splitlines()[-1] if "Original Traceback" in message else message


def _log_to_file(message: str) -> None:
    """``message`` as an ERROR record in the run's log file only (the console gets it once, as
    the command's error line)."""
    record = logging.LogRecord("basicsr", logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger("basicsr").handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def run(args: argparse.Namespace) -> int:
    """Run ``basicsr train`` or ``basicsr test`` as parsed by :mod:`esc_arch.cli`."""
    activate()
    if not torch.cuda.is_available():  # CPU runs: freed activations reused, not faulted in again
        allocator.keep_freed_memory()
    from . import compat
    from .checks import OptionError, check_options, drop_missing_test_sets

    is_train = args.command == "train"
    try:
        opt = load_options(args.opt, args.force_yml)
        if not is_train:
            for warning in drop_missing_test_sets(opt, args.opt):
                print(f"basicsr test: warning: {warning}", file=sys.stderr)
        for warning in check_options(opt, args.opt, is_train=is_train, root=args.root):
            print(f"basicsr {args.command}: warning: {warning}", file=sys.stderr)
    except (OptionError, FileNotFoundError) as error:
        print(f"basicsr {args.command}: error: {error}", file=sys.stderr)
        return 2

    from basicsr.test import test_pipeline
    from basicsr.train import train_pipeline

    root = osp.abspath(args.root)
    os.makedirs(root, exist_ok=True)
    prepare_options(opt, args, root=root, is_train=is_train)
    try:
        with compat.parsed_options(opt, args):
            (train_pipeline if is_train else test_pipeline)(root)
    except ValueError as error:  # raised by the models and checks with a message for the user
        if os.environ.get("ESC_TRACEBACK"):
            raise
        _log_to_file(_last_line(error))
        print(f"basicsr {args.command}: error: {_last_line(error)}", file=sys.stderr)
        return 1
    return 0
