#!/usr/bin/env python
"""Prepare a classic-SR training set (DIV2K, DF2K, T91 + General100 + BSDS200, or any folders
of HR images) as BasicSR LMDBs.

Steps (each idempotent; re-running skips finished work):
  0. several --hr folders, or --factors: the images are first gathered into one folder,
     once per factor (1 = as is; 0.75 = downscaled copy named {stem}T075)   {out}/{name}_HR/
  1. HR images -> HR sub-images (default 480 px, step 240; with --min-size, images with a
     side shorter than the crop keep that side whole, cut to a multiple of every scale)
                                                                         {out}/{name}_HR_sub/
  2. LR sub-images per scale: cut from the official LR images when --lr-root is given
     (crop and step divided by the scale), else made from the HR sub-images with BasicSR's
     MATLAB-style bicubic imresize                                      {out}/{name}_LR_bicubic_X{s}_sub/
  3. LMDBs with meta_info.txt, as BasicSR's PairedImageDataset (io_backend: lmdb) reads them:
     {out}/{name}_HR_sub.lmdb and {out}/{name}_LR_bicubic_X{s}_sub.lmdb

Examples:
  # DF2K = DIV2K train (0001-0800) + Flickr2K:
  python datasets/prepare_sr_lmdb.py --hr datasets/DIV2K/DIV2K_train_HR datasets/Flickr2K/Flickr2K_HR \\
      --name DF2K_train --out datasets/DF2K
  # DIV2K with its official bicubic LR images (DIV2K_train_LR_bicubic/X2/0001x2.png ...):
  python datasets/prepare_sr_lmdb.py --hr datasets/DIV2K/DIV2K_train_HR \\
      --lr-root datasets/DIV2K/DIV2K_train_LR_bicubic --name DIV2K_train --out datasets/DIV2K
  # the classic small sets (options/train_ESC_light_x2_small.yml):
  python datasets/prepare_sr_lmdb.py --hr T91 General100 BSDS200 --name small_train --out datasets/small \\
      --crop-size 192 --step 96 --min-size 72
"""

import argparse
import math
import os
import sys
from os import path as osp

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

import esc_arch  # noqa: E402,F401  (adapts BasicSR)
from esc_arch.basicsr_plugin.data_prep import (  # noqa: E402
    PreparationError,
    collect_images,
    extract_subimages,
    make_bicubic_lr,
    make_lmdb,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hr", required=True, nargs="+", help="folder(s) of HR images")
    parser.add_argument("--lr-root", help="folder with official LR images in X2/, X3/, X4/ (one --hr folder only)")
    parser.add_argument("--name", required=True, help="prefix of the outputs, e.g. DF2K_train")
    parser.add_argument("--out", required=True, help="output folder, e.g. datasets/DF2K")
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--factors", type=float, nargs="+", help="also downscaled copies, e.g. 1 0.75 0.5 0.3333")
    parser.add_argument("--crop-size", type=int, default=480, help="HR sub-image size (default 480)")
    parser.add_argument("--step", type=int, default=240, help="HR sub-image step (default 240)")
    parser.add_argument("--thresh-size", type=int, default=0, help="keep a last border crop if more is left")
    parser.add_argument(
        "--min-size",
        type=int,
        help="keep images smaller than the crop whole (down to this side; smaller ones are skipped)",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.lr_root and (len(args.hr) > 1 or args.factors):
        parser.error("--lr-root takes one --hr folder and no --factors (official LR images match one folder)")
    multiple = math.lcm(*args.scales)
    for scale in args.scales:
        if args.crop_size % scale or args.step % scale:
            parser.error(f"--crop-size and --step must be multiples of scale {scale}")

    try:
        hr = args.hr[0]
        if len(args.hr) > 1 or args.factors:
            hr = osp.join(args.out, f"{args.name}_HR")
            count = collect_images(args.hr, hr, factors=args.factors or (1.0,), workers=args.workers)
            print(f"{count} HR images in {hr}")
        hr_sub = osp.join(args.out, f"{args.name}_HR_sub")
        skipped = extract_subimages(
            hr,
            hr_sub,
            crop_size=args.crop_size,
            step=args.step,
            thresh_size=args.thresh_size,
            min_size=args.min_size,
            multiple=multiple if args.min_size else 1,
            workers=args.workers,
        )
        if skipped:
            print(f"skipped {len(skipped)} image(s) smaller than --min-size {args.min_size}: {', '.join(skipped)}")
        lr_subs = {}
        for scale in args.scales:
            lr_sub = osp.join(args.out, f"{args.name}_LR_bicubic_X{scale}_sub")
            if args.lr_root:
                extract_subimages(
                    osp.join(args.lr_root, f"X{scale}"),
                    lr_sub,
                    crop_size=args.crop_size // scale,
                    step=args.step // scale,
                    thresh_size=args.thresh_size // scale,
                    workers=args.workers,
                )
            else:
                make_bicubic_lr(hr_sub, lr_sub, scale, workers=args.workers)
            lr_subs[scale] = lr_sub
        make_lmdb(hr_sub, hr_sub + ".lmdb")
        for lr_sub in lr_subs.values():
            make_lmdb(lr_sub, lr_sub + ".lmdb")
    except (PreparationError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"done: {hr_sub}.lmdb and " + ", ".join(f"{p}.lmdb" for p in lr_subs.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
