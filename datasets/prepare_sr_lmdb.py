#!/usr/bin/env python
"""Prepare a classic-SR training set (DIV2K, DF2K, or any folder of HR images) as BasicSR LMDBs.

Steps (each idempotent; re-running skips finished work):
  1. HR images -> HR sub-images (default 480 px, step 240)           {out}/{name}_HR_sub/
  2. LR sub-images per scale: cut from the official LR images when --lr-root is given
     (crop and step divided by the scale), else made from the HR sub-images with BasicSR's
     MATLAB-style bicubic imresize                                      {out}/{name}_LR_bicubic_X{s}_sub/
  3. LMDBs with meta_info.txt, as BasicSR's PairedImageDataset (io_backend: lmdb) reads them:
     {out}/{name}_HR_sub.lmdb and {out}/{name}_LR_bicubic_X{s}_sub.lmdb

Examples:
  # DF2K = DIV2K train (0001-0800) + Flickr2K, HR images in one folder:
  python datasets/prepare_sr_lmdb.py --hr datasets/DF2K/DF2K_train_HR --name DF2K_train --out datasets/DF2K
  # DIV2K with its official bicubic LR images (DIV2K_train_LR_bicubic/X2/0001x2.png ...):
  python datasets/prepare_sr_lmdb.py --hr datasets/DIV2K/DIV2K_train_HR \\
      --lr-root datasets/DIV2K/DIV2K_train_LR_bicubic --name DIV2K_train --out datasets/DIV2K
"""

import argparse
import os
import sys
from os import path as osp

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

import esc_arch  # noqa: E402,F401  (adapts BasicSR)
from esc_arch.data_prep import PreparationError, extract_subimages, make_bicubic_lr, make_lmdb  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hr", required=True, help="folder of HR images")
    parser.add_argument("--lr-root", help="folder with official LR images in X2/, X3/, X4/ (optional)")
    parser.add_argument("--name", required=True, help="prefix of the outputs, e.g. DF2K_train")
    parser.add_argument("--out", required=True, help="output folder, e.g. datasets/DF2K")
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--crop-size", type=int, default=480, help="HR sub-image size (default 480)")
    parser.add_argument("--step", type=int, default=240, help="HR sub-image step (default 240)")
    parser.add_argument("--thresh-size", type=int, default=0, help="keep a last border crop if more is left")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)

    try:
        hr_sub = osp.join(args.out, f"{args.name}_HR_sub")
        extract_subimages(
            args.hr,
            hr_sub,
            crop_size=args.crop_size,
            step=args.step,
            thresh_size=args.thresh_size,
            workers=args.workers,
        )
        lr_subs = {}
        for scale in args.scales:
            if args.crop_size % scale or args.step % scale:
                parser.error(f"--crop-size and --step must be multiples of scale {scale}")
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
