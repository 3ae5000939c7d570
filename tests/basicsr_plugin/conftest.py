"""Fixtures of the BasicSR tests: the tiny network as an option-file entry, and training options
on the prepared data (``sr_data``, tests/conftest.py)."""

import copy
import logging
import sys

import pytest


@pytest.fixture(autouse=True)
def _basicsr_console_per_test():
    """BasicSR sets its console handler up once per process, on the ``sys.stderr`` of that
    moment: in a test, that test's captured stream, closed by the next test. Each test that runs
    ``basicsr_main`` in this process gets handlers of its own; they are closed after it."""
    logger_module = sys.modules.get("basicsr.utils.logger")
    if logger_module is None:  # BasicSR not imported yet: nothing set up to leak
        yield
        return
    log = logging.getLogger("basicsr")
    handlers, propagate, level = list(log.handlers), log.propagate, log.level
    initialized = dict(logger_module.initialized_logger)
    logger_module.initialized_logger.clear()
    for handler in handlers:
        log.removeHandler(handler)
    try:
        yield
    finally:
        for handler in list(log.handlers):
            log.removeHandler(handler)
            handler.close()
        for handler in handlers:
            log.addHandler(handler)
        log.propagate, log.level = propagate, level
        logger_module.initialized_logger.clear()
        logger_module.initialized_logger.update(initialized)


@pytest.fixture
def tiny_network_g(tiny_config) -> dict:
    """``network_g`` of the tiny ESC x2 (attn_type auto, as in the shipped files)."""
    return dict(type="ESC", **tiny_config, upscaling_factor=2, attn_type="auto")


@pytest.fixture
def with_changes():
    """``with_changes(opt, **changes)``: ``opt`` with dotted keys set (``"train.total_iter"``)."""

    def apply(opt: dict, **changes) -> dict:
        for key, value in changes.items():
            node = opt
            *parents, last = key.split(".")
            for part in parents:
                node = node[part]
            node[last] = value
        return opt

    return apply


@pytest.fixture
def train_options(sr_data, tiny_network_g, with_changes):
    """``train_options(name, **changes)``: a complete ``basicsr train`` option dict for the tiny
    ESC x2 on ``sr_data`` (4 iterations, warm-up 2, validation and a save every 2); ``changes``
    set dotted keys, e.g. ``**{"train.total_iter": 10, "val": None}``."""

    def make(name: str, **changes) -> dict:
        opt = {
            "name": name,
            "model_type": "ESCModel",
            "scale": 2,
            "num_gpu": "auto",
            "manual_seed": 0,
            "datasets": {
                "train": {
                    "name": "T4",
                    "type": "PairedImageDataset",
                    "dataroot_gt": str(sr_data / "T4/T4_HR_sub.lmdb"),
                    "dataroot_lq": str(sr_data / "T4/T4_LR_bicubic_X2_sub.lmdb"),
                    "io_backend": {"type": "lmdb"},
                    "gt_size": 32,
                    "use_hflip": True,
                    "use_rot": True,
                    "num_worker_per_gpu": 0,
                    "batch_size_per_gpu": 2,
                    "dataset_enlarge_ratio": 1,
                    "prefetch_mode": None,
                },
                "val": {
                    "name": "Set5",
                    "type": "PairedImageDataset",
                    "dataroot_gt": str(sr_data / "Set5/HR"),
                    "dataroot_lq": str(sr_data / "Set5/LR_bicubic/X2"),
                    "filename_tmpl": "{}x2",
                    "io_backend": {"type": "disk"},
                },
            },
            "network_g": copy.deepcopy(tiny_network_g),
            "path": {"pretrain_network_g": None, "strict_load_g": True, "resume_state": None},
            "train": {
                "ema_decay": 0.9,
                "optim_g": {"type": "AdamW", "lr": 1e-3, "weight_decay": 0, "betas": [0.9, 0.9]},
                "scheduler": {"type": "MultiStepLR", "milestones": [100], "gamma": 0.5},
                "total_iter": 4,
                "warmup_iter": 2,
                "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0, "reduction": "mean"},
            },
            "val": {
                "val_freq": 2,
                "save_img": False,
                "metrics": {"psnr": {"type": "calculate_psnr", "crop_border": 2, "test_y_channel": True}},
            },
            "logger": {"print_freq": 1, "save_checkpoint_freq": 2, "use_tb_logger": False, "wandb": {"project": None}},
        }
        return with_changes(opt, **changes)

    return make
