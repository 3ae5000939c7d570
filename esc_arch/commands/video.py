"""Videos in ``esc upscale``: one video file through :func:`esc_arch.io.video.transcode`, its
frames upscaled in batches of ``--batch`` on the device and precision of the run (tiled with
``--tile``), written atomically (:func:`esc_arch.io.fileio.atomic_path`). Not a command of its
own: ``esc upscale`` calls :func:`upscale_video` for each input of
:data:`esc_arch.io.video.VIDEO_EXTENSIONS`."""

from __future__ import annotations

import sys
from os import path as osp

import numpy as np
import torch

from ..families import describe
from ..io.fileio import atomic_path
from ..io.video import VideoSettings, probe, transcode

__all__ = ["upscale_frames", "upscale_video", "video_output_name"]


def video_output_name(path: str, folder: str, suffix: str, settings: VideoSettings) -> str:
    """``{folder}/{stem}{suffix}.{container}``."""
    stem = osp.splitext(osp.basename(path))[0]
    return osp.join(folder, f"{stem}{suffix}.{settings.container}")


@torch.no_grad()
def upscale_frames(net, frames: list[np.ndarray], *, tile, overlap, precision, device, size=None) -> list[np.ndarray]:
    """8-bit RGB frames ``(H, W, 3)`` -> the network's 8-bit RGB frames. A fixed-scale network
    runs the frames as one batch (tiled with ``tile``); an arbitrary-scale one (ESC-LTE) runs
    them one by one to ``size`` ``(height, width)``. The arithmetic is ``esc upscale``'s for an
    image: ``/255``, the network, clamp to [0, 1], ``*255``, rounded."""
    from ..runtime.inference import autocast, check_finite_output, query_upscale, upscale

    if describe(net).arbitrary_scale:
        outputs = []
        for frame in frames:
            lq = torch.from_numpy(np.ascontiguousarray(frame.transpose(2, 0, 1)))[None].float().div_(255.0).to(device)
            with autocast(precision, device):
                sr = query_upscale(net, lq, size=size).float()
            check_finite_output(sr, precision)
            outputs.append(sr.clamp_(0, 1).mul_(255.0).round_().to(torch.uint8)[0].permute(1, 2, 0).cpu().numpy())
        return outputs
    # contiguous (N, C, H, W), as an image's tensor: a channels-last view picks other kernels
    x = torch.from_numpy(np.ascontiguousarray(np.stack(frames).transpose(0, 3, 1, 2))).float().div_(255.0).to(device)
    sr = upscale(net, x, tile=tile, overlap=overlap, precision=precision, check_finite=True)
    out = sr.clamp_(0, 1).mul_(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return list(out)


def upscale_video(path: str, out: str, net, out_size, *, tile, overlap, precision, device, replace: bool,
                  settings: VideoSettings, batch: int) -> str:  # fmt: skip
    """Upscale the video ``path`` into ``out``; returns the one-line summary. ``out_size``:
    ``(width, height)`` of the output frames."""
    from tqdm import tqdm

    info = probe(path)
    width, height = out_size
    if settings.pix_fmt in ("yuv420p", "yuvj420p", "nv12", "yuv420p10le") and (width % 2 or height % 2):
        raise ValueError(f"the output is {width}x{height} pixels and {settings.pix_fmt} needs an even width and "
                         "height; use --pix-fmt yuv444p")  # fmt: skip
    # refreshed after every batch (a batch takes longer than a refresh)
    with tqdm(total=info.frames or None, unit="frame", desc=f"  {osp.basename(path)}", leave=False, mininterval=0,
              miniters=1) as bar:  # fmt: skip

        def run(frames: list[np.ndarray]) -> list[np.ndarray]:
            return upscale_frames(net, frames, tile=tile, overlap=overlap, precision=precision, device=device,
                                  size=(height, width))  # fmt: skip

        import av

        try:
            with atomic_path(out, suffix="." + settings.container, replace=replace) as tmp:
                done = transcode(path, tmp, run, (width, height), settings, batch=batch, progress=bar.update)
        except av.error.FFmpegError as error:  # what the encoder or the muxer refuses: one line
            raise ValueError(f"FFmpeg: {error.strerror or error}; the video was not written") from None
    copied = f", copied {', '.join(done.copied)}" if done.copied else ""
    if done.left_out:
        tqdm.write(f"esc: note: {path}: left out {', '.join(done.left_out)}: the {settings.container} container "
                   "does not take that codec (--container mkv takes more)", file=sys.stderr)  # fmt: skip
    fps = done.frames / done.seconds if done.seconds else float("inf")
    return (f"{path}: {done.frames} frames {info.width}x{info.height} -> {width}x{height} in {done.seconds:.1f} s "
            f"({fps:.2f} fps), {settings.codec} {settings.pix_fmt}{copied} -> {out}")  # fmt: skip
