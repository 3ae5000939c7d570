#!/usr/bin/env python
"""Start-up cost of ``esc upscale``: one small image end to end, against ``python -c "import
torch"`` plus the forward pass itself, in one run on one machine (issue 16, target 5: at most
1.3x). Prints the table and writes it to docs/benchmarks/startup.md.

    python benchmarks/startup.py [--repeats 5] [--model tests/data/ESC-light_x2_small.pth]

Each figure is the median wall time of ``--repeats`` fresh processes:

  import torch  ``python -c "import torch"``
  forward       in a fresh process after ``import torch``: the first forward pass of the model
                (loaded with ``load_model``) on the image's tensor, what any run must pay
  esc upscale   ``esc upscale -i IMAGE -o DIR -m MODEL``: parse, load, read, forward, write
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from os import path as osp

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
BIN = osp.dirname(sys.executable)

from benchmarks._common import cpu_model  # noqa: E402

_FORWARD = """
import sys, time, cv2, torch
from esc_arch import load_model
net = load_model(sys.argv[1])
img = cv2.imread(sys.argv[2])[..., ::-1].copy()
x = torch.from_numpy(img).permute(2, 0, 1).float().div(255)[None]
start = time.perf_counter()
with torch.no_grad():
    net(x)
print(time.perf_counter() - start)
"""


def _wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default=osp.join(ROOT, "tests", "data", "ESC-light_x2_small.pth"))
    parser.add_argument("--out", default=osp.join(ROOT, "docs", "benchmarks", "startup.md"))
    args = parser.parse_args(argv)
    import cv2

    with tempfile.TemporaryDirectory() as folder:
        image = osp.join(folder, "photo.png")
        cv2.imwrite(image, cv2.imread(osp.join(ROOT, "tests", "data", "images", "val", "bird.png"))[100:160, 100:190])
        torch_s, forward_s, upscale_s = [], [], []
        for i in range(args.repeats):  # interleaved, so that a busy moment hits all three
            torch_s.append(_wall([sys.executable, "-c", "import torch"]))
            out = subprocess.run([sys.executable, "-c", _FORWARD, args.model, image], check=True,
                                 capture_output=True, text=True).stdout  # fmt: skip
            forward_s.append(float(out.strip().splitlines()[-1]))
            upscale_s.append(_wall([osp.join(BIN, "esc"), "upscale", "-i", image, "-o", osp.join(folder, "out"),
                                    "-m", args.model, "--suffix", f"_{i}"]))  # fmt: skip
    t, f, u = (statistics.median(v) for v in (torch_s, forward_s, upscale_s))
    ratio = u / (t + f)
    text = "\n".join([
        "# Start-up: `esc upscale` on one small image (benchmarks/startup.py)",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores; medians of {args.repeats} fresh processes; "
        "a 60x90 crop of a real photo, ESC-light x2 (`tests/data/ESC-light_x2_small.pth`).",
        "",
        "| what | seconds |",
        "|---|---|",
        f"| `python -c \"import torch\"` | {t:.2f} |",
        "| the first forward pass (in a process that has imported torch) | " f"{f:.2f} |",
        f"| `esc upscale` end to end | {u:.2f} |",
        "",
        f"`esc upscale` / (import torch + forward) = **{ratio:.2f}x** (target: at most 1.3x).",
        "",
    ])  # fmt: skip
    os.makedirs(osp.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        fh.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
