#!/usr/bin/env python
"""The video pipeline's overhead: frames per second of decode + upscale + encode
(``esc_arch.io.video.transcode`` with ``esc_arch.commands.video.upscale_frames``, what
``esc upscale`` runs on a video) against upscale alone on the same decoded frames, in the same
batches, in this process. The video is made here from the photographs of tests/data/images
(a window moving across them, H.264 yuv420p, with an AAC track); each figure is the median of
``--repeats`` runs after one warm-up.

  python benchmarks/video_pipeline.py                         # 16 frames of 128x96, ESC-light x2, CPU
  python benchmarks/video_pipeline.py --device cuda --precision fp16 --size 360 640 --frames 240
  python benchmarks/video_pipeline.py --quick                 # 8 frames of 40x32, the tiny network (CI)

It prints both rates and the ratio pipeline / upscale alone (1.0: no overhead).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from os import path as osp

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks._common import cpu_model, synchronize  # noqa: E402

MODEL = osp.join(ROOT, "tests", "data", "ESC-light_x2_small.pth")
#: The tiny network of the tests (tests/conftest.py), for --quick.
TINY = dict(dim=16, pdim=8, kernel_size=5, n_blocks=1, conv_blocks=2, window_size=8, num_heads=2, exp_ratio=1.25)


def make_video(path: str, frames: int, height: int, width: int, rate: int = 24) -> None:
    """``frames`` frames of a window moving across the photographs, H.264 yuv420p, with an AAC tone."""
    import av
    import cv2
    import numpy as np

    photo = cv2.imread(osp.join(ROOT, "tests", "data", "images", "val", "butterfly.png"))[..., ::-1]
    photo = cv2.resize(np.ascontiguousarray(photo), (max(width * 2, 256), max(height * 2, 256)))
    with av.open(path, "w") as out:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.time_base = Fraction(1, rate)
        sound = out.add_stream("aac", rate=16000)
        sound.layout = "mono"
        for index in range(frames):
            y, x = index % (photo.shape[0] - height), (2 * index) % (photo.shape[1] - width)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(photo[y : y + height, x : x + width]), "rgb24")
            frame.pts, frame.time_base = index, Fraction(1, rate)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        samples = int(16000 * frames / rate)
        tone = (0.2 * np.sin(np.arange(samples) * 2 * np.pi * 440 / 16000)).astype(np.float32)[None]
        for start in range(0, samples, 1024):
            chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, start : start + 1024]), "flt", "mono")
            chunk.sample_rate, chunk.pts = 16000, start
            for packet in sound.encode(chunk):
                out.mux(packet)
        for packet in sound.encode():
            out.mux(packet)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "-m", "--model", default=MODEL, help="ESC weights (default: the trained ESC-light x2 of tests/data)"
    )
    parser.add_argument("--frames", type=int, default=16, help="frames of the video (default 16)")
    parser.add_argument(
        "--size", type=int, nargs=2, default=[96, 128], metavar=("H", "W"), help="input frame (default 96 128)"
    )
    parser.add_argument("--batch", type=int, default=4, help="frames per batch (default 4, esc upscale's)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--codec", default="libx264", help="output encoder (default libx264)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each (median; default 2)")
    parser.add_argument("--quick", action="store_true", help="8 frames of 40x32, the tiny network, one repeat (CI)")
    args = parser.parse_args(argv)

    import av
    import torch

    from esc_arch import NETWORKS, describe, load_model
    from esc_arch.commands.video import upscale_frames
    from esc_arch.io.video import VideoSettings, transcode

    device = torch.device(args.device)
    if args.quick:
        args.frames, args.size, args.repeats = 8, [32, 40], 1
        torch.manual_seed(0)
        net = NETWORKS["ESC"](**TINY, upscaling_factor=2).eval().to(device)
        label = "tiny ESC x2 (random weights)"
    else:
        net = load_model(args.model, device=device)
        label = f"{describe(net).variant} x{describe(net).scale} ({osp.basename(args.model)})"
    scale = describe(net).scale
    height, width = args.size
    print(f"Machine: {cpu_model() if device.type == 'cpu' else torch.cuda.get_device_name(device)}; torch "
          f"{torch.__version__}, PyAV {av.__version__}, {torch.get_num_threads()} threads")  # fmt: skip
    print(f"{label} on {device}, {args.precision}; {args.frames} frames of {width}x{height} -> "
          f"{scale * width}x{scale * height}, batches of {args.batch}, {args.codec} yuv420p")  # fmt: skip

    def run(frames):
        return upscale_frames(net, frames, tile=None, overlap=0, precision=args.precision, device=device)

    with tempfile.TemporaryDirectory() as work:
        source = osp.join(work, "in.mp4")
        make_video(source, args.frames, height, width)
        with av.open(source) as container:
            decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        settings = VideoSettings(codec=args.codec)
        size = (scale * width, scale * height)

        def alone() -> None:
            for start in range(0, len(decoded), args.batch):
                run(decoded[start : start + args.batch])

        def pipeline() -> None:
            transcode(source, osp.join(work, "out.mp4"), run, size, settings, batch=args.batch)

        times: dict[str, list[float]] = {"upscale alone": [], "decode + upscale + encode": []}
        for repeat in range(args.repeats + 1):  # the first is the warm-up
            for name, work_once in (("upscale alone", alone), ("decode + upscale + encode", pipeline)):
                synchronize(device)
                start = time.perf_counter()
                work_once()
                synchronize(device)
                if repeat:
                    times[name].append(time.perf_counter() - start)
    fps = {name: len(decoded) / statistics.median(t) for name, t in times.items()}
    for name, rate in fps.items():
        print(f"{name}: {rate:.2f} frames/s")
    ratio = fps["upscale alone"] / fps["decode + upscale + encode"]
    print(f"pipeline overhead: {ratio:.3f}x the time of upscale alone ({100 * (ratio - 1):+.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
