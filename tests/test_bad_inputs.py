"""Bad inputs on the inference side: ``esc upscale``, ``esc export`` and ``load_model``.

Every bad input gives one line naming the culprit (a file or an option): ``esc: error: ...``
with exit status 2 for a bad argument or checkpoint (checked before any image is touched),
``failed: FILE: ...`` for one image of a batch (reported, skipped, the batch goes on; the exit
status is the number of failed files). Commands run in this process through ``esc_main``.
Inputs are made on the fly, images from the real photographs in ``tests/data/images``.
"""

from __future__ import annotations

import hashlib
import re
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from esc_arch import ESC, load_model
from esc_arch.cli import esc_main

DATA = Path(__file__).parent / "data"
TINY = dict(dim=16, pdim=8, kernel_size=5, n_blocks=1, conv_blocks=2, window_size=8, num_heads=2, exp_ratio=1.25)


def _tiny_state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = ESC(**TINY, upscaling_factor=2)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return {k: v.clone() for k, v in net.state_dict().items()}


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width x height`` RGB pixels, with almost no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def _png_gray_alpha(path: Path, img: np.ndarray) -> None:
    """Write ``img`` (H, W, 2) uint8/uint16 as a gray + alpha PNG (colour type 4)."""
    height, width, _ = img.shape
    depth = 8 * img.dtype.itemsize
    rows = img.astype(">u2" if depth == 16 else np.uint8).reshape(height, -1).view(np.uint8)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()
    ihdr = struct.pack(">IIBBBBB", width, height, depth, 4, 0, 0, 0)
    body = _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def _png_ihdr(path: Path) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) of a PNG file."""
    data = Path(path).read_bytes()
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    return width, height, depth, colour


# --------------------------------------------------------------------------- the inputs


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Every input of the tables below, by name."""
    root = tmp_path_factory.mktemp("inputs")
    bird = cv2.imread(str(DATA / "images/val/bird.png"))[40:88, 60:124]  # 48x64 BGR, a real photograph
    paths: dict[str, Path] = {}

    def add(name: str) -> Path:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        paths[name.replace("/", "_").replace(".", "_")] = path
        return path

    # models
    sd = _tiny_state_dict()
    torch.save({"params_ema": sd}, add("tiny.pth"))
    paths["missing"] = root / "missing.pth"

    def crafted(name: str, change) -> None:
        bad = dict(sd)
        change(bad)
        torch.save({"params_ema": bad}, add(name))

    crafted("missing_key.pth", lambda d: d.pop("blocks.0.attn.to_qkv.weight"))
    crafted("wrong_shape.pth", lambda d: d.update({"blocks.0.attn.to_qkv.weight": torch.zeros(5, 16, 1, 1)}))
    crafted("bias_1d.pth", lambda d: d.update({"blocks.0.attn.relative_position_bias": torch.zeros(450)}))
    crafted("scalar_proj.pth", lambda d: d.update({"proj.weight": torch.tensor(1.0)}))
    crafted("block_20000.pth", lambda d: d.update({"blocks.20000.x": torch.zeros(1)}))
    # 100000 output channels claimed by a view of one stored number (a few bytes on disk)
    crafted("huge_dim.pth", lambda d: d.update({"proj.weight": torch.zeros(1).as_strided((100000, 3, 3, 3), (0,) * 4)}))
    crafted(
        "x16.pth", lambda d: d.update({"to_img.weight": torch.zeros(768, 16, 3, 3), "to_img.bias": torch.zeros(768)})
    )
    crafted("unexpected.pth", lambda d: d.update({"extra.weight": torch.zeros(3)}))

    def set_one(key: str, value: float):
        def change(d: dict) -> None:
            d[key] = d[key].clone()
            d[key].view(-1)[7] = value

        return change

    crafted("nan.pth", set_one("blocks.0.attn.to_qkv.weight", float("nan")))
    crafted("big_fp16.pth", set_one("proj.weight", 1e6))
    (root / "folder.pth").mkdir()
    paths["folder_pth"] = root / "folder.pth"
    add("notes.pth").write_text("these are my notes, not weights\n")
    add("photo.pth").write_bytes((DATA / "images/val/bird.png").read_bytes())
    add("empty.pth").write_bytes(b"")
    data = paths["tiny_pth"].read_bytes()
    add("trunc.pth").write_bytes(data[: len(data) // 2])
    from safetensors.torch import save

    data = save({k: v.contiguous() for k, v in sd.items()})
    add("trunc.safetensors").write_bytes(data[: len(data) - 100])
    inf = {k: v.contiguous().clone() for k, v in sd.items()}
    inf["to_img.bias"][1] = float("-inf")
    add("inf.safetensors").write_bytes(save(inf))
    crafted("int_key.pth", lambda d: d.update({7: torch.zeros(1)}))
    crafted("sparse.pth", lambda d: d.update({"to_img.bias": d["to_img.bias"].to_sparse()}))
    # a deflated zip whose 4 MB member of zeros is stored in 4 KB: a compression bomb
    import zipfile

    zeros = dict(sd, **{"proj.weight": torch.zeros(1_000_000)})
    torch.save({"params_ema": zeros}, root / "plain.pth")
    with zipfile.ZipFile(root / "plain.pth") as plain, zipfile.ZipFile(add("bomb.pth"), "w", zipfile.ZIP_DEFLATED) as z:
        for member in plain.infolist():
            z.writestr(member.filename, plain.read(member))
    # finite weights whose outputs are not: every weight x 1e30 (NaN out), to_img filled with 3e38 (Inf out)
    torch.save({"params_ema": {k: v * 1e30 if v.dim() > 1 else v for k, v in sd.items()}}, add("overflow.pth"))
    crafted("inf_out.pth", lambda d: d.update({"to_img.weight": torch.full_like(d["to_img.weight"], 3e38)}))
    # a release file beside its own checkpoint, and one taken by an earlier export
    add("src/custom_x2.pth").write_bytes(paths["tiny_pth"].read_bytes())
    add("taken/custom_x2.pth").write_bytes(paths["tiny_pth"].read_bytes())
    paths["src_dir"], paths["taken_dir"] = root / "src", root / "taken"

    # images
    cv2.imwrite(str(add("bird.png")), bird)
    cv2.imwrite(str(add("oom.png")), bird[:40, :40])
    cv2.imwrite(str(add("a/x.png")), bird)
    cv2.imwrite(str(add("b/x.png")), bird[:, ::-1])
    cv2.imwrite(str(add("y/y.png")), bird)
    cv2.imwrite(str(add("y/y.jpg")), bird)
    paths["y_dir"] = root / "y"
    gray = cv2.cvtColor(bird, cv2.COLOR_BGR2GRAY)
    alpha = np.tile(np.linspace(0, 255, 64), (48, 1)).round().astype(np.uint8)
    cv2.imwrite(str(add("gray8.png")), gray)
    cv2.imwrite(str(add("gray16.png")), gray.astype(np.uint16) * 257)
    _png_gray_alpha(add("la8.png"), np.dstack([gray, alpha]))
    _png_gray_alpha(add("la16.png"), np.dstack([gray, alpha]).astype(np.uint16) * 257)
    rgb = Image.fromarray(cv2.cvtColor(bird, cv2.COLOR_BGR2RGB))
    frames = [rgb, rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT), rgb.transpose(Image.Transpose.FLIP_TOP_BOTTOM)]
    frames[0].save(add("anim.gif"), save_all=True, append_images=frames[1:], duration=100, loop=0)
    _png_header_only(add("bomb.png"), 100_000, 100_000)
    # 2100x2100 -> 4200x4200 at x2: 17.6 megapixels, over the whole-image limit (4096x4096)
    cv2.imwrite(str(add("big.png")), cv2.resize(bird, (2100, 2100), interpolation=cv2.INTER_CUBIC))
    add("a_file.txt").write_text("a file, not a folder\n")
    return paths


def _args(template: list[str], files: dict[str, Path], tmp_path: Path) -> list[str]:
    names = {**{k: str(v) for k, v in files.items()}, "tmp": str(tmp_path)}
    return [part.format(**names) for part in template]


def _run(args: list[str], capsys) -> tuple[int, list[str]]:
    code = esc_main(args)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, [line for line in err.splitlines() if line.strip()]


# --------------------------------------------------------------------------- one table

# (command line with {file} placeholders, exit status, regex of the one error line).
# Options are checked before the model is read, so a bad option with a missing model (-m
# {missing}) names the option. Exit 2: the whole of stderr is that one line; otherwise it is
# the one "failed:" line of the batch.
BAD_INPUTS = {
    # esc upscale: options, before the model is loaded
    "upscale -o is a file": (["upscale", "-i", "{bird_png}", "-o", "{a_file_txt}", "-m", "{missing}"], 2,
                             r"esc: error: -o \S*a_file\.txt: exists and is not a folder"),
    "upscale -o cannot be created": (["upscale", "-i", "{bird_png}", "-o", "{a_file_txt}/out", "-m", "{missing}"], 2,
                                     r"esc: error: -o \S*a_file\.txt/out: cannot create the output folder"),
    "upscale --device gpu0": (["upscale", "-i", "{bird_png}", "-o", "{tmp}/out", "-m", "{missing}", "--device", "gpu0"],
                              2, r"esc: error: --device 'gpu0': not a device"),
    "upscale --device cuda:7": (["upscale", "-i", "{bird_png}", "-o", "{tmp}/out", "-m", "{missing}", "--device",
                                 "cuda:7"], 2, r"esc: error: --device 'cuda:7': "),
    "upscale --tile 0": (["upscale", "-i", "{bird_png}", "-o", "{tmp}/out", "-m", "{missing}", "--tile", "0"], 2,
                         r"esc: error: --tile 0: must be a positive number of input pixels"),
    "upscale --tile-overlap -1": (["upscale", "-i", "{bird_png}", "-o", "{tmp}/out", "-m", "{missing}", "--tile", "64",
                                   "--tile-overlap", "-1"], 2, r"esc: error: --tile-overlap -1: must be 0 or more"),
    "upscale overlap > tile": (["upscale", "-i", "{bird_png}", "-o", "{tmp}/out", "-m", "{missing}", "--tile", "8",
                                "--tile-overlap", "64"], 2, r"esc: error: --tile-overlap 64 is larger than --tile 8"),
    "upscale overlap without tile": (["upscale", "-i", "{bird_png}", "-o", "{tmp}/out", "-m", "{missing}",
                                      "--tile-overlap", "16"], 2, r"esc: error: --tile-overlap 16 .* without --tile"),
    "upscale fp16 on cpu": (["upscale", "-i", "{bird_png}", "-o", "{tmp}/out", "-m", "{missing}", "--device", "cpu",
                             "--precision", "fp16"], 2, r"esc: error: --precision fp16 needs a CUDA device"),
    "upscale --attn-type": (["upscale", "-i", "{bird_png}", "-o", "{tmp}/out", "-m", "{missing}", "--attn-type",
                             "bogus"], 2, r"esc: error: --attn-type 'bogus': must be one of"),
    "upscale --attn-type flash on cpu": (["upscale", "-i", "{bird_png}", "-o", "{tmp}/out", "-m", "{missing}",
                                          "--attn-type", "flash", "--device", "cpu"], 2,
                                         r"esc: error: --attn-type flash: attn_type='flash' .*CUDA"),
    "upscale --suffix path": (["upscale", "-i", "{bird_png}", "-o", "{tmp}/out", "-m", "{missing}", "--suffix",
                               "/../x"], 2, r"esc: error: --suffix '/\.\./x': must not contain a path separator"),
    "upscale --size superscripts": (["upscale", "-i", "{bird_png}", "-o", "{tmp}/out", "-m", "{missing}", "--size",
                                     "\u00b2x\u00b2"], 2,
                                    r"esc: error: --size '\u00b2x\u00b2': expected WIDTHxHEIGHT in pixels"),
    "upscale --scale 2.0000001 on x2": (["upscale", "-i", "{bird_png}", "-o", "{tmp}/out", "-m", "{tiny_pth}",
                                         "--scale", "2.0000001"], 2,
                                        r"esc: error: --scale 2\.0000001: custom is a fixed x2 network; other scales "
                                        r"need an arbitrary-scale model"),
    # esc upscale: outputs that would collide, refused before any image is read
    "upscale same stem in two folders": (["upscale", "-i", "{a_x_png}", "{b_x_png}", "-o", "{tmp}/out", "-m",
                                          "{tiny_pth}"], 2,
                                         r"esc: error: inputs \S*a/x\.png and \S*b/x\.png would both be written to "
                                         r"\S*out/x_custom_x2\.png"),
    "upscale y.jpg and y.png as png": (["upscale", "-i", "{y_y_jpg}", "{y_y_png}", "-o", "{tmp}/out", "-m",
                                        "{tiny_pth}", "--format", "png"], 2,
                                       r"esc: error: inputs \S*y/y\.jpg and \S*y/y\.png would both be written to "
                                       r"\S*out/y_custom_x2\.png"),
    # esc upscale: an output that exists already and is not an input (y/y.png beside the input y/y.jpg)
    "upscale existing output": (["upscale", "-i", "{y_y_jpg}", "-o", "{y_dir}", "-m", "{tiny_pth}", "--suffix", "",
                                 "--format", "png"], 2,
                                r"esc: error: 1 output\(s\) exist already: \S*y/y\.png; pass --overwrite to replace "
                                r"them, or choose another -o or --suffix$"),
    # esc upscale: one image of a batch
    "upscale header claims 100000x100000": (["upscale", "-i", "{bomb_png}", "-o", "{tmp}/out", "-m", "{tiny_pth}"], 1,
                                            r"failed: \S*bomb\.png: the output would be 200000x200000 pixels, more "
                                            r"than the limit of 268,435,456 \(16384x16384\) even with --tile"),
    "upscale whole image too large": (["upscale", "-i", "{big_png}", "-o", "{tmp}/out", "-m", "{tiny_pth}"], 1,
                                      r"failed: \S*big\.png: the output would be 4200x4200 pixels, more than the "
                                      r"whole-image limit of 16,777,216 \(4096x4096\); use --tile"),
    "upscale animated gif": (["upscale", "-i", "{anim_gif}", "-o", "{tmp}/out", "-m", "{tiny_pth}"], 1,
                             r"failed: \S*anim\.gif: animated or multi-page image \(3 frames\); only still images"),
    "upscale a file of another format": (["upscale", "-i", "{a_file_txt}", "-o", "{tmp}/out", "-m", "{tiny_pth}"], 1,
                                         r"failed: \S*a_file\.txt: not an image or video format esc upscale reads "
                                         r"\(\.txt; it reads \.png \.jpg \.jpeg \.webp \.bmp \.tif \.tiff \.gif \.ppm"),
    # esc upscale: outputs that are not finite (finite weights, far too large), never written
    "upscale output NaN": (["upscale", "-i", "{bird_png}", "-o", "{tmp}/out", "-m", "{overflow_pth}"], 1,
                           r"failed: \S*bird\.png: the network's output holds 36,864 non-finite value\(s\) \(NaN or "
                           r"Inf\) of 36,864: the weights drive the activations beyond float32's range"),
    "upscale output NaN in a tile": (["upscale", "-i", "{bird_png}", "-o", "{tmp}/out", "-m", "{overflow_pth}",
                                      "--tile", "16"], 1,
                                     r"failed: \S*bird\.png: tile 1 of 12 \(input rows 0-15, columns 0-15\): the "
                                     r"network's output holds 3,072 non-finite value\(s\) \(NaN or Inf\) of 3,072: "),
    "upscale output Inf (to_img 3e38)": (["upscale", "-i", "{bird_png}", "-o", "{tmp}/out", "-m", "{inf_out_pth}"], 1,
                                         r"failed: \S*bird\.png: the network's output holds 36,864 non-finite "
                                         r"value\(s\) \(NaN or Inf\) of 36,864: "),
    # esc export (the options are checked before the checkpoint: a bad one with notes.pth names the option)
    "export fp16 overflow": (["export", "{big_fp16_pth}", "-o", "{tmp}/zoo", "--fp16"], 2,
                             r"esc: error: \S*big_fp16\.pth: 'proj\.weight' holds values up to 1e\+06, beyond "
                             r"float16's range \(65504\); export it without --fp16"),
    "export -o is a file": (["export", "{notes_pth}", "-o", "{a_file_txt}"], 2,
                            r"esc: error: -o \S*a_file\.txt: exists and is not a folder"),
    # esc onnx: the output file, checked before the model is read (a minute of export)
    "onnx -o is a folder": (["onnx", "-m", "{missing}", "-o", "{tmp}"], 2,
                            r"esc: error: -o \S+: is a folder; give the file to write, e\.g\. \S+/model\.onnx$"),
    "onnx -o in a missing folder": (["onnx", "-m", "{missing}", "-o", "{tmp}/no/such/x.onnx"], 2,
                                    r"esc: error: -o \S+/no/such/x\.onnx: the folder \S+/no/such does not exist$"),
    "export --name with a folder": (["export", "{notes_pth}", "-o", "{tmp}/zoo", "--name", "../x"], 2,
                                    r"esc: error: --name '\.\./x': a file name stem, without a folder"),
    # esc export and esc onnx: an existing output only with --overwrite, the file read never
    "export onto its own checkpoint": (["export", "{src_custom_x2_pth}", "-o", "{src_dir}", "--fp16", "--overwrite"],
                                       2, r"esc: error: \S*src/custom_x2\.pth: is the checkpoint being exported, "
                                       r"which is never replaced \(not even with --overwrite\); choose another -o or "
                                       r"--name$"),
    "export existing release": (["export", "{tiny_pth}", "-o", "{taken_dir}"], 2,
                                r"esc: error: \S*taken/custom_x2\.pth exists already; pass --overwrite to replace it, "
                                r"or choose another -o or --name$"),
    "onnx -o exists": (["onnx", "-m", "{missing}", "-o", "{a_file_txt}"], 2,
                       r"esc: error: -o \S*a_file\.txt: exists already; pass --overwrite to replace it, or choose "
                       r"another -o$"),
    "onnx -o is the model": (["onnx", "-m", "{tiny_pth}", "-o", "{tiny_pth}", "--overwrite"], 2,
                             r"esc: error: -o \S*tiny\.pth: is the model \(-m\), which is never replaced \(not even "
                             r"with --overwrite\); choose another -o$"),
    # esc demo
    "demo --workdir is a file": (["demo", "--workdir", "{a_file_txt}"], 2,
                                 r"esc: error: --workdir \S*a_file\.txt: exists and is not a folder$"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_naming_the_culprit(case, files, tmp_path, capsys):
    template, status, pattern = BAD_INPUTS[case]
    code, lines = _run(_args(template, files, tmp_path), capsys)
    assert code == status, lines
    if status == 2:
        assert len(lines) == 1, lines
        assert re.match(pattern, lines[0]), lines
        assert not (tmp_path / "out").exists() and not (tmp_path / "zoo").exists()  # nothing written
    else:
        failed = [line for line in lines if line.startswith("failed: ")]
        assert len(failed) == status and re.match(pattern, failed[0]), lines
        assert f"0 upscaled, {status} failed" in lines[-1]


# (file, regex of the ValueError's message): the file's name and the key at fault
LOAD_MODEL = {
    "notes_pth": r"\S*notes\.pth: not a checkpoint \(neither a torch zip/pickle file nor safetensors\)",
    "photo_pth": r"\S*photo\.pth: not a checkpoint \(neither a torch zip/pickle file nor safetensors\)",
    "empty_pth": r"\S*empty\.pth: not a checkpoint \(empty file\)",
    "trunc_pth": r"\S*trunc\.pth: not a readable torch file \(truncated or corrupt\): .*",
    "trunc_safetensors": r"\S*trunc\.safetensors: not a readable safetensors file \(truncated or corrupt\): .*",
    "missing_key_pth": r"\S*missing_key\.pth: 'blocks\.0\.attn\.to_qkv\.weight' is missing",
    "wrong_shape_pth": r"\S*wrong_shape\.pth: 'blocks\.0\.attn\.to_qkv\.weight' has shape \(5, 16, 1, 1\); "
    r"expected \(48, 16, 1, 1\)",
    "bias_1d_pth": r"\S*bias_1d\.pth: 'blocks\.0\.attn\.relative_position_bias' has shape \(450,\); expected 2 "
    r"dimensions",
    "scalar_proj_pth": r"\S*scalar_proj\.pth: 'proj\.weight' has shape \(\); expected 4 dimensions",
    "block_20000_pth": r"\S*block_20000\.pth: 'blocks\.20000\.x': block 20000 but no block 1 \(blocks are "
    r"numbered 0, 1, 2, \.\.\.\)",
    "huge_dim_pth": r"\S*huge_dim\.pth: 'proj\.weight': dim 100000 is out of range \(at most 1024\)",
    "x16_pth": r"\S*x16\.pth: 'to_img\.weight': upscaling_factor 16 is out of range \(at most 8\)",
    "unexpected_pth": r"\S*unexpected\.pth: unexpected tensor 'extra\.weight' \(not part of this ESC network\)",
    "nan_pth": r"\S*nan\.pth: 'blocks\.0\.attn\.to_qkv\.weight' holds 1 non-finite value\(s\) \(NaN or Inf\)",
    "inf_safetensors": r"\S*inf\.safetensors: 'to_img\.bias' holds 1 non-finite value\(s\) \(NaN or Inf\)",
    "folder_pth": r"checkpoint '\S*folder\.pth' is a folder, not a file$",
    "int_key_pth": r"\S*int_key\.pth: the state dict has the key 7 \(int\); tensors are named by strings$",
    "sparse_pth": r"\S*sparse\.pth: 'to_img\.bias' is a sparse_coo tensor; ESC weights are dense \(strided\) tensors$",
    "bomb_pth": r"\S*bomb\.pth: member 'plain/data/\d+' inflates [\d,]+ stored bytes to 4,000,000 \([\d,]+x\); "
    r"torch\.save stores tensors uncompressed, so this file was crafted \(a compression bomb\) and was refused "
    r"before inflating it$",
}


@pytest.mark.parametrize("command", ["upscale", "export", "onnx"])
@pytest.mark.parametrize("name", list(LOAD_MODEL))
def test_a_bad_checkpoint_is_the_same_one_line_in_every_command(name, command, files, tmp_path, capsys):
    """The commands read checkpoints through load_model: its one line, prefixed ``esc: error:``,
    before any image is read or anything written."""
    args = {
        "upscale": ["upscale", "-i", str(files["bird_png"]), "-o", str(tmp_path / "out"), "-m", str(files[name])],
        "export": ["export", str(files[name]), "-o", str(tmp_path / "out")],
        "onnx": ["onnx", "-m", str(files[name]), "-o", str(tmp_path / "x.onnx")],
    }[command]
    code, lines = _run(args, capsys)
    assert code == 2 and len(lines) == 1, lines
    assert re.match("esc: error: " + LOAD_MODEL[name], lines[0]), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("name", list(LOAD_MODEL))
def test_load_model_names_the_file_and_key(name, files):
    with pytest.raises(ValueError) as info:
        load_model(files[name])
    message = str(info.value)
    assert re.match(LOAD_MODEL[name], message) and "\n" not in message, message
    assert "allow_pickle" not in message  # not a pickle question: not a checkpoint at all


def _big(*shape: int) -> torch.Tensor:
    """A tensor of ``shape`` holding one stored number (zero strides): a few bytes on disk."""
    return torch.zeros(1).as_strided(shape, (0,) * len(shape))


# hyper-parameter -> (a change to the tiny checkpoint that reads it as the limit + 1, the key named)
OVER_THE_LIMIT = {
    "dim": (lambda d: d.update({"proj.weight": _big(1025, 3, 3, 3)}), "proj.weight"),
    "pdim": (lambda d: d.update({"plk_filter": _big(1025, 1025, 5, 5)}), "plk_filter"),
    "kernel_size": (lambda d: d.update({"plk_filter": _big(8, 8, 64, 64)}), "plk_filter"),
    "n_blocks": (lambda d: d.update({f"blocks.{i}.x": torch.zeros(1) for i in range(1, 65)}), "blocks.64.x"),
    "conv_blocks": (lambda d: d.update({f"blocks.0.pconvs.{i}.x": torch.zeros(1) for i in range(2, 33)}),
                    "blocks.0.pconvs.32.x"),
    "window_size": (lambda d: d.update({"blocks.0.attn.relative_position_bias": _big(2, 257**2)}),
                    "blocks.0.attn.relative_position_bias"),
    "num_heads": (lambda d: d.update({"blocks.0.attn.relative_position_bias": _big(65, 225)}),
                  "blocks.0.attn.relative_position_bias"),
    "upscaling_factor": (lambda d: d.update({"to_img.weight": _big(3 * 81, 16, 3, 3)}), "to_img.weight"),
    "exp_ratio": (lambda d: d.update({"blocks.0.convffns.0.proj.weight": _big(17 * 16, 16, 1, 1)}),
                  "blocks.0.convffns.0.proj.weight"),
    "flashbias_rank": (lambda d: d.update({"blocks.0.attn.flashbias_q": _big(2, 64, 1025)}),
                       "blocks.0.attn.flashbias_q"),
}  # fmt: skip


def test_the_limits_are_the_documented_ones():
    """docs/weights.md states each limit; every limit has a row in the table below."""
    from esc_arch.limits import NETWORK_LIMITS as LIMITS

    text = " ".join((Path(__file__).parents[1] / "docs" / "weights.md").read_text().split())
    stated = text[text.index("The limits (`esc_arch.limits.NETWORK_LIMITS`") :].split("(ESCRealM")[0]
    assert dict((name, int(value)) for name, value in re.findall(r"`(\w+)` (\d+)", stated)) == LIMITS
    assert set(OVER_THE_LIMIT) == set(LIMITS)


@pytest.mark.parametrize("name", list(OVER_THE_LIMIT))
def test_each_limit_is_checked_before_building(name, tmp_path, monkeypatch):
    import esc_arch.weights.load

    limit = esc_arch.limits.NETWORK_LIMITS[name]
    change, key = OVER_THE_LIMIT[name]
    state_dict = _tiny_state_dict()
    change(state_dict)
    torch.save({"params_ema": state_dict}, tmp_path / "over.pth")
    monkeypatch.setattr(esc_arch.weights.load, "build_network", None)  # calling it would be a TypeError
    pattern = rf"\S*over\.pth: '{re.escape(key)}': {name} {limit + 1} is out of range \(at most {limit}\)"
    with pytest.raises(ValueError) as info:
        load_model(tmp_path / "over.pth")
    assert re.fullmatch(pattern, str(info.value)), str(info.value)


def test_the_format_is_read_from_the_first_bytes(tmp_path):
    from safetensors.torch import save_file

    state_dict = _tiny_state_dict()
    save_file({k: v.contiguous() for k, v in state_dict.items()}, tmp_path / "safetensors.pth")
    torch.save({"params_ema": state_dict}, tmp_path / "torch.safetensors")
    for name in ("safetensors.pth", "torch.safetensors"):
        assert load_model(tmp_path / name).scale == 2


def test_bad_checkpoints_are_refused_before_building_the_network(files, monkeypatch):
    """blocks.20000 must not build 20001 blocks, nor a crafted shape allocate a huge network:
    a network is built, if at all, only on the meta device (shapes, no memory)."""
    import esc_arch.weights.load

    real, devices = esc_arch.weights.load.build_network, []

    def spy(config):
        devices.append(torch.get_default_device().type)
        return real(config)

    monkeypatch.setattr(esc_arch.weights.load, "build_network", spy)
    for name in ("block_20000_pth", "huge_dim_pth", "x16_pth", "wrong_shape_pth", "missing_key_pth",
                 "unexpected_pth"):  # fmt: skip
        with pytest.raises(ValueError, match=re.escape(files[name].name)):
            load_model(files[name])
    assert set(devices) <= {"meta"}, devices


# --------------------------------------------------------------------------- esc upscale batches


def test_one_bad_file_never_aborts_the_batch(files, tmp_path, capsys, monkeypatch):
    """A decompression bomb, an animated GIF and an out-of-memory image fail alone; the good
    image after them is written."""
    import esc_arch.commands.upscale

    real = esc_arch.commands.upscale.upscale_image

    def out_of_memory_for_40x40(net, img, **kwargs):
        if img.shape[:2] == (40, 40):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore text")
        return real(net, img, **kwargs)

    monkeypatch.setattr(esc_arch.commands.upscale, "upscale_image", out_of_memory_for_40x40)
    inputs = [files["bomb_png"], files["anim_gif"], files["oom_png"], files["bird_png"]]
    code, lines = _run(["upscale", "-i", *map(str, inputs), "-o", str(tmp_path / "out"), "-m",
                        str(files["tiny_pth"]), "--suffix", ""], capsys)  # fmt: skip
    assert code == 3, lines
    assert lines[-1] == "1 upscaled, 3 failed"
    oom = rf"failed: {re.escape(str(files['oom_png']))}: out of memory: CUDA out of memory\. .*; try --tile \(e\.g\. "
    assert any(re.match(oom, line) for line in lines), lines
    assert cv2.imread(str(tmp_path / "out/bird.png")).shape == (96, 128, 3)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["bird.png"]


def test_an_unreadable_input_folder_is_one_line(files, permissions, capsys):
    import shutil

    locked = permissions.folder / "locked"
    locked.mkdir()
    shutil.copy(files["bird_png"], locked / "bird.png")
    locked.chmod(0)
    model = shutil.copy(files["tiny_pth"], permissions.folder / "tiny.pth")
    warm = ["upscale", "-i", str(files["bird_png"]), "-o", str(permissions.folder / "warm"), "-m", str(model)]
    assert _run(warm, capsys)[0] == 0  # imports what the command needs (the interpreter is root's)
    with permissions.denied():
        code, lines = _run(["upscale", "-i", str(locked), "-o", str(permissions.folder / "out"), "-m", str(model)],
                           capsys)  # fmt: skip
    assert code == 2 and lines == [f"esc: error: {locked}: the folder cannot be listed (Permission denied)"], lines


@pytest.mark.parametrize("command", ["upscale", "export", "onnx"])
def test_an_unreadable_checkpoint_is_one_line_in_every_command(command, files, permissions, capsys):
    import shutil

    bird = shutil.copy(files["bird_png"], permissions.folder / "bird.png")
    model = permissions.folder / "secret.pth"
    shutil.copy(files["tiny_pth"], model)
    model.chmod(0)
    out = permissions.folder / "out"
    args = {
        "upscale": ["upscale", "-i", str(bird), "-o", str(out), "-m", str(model)],
        "export": ["export", str(model), "-o", str(out)],
        "onnx": ["onnx", "-m", str(model), "-o", str(permissions.folder / "x.onnx")],
    }[command]
    with permissions.denied():
        code, lines = _run(args, capsys)
    assert code == 2 and lines == [f"esc: error: {model}: cannot be read: Permission denied"], lines
    assert sorted(p.name for p in permissions.folder.iterdir()) == ["bird.png", "secret.pth"]  # nothing written


def test_whole_image_limit_names_tile_and_tile_lifts_it(files, tmp_path, capsys, monkeypatch):
    import esc_arch.commands.upscale

    monkeypatch.setattr(esc_arch.commands.upscale, "WHOLE_IMAGE_LIMIT", 96 * 128 - 1)  # the bird's x2 output is 96x128
    args = ["upscale", "-i", str(files["bird_png"]), "-o", str(tmp_path / "out"), "-m", str(files["tiny_pth"])]
    code, lines = _run(args, capsys)
    assert code == 1 and any("use --tile" in line for line in lines), lines
    code, lines = _run([*args, "--tile", "32"], capsys)
    assert code == 0 and lines[-1] == "1 upscaled, 0 failed", lines


def test_the_same_file_twice_is_not_a_collision(files, tmp_path, capsys):
    folder = files["a_x_png"].parent
    code, lines = _run(["upscale", "-i", str(folder), f"{folder}/./x.png", "-o", str(tmp_path / "out"), "-m",
                        str(files["tiny_pth"])], capsys)  # fmt: skip
    assert code == 0 and lines[-1] == "1 upscaled, 0 failed", lines


def test_same_stem_different_formats_is_fine_when_kept(files, tmp_path, capsys):
    code, lines = _run(["upscale", "-i", str(files["y_y_jpg"]), str(files["y_y_png"]), "-o", str(tmp_path / "out"),
                        "-m", str(files["tiny_pth"]), "--suffix", ""], capsys)  # fmt: skip
    assert code == 0 and lines[-1] == "2 upscaled, 0 failed", lines
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["y.jpg", "y.png"]


def test_tiling_is_reported_as_it_runs(files, tmp_path, capsys):
    """The start-up line gives the tile and overlap that run: rounded up to the window (8
    here), the default overlap at most the tile."""
    base = ["upscale", "-i", str(files["bird_png"]), "-o", str(tmp_path / "out"), "-m", str(files["tiny_pth"])]
    base.append("--overwrite")  # each run writes the same output
    code, lines = _run([*base, "--tile", "5"], capsys)
    assert code == 0, lines
    assert "tile 8, overlap 8 (--tile 5 --tile-overlap 5 rounded up to multiples of the window, 8)" in lines[0]
    code, lines = _run([*base, "--tile", "16"], capsys)
    assert code == 0 and "tile 16, overlap 16;" in lines[0], lines
    code, lines = _run([*base, "--tile", "32", "--tile-overlap", "8"], capsys)
    assert code == 0 and "tile 32, overlap 8;" in lines[0], lines


@pytest.mark.parametrize("depth", [8, 16])
def test_gray_alpha_stays_gray_alpha(depth, files, tmp_path, capsys):
    """Gray + alpha is written as a 2-channel PNG: the gray channel as a gray image's, the
    alpha channel resized."""
    code, lines = _run(["upscale", "-i", str(files[f"la{depth}_png"]), str(files[f"gray{depth}_png"]), "-o",
                        str(tmp_path / "out"), "-m", str(files["tiny_pth"]), "--suffix", ""], capsys)  # fmt: skip
    assert code == 0, lines
    assert _png_ihdr(tmp_path / f"out/la{depth}.png") == (128, 96, depth, 4)  # colour type 4: gray + alpha
    gray_alpha = cv2.imread(str(tmp_path / f"out/la{depth}.png"), cv2.IMREAD_UNCHANGED)  # OpenCV reads it as BGRA
    gray = cv2.imread(str(tmp_path / f"out/gray{depth}.png"), cv2.IMREAD_UNCHANGED)
    assert gray_alpha.dtype == gray.dtype == (np.uint16 if depth == 16 else np.uint8)
    assert np.array_equal(gray_alpha[..., 0], gray) and np.array_equal(gray_alpha[..., 2], gray)
    peak = 65535 if depth == 16 else 255
    alpha = gray_alpha[..., 3].astype(np.float64) / peak
    assert alpha[:, 0].mean() < 0.02 and alpha[:, -1].mean() > 0.98  # the gradient, resized


# --------------------------------------------------------------------------- esc export


def test_export_twice_gives_the_same_names_and_bytes(files, tmp_path, capsys):
    for kind, extra in (("pth", []), ("safetensors", ["--safetensors"]), ("fp16", ["--fp16"])):
        written = []
        for run in ("first", "second"):
            folder = tmp_path / kind / run
            code, lines = _run(["export", str(files["tiny_pth"]), "-o", str(folder), "--hash", *extra], capsys)
            assert code == 0, lines
            (path,) = folder.iterdir()
            written.append(path)
        first, second = written
        assert first.name == second.name and first.read_bytes() == second.read_bytes(), kind
        assert first.stem.endswith("-" + hashlib.sha256(first.read_bytes()).hexdigest()[:8])
