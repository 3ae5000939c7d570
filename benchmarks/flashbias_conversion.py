#!/usr/bin/env python
"""Table -> FlashBias conversion of a whole ESC x2 checkpoint (5 blocks, 4 heads, 32x32 windows),
as loading the authors' ESC x2 into the FlashBias fine-tuning recipe does
(``options/train_ESC_x2_FB.yml``, rank 48): ``convert_state_dict`` timed with the package's
randomized truncated SVD ("after") and with the full float64 SVD
(``reference_paths.full_svd_factors``, "before"), in one run, with the largest reconstruction
error each reports.

The tables: ``--weights`` (an ESC x2 checkpoint), else the trained ESC-light x2 tables of
tests/data/ESC-light_x2_small.pth repeated over ESC's 5 blocks (same shapes as ESC x2's).

  python benchmarks/flashbias_conversion.py                # rank 48
  python benchmarks/flashbias_conversion.py --rank 240
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from os import path as osp

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from benchmarks._common import cpu_model  # noqa: E402
from benchmarks.reference_paths import full_svd_factors  # noqa: E402

TRAINED = osp.join(ROOT, "tests", "data", "ESC-light_x2_small.pth")


def esc_x2_state_dict(weights: str | None) -> dict[str, torch.Tensor]:
    import esc_arch

    if weights:
        return esc_arch.read_state_dict(weights)
    torch.manual_seed(0)
    state = esc_arch.build_preset("ESC", 2).state_dict()
    trained = torch.load(TRAINED, weights_only=True)["params_ema"]
    tables = [v for k, v in trained.items() if k.endswith("attn.relative_position_bias")]
    for i, key in enumerate(k for k in state if k.endswith("attn.relative_position_bias")):
        state[key] = tables[i % len(tables)].clone()
    return state


@contextlib.contextmanager
def full_svd():
    from esc_arch.archs import flashbias

    saved = flashbias.low_rank_factors
    flashbias.low_rank_factors = full_svd_factors
    try:
        yield
    finally:
        flashbias.low_rank_factors = saved


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def convert(state: dict, net, context) -> tuple[float, str]:
    from esc_arch import convert_state_dict

    handler, logger = _Errors(), logging.getLogger("basicsr.esc")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with context():
            start = time.perf_counter()
            converted = convert_state_dict(state, net)
            seconds = time.perf_counter() - start
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    net.load_state_dict(converted, strict=True)
    error = next(m for m in handler.messages if "FlashBias factors" in m)
    return seconds, error.split("max abs error ")[1].rstrip(").")


def main(argv=None) -> int:
    import esc_arch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rank", type=int, default=48)
    parser.add_argument("--weights", default=None, help="an ESC x2 checkpoint (default: see above)")
    args = parser.parse_args(argv)
    state = esc_x2_state_dict(args.weights)
    config = esc_arch.preset_config("ESC", 2).replace(flashbias_rank=args.rank)
    net = esc_arch.NETWORKS[config.family()](config)
    after, after_error = convert(state, net, contextlib.nullcontext)
    before, before_error = convert(state, net, full_svd)
    blocks = sum(k.endswith("attn.relative_position_bias") for k in state)
    print(f"Machine: {cpu_model()}, {torch.get_num_threads()} torch threads; torch {torch.__version__}.")
    print(
        f"ESC x2 table -> FlashBias rank {args.rank} ({blocks} blocks): full SVD {before:.2f} s (max abs error "
        f"{before_error}), randomized truncated SVD {after:.2f} s (max abs error {after_error}): "
        f"{before / after:.1f}x faster"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
