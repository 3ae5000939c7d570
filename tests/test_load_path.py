"""One load path for every door: the same bad checkpoint is refused by each entry point
(:func:`esc_arch.load_model`, ``esc upscale``, ``esc export``, ``esc onnx``, spandrel, BasicSR's ``ESCModel``
under ``basicsr train`` and ``basicsr test``) with the same line, ``<path>: <reason>`` as
``load_model`` words it (esc_arch/weights/: ``read_state_dict``, ``load_weights``,
``network_from_state_dict``). A door may add a hint of its own after the reason (BasicSR's
about ``strict_load_g``), never change the reason."""

import argparse
import re

import cv2
import numpy as np
import pytest
import torch
import yaml

import esc_arch

#: The toy network every bad file is made from, and BasicSR's network_g (so that a file of the
#: wrong shape or with a key missing reaches the shape check there too).
TINY = dict(dim=16, pdim=4, n_blocks=1, conv_blocks=1, window_size=8, num_heads=2, upscaling_factor=2)


def _set(key: str, value: float):
    def change(sd: dict) -> dict:
        sd[key].view(-1)[3] = value
        return {"params": sd}

    return change


def _reshaped(key: str, shape: tuple[int, ...]):
    def change(sd: dict) -> dict:
        sd[key] = torch.zeros(shape)
        return {"params": sd}

    return change


def _without(key: str):
    def change(sd: dict) -> dict:
        del sd[key]
        return {"params": sd}

    return change


def _with_an_object(sd: dict) -> dict:
    return {"params": sd, "args": argparse.Namespace(lr=2e-4)}  # as training scripts save their arguments


#: name -> (what makes the file from the network's state dict, what the reason must say). The keys
#: of the shape and missing-key cases are ones infer_config does not read, so that load_model and
#: spandrel (which infer the network) reach the shape check as BasicSR (given network_g) does.
BAD_FILES = {
    "nan": (_set("to_img.weight", float("nan")), r"'to_img\.weight' holds 1 non-finite value\(s\) \(NaN or Inf\)"),
    "inf": (_set("blocks.0.attn.to_qkv.weight", float("inf")),
            r"'blocks\.0\.attn\.to_qkv\.weight' holds 1 non-finite value\(s\) \(NaN or Inf\)"),
    "wrong-shape": (_reshaped("blocks.0.conv_out.weight", (16, 16, 1, 1)),
                    r"'blocks\.0\.conv_out\.weight' has shape \(16, 16, 1, 1\); expected \(16, 16, 3, 3\)$"),
    "missing-key": (_without("blocks.0.attn.to_out.bias"), r"'blocks\.0\.attn\.to_out\.bias' is missing$"),
    "pickled-object": (_with_an_object, r"holds pickled Python objects besides tensors and was refused"),
}  # fmt: skip

DOORS = ["load_model", "esc upscale", "esc export", "esc onnx", "spandrel", "basicsr train", "basicsr test"]

#: (door, bad file) pairs left out, and why.
EXCLUDED = {
    ("spandrel", "pickled-object"): "spandrel reads the file itself (its own restricted unpickler refuses the "
    "object with its own message) before handing ESC the state dict",
}

#: The refusals the BasicSR doors add a hint to (after the reason): the tensors do not fit network_g.
HINTED = {"wrong-shape", "missing-key"}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """HR/LR folders of two small image pairs (x2), for BasicSR's datasets."""
    root = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        hr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        for folder, image in (("HR", hr), ("LR", cv2.resize(hr, (16, 16), interpolation=cv2.INTER_AREA))):
            (root / folder).mkdir(exist_ok=True)
            cv2.imwrite(str(root / folder / f"{name}.png"), image)
    return root


def _bad_file(tmp_path, kind: str) -> str:
    net = esc_arch.ESC(**TINY)
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    path = tmp_path / f"{kind}.pth"
    torch.save(BAD_FILES[kind][0](sd), path)
    return str(path)


def _options(images, path: str, train: bool) -> dict:
    dataset = {"name": "pairs", "type": "PairedImageDataset", "dataroot_gt": str(images / "HR"),
               "dataroot_lq": str(images / "LR"), "io_backend": {"type": "disk"}}  # fmt: skip
    opt = {
        "name": "load_path", "model_type": "ESCModel", "scale": 2, "num_gpu": 0, "manual_seed": 0,
        "network_g": {"type": "ESC", **TINY, "attn_type": "naive"},
        "path": {"pretrain_network_g": path, "strict_load_g": True},
        "val": {"save_img": False, "suffix": None, "metrics": {"psnr": {"type": "calculate_psnr", "crop_border": 2}}},
    }  # fmt: skip
    if train:
        opt["datasets"] = {"train": dict(dataset, gt_size=16, use_hflip=False, use_rot=False, num_worker_per_gpu=0,
                                         batch_size_per_gpu=1, dataset_enlarge_ratio=1)}  # fmt: skip
        opt["train"] = {
            "ema_decay": 0, "optim_g": {"type": "AdamW", "lr": 1e-4}, "total_iter": 1, "warmup_iter": -1,
            "scheduler": {"type": "MultiStepLR", "milestones": [10], "gamma": 0.5},
            "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0},
        }  # fmt: skip
        opt["logger"] = {"print_freq": 1, "save_checkpoint_freq": 10, "use_tb_logger": False}
        del opt["val"]
    else:
        opt["datasets"] = {"test_1": dataset}
    return opt


def _refusal(door: str, path: str, tmp_path, images, esc_cli, basicsr_cli) -> str:
    """The line ``door`` refuses ``path`` with, without the door's own prefix (``esc: error: ``...)."""
    if door == "load_model":
        with pytest.raises(ValueError) as refused:
            esc_arch.load_model(path)
        return str(refused.value)
    if door == "spandrel":
        spandrel = pytest.importorskip("spandrel")
        esc_arch.register_spandrel()
        with pytest.raises(ValueError) as refused:
            spandrel.ModelLoader().load_from_file(path)
        source, _, reason = str(refused.value).partition(": ")
        assert source == "the state dict", refused.value
        return f"{path}: {reason}"  # spandrel hands ESC the state dict, not the file: the same reason
    if door.startswith("esc "):
        out = tmp_path / "out"
        if door == "esc upscale":
            image = tmp_path / "in.png"
            cv2.imwrite(str(image), np.zeros((16, 16, 3), np.uint8))
            result = esc_cli("upscale", "-i", image, "-o", out, "-m", path)
        elif door == "esc onnx":
            out = tmp_path / "out.onnx"
            result = esc_cli("onnx", "-m", path, "-o", out)
        else:
            result = esc_cli("export", path, "-o", out)
        assert result.returncode == 2 and not out.exists(), result
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("esc: error: "), result.stderr
        return lines[0].removeprefix("esc: error: ")
    command = door.removeprefix("basicsr ")
    option_file = tmp_path / f"{command}.yml"
    option_file.write_text(yaml.safe_dump(_options(images, path, train=command == "train")))
    result = basicsr_cli(command, "-opt", option_file, "--root", tmp_path, cwd=tmp_path)
    assert result.returncode == 1, result
    errors = [line for line in result.stderr.splitlines() if "error:" in line or "Traceback" in line]
    assert len(errors) == 1 and errors[0].startswith(f"basicsr {command}: error: "), result.stderr
    return errors[0].removeprefix(f"basicsr {command}: error: ")


@pytest.mark.parametrize("kind", list(BAD_FILES))
@pytest.mark.parametrize("door", DOORS)
def test_every_door_refuses_a_bad_file_with_the_same_line(door, kind, tmp_path, images, esc_cli, basicsr_cli):
    if (door, kind) in EXCLUDED:
        pytest.skip(EXCLUDED[door, kind])
    path = _bad_file(tmp_path, kind)
    with pytest.raises(ValueError) as reference:  # load_model's line: what every door must say
        esc_arch.load_model(path)
    expected = str(reference.value)
    assert expected.startswith(f"{path}: ") and "\n" not in expected, expected
    assert re.search(BAD_FILES[kind][1], expected.removeprefix(f"{path}: ")), expected
    line = _refusal(door, path, tmp_path, images, esc_cli, basicsr_cli)
    if door.startswith("basicsr") and kind in HINTED:  # the door's hint, after the same reason
        assert line.startswith(f"{expected}; ") and "set path: strict_load_g: false" in line, (line, expected)
    else:
        assert line == expected
