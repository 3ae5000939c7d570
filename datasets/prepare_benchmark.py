#!/usr/bin/env python
"""Prepare SR benchmark sets (Set5, Set14, B100, Urban100, Manga109) from their HR images.

For each set: {out}/{Set}/HR/{name}.png and {out}/{Set}/LR_bicubic/X{s}/{name}x{s}.png
(mod-crop to the scale, then MATLAB-style bicubic with BasicSR's imresize), the layout the
test option files use (dataroot_lq: datasets/Set5/LR_bicubic/X2, filename_tmpl: '{}x2').

Example:
  python datasets/prepare_benchmark.py --hr Set5=path/to/Set5/HR Set14=path/to/Set14/HR --out datasets
"""

import argparse
import os
import sys
from os import path as osp

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

import esc_arch  # noqa: E402,F401  (adapts BasicSR)
from esc_arch.basicsr_plugin.data_prep import PreparationError, prepare_benchmark  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hr", nargs="+", required=True, metavar="NAME=FOLDER", help="benchmark HR folders")
    parser.add_argument("--out", default="datasets", help="output root (default: datasets)")
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    failed = 0
    for entry in args.hr:
        name, sep, folder = entry.partition("=")
        if not sep:
            parser.error(f"--hr expects NAME=FOLDER, got {entry!r}")
        try:
            prepare_benchmark(folder, osp.join(args.out, name), scales=args.scales, workers=args.workers)
        except (PreparationError, FileNotFoundError, ValueError) as error:
            print(f"error: {name}: {error}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
