#!/usr/bin/env python
"""How far a tiled output is from the whole-image output (PSNR, dB), per tile size and overlap.

The dynamic kernels of ESC (and ESC-Real's input statistics) are computed from the whole
input, so tiles change the output; each tile's overlap margin is cropped (not blended). For a checkpoint and an image:

  python benchmarks/tiling_effect.py -m ESC-Real_x4.pth -i photo.png
  python benchmarks/tiling_effect.py            # tests/data: ESC-Real reference weights, a real photo
"""

from __future__ import annotations

import argparse
import sys
import time
from os import path as osp

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", default=osp.join(ROOT, "tests", "data", "esc_real_x4_eval.pth"))
    parser.add_argument("-i", "--image", default=osp.join(ROOT, "tests", "data", "images", "val", "butterfly.png"))
    parser.add_argument("--tiles", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--overlaps", type=int, nargs="+", default=[16, 32, 64])
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    import esc_arch
    from esc_arch import describe
    from esc_arch.io.imageio import read_image
    from esc_arch.runtime.inference import upscale

    net = esc_arch.load_model(args.model)
    img = read_image(args.image)[..., :3]
    x = torch.from_numpy(np.ascontiguousarray(img[..., ::-1] / (65535.0 if img.dtype == np.uint16 else 255.0)))
    x = x.permute(2, 0, 1)[None].float()
    with torch.no_grad():
        start = time.perf_counter()
        whole = upscale(net, x, tile=None).clamp(0, 1)
        print(f"{osp.basename(args.model)} ({describe(net).variant} x{net.scale}) on {osp.basename(args.image)} "
              f"{x.shape[-1]}x{x.shape[-2]}: whole image {time.perf_counter() - start:.1f} s")  # fmt: skip
        print("| tile | overlap | PSNR vs whole (dB) | max abs difference |\n|---|---|---|---|")
        for tile in args.tiles:
            for overlap in args.overlaps:
                if overlap >= tile:
                    continue
                tiled = upscale(net, x, tile=tile, overlap=overlap).clamp(0, 1)
                mse = ((tiled - whole) ** 2).mean().item()
                psnr = 10 * np.log10(1 / max(mse, 1e-12))
                print(f"| {tile} | {overlap} | {psnr:.1f} | {(tiled - whole).abs().max().item():.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
