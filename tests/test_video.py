"""Videos in ``esc upscale`` (esc_arch/io/video.py, esc_arch/commands/video.py), run in this
process through ``esc_main`` on tiny videos made here with PyAV from a real photograph:
frames, rate, timestamps (variable too), duration, audio and subtitles kept; the lossless
output equal to ``esc upscale`` of each decoded frame; the default H.264 within a PSNR; bad
videos one line each, nothing left under the output's name."""

from __future__ import annotations

import math
import re
from fractions import Fraction

import cv2
import numpy as np
import pytest

av = pytest.importorskip("av")

FRAMES, WIDTH, HEIGHT, RATE = 12, 40, 32, 24
AUDIO_RATE, AUDIO_SECONDS = 16000, 0.5
#: PSNR floor of the default output (H.264 at --crf 18 in yuv420p: chroma at half resolution)
#: against ``esc upscale`` of each decoded input frame, with the trained ESC-light x2 of
#: tests/data (38 to 41 dB measured; a random network's noise-like output does not compress).
H264_FLOOR_DB = 35.0


def _photo_frames(image_dir) -> list[np.ndarray]:
    """12 RGB frames of 40x32: a window moving across the bird photograph."""
    rgb = cv2.imread(str(image_dir / "val" / "bird.png"))[..., ::-1]
    return [np.ascontiguousarray(rgb[40 + 3 * i : 40 + 3 * i + HEIGHT, 50 + 4 * i : 50 + 4 * i + WIDTH])
            for i in range(FRAMES)]  # fmt: skip


def make_video(path, frames, *, codec="libx264", pix_fmt="yuv420p", pts=None, time_base=Fraction(1, RATE),
               audio=True, subtitles=None, fmt=None):  # fmt: skip
    """Write ``frames`` (RGB) with timestamps ``pts`` (in ``time_base``; default one per frame),
    an AAC mono tone of AUDIO_SECONDS, and the subtitle packets of the .srt file ``subtitles``."""
    with av.open(str(path), "w", format=fmt) as out:
        video = out.add_stream(codec, rate=RATE)
        video.width, video.height, video.pix_fmt = frames[0].shape[1], frames[0].shape[0], pix_fmt
        video.time_base = video.codec_context.time_base = time_base
        sound = None
        if audio:
            sound = out.add_stream("aac", rate=AUDIO_RATE)
            sound.layout = "mono"
        source = av.open(str(subtitles)) if subtitles else None
        text = out.add_stream_from_template(source.streams.subtitles[0]) if source else None
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = (pts[index] if pts else index), time_base
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if sound is not None:
            samples = int(AUDIO_RATE * AUDIO_SECONDS)
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / AUDIO_RATE)).astype(np.float32)[None]
            for start in range(0, samples, 1024):
                chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, start : start + 1024]), format="flt",
                                                   layout="mono")  # fmt: skip
                chunk.sample_rate, chunk.pts = AUDIO_RATE, start
                for packet in sound.encode(chunk):
                    out.mux(packet)
            for packet in sound.encode():
                out.mux(packet)
        if source is not None:
            for packet in source.demux(source.streams.subtitles[0]):
                if packet.dts is not None:
                    packet.stream = text
                    out.mux(packet)
            source.close()
    return path


def _corrupt(path, frame: int):
    """``path`` with the bytes of the middle of the video packet of ``frame`` (0-based) flipped."""
    with av.open(str(path)) as source:
        packets = [(p.pos, p.size) for p in source.demux(video=0) if p.size]
    pos, size = packets[frame]
    data = bytearray(path.read_bytes())
    for k in range(pos + size // 4, pos + size // 4 + size // 3):
        data[k] ^= 0x5A
    bad = path.with_name("corrupt" + path.suffix)
    bad.write_bytes(bytes(data))
    return bad


@pytest.fixture(scope="module")
def videos(tmp_path_factory, image_dir):
    folder = tmp_path_factory.mktemp("videos")
    frames = _photo_frames(image_dir)
    make_video(folder / "clip.mp4", frames)
    make_video(folder / "short.mp4", frames[:2])
    steps = [0]
    for index in range(1, FRAMES):
        steps.append(steps[-1] + (60 if index % 3 else 25))  # ms: 16.7 fps and 40 fps in turn
    make_video(folder / "vfr.mp4", frames, pts=steps, time_base=Fraction(1, 1000))
    make_video(folder / "lossless.mkv", frames, codec="ffv1", pix_fmt="bgr0")
    srt = folder / "subs.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:00,200\nhello\n\n2\n00:00:00,250 --> 00:00:00,450\nbird\n")
    make_video(folder / "subtitled.mkv", frames, codec="ffv1", pix_fmt="bgr0", subtitles=srt)
    bad = folder / "bad"
    bad.mkdir()
    (bad / "notes.mp4").write_text("not a video")
    with av.open(str(bad / "audio_only.mp4"), "w") as out:  # an audio stream alone
        sound = out.add_stream("aac", rate=AUDIO_RATE)
        sound.layout = "mono"
        chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt", layout="mono")
        chunk.sample_rate, chunk.pts = AUDIO_RATE, 0
        for packet in [*sound.encode(chunk), *sound.encode()]:
            out.mux(packet)
    mjpeg = make_video(folder / "mjpeg.avi", frames, codec="mjpeg", pix_fmt="yuvj420p", audio=False)
    (bad / "unknown_codec.avi").write_bytes(mjpeg.read_bytes().replace(b"MJPG", b"ZZZZ"))  # a FourCC no one decodes
    corrupt = _corrupt(folder / "lossless.mkv", 6)
    corrupt.rename(bad / "corrupt.mkv")
    big = [np.zeros((2064, 2056, 3), np.uint8)]
    make_video(bad / "big.mp4", big, audio=False)  # x2: 4112x4128, over the whole-image limit without --tile
    return folder


def decode(path, stream="video"):
    with av.open(str(path)) as container:
        if stream == "video":
            return [(f.to_ndarray(format="rgb24"), f.pts * f.time_base) for f in container.decode(video=0)]
        return [f for f in container.decode(audio=0)]


def info(path) -> dict:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        return {
            "duration": container.duration / 1e6,
            "rate": video.average_rate,
            "codec": video.codec_context.name,
            "pix_fmt": video.codec_context.pix_fmt,
            "streams": [s.type for s in container.streams],
        }


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def _esc_upscale_of_each_frame(esc_cli, frames, model, tmp_path) -> list[np.ndarray]:
    """``esc upscale`` of each decoded input frame, written as a PNG first."""
    folder, out = tmp_path / "frames", tmp_path / "frames_out"
    folder.mkdir()
    for index, (image, _) in enumerate(frames):
        cv2.imwrite(str(folder / f"{index:03d}.png"), image[..., ::-1])
    result = esc_cli("upscale", "-i", folder, "-o", out, "-m", model, "--suffix", "")
    assert result.returncode == 0, result.stderr
    return [cv2.imread(str(out / f"{index:03d}.png"))[..., ::-1] for index in range(len(frames))]


def test_default_output_keeps_frames_rate_duration_and_audio(esc_cli, videos, tiny_model, tmp_path):
    result = esc_cli("upscale", "-i", videos / "clip.mp4", "-o", tmp_path / "out", "-m", tiny_model)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out" / "clip_custom_x2.mp4"
    assert f"{videos / 'clip.mp4'}: 12 frames 40x32 -> 80x64 in " in result.stderr
    assert f"fps), libx264 yuv420p, copied audio #1 (aac) -> {out}" in result.stderr
    assert "0 image(s) and 1 video(s)" in result.stderr and result.stderr.splitlines()[-1] == "1 upscaled, 0 failed"
    # the progress bar: frames done of the total, elapsed < remaining (the ETA), the rate
    assert re.search(r"clip\.mp4: +100%\S* 12/12 \[\d\d:\d\d<00:00, +[\d.]+(frame/s|s/frame)\]", result.stderr)
    source, output = decode(videos / "clip.mp4"), decode(out)
    assert len(output) == FRAMES and output[0][0].shape == (2 * HEIGHT, 2 * WIDTH, 3)
    assert [t for _, t in output] == [t for _, t in source]  # every timestamp
    before, after = info(videos / "clip.mp4"), info(out)
    assert after["rate"] == RATE and (after["codec"], after["pix_fmt"]) == ("h264", "yuv420p")
    assert after["duration"] == pytest.approx(before["duration"], abs=1e-3)
    assert sum(f.samples for f in decode(out, "audio")) == sum(f.samples for f in decode(videos / "clip.mp4", "audio"))


@pytest.mark.slow  # the trained ESC-light twice (the quick tier: the lossless equality below)
def test_default_h264_output_is_within_a_psnr_of_esc_upscale_of_each_frame(esc_cli, videos, data_dir, tmp_path):
    model = data_dir / "ESC-light_x2_small.pth"
    result = esc_cli("upscale", "-i", videos / "short.mp4", "-o", tmp_path / "out", "-m", model, "--suffix", "")
    assert result.returncode == 0, result.stderr
    source, output = decode(videos / "short.mp4"), decode(tmp_path / "out" / "short.mp4")
    expected = _esc_upscale_of_each_frame(esc_cli, source, model, tmp_path)
    scores = [_psnr(frame, reference) for (frame, _), reference in zip(output, expected, strict=True)]
    assert len(scores) == 2 and min(scores) >= H264_FLOOR_DB, scores


def test_lossless_output_equals_esc_upscale_of_each_frame(esc_cli, videos, tiny_model, tmp_path):
    """FFV1 in bgr0 (lossless RGB): with --batch 1 each frame is ``esc upscale`` of the decoded
    input frame, bit for bit; in batches of 5 the batched convolutions sum in another order, so
    a rare value rounds to the next level (at most 1, in under 0.1% of the values)."""
    source = decode(videos / "lossless.mkv")
    expected = np.stack(_esc_upscale_of_each_frame(esc_cli, source, tiny_model, tmp_path)).astype(int)
    for batch in ("1", "5"):
        result = esc_cli("upscale", "-i", videos / "lossless.mkv", "-o", tmp_path / batch, "-m", tiny_model,
                         "--codec", "ffv1", "--pix-fmt", "bgr0", "--container", "mkv", "--batch", batch)  # fmt: skip
        assert result.returncode == 0, result.stderr
        output = np.stack([frame for frame, _ in decode(tmp_path / batch / "lossless_custom_x2.mkv")]).astype(int)
        assert output.shape == (FRAMES, 2 * HEIGHT, 2 * WIDTH, 3)
        difference = np.abs(output - expected)
        if batch == "1":
            assert not difference.any(), f"{np.count_nonzero(difference)} values differ"
        else:
            assert difference.max() <= 1 and np.count_nonzero(difference) < 1e-3 * difference.size


def test_variable_frame_rate_keeps_every_timestamp(esc_cli, videos, tiny_model, tmp_path):
    result = esc_cli("upscale", "-i", videos / "vfr.mp4", "-o", tmp_path, "-m", tiny_model, "--suffix", "_sr")
    assert result.returncode == 0, result.stderr
    source, output = decode(videos / "vfr.mp4"), decode(tmp_path / "vfr_sr.mp4")
    stamps = [t for _, t in output]
    assert stamps == [t for _, t in source] and len(set(np.diff([float(t) for t in stamps]).round(3))) == 2
    assert info(tmp_path / "vfr_sr.mp4")["duration"] == pytest.approx(info(videos / "vfr.mp4")["duration"], abs=0.01)
    samples = [sum(f.samples for f in decode(path, "audio")) for path in (videos / "vfr.mp4", tmp_path / "vfr_sr.mp4")]
    assert samples[0] == samples[1] >= AUDIO_RATE * AUDIO_SECONDS


def test_subtitles_are_copied_into_mkv_and_left_out_of_mp4_with_a_note(esc_cli, videos, tiny_model, tmp_path):
    mkv = esc_cli("upscale", "-i", videos / "subtitled.mkv", "-o", tmp_path / "mkv", "-m", tiny_model,
                  "--container", "mkv")  # fmt: skip
    assert mkv.returncode == 0 and "copied audio #1 (aac), subtitle #2 (srt)" in mkv.stderr, mkv.stderr
    assert info(tmp_path / "mkv" / "subtitled_custom_x2.mkv")["streams"] == ["video", "audio", "subtitle"]
    with av.open(str(tmp_path / "mkv" / "subtitled_custom_x2.mkv")) as container:
        texts = [bytes(p).decode() for p in container.demux(subtitles=0) if p.size]
    assert texts == ["hello", "bird"]
    mp4 = esc_cli("upscale", "-i", videos / "subtitled.mkv", "-o", tmp_path / "mp4", "-m", tiny_model)
    assert mp4.returncode == 0, mp4.stderr
    assert (f"esc: note: {videos / 'subtitled.mkv'}: left out subtitle #2 (srt): the mp4 container does not take "
            "that codec (--container mkv takes more)") in mp4.stderr.splitlines()  # fmt: skip
    assert info(tmp_path / "mp4" / "subtitled_custom_x2.mp4")["streams"] == ["video", "audio"]


BAD = {
    "notes.mp4": "not a video (FFmpeg: Invalid data found when processing input)",
    "audio_only.mp4": "no video stream (streams: audio)",
    "unknown_codec.avi": f"the video stream's codec cannot be decoded by this build (PyAV {av.__version__})",
    "corrupt.mkv": "corrupt data at frame 7 (FFmpeg: Invalid data found when processing input); the video was not "
    "written",
    "big.mp4": "the output would be 4112x4128 pixels, more than the whole-image limit of 16,777,216 (4096x4096); "
    "use --tile (e.g. --tile 256)",
}


def test_a_bad_video_is_one_line_and_leaves_nothing(esc_cli, videos, tiny_model, tmp_path):
    """Each bad video fails alone (the others of the run go on); a corrupt packet stops its
    file at the frame it is in: nothing is written under the output's name, nor left beside it."""
    out = tmp_path / "out"
    result = esc_cli("upscale", "-i", videos / "bad", videos / "clip.mp4", "-o", out, "-m", tiny_model,
                     "--codec", "ffv1", "--pix-fmt", "bgr0", "--container", "mkv")  # fmt: skip
    assert result.returncode == len(BAD), result.stderr
    for name, reason in BAD.items():
        assert f"failed: {videos / 'bad' / name}: {reason}" in result.stderr.splitlines(), (name, result.stderr)
    assert result.stderr.splitlines()[-1] == f"1 upscaled, {len(BAD)} failed"
    assert sorted(p.name for p in out.iterdir()) == ["clip_custom_x2.mkv"]


def test_an_interrupted_video_leaves_no_file(esc_cli, videos, tiny_model, tmp_path, monkeypatch):
    from esc_arch.commands import video

    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return upscale_frames(*args, **kwargs)

    upscale_frames = video.upscale_frames
    monkeypatch.setattr(video, "upscale_frames", interrupted)
    result = esc_cli("upscale", "-i", videos / "clip.mp4", "-o", tmp_path / "out", "-m", tiny_model)
    assert result.returncode == 130
    assert result.stderr.splitlines()[-1] == (f"esc: interrupted while upscaling {videos / 'clip.mp4'} (not "
                                              "written); 0 upscaled, 0 failed")  # fmt: skip
    assert list((tmp_path / "out").iterdir()) == []


def test_an_existing_output_is_refused_without_overwrite(esc_cli, videos, tiny_model, tmp_path):
    args = ["upscale", "-i", videos / "clip.mp4", "-o", tmp_path, "-m", tiny_model, "--suffix", "_sr"]
    (tmp_path / "clip_sr.mp4").write_bytes(b"an earlier file")
    result = esc_cli(*args)
    assert result.returncode == 2 and result.stderr.splitlines() == [
        f"esc: error: 1 output(s) exist already: {tmp_path / 'clip_sr.mp4'}; pass --overwrite to replace them, or "
        "choose another -o or --suffix"
    ]  # fmt: skip
    assert esc_cli(*args, "--overwrite").returncode == 0 and len(decode(tmp_path / "clip_sr.mp4")) == FRAMES


@pytest.mark.parametrize(
    ("option", "reason"),
    [
        (["--codec", "nope"], "--codec nope: this build of PyAV has no such video encoder"),
        (["--codec", "aac"], "--codec aac: not a video encoder (audio)"),
        (["--pix-fmt", "rgb24"], "--pix-fmt rgb24: libx264 encodes yuv420p, "),
        (["--crf", "99"], "--crf 99: must be 0 to 63"),
        (["--batch", "0"], "--batch 0: must be a positive number of frames"),
        (
            ["--codec", "ffv1", "--pix-fmt", "bgr0", "--container", "mov"],
            "--codec ffv1: the mov container does not take it ('mov' format does not support 'ffv1' codec)",
        ),  # fmt: skip
    ],
)
def test_video_options_are_checked_before_any_work(option, reason, esc_cli, videos, tiny_model, tmp_path):
    result = esc_cli("upscale", "-i", videos / "clip.mp4", "-o", tmp_path / "out", "-m", tiny_model, *option)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"esc: error: {reason}")
    assert not (tmp_path / "out").exists()


def test_a_folder_lists_its_videos(esc_cli, videos, tiny_model, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "clip.mp4").write_bytes((videos / "clip.mp4").read_bytes())
    cv2.imwrite(str(folder / "still.png"), _photo_frames_cached(videos))
    (folder / "notes.txt").write_text("not an image")
    result = esc_cli("upscale", "-i", folder, "-o", tmp_path / "out", "-m", tiny_model, "--suffix", "")
    assert result.returncode == 0, result.stderr
    assert "; videos are .mp4 .m4v .mkv .mov .avi .webm" in result.stderr.splitlines()[0]
    assert "1 image(s) and 1 video(s)" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip.mp4", "still.png"]


def _photo_frames_cached(videos) -> np.ndarray:
    return decode(videos / "lossless.mkv")[0][0][..., ::-1].copy()


@pytest.mark.parametrize("batch", [4, 5])
def test_frames_reach_the_network_one_batch_at_a_time(batch, videos, tmp_path):
    """At most ``batch`` frames are held: the upscaler gets batches of that size, in order."""
    from esc_arch.io.video import VideoSettings, transcode

    seen = []

    def double(frames):
        seen.append(len(frames))
        return [np.repeat(np.repeat(f, 2, axis=0), 2, axis=1) for f in frames]

    settings = VideoSettings(codec="ffv1", pix_fmt="bgr0", container="mkv")
    done = transcode(str(videos / "lossless.mkv"), str(tmp_path / "x.mkv"), double, (80, 64), settings, batch=batch)
    assert done.frames == FRAMES and sum(seen) == FRAMES
    assert seen == [batch] * (FRAMES // batch) + ([FRAMES % batch] if FRAMES % batch else [])
    source, output = decode(videos / "lossless.mkv"), decode(tmp_path / "x.mkv")
    for (a, _), (b, _) in zip(source, output, strict=True):
        assert np.array_equal(b[::2, ::2], a)


def test_mkv_output_is_shifted_by_the_copied_audios_priming_and_keeps_every_step(esc_cli, videos, tiny_model,
                                                                                 tmp_path):  # fmt: skip
    """Matroska starts no stream before 0: the AAC track of clip.mp4 starts before its video (the
    encoder's priming samples), so every stream of the .mkv output is shifted by that much."""
    result = esc_cli("upscale", "-i", videos / "clip.mp4", "-o", tmp_path, "-m", tiny_model, "--container", "mkv")
    assert result.returncode == 0, result.stderr
    with av.open(str(videos / "clip.mp4")) as container:
        priming = -next(p.pts * p.time_base for p in container.demux(audio=0) if p.pts is not None)
    source, output = decode(videos / "clip.mp4"), decode(tmp_path / "clip_custom_x2.mkv")
    assert priming > 0 and float(output[0][1]) == pytest.approx(float(priming), abs=1e-3)
    steps = [float((a - output[0][1]) - (b - source[0][1])) for (_, a), (_, b) in zip(output, source, strict=True)]
    assert len(output) == FRAMES and max(map(abs, steps)) <= 1e-3  # Matroska keeps milliseconds
