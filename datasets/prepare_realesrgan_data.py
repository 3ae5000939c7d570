#!/usr/bin/env python
"""Prepare HR training data for ESC-Real (Real-ESRGAN style, e.g. DF2K + OST) for BasicSR's
RealESRGANDataset: multiscale copies, sub-images and the meta-info list.

Steps (each idempotent; re-running skips finished work):
  1. every image of the --hr folders, plus downscaled copies (--factors, default
     1 0.75 0.5 0.3333: the DF2K-OST "multiscale" set; OST is usually added at 1 only,
     run the script once per group with the same --out to do that)  {out}/{name}_multiscale/
  2. sub-images (default 400 px, step 200, the crop RealESRGANDataset pads or crops to;
     smaller images are kept whole down to --min-size)          {out}/{name}_multiscale_sub/
  3. meta-info list (paths relative to --out, the option file's dataroot_gt)
                                                                 {out}/meta_info_{name}_multiscale_sub.txt
  4. with --lmdb: the sub-images as an LMDB too (io_backend: lmdb)  {out}/{name}_multiscale_sub.lmdb

Example (options/train_ESC_Real_x4_MSE.yml):
  python datasets/prepare_realesrgan_data.py --hr datasets/DF2K/DF2K_HR --name DF2K --out datasets/DF2K_OST
  python datasets/prepare_realesrgan_data.py --hr datasets/OST --name OST --factors 1 --out datasets/DF2K_OST
  cat datasets/DF2K_OST/meta_info_DF2K_multiscale_sub.txt datasets/DF2K_OST/meta_info_OST_multiscale_sub.txt \\
      > datasets/DF2K_OST/meta_info_DF2K_OST_multiscale_sub.txt
"""

import argparse
import os
import sys
from os import path as osp

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

import esc_arch  # noqa: E402,F401  (adapts BasicSR)
from esc_arch.basicsr_plugin.data_prep import (  # noqa: E402
    PreparationError,
    collect_images,
    extract_subimages,
    make_lmdb,
    write_meta_info,
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hr", required=True, nargs="+", help="folder(s) of HR images")
    parser.add_argument("--name", required=True, help="prefix of the outputs, e.g. DF2K")
    parser.add_argument("--out", required=True, help="output folder = the option file's dataroot_gt")
    parser.add_argument("--factors", type=float, nargs="+", default=[1.0, 0.75, 0.5, 1 / 3])
    parser.add_argument("--crop-size", type=int, default=400, help="sub-image size (default 400)")
    parser.add_argument("--step", type=int, default=200, help="sub-image step (default 200)")
    parser.add_argument("--min-size", type=int, default=256, help="keep smaller images whole down to this side")
    parser.add_argument("--lmdb", action="store_true", help="also pack the sub-images into an LMDB")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)

    try:
        multiscale = osp.join(args.out, f"{args.name}_multiscale")
        count = collect_images(args.hr, multiscale, factors=args.factors, workers=args.workers)
        print(f"{count} images at {len(args.factors)} scale(s) in {multiscale}")
        sub = multiscale + "_sub"
        skipped = extract_subimages(
            multiscale,
            sub,
            crop_size=args.crop_size,
            step=args.step,
            min_size=args.min_size,
            multiple=4,
            workers=args.workers,
        )
        if skipped:
            print(f"skipped {len(skipped)} image(s) smaller than --min-size {args.min_size}")
        meta = osp.join(args.out, f"meta_info_{args.name}_multiscale_sub.txt")
        listed = write_meta_info(sub, meta, relative_to=args.out)
        if args.lmdb:
            make_lmdb(sub, sub + ".lmdb")
    except (PreparationError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"done: {listed} sub-images listed in {meta}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
