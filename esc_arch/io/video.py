"""Reading and writing videos with PyAV (``pip install "esc_arch[video]"``), as ``esc upscale``
needs them.

:func:`probe` reads a file's header (one line, a :class:`VideoError`, for a file that is not a
video, has no video stream, or a video codec this build cannot decode); :func:`transcode`
decodes the first video stream, hands its frames in batches (8-bit RGB, ``(H, W, 3)`` arrays)
to a function that returns the new frames, and encodes them in order with each input frame's
timestamp and duration (variable frame rates stay variable), while the audio streams and the
subtitle streams the output container takes are copied packet by packet (not re-encoded).
At most one batch of frames is held. A corrupt packet stops the file: :class:`VideoError`
names the frame. The output is written to the path it is given (the caller's temporary name:
:func:`esc_arch.io.fileio.atomic_path`), in the container named by ``container``.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

__all__ = [
    "CONTAINERS",
    "CRF_CODECS",
    "VIDEO_EXTENSIONS",
    "VideoError",
    "VideoInfo",
    "VideoSettings",
    "Transcoded",
    "check_settings",
    "probe",
    "pyav_missing",
    "transcode",
]

#: The video files ``esc upscale`` reads (lower case; matched case-insensitively).
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mkv", ".mov", ".avi", ".webm")

#: ``--container`` -> FFmpeg's muxer.
CONTAINERS = {"mp4": "mp4", "mkv": "matroska", "mov": "mov"}

#: The subtitle codecs each container takes (copied); other subtitle streams are left out.
SUBTITLE_CODECS = {
    "mp4": {"mov_text"},
    "mov": {"mov_text"},
    "mkv": {"subrip", "srt", "ass", "ssa", "webvtt", "text", "hdmv_pgs_subtitle", "dvd_subtitle", "dvb_subtitle"},
}

#: The encoders that take ``--crf`` (constant quality); others get their own defaults.
CRF_CODECS = {"libx264", "libx264rgb", "libx265", "libvpx-vp9", "libsvtav1"}


class VideoError(ValueError):
    """A video that cannot be read or written (one line)."""


def pyav_missing() -> str | None:
    """Why videos cannot be handled here (PyAV not installed), or ``None``."""
    try:
        import av  # noqa: F401
    except ImportError:
        return 'videos need PyAV, which is not installed: pip install "esc_arch[video]"'
    return None


@dataclass(frozen=True)
class VideoSettings:
    """How the output is encoded: ``codec`` (an FFmpeg encoder), ``crf`` (for :data:`CRF_CODECS`),
    ``pix_fmt``, ``container`` (a key of :data:`CONTAINERS`)."""

    codec: str = "libx264"
    crf: int = 18
    pix_fmt: str = "yuv420p"
    container: str = "mp4"


def check_settings(settings: VideoSettings) -> None:
    """``ValueError`` (one line naming the option) unless this build encodes ``settings``."""
    import av

    if settings.container not in CONTAINERS:
        raise ValueError(f"--container {settings.container}: must be one of {', '.join(CONTAINERS)}")
    try:
        codec = av.codec.Codec(settings.codec, "w")
    except Exception as error:
        raise ValueError(f"--codec {settings.codec}: this build of PyAV has no such video encoder") from error
    if codec.type != "video":
        raise ValueError(f"--codec {settings.codec}: not a video encoder ({codec.type})")
    formats = [f.name for f in codec.video_formats or ()]
    if formats and settings.pix_fmt not in formats:
        raise ValueError(f"--pix-fmt {settings.pix_fmt}: {settings.codec} encodes {', '.join(formats)}")
    if not 0 <= settings.crf <= 63:
        raise ValueError(f"--crf {settings.crf}: must be 0 to 63 (lower is better; 0 is lossless for libx264)")
    with av.open(io.BytesIO(), "w", format=CONTAINERS[settings.container]) as probe_output:
        try:
            probe_output.add_stream(settings.codec)
        except ValueError as error:
            raise ValueError(f"--codec {settings.codec}: the {settings.container} container does not take it "
                             f"({error})") from None  # fmt: skip


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    frames: int  #: as the header says, else estimated from the duration and rate (0: unknown)
    rate: Fraction | None  #: average frame rate
    codec: str


def _open(path: str):
    import av

    try:
        return av.open(path, metadata_errors="ignore")
    except av.error.InvalidDataError as error:
        raise VideoError(f"not a video (FFmpeg: {error.strerror or error})") from None
    except av.error.FFmpegError as error:
        raise VideoError(f"cannot be opened as a video (FFmpeg: {error.strerror or error})") from None


def _video_stream(container):
    if not container.streams.video:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
        raise VideoError(f"no video stream (streams: {kinds})")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        import av

        raise VideoError(f"the video stream's codec cannot be decoded by this build (PyAV {av.__version__})")
    return stream


def probe(path: str) -> VideoInfo:
    """The first video stream's size, frame count and rate, read from the header."""
    with _open(path) as container:
        stream = _video_stream(container)
        context = stream.codec_context
        if not context.width or not context.height:
            raise VideoError("the video stream has no frame size in its header")
        rate = stream.average_rate or stream.guessed_rate
        frames = stream.frames
        if not frames and rate and container.duration:  # Matroska's header has no frame count: estimated
            frames = round(container.duration / 1e6 * rate)
        return VideoInfo(context.width, context.height, frames or 0, rate, context.name)


@dataclass
class Transcoded:
    """What :func:`transcode` did."""

    frames: int = 0
    seconds: float = 0.0
    copied: list[str] = field(default_factory=list)  #: "audio (aac)", "subtitle (subrip)"
    left_out: list[str] = field(default_factory=list)  #: streams the container does not take


def _copy_streams(source, output, container: str, result: Transcoded) -> dict:
    """Output streams for the source's audio and subtitle streams the container takes."""
    mapping = {}
    for stream in [*source.streams.audio, *source.streams.subtitles]:
        codec = stream.codec_context.name if stream.codec_context is not None else "unknown"
        label = f"{stream.type} #{stream.index} ({codec})"
        if stream.type == "subtitle" and codec not in SUBTITLE_CODECS[container]:
            result.left_out.append(label)
            continue
        try:
            mapping[stream.index] = output.add_stream_from_template(stream)
        except ValueError:
            result.left_out.append(label)
            continue
        result.copied.append(label)
    return mapping


def transcode(
    path: str,
    out: str,
    upscale: Callable[[list[np.ndarray]], list[np.ndarray]],
    size: tuple[int, int],
    settings: VideoSettings,
    *,
    batch: int = 4,
    progress: Callable[[int], None] | None = None,
) -> Transcoded:
    """Decode ``path``'s first video stream, ``upscale`` its frames ``batch`` at a time (RGB
    ``uint8`` arrays, returned as ``size`` ``(width, height)`` arrays), encode them into
    ``out`` with their timestamps, copying audio and subtitle streams. ``progress(n)`` after
    each batch of ``n`` frames. A corrupt packet raises :class:`VideoError` naming its frame."""
    import av

    result = Transcoded()
    start = time.perf_counter()
    with _open(path) as source:
        video = _video_stream(source)
        video.thread_type = "AUTO"
        rate = video.average_rate or video.guessed_rate or Fraction(25)
        with av.open(out, "w", format=CONTAINERS[settings.container]) as output:
            encoder = output.add_stream(settings.codec, rate=rate)
            encoder.width, encoder.height = size
            encoder.pix_fmt = settings.pix_fmt
            encoder.time_base = video.time_base
            encoder.codec_context.time_base = video.time_base
            if settings.codec in CRF_CODECS:
                encoder.options = {"crf": str(settings.crf)}
            copies = _copy_streams(source, output, settings.container, result)
            pending: list = []

            def flush() -> None:
                if not pending:
                    return
                images = upscale([frame.to_ndarray(format="rgb24") for frame in pending])
                for frame, image in zip(pending, images, strict=True):
                    new = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                    new.pts, new.time_base, new.duration = frame.pts, frame.time_base, frame.duration
                    for packet in encoder.encode(new):
                        output.mux(packet)
                result.frames += len(pending)
                if progress is not None:
                    progress(len(pending))
                pending.clear()

            decoded = 0
            for packet in source.demux(video, *(s for s in source.streams if s.index in copies)):
                if packet.stream.index != video.index:
                    if packet.dts is not None:
                        packet.stream = copies[packet.stream.index]
                        output.mux(packet)
                    continue
                try:
                    frames = packet.decode()
                except av.error.FFmpegError as error:
                    raise VideoError(f"corrupt data at frame {decoded + 1} (FFmpeg: {error.strerror or error}); "
                                     "the video was not written") from None  # fmt: skip
                for frame in frames:
                    decoded += 1
                    if frame.is_corrupt:
                        raise VideoError(f"corrupt data at frame {decoded} (the decoder marked it corrupt); the "
                                         "video was not written")  # fmt: skip
                    pending.append(frame)
                    if len(pending) >= batch:
                        flush()
            flush()
            for packet in encoder.encode(None):
                output.mux(packet)
    if not result.frames:
        raise VideoError("the video stream holds no frame")
    result.seconds = time.perf_counter() - start
    return result
