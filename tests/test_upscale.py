"""``esc upscale`` (esc_arch/upscale.py, esc_arch/imageio.py) on every image kind, run in this
process through ``esc_main`` (tests/test_cli.py runs the console script itself)."""

import os

import cv2
import numpy as np
import pytest
from PIL import Image

from esc_arch.io.imageio import read_image


@pytest.fixture(scope="module")
def images(tmp_path_factory, image_dir):
    """One file of every kind esc upscale handles, made from a real photograph, plus bad files."""
    folder = tmp_path_factory.mktemp("images")
    bird = cv2.imread(str(image_dir / "val/bird.png"))[40:88, 60:124]  # 48x64 BGR
    cv2.imwrite(str(folder / "rgb8.png"), bird)
    cv2.imwrite(str(folder / "rgb16.png"), bird.astype(np.uint16) * 257)
    cv2.imwrite(str(folder / "gray.png"), cv2.cvtColor(bird, cv2.COLOR_BGR2GRAY))
    alpha = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (48, 1))
    cv2.imwrite(str(folder / "rgba.png"), np.dstack([bird, alpha]))
    rgb = Image.fromarray(cv2.cvtColor(bird, cv2.COLOR_BGR2RGB))
    rgb.quantize(colors=32).save(folder / "palette.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    rgb.save(folder / "rotated.jpg", exif=exif, quality=95)
    (folder / "empty.png").write_bytes(b"")
    data = (folder / "rgb8.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "notes.jpg").write_text("not an image")
    return folder


def test_upscale_every_image_kind(esc_cli, images, tiny_model, tmp_path):
    out = tmp_path / "out"
    result = esc_cli("upscale", "-i", images, "-o", out, "-m", tiny_model, "--suffix", "_sr")
    assert result.returncode == 3, result.stderr  # empty, truncated, not an image
    for bad in ("empty.png", "truncated.png", "notes.jpg"):
        assert f"failed: {images / bad}" in result.stderr
    assert "6 upscaled, 3 failed" in result.stderr
    assert "on cpu, fp32, attention sdpa (auto), tile none" in result.stderr  # the backend that runs

    def read(name):
        return cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)

    assert read("rgb8_sr.png").shape == (96, 128, 3) and read("rgb8_sr.png").dtype == np.uint8
    assert read("rgb16_sr.png").dtype == np.uint16 and read("rgb16_sr.png").max() > 255
    assert read("gray_sr.png").shape == (96, 128)
    rgba = read("rgba_sr.png")
    assert rgba.shape == (96, 128, 4)
    assert abs(int(rgba[:, 0, 3].mean()) - 0) <= 3 and abs(int(rgba[:, -1, 3].mean()) - 255) <= 3  # alpha resized
    assert read("palette_sr.png").shape == (96, 128, 3)
    assert read("rotated_sr.jpg").shape == (128, 96, 3)  # EXIF orientation applied: portrait
    # the 8-bit and 16-bit files agree
    assert np.abs(read("rgb16_sr.png") / 257.0 - read("rgb8_sr.png")).max() <= 1.5


def test_upscale_never_overwrites_inputs(esc_cli, images, tiny_model, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes((images / "rgb8.png").read_bytes())
    before = (folder / "a.png").read_bytes()
    result = esc_cli("upscale", "-i", folder / "*.png", "-o", folder, "-m", tiny_model, "--suffix", "")
    assert result.returncode == 1 and "would overwrite an input" in result.stderr
    assert (folder / "a.png").read_bytes() == before


@pytest.mark.slow  # the full ESC on a 256x256 photograph, twice (the quick tier: tests/test_inference.py)
def test_upscale_tiled_matches_whole_image(esc_cli, data_dir, image_dir, tmp_path):
    (tmp_path / "b.png").write_bytes((image_dir / "val/butterfly.png").read_bytes())  # 256x256: 4x4 tiles of 64
    model = data_dir / "esc_x2_eval.pth"
    for name, extra in (("whole", []), ("tiled", ["--tile", "64", "--tile-overlap", "64"])):
        result = esc_cli(
            "upscale", "-i", tmp_path / "b.png", "-o", tmp_path / name, "-m", model, "--suffix", "", *extra
        )
        assert result.returncode == 0, result.stderr
    whole = cv2.imread(str(tmp_path / "whole/b.png")).astype(np.float64)
    tiled = cv2.imread(str(tmp_path / "tiled/b.png")).astype(np.float64)
    psnr = 10 * np.log10(255**2 / max(((whole - tiled) ** 2).mean(), 1e-12))
    assert whole.shape == (512, 512, 3) and psnr >= 50


def test_upscale_bad_model_and_input_messages(esc_cli, tmp_path, tiny_model):
    result = esc_cli("upscale", "-i", tmp_path / "nothing*.png", "-o", tmp_path, "-m", tiny_model)
    assert result.returncode == 2 and "no input matches" in result.stderr
    result = esc_cli("upscale", "-i", "x.png", "-o", tmp_path, "-m", "missing.pth")
    assert result.returncode == 2 and "checkpoint 'missing.pth' does not exist" in result.stderr
    result = esc_cli("upscale", "-i", "x.png", "-o", tmp_path, "-m", tiny_model, "--attn-type", "flash")
    assert result.returncode == 2 and "attn_type='flash'" in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.glob("*.png"))  # stopped before any image


def test_read_image_applies_exif_orientation(images):
    assert read_image(str(images / "rotated.jpg")).shape == (64, 48, 3)
    assert read_image(str(images / "palette.png")).shape == (48, 64, 3)


@pytest.fixture
def looped(image_dir, tmp_path):
    """A folder of 3 photographs (one at the top, one in each of a/ and b/) with two symlink
    loops (a/up -> .., b/again -> ../b) and a second way into a/ (b/to_a -> ../a)."""
    root = tmp_path / "looped"
    for sub in ("a", "b"):
        (root / sub).mkdir(parents=True)
    for name in ("t1.png", "a/t15.png", "b/t29.png"):
        (root / name).write_bytes((image_dir / "train" / name.split("/")[-1]).read_bytes())
    (root / "a/up").symlink_to("..")
    (root / "b/again").symlink_to("../b")
    (root / "b/to_a").symlink_to("../a")
    return root


def test_symlink_loops_list_each_image_once(looped):
    from esc_arch.io.imageio import collect_inputs, image_paths

    warnings = []
    assert image_paths(str(looped), warn=warnings.append) == [
        str(looped / "a/t15.png"), str(looped / "b/t29.png"), str(looped / "t1.png"),
    ]  # fmt: skip
    assert sorted(warnings) == [
        f"{looped}/a/up leads back to {looped} (a symlink loop); its images are listed once",
        f"{looped}/b/again leads back to {looped}/b (a symlink loop); its images are listed once",
        f"{looped}/b/to_a leads back to {looped}/a (a second way into it); its images are listed once",
    ]
    assert sorted(collect_inputs([f"{looped}/**/*.png"], warn=lambda _: None)) == image_paths(str(looped))


def test_upscale_a_recursive_pattern_through_symlink_loops(esc_cli, looped, tiny_model, tmp_path):
    result = esc_cli("upscale", "-i", f"{looped}/**/*.png", "-o", tmp_path / "out", "-m", tiny_model)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "t15_custom_x2.png", "t1_custom_x2.png", "t29_custom_x2.png",
    ]  # fmt: skip
    assert result.stderr.count("esc: warning: ") == 3 and "3 upscaled, 0 failed" in result.stderr


def test_a_dataset_through_symlink_loops_has_each_image_once(looped, caplog):
    from esc_arch.basicsr_plugin.data import DownsampleImageDataset

    dataset = DownsampleImageDataset({"dataroot_gt": str(looped), "scale": 2, "phase": "val", "name": "loop"})
    assert len(dataset) == 3 and "a symlink loop" in caplog.text


def test_an_existing_output_is_replaced_only_with_overwrite(esc_cli, images, tiny_model, tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "photo.jpg").write_bytes((images / "rotated.jpg").read_bytes())
    (folder / "photo.png").write_bytes((images / "rgb8.png").read_bytes())  # another picture, not an input
    before = (folder / "photo.png").read_bytes()
    args = ["upscale", "-i", folder / "photo.jpg", "-o", folder, "-m", tiny_model, "--suffix", "", "--format", "png"]
    result = esc_cli(*args)
    assert result.returncode == 2 and (folder / "photo.png").read_bytes() == before
    assert f"1 output(s) exist already: {folder / 'photo.png'}; pass --overwrite" in result.stderr
    result = esc_cli(*args, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert cv2.imread(str(folder / "photo.png")).shape == (128, 96, 3)  # the upscaled photo.jpg


def test_a_file_name_that_is_not_utf8_is_processed(esc_cli, image_dir, tiny_model, tmp_path):
    """OpenCV 5.1 crashes (segmentation fault) on such a path; images go to it as bytes only."""
    import os

    folder = tmp_path / "in"
    folder.mkdir()
    name = os.fsdecode(b"latin1_\xe9.png")  # a surrogate escape: not valid UTF-8 on disk
    photo = (image_dir / "train/t1.png").read_bytes()
    (folder / name).write_bytes(photo)
    (folder / "plain.png").write_bytes(photo)
    result = esc_cli("upscale", "-i", folder, "-o", tmp_path / "out", "-m", tiny_model, "--suffix", "")
    assert result.returncode == 0 and "2 upscaled, 0 failed" in result.stderr, result.stderr
    assert sorted(os.listdir(tmp_path / "out")) == sorted([name, "plain.png"])
    assert (read_image(str(tmp_path / "out" / name)) == read_image(str(tmp_path / "out/plain.png"))).all()


# --------------------------------------------------------------------------- one list of formats, outputs kept apart


@pytest.fixture
def still_and_animated(images, tmp_path):
    """``stills/`` (a still GIF and a PPM of a real photograph) and ``mixed/`` (a PNG, an
    animated GIF, a text file and another run's temporary)."""
    rgb = Image.open(images / "rgb8.png").convert("RGB")
    (tmp_path / "stills").mkdir()
    rgb.save(tmp_path / "stills/still.gif")
    rgb.save(tmp_path / "stills/photo.ppm")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    rgb.save(mixed / "a.png")
    rgb.save(mixed / "anim.gif", save_all=True, append_images=[rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    (mixed / "notes.txt").write_text("not an image")
    (mixed / ".b.png.0a1b2c-4242-0123abcd.png").write_bytes(b"half an image")  # being written by another run
    return tmp_path


def test_a_folder_lists_the_formats_a_file_named_alone_is_read_in(esc_cli, still_and_animated, tiny_model, tmp_path):
    stills = still_and_animated / "stills"
    by_folder = esc_cli("upscale", "-i", stills, "-o", tmp_path / "by_folder", "-m", tiny_model, "--suffix", "")
    by_name = esc_cli("upscale", "-i", stills / "still.gif", stills / "photo.ppm", "-o", tmp_path / "by_name", "-m",
                      tiny_model, "--suffix", "")  # fmt: skip
    for result in (by_folder, by_name):
        assert result.returncode == 0 and "2 upscaled, 0 failed" in result.stderr, result.stderr
    assert sorted(p.name for p in (tmp_path / "by_folder").iterdir()) == ["photo.ppm", "still.gif"]


def test_a_folder_says_what_it_skipped_and_fails_an_animated_gif(esc_cli, still_and_animated, tiny_model, tmp_path):
    mixed = still_and_animated / "mixed"
    result = esc_cli("upscale", "-i", mixed, "-o", tmp_path / "out", "-m", tiny_model)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert f"esc: warning: {mixed}: skipped 1 file(s) of other formats (notes.txt); images are .png .jpg" in lines[0]
    assert "2 image(s)" in lines[1]
    assert f"failed: {mixed / 'anim.gif'}: animated or multi-page image (2 frames); only still images are " \
           "upscaled" in lines  # fmt: skip
    assert lines[-1] == "1 upscaled, 1 failed"


def test_outputs_in_the_input_folder_are_not_upscaled_again(esc_cli, images, tiny_model, tmp_path):
    """``-o`` the input folder: a second run leaves out the first run's outputs (x4 files
    otherwise), in one line, and finds its own output there already."""
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.png").write_bytes((images / "rgb8.png").read_bytes())
    args = ["upscale", "-i", folder, "-o", folder, "-m", tiny_model]
    assert esc_cli(*args).returncode == 0
    result = esc_cli(*args, "--overwrite")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == (f"esc: note: left out 1 file(s) of the output folder {folder} named as this run's outputs "
                        "(ending in _custom_x2): a_custom_x2.png")  # fmt: skip
    assert "1 image(s)" in lines[1] and lines[-1] == "1 upscaled, 0 failed"
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "a_custom_x2.png"]


# --------------------------------------------------------------------------- two runs, Ctrl-C


def test_an_output_that_appears_during_the_run_is_kept(esc_cli, images, tiny_model, tmp_path, monkeypatch):
    """Another run writes the same output after this run's check for existing outputs: its
    file is kept (this output counts as failed), never replaced without --overwrite."""
    import esc_arch.commands.upscale

    real = esc_arch.commands.upscale.upscale_image
    out = tmp_path / "out"

    def another_run_writes_first(*args, **kwargs):
        (out / "rgb8.png").write_bytes(b"another run's output")
        return real(*args, **kwargs)

    monkeypatch.setattr(esc_arch.commands.upscale, "upscale_image", another_run_writes_first)
    args = ["upscale", "-i", images / "rgb8.png", "-o", out, "-m", tiny_model, "--suffix", ""]
    result = esc_cli(*args)
    assert result.returncode == 1 and (out / "rgb8.png").read_bytes() == b"another run's output"
    assert result.stderr.splitlines()[-2:] == [
        f"failed: {images / 'rgb8.png'}: {out / 'rgb8.png'} was created by another writer while this output was "
        "written; it was kept and this output discarded",
        "0 upscaled, 1 failed",
    ]
    assert esc_cli(*args, "--overwrite").returncode == 0  # --overwrite: replaced
    assert cv2.imread(str(out / "rgb8.png")).shape == (96, 128, 3) and os.listdir(out) == ["rgb8.png"]


def test_ctrl_c_keeps_finished_outputs_and_removes_the_one_being_written(esc_cli, images, tiny_model, tmp_path,
                                                                          monkeypatch):  # fmt: skip
    import esc_arch.commands.upscale
    from esc_arch.io.fileio import atomic_path

    real = esc_arch.commands.upscale.write_image

    def interrupted_on_the_second(path, img, **kwargs):
        if "rgb8" not in path:
            return real(path, img, **kwargs)
        with atomic_path(path, suffix=".png", replace=False) as tmp, open(tmp, "wb") as f:
            f.write(b"half an image")
            raise KeyboardInterrupt

    monkeypatch.setattr(esc_arch.commands.upscale, "write_image", interrupted_on_the_second)
    out = tmp_path / "out"
    try:
        result = esc_cli("upscale", "-i", images / "gray.png", images / "rgb8.png", images / "rgba.png", "-o", out,
                         "-m", tiny_model, "--suffix", "")  # fmt: skip
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C ended esc upscale with a traceback")
    assert result.returncode == 130
    assert result.stderr.splitlines()[-1] == (f"esc: interrupted while upscaling {images / 'rgb8.png'} (not written); "
                                              "1 upscaled, 0 failed")  # fmt: skip
    assert os.listdir(out) == ["gray.png"]  # the finished output, and nothing under any other name
