"""Early checks of a BasicSR option file, so that a bad run stops at once with one clear
message naming the file or key, instead of a traceback minutes into training.

Checked: every key against the keys BasicSR and this project's models read (a misspelt
one is an error naming the closest known key; other unknown keys are warnings), required
keys and their types (``scale``, ``total_iter``, learning rates, frequencies, batch sizes,
``gt_size`` a multiple of ``scale``), ``network_g`` (registered type, accepted keywords,
scale), ``num_gpu`` and ``prefetch_mode`` against the machine, every dataset's folders or
LMDBs (present, readable, LQ and GT key sets equal, LR/HR image sizes consistent with
``scale``, read from the LMDB meta-info or the image headers), every paired training image
at least one ``gt_size`` patch, a training set large enough for one batch, Real-ESRGAN
meta-info lists, the ``pretrain_network_g`` / ``resume_state`` files, the local VGG19
weights of a perceptual loss (BasicSR would download them), and the training-pair pool size.

Also what would make BasicSR write outside the run's folder (``name``, the ``path:`` folders it
creates, the names of the folders and files validation images are saved in), training options
that invert or disable training (``grad_clip``, the scheduler's milestones, ``betas``,
``manual_seed``), the registered names BasicSR looks ``model_type`` and every ``type`` up in,
and ``network_g``'s values against :data:`esc_arch.limits.NETWORK_LIMITS`, before anything is
built.
"""

from __future__ import annotations

import datetime
import difflib
import inspect
import math
import os
from collections.abc import Callable
from os import path as osp

import torch

from ..io.imageio import IMAGE_EXTENSIONS, image_paths, truncated
from ..limits import NETWORK_LIMITS

__all__ = [
    "KNOWN_KEYS",
    "OptionError",
    "check_options",
    "check_run_paths",
    "drop_missing_test_sets",
    "lr_fits",
    "read_lmdb_meta",
]

_DEGRADATIONS = (
    "resize_prob",
    "resize_range",
    "gaussian_noise_prob",
    "noise_range",
    "poisson_scale_range",
    "gray_noise_prob",
    "jpeg_range",
    "second_blur_prob",
    "resize_prob2",
    "resize_range2",
    "gaussian_noise_prob2",
    "noise_range2",
    "poisson_scale_range2",
    "gray_noise_prob2",
    "jpeg_range2",
)
_KERNELS = (
    "blur_kernel_size",
    "kernel_list",
    "kernel_prob",
    "blur_sigma",
    "betag_range",
    "betap_range",
    "sinc_prob",
    "blur_kernel_size2",
    "kernel_list2",
    "kernel_prob2",
    "blur_sigma2",
    "betag_range2",
    "betap_range2",
    "sinc_prob2",
    "final_sinc_prob",
)

#: section -> the keys BasicSR 1.4.2 and this project's models read there (keys set by
#: ``parse_options`` itself included). ``train`` also takes any ``*_opt`` (a loss).
KNOWN_KEYS: dict[str, frozenset[str]] = {
    "": frozenset({
        "name", "model_type", "scale", "num_gpu", "manual_seed", "datasets", "network_g", "network_d", "path",
        "train", "val", "logger", "dist_params", "find_unused_parameters", "is_train", "dist", "rank", "world_size",
        "auto_resume", "root_path", "gt_size", "queue_size", "high_order_degradation", "gt_usm", "l1_gt_usm",
        "percep_gt_usm", "gan_gt_usm", *_DEGRADATIONS,
    }),
    "train": frozenset({
        "ema_decay", "optim_g", "optim_d", "scheduler", "total_iter", "warmup_iter", "net_d_iters",
        "net_d_init_iters", "mixed_precision", "grad_clip",
    }),
    "val": frozenset({
        "val_freq", "save_img", "suffix", "metrics", "pbar", "tile", "tile_overlap", "mixed_precision", "crop_strip",
        "chunk",
    }),
    "logger": frozenset({"print_freq", "save_checkpoint_freq", "use_tb_logger", "wandb"}),
    "path": frozenset({
        "pretrain_network_g", "strict_load_g", "param_key_g", "pretrain_network_d", "strict_load_d", "param_key_d",
        "resume_state", "ignore_resume_networks", "experiments_root", "models", "training_states", "log",
        "visualization", "results_root",
    }),
    "datasets": frozenset({
        "name", "type", "phase", "scale", "dataroot_gt", "dataroot_lq", "meta_info_file", "meta_info", "io_backend",
        "filename_tmpl", "gt_size", "use_hflip", "use_rot", "use_flip", "use_shuffle", "num_worker_per_gpu",
        "batch_size_per_gpu", "dataset_enlarge_ratio", "prefetch_mode", "pin_memory", "color", "mean", "std",
        "inp_size", "scale_min", "scale_max", "sample_q", "test_scale", "protocol", *_KERNELS,
    }),
}  # fmt: skip


class OptionError(ValueError):
    """An option file that cannot work; the message names the file and key."""


def read_lmdb_meta(folder: str) -> dict[str, tuple[int, ...]]:
    """``{key: (h, w, c)}`` from an LMDB folder's ``meta_info.txt`` (BasicSR's layout)."""
    meta = osp.join(folder, "meta_info.txt")
    if not osp.isfile(meta):
        raise OptionError(f"{folder}: not a BasicSR LMDB (no meta_info.txt)")
    sizes = {}
    with open(meta) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                name, shape = line.split(" (", 1)
                shape = tuple(int(v) for v in shape.split(")", 1)[0].split(","))
            except ValueError as error:
                raise OptionError(f"{meta}:{number}: malformed line {line.strip()!r}") from error
            sizes[osp.splitext(name)[0]] = shape
    return sizes


def _check_lmdb(folder: str, where: str) -> dict[str, tuple[int, ...]]:
    import lmdb

    if not osp.isdir(folder):
        raise OptionError(f"{where}: LMDB {folder!r} does not exist")
    if not osp.isfile(osp.join(folder, "data.mdb")):
        raise OptionError(f"{where}: {folder!r} is not an LMDB (no data.mdb)")
    sizes = read_lmdb_meta(folder)
    try:
        env = lmdb.open(folder, readonly=True, lock=False, readahead=False, meminit=False)
        with env.begin(write=False) as txn:
            entries = txn.stat()["entries"]
            first = next(iter(sizes), None)
            if first is not None and txn.get(first.encode()) is None:
                raise OptionError(f"{where}: LMDB {folder!r} lacks key {first!r} listed in its meta_info.txt")
        env.close()
    except lmdb.Error as error:
        raise OptionError(f"{where}: LMDB {folder!r} cannot be read (corrupt?): {error}") from error
    if entries != len(sizes):
        raise OptionError(f"{where}: LMDB {folder!r} holds {entries} images but meta_info.txt lists {len(sizes)}")
    return sizes


def _image_names(folder: str, where: str) -> dict[str, str]:
    if not osp.isdir(folder):
        raise OptionError(f"{where}: folder {folder!r} does not exist")
    paths = image_paths(folder, warn=lambda _: None)  # the dataset reports links followed once, when it is built
    names = {osp.splitext(osp.relpath(path, folder))[0]: path for path in paths}
    if not names:
        raise OptionError(f"{where}: folder {folder!r} holds no images")
    for path in names.values():  # the last bytes of each file only: cheap for large sets
        if os.path.getsize(path) == 0 or truncated(path):
            raise OptionError(f"{where}: {path} is empty or truncated (it lacks its end marker)")
    return names


def _image_size(path: str) -> tuple[int, int]:
    """(height, width) from the image's header (nothing decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.height, img.width
    except (OSError, UnidentifiedImageError) as error:
        raise OptionError(f"{path}: not a readable image ({error})") from error


def lr_fits(lr: tuple[int, int], hr: tuple[int, int], scale: float, *, exact: bool = False) -> bool:
    """Whether an LR image of size ``lr`` is the x``scale`` LR of an HR image of size ``hr``:
    LR x scale is the HR size (``exact``: training crops), or within one LR pixel of it (the HR
    cropped to a multiple of the scale before downsampling; validation crops it so)."""
    differences = (hr[0] - lr[0] * scale, hr[1] - lr[1] * scale)
    return all(d == 0 if exact else 0 <= d < scale for d in differences)


def _check_pair_sizes(pairs: list[tuple[str, str]], scale: float, exact: bool, where: str) -> dict[str, tuple]:
    """Every pair's sizes fit ``scale`` (:func:`lr_fits`); returns ``{HR path: (h, w)}``."""
    sizes = {}
    for lq_path, gt_path in pairs:
        lr, hr = _image_size(lq_path), _image_size(gt_path)
        sizes[gt_path] = hr
        if not lr_fits(lr, hr, scale, exact=exact):
            raise OptionError(
                f"{where}: LR/HR sizes do not match scale {scale:g}: LR {lq_path} is {lr[0]}x{lr[1]}, HR {gt_path} "
                f"is {hr[0]}x{hr[1]} (expected {hr[0] / scale:.0f}x{hr[1] / scale:.0f} or the HR within one LR "
                "pixel of LR x scale); check the scale and the dataset folders"
            )
    return sizes


def _check_patch_fits(sizes: dict[str, tuple], gt_size, where: str) -> None:
    """Every training HR image holds one ``gt_size`` patch: BasicSR stops the run at the first
    smaller one it draws, which can be hours in."""
    if not isinstance(gt_size, int) or not sizes:
        return
    small = {name: hw for name, hw in sizes.items() if min(hw[:2]) < gt_size}
    if small:
        name, hw = next(iter(sorted(small.items())))
        raise OptionError(
            f"{where}: {len(small)} of {len(sizes)} HR training image(s) are smaller than gt_size {gt_size}, "
            f"e.g. {name!r} ({hw[0]}x{hw[1]}); remove them (datasets/prepare_sr_lmdb.py --min-size {gt_size} "
            "skips them) or lower gt_size"
        )


def _check_dataset(phase: str, dataset: dict, scale: int | None, source: str) -> int | None:
    """Check one dataset; returns its number of images when known."""
    where = f"{source}: datasets: {phase}"
    if not isinstance(dataset, dict):
        raise OptionError(f"{where}: must be a mapping of dataset options; got {dataset!r}")
    size = None
    backend = (dataset.get("io_backend") or {}).get("type", "disk")
    gt_root, lq_root = dataset.get("dataroot_gt"), dataset.get("dataroot_lq")
    if backend == "lmdb":
        gt = _check_lmdb(gt_root, f"{where}: dataroot_gt") if gt_root else None
        lq = _check_lmdb(lq_root, f"{where}: dataroot_lq") if lq_root else None
        size = len(gt if gt is not None else lq or {})
        if gt is not None and lq is not None:
            _check_pairs(set(lq), set(gt), where)
            if scale:
                for key, lq_shape in lq.items():
                    expected = (lq_shape[0] * scale, lq_shape[1] * scale)
                    if tuple(gt[key][:2]) != expected:
                        raise OptionError(
                            f"{where}: LR/HR sizes of {key!r} do not match scale {scale}: "
                            f"LR {lq_shape[:2]}, HR {gt[key][:2]} ({lq_root}, {gt_root})"
                        )
        if phase.startswith("train") and dataset.get("type") == "PairedImageDataset" and gt is not None:
            _check_patch_fits(gt, dataset.get("gt_size"), f"{where}: dataroot_gt {gt_root}")
    elif backend == "disk":
        gt = _image_names(gt_root, f"{where}: dataroot_gt") if gt_root else None
        lq = _image_names(lq_root, f"{where}: dataroot_lq") if lq_root else None
        size = len(gt if gt is not None else lq or {})
        if gt is not None and lq is not None and dataset.get("type") == "PairedImageDataset":
            template = dataset.get("filename_tmpl", "{}")
            expected = {template.format(name) for name in gt}
            missing = sorted(expected - set(lq))
            if missing:
                raise OptionError(f"{where}: {len(missing)} LR image(s) missing from {lq_root!r}, e.g. {missing[0]!r}")
            if scale:
                pairs = [(lq[template.format(name)], path) for name, path in sorted(gt.items())]
                sizes = _check_pair_sizes(pairs, scale, phase.startswith("train"), where)
                if phase.startswith("train"):
                    _check_patch_fits(sizes, dataset.get("gt_size"), where)
        if gt is not None and lq is not None and dataset.get("type") == "ArbitraryScaleDataset":
            test_scale = dataset.get("test_scale")
            if not phase.startswith("train") and isinstance(test_scale, int | float) and test_scale > 0:
                template = dataset.get("filename_tmpl", "{}")
                by_name = {osp.basename(name): path for name, path in lq.items()}
                pairs = []
                for name, path in sorted(gt.items()):
                    lq_name = template.format(osp.basename(name))
                    if lq_name not in by_name:
                        raise OptionError(f"{where}: LR image {lq_name!r} for {path} is missing from {lq_root!r}")
                    pairs.append((by_name[lq_name], path))
                _check_pair_sizes(pairs, test_scale, False, where)
    meta = dataset.get("meta_info_file")
    if meta and not osp.isfile(meta):
        raise OptionError(f"{where}: meta_info_file {meta!r} does not exist")
    if (
        dataset.get("type") == "SingleImageDataset"
        and backend == "disk"
        and lq_root
        and "meta_info_file" not in dataset
    ):
        others = sorted(n for n in os.listdir(lq_root) if not n.lower().endswith(IMAGE_EXTENSIONS))
        if others:  # BasicSR reads every file of the folder as an image
            raise OptionError(f"{where}: dataroot_lq {lq_root!r} holds files that are not images: {', '.join(others)}")
    if dataset.get("type") == "RealESRGANDataset" and backend == "disk":
        size = _check_meta_info(dataset.get("meta_info"), gt_root, where)
    return size


def _check_meta_info(meta: str | None, gt_root: str | None, where: str) -> int:
    """RealESRGANDataset's meta_info: a list of image paths relative to dataroot_gt (without
    one, every image under dataroot_gt is read)."""
    if not meta:
        return len(_image_names(gt_root, f"{where}: dataroot_gt"))
    if not osp.isfile(meta):
        raise OptionError(f"{where}: meta_info {meta!r} does not exist (datasets/prepare_realesrgan_data.py makes it)")
    with open(meta) as f:
        names = [line.strip().split(" ")[0] for line in f if line.strip()]
    if not names:
        raise OptionError(f"{where}: meta_info {meta!r} lists no images")
    missing = [n for n in names if not osp.isfile(osp.join(gt_root or "", n))]
    if missing:
        raise OptionError(
            f"{where}: {len(missing)} of {len(names)} images in {meta!r} are missing under "
            f"dataroot_gt {gt_root!r}, e.g. {missing[0]!r}"
        )
    return len(names)


#: Where BasicSR's VGGFeatureExtractor reads VGG19 weights (relative to the working directory);
#: any other VGG, or a missing file, makes it download from the internet.
VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"


def _check_train(train: dict, opt: dict, source: str) -> None:
    perceptual = train.get("perceptual_opt")
    if perceptual:
        from basicsr.archs.vgg_arch import VGG_PRETRAIN_PATH

        vgg_type = perceptual.get("vgg_type", "vgg19")
        if vgg_type != "vgg19":
            raise OptionError(
                f"{source}: train: perceptual_opt: vgg_type {vgg_type!r} would be downloaded by BasicSR; "
                "only 'vgg19' is read from a local file"
            )
        if not osp.isfile(VGG_PRETRAIN_PATH):
            raise OptionError(
                f"{source}: train: perceptual_opt needs the VGG19 weights at {osp.abspath(VGG_PRETRAIN_PATH)} "
                f"(torchvision's ImageNet VGG19, {VGG19_URL}; nothing is downloaded). Put the file there "
                "(the path is relative to the directory you run from) or remove perceptual_opt."
            )
    queue = opt.get("queue_size")
    if queue is not None and opt.get("model_type", "").startswith("ESCReal"):
        batch = (opt.get("datasets") or {}).get("train", {}).get("batch_size_per_gpu")
        if batch and queue % batch:
            raise OptionError(f"{source}: queue_size {queue} must be a multiple of batch_size_per_gpu {batch}")


def _check_pairs(lq: set, gt: set, where: str) -> None:
    if lq != gt:
        only_gt, only_lq = sorted(gt - lq), sorted(lq - gt)
        example = f"{only_gt[0]!r} has no LR image" if only_gt else f"{only_lq[0]!r} has no HR image"
        raise OptionError(f"{where}: LQ and GT hold different images ({example})")


def _check_network(opt: dict, source: str) -> None:
    from basicsr.utils.registry import ARCH_REGISTRY

    network = dict(opt.get("network_g") or {})
    if "type" not in network:
        raise OptionError(f"{source}: network_g: 'type' is missing")
    name = network.pop("type")
    if name not in ARCH_REGISTRY:  # (not ARCH_REGISTRY.get: it prints a line of its own first)
        close = difflib.get_close_matches(str(name), list(ARCH_REGISTRY._obj_map), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise OptionError(f"{source}: network_g: type {name!r} is not a registered network{hint}")
    _check_network_values(network, f"{source}: network_g: ")
    arch = ARCH_REGISTRY.get(name)
    config = getattr(arch, "Config", None)
    parameters = inspect.signature(arch).parameters
    accepted = config.keywords() if config else tuple(parameters)
    if config or not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        unknown = sorted(set(network) - set(accepted))
        if unknown:
            close = difflib.get_close_matches(unknown[0], accepted, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise OptionError(
                f"{source}: network_g: unknown option {unknown[0]!r} for {name}{hint}; accepted: {', '.join(accepted)}"
            )
        if config:
            try:
                config.from_keywords(**network)
            except ValueError as error:
                raise OptionError(f"{source}: network_g: {error}") from error
    if "upscaling_factor" not in parameters:
        return
    factor = network.get("upscaling_factor", parameters["upscaling_factor"].default)
    if opt.get("scale") is not None and factor != opt["scale"]:
        raise OptionError(f"{source}: scale {opt['scale']} differs from network_g: upscaling_factor {factor}")


def _dataset_folders(dataset: dict) -> list[str]:
    return [dataset[key] for key in ("dataroot_gt", "dataroot_lq") if dataset.get(key)]


def drop_missing_test_sets(opt: dict, source: str) -> list[str]:
    """Remove the test sets (``datasets: test_*``) whose folders do not exist from ``opt``, so
    that a user with some benchmark sets can run a test file listing all five. Returns one
    warning per set removed; an error when none is left."""
    datasets = opt.get("datasets") or {}
    warnings = []
    for phase, dataset in list(datasets.items()):
        missing = [p for p in _dataset_folders(dataset or {}) if not osp.exists(osp.expanduser(p))]
        if phase.startswith("test") and missing:
            del datasets[phase]
            name = dataset.get("name", phase)
            warnings.append(f"{source}: skipping datasets: {phase} ({name}): {missing[0]!r} does not exist")
    if warnings and not datasets:
        raise OptionError(f"{source}: none of the test sets exists ({'; '.join(warnings)})")
    return warnings


def _check_keys(opt: dict, source: str) -> list[str]:
    """Unknown keys: an error when one is close to a known key (a typo), else a warning."""
    warnings = []

    def visit(mapping: dict, known: frozenset[str], where: str, *, losses: bool = False) -> None:
        for key in mapping:
            if key in known or (losses and key.endswith("_opt")):
                continue
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.75)
            if close:
                raise OptionError(f"{where}unknown option {key!r} (did you mean {close[0]!r}?)")
            warnings.append(f"{where}option {key!r} is not read by BasicSR or this project's models")

    visit(opt, KNOWN_KEYS[""], f"{source}: ")
    for section in ("train", "val", "logger", "path"):
        if isinstance(opt.get(section), dict):
            visit(opt[section], KNOWN_KEYS[section], f"{source}: {section}: ", losses=section == "train")
    for phase, dataset in (opt.get("datasets") or {}).items():
        if isinstance(dataset, dict):
            visit(dataset, KNOWN_KEYS["datasets"], f"{source}: datasets: {phase}: ")
    return warnings


def _require(mapping: dict, key: str, where: str, kind: str = "positive integer", *, required: bool = True):
    """``mapping[key]`` checked to be a ``kind`` (positive integer, non-negative integer,
    positive number); missing is an error when ``required``."""
    if key not in mapping or mapping[key] is None:
        if required:
            raise OptionError(f"{where}{key!r} is missing (a {kind})")
        return None
    value = mapping[key]
    number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    whole = number and float(value).is_integer()  # BasicSR files write e.g. !!float 5e3
    ok = {
        "positive integer": whole and value > 0,
        "non-negative integer": whole and value >= 0,
        "positive number": number and value > 0,
        "whole number (-1: none)": whole and value >= -1,
    }[kind]
    if not ok:
        raise OptionError(f"{where}{key}: {value!r} is not a {kind}")
    return value


def _check_arbitrary_scale(dataset: dict, where: str, train: bool) -> None:
    """ArbitraryScaleDataset: its sizes and scales (training) or its test_scale and protocol."""
    from ..io.arbitrary_scale import PROTOCOLS

    if train:
        for key in ("inp_size", "sample_q"):
            _require(dataset, key, where, required=False)
        for key in ("scale_min", "scale_max"):
            _require(dataset, key, where, "positive number", required=False)
        if dataset.get("scale_min", 1) > dataset.get("scale_max", 4):
            raise OptionError(f"{where}scale_min {dataset.get('scale_min', 1)} is above scale_max "
                              f"{dataset.get('scale_max', 4)}")  # fmt: skip
        return
    _require(dataset, "test_scale", where, "positive number")
    protocol = dataset.get("protocol", "benchmark")
    if protocol not in PROTOCOLS:
        raise OptionError(f"{where}protocol: {protocol!r} is not one of {', '.join(PROTOCOLS)}")


# --------------------------------------------------------------------------- what BasicSR writes

#: What a value that is not a string is, in a message.
_KINDS: dict[type, str] = {
    bool: "a boolean",
    int: "a number",
    float: "a number",
    bytes: "binary data",
    datetime.datetime: "a timestamp",
    datetime.date: "a date",
    list: "a list",
    dict: "a mapping",
}


def _shown(value: object) -> str:
    """``value`` for a one-line message: a string or bytes quoted, anything else as written."""
    text = repr(value) if isinstance(value, str | bytes) else str(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _is_folder_name(value: object) -> bool:
    """A single folder name: a string, not ``.`` or ``..``, without a separator or NUL."""
    return isinstance(value, str) and value not in ("", ".", "..") and not any(c in value for c in "/\\\0")


def _kind(value: object) -> str:
    return next((kind for cls, kind in _KINDS.items() if isinstance(value, cls)), type(value).__name__)


def _check_folder_name(value: object, where: str, purpose: str) -> None:
    """``value`` is one folder name (:func:`_is_folder_name`); ``where`` names the file and key."""
    if _is_folder_name(value):
        return
    kind = "" if isinstance(value, str) else f" ({_kind(value)}, not a string)"
    raise OptionError(
        f"{where} {_shown(value)}{kind}: must be a folder name (no '/', '..' or absolute path); {purpose}"
    )


#: ``path:`` keys BasicSR only reads (``make_exp_dirs`` skips keys holding these); it creates a
#: folder for every other key.
_READ_ONLY_PATHS = ("strict_load", "pretrain_network", "resume", "param_key")

#: The ``path:`` folders BasicSR sets itself from ``--root`` and ``name``, by phase.
_RUN_FOLDERS: dict[bool, tuple[str, ...]] = {
    True: ("experiments_root", "models", "training_states", "log", "visualization"),
    False: ("results_root", "log", "visualization"),
}


def _run_folder(root: str, name: str, *, is_train: bool) -> str:
    """The run's folder: ``ROOT/experiments/NAME`` (training) or ``ROOT/results/NAME`` (test)."""
    return osp.join(osp.abspath(root), "experiments" if is_train else "results", name)


def check_run_paths(opt: dict, source: str, *, is_train: bool, root: str | None = None) -> None:
    """Nothing BasicSR creates or writes may lie outside the run's folder under ``root``:
    ``name`` is one folder name (it also names the ``tb_logger`` folder and the log file), so
    are the names of the test and validation sets (validation images are saved in a folder of
    that name) and ``val: suffix`` holds no separator (it ends their file names); every
    ``path:`` folder BasicSR creates (all but the pretrained networks, the resume state and
    their flags) that the file sets lies inside the run's folder (with ``root``)."""
    name = opt.get("name")
    if name is not None and name != "":  # (missing or empty: "'name' is missing")
        _check_folder_name(name, f"{source}: name", "it names the run's folder under experiments/ and results/")
    for phase, dataset in (opt.get("datasets") or {}).items():
        if phase != "train" and isinstance(dataset, dict) and dataset.get("name") is not None:
            _check_folder_name(
                dataset["name"],
                f"{source}: datasets: {phase}: name",
                "validation images are saved in a folder so named",
            )
    suffix = opt["val"].get("suffix") if isinstance(opt.get("val"), dict) else None
    if isinstance(suffix, str) and any(c in suffix for c in "/\\\0"):
        raise OptionError(
            f"{source}: val: suffix {_shown(suffix)}: must not hold '/' (it ends the saved images' names)"
        )
    paths = opt.get("path")
    if root is None or not isinstance(paths, dict) or not _is_folder_name(name):
        return
    run = osp.realpath(_run_folder(root, name, is_train=is_train))
    for key, value in paths.items():
        if any(part in str(key) for part in _READ_ONLY_PATHS) or (value is None and key in _RUN_FOLDERS[is_train]):
            continue
        inside = isinstance(value, str) and osp.commonpath([run, osp.realpath(value)]) == run
        if not inside:
            raise OptionError(
                f"{source}: path: {key} {_shown(value)}: BasicSR creates this folder; it must lie inside the run's "
                f"folder {run} (or leave it out: BasicSR sets the run's folders from --root and name)"
            )


# --------------------------------------------------------------------------- registered names and values


def _check_registered(name: object, names: list[str], what: str, where: str, *, listed: str = "registered") -> None:
    """``name`` is one of ``names``; else one line (``where``: the file and key) listing them,
    the closest first."""
    if name in names:
        return
    close = difflib.get_close_matches(str(name), names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    ordered = ", ".join(close + [n for n in names if n not in close])
    raise OptionError(f"{where} {_shown(name)} is not a {what}{hint}; {listed}: {ordered}")


def _check_registries(opt: dict, source: str, *, is_train: bool) -> None:
    """``model_type``, each dataset's, loss's and metric's ``type``: names BasicSR's registries
    hold (it would stop with a ``KeyError``)."""
    from basicsr.utils.registry import DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

    from . import activate

    activate()  # this project's models, datasets and metric registered

    def check(name: object, registry, what: str, where: str) -> None:
        # BasicSR's registry finds its own entries by their names without the "_basicsr" suffix too
        names = sorted({registered.removesuffix("_basicsr") for registered in registry._obj_map})
        plain = name.removesuffix("_basicsr") if isinstance(name, str) else name
        _check_registered(plain, names, f"registered {what}", where)

    check(opt.get("model_type"), MODEL_REGISTRY, "model", f"{source}: model_type")
    for phase, dataset in (opt.get("datasets") or {}).items():
        if isinstance(dataset, dict):
            check(dataset.get("type"), DATASET_REGISTRY, "dataset", f"{source}: datasets: {phase}: type")
    if is_train:
        for key, loss in (opt.get("train") or {}).items():
            if str(key).endswith("_opt") and isinstance(loss, dict):
                check(loss.get("type"), LOSS_REGISTRY, "loss", f"{source}: train: {key}: type")
    val = opt.get("val")
    metrics = val.get("metrics") if isinstance(val, dict) else None
    for key, metric in (metrics if isinstance(metrics, dict) else {}).items():
        if isinstance(metric, dict):
            check(metric.get("type"), METRIC_REGISTRY, "metric", f"{source}: val: metrics: {key}: type")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _scheduler_keywords() -> dict[str, tuple[str, ...]]:
    """The scheduler types BasicSR's ``setup_schedulers`` builds, and each one's keywords."""
    from basicsr.models.lr_scheduler import CosineAnnealingRestartLR, MultiStepRestartLR

    def keywords(scheduler: type) -> tuple[str, ...]:
        return tuple(p for p in inspect.signature(scheduler).parameters if p not in ("optimizer", "last_epoch"))

    multistep, cosine = keywords(MultiStepRestartLR), keywords(CosineAnnealingRestartLR)
    return {"MultiStepLR": multistep, "MultiStepRestartLR": multistep, "CosineAnnealingRestartLR": cosine}


def _whole(value: object) -> bool:
    return _is_number(value) and float(value).is_integer()


def _list_of(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda value: isinstance(value, list | tuple) and bool(value) and all(check(v) for v in value)


#: Scheduler keywords: what each must be, and the test.
_SCHEDULER_VALUES: dict[str, tuple[str, Callable[[object], bool]]] = {
    "milestones": ("a list of positive integers (iterations)", _list_of(lambda v: _whole(v) and v > 0)),
    "periods": ("a list of positive integers (iterations)", _list_of(lambda v: _whole(v) and v > 0)),
    "restarts": ("a list of non-negative integers (iterations)", _list_of(lambda v: _whole(v) and v >= 0)),
    "restart_weights": ("a list of non-negative numbers", _list_of(lambda v: _is_number(v) and v >= 0)),
    "gamma": ("a number", _is_number),
    "eta_min": ("a non-negative number", lambda v: _is_number(v) and v >= 0),
}


def _check_scheduler(scheduler: object, where: str) -> None:
    """BasicSR's ``setup_schedulers``: a known type, its keywords, and values that schedule."""
    where = f"{where}scheduler: "
    if not isinstance(scheduler, dict):
        return
    schedulers = _scheduler_keywords()
    kind = scheduler.get("type")
    _check_registered(kind, list(schedulers), "BasicSR scheduler", f"{where}type", listed="accepted")
    accepted = schedulers[kind]
    for key, value in scheduler.items():
        if key == "type":
            continue
        if key not in accepted:
            close = difflib.get_close_matches(str(key), accepted, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise OptionError(f"{where}unknown option {key!r} for {kind}{hint}; accepted: {', '.join(accepted)}")
        expected, fits = _SCHEDULER_VALUES.get(key, ("", None))
        if fits is not None and not fits(value):
            raise OptionError(f"{where}{key}: {_shown(value)} must be {expected}")


def _check_training_values(train: dict, where: str) -> None:
    """What would invert or disable training: a clip that is not a positive norm, a schedule
    that never applies, Adam betas outside [0, 1)."""
    _require(train, "grad_clip", f"{where}train: ", "positive number", required=False)
    _check_scheduler(train.get("scheduler"), f"{where}train: ")
    for name, optim in train.items():
        if name.startswith("optim_") and isinstance(optim, dict) and "betas" in optim:
            betas = optim["betas"]
            pair = isinstance(betas, list | tuple) and len(betas) == 2
            if not (pair and all(_is_number(b) and 0 <= b < 1 for b in betas)):
                pair_text = "a pair of numbers in [0, 1), e.g. [0.9, 0.99]"
                raise OptionError(f"{where}train: {name}: betas: {_shown(betas)} must be {pair_text}")


#: ``manual_seed`` (plus the process rank) seeds NumPy, which takes integers below 2**32.
_SEEDS = 2**31


def _check_seed(opt: dict, where: str) -> None:
    """``manual_seed``: an integer NumPy and torch take (absent or ``~``: drawn at random)."""
    seed = opt.get("manual_seed")
    if seed is not None and not (isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < _SEEDS):
        raise OptionError(f"{where}manual_seed: {_shown(seed)} is not an integer from 0 to {_SEEDS - 1}")


#: ``network_g`` widths besides :data:`NETWORK_LIMITS`' keys, bounded as the checkpoint reader
#: bounds ESC-LTE's (four times the largest ``dim``).
_WIDTHS = ("hidden_dim", "mlp_hidden", "mid_dim", "rib_hidden_dim", "rank")


def _check_network_values(values: dict, where: str) -> None:
    """Every number of ``network_g`` (its nested ``encoder`` too) finite and within
    :data:`NETWORK_LIMITS`, before anything is built."""
    limits = {**NETWORK_LIMITS, **dict.fromkeys(_WIDTHS, 4 * NETWORK_LIMITS["dim"])}
    for key, value in values.items():
        if isinstance(value, dict):
            _check_network_values(value, f"{where}{key}: ")
            continue
        for number in value if isinstance(value, list | tuple) else (value,):
            if isinstance(number, bool) or not isinstance(number, int | float):
                continue
            if not math.isfinite(number):
                raise OptionError(f"{where}{key}: {number} is not a finite number")
            limit = limits.get(key)
            if limit is not None and number > limit:
                raise OptionError(f"{where}{key} {number:g} is out of range (at most {limit})")


def _check_values(opt: dict, source: str, *, is_train: bool) -> None:
    """Required keys and their types, before BasicSR reads them."""
    where = f"{source}: "
    for key in ("name", "model_type"):
        if not opt.get(key):
            raise OptionError(f"{where}{key!r} is missing")
    _check_seed(opt, where)
    arbitrary = (opt.get("network_g") or {}).get("type") == "ESCLTE"  # no fixed scale: each dataset has its own
    scale = _require(opt, "scale", where, required=not arbitrary)
    datasets = opt.get("datasets") or {}
    train_set = datasets.get("train") if is_train else None
    if is_train:
        if not isinstance(train_set, dict):
            raise OptionError(f"{where}datasets: 'train' is missing")
        train, logger = opt.get("train") or {}, opt.get("logger") or {}
        _require(train, "total_iter", f"{where}train: ")
        _require(train, "warmup_iter", f"{where}train: ", "whole number (-1: none)", required=False)
        for name, optim in train.items():
            if name.startswith("optim_") and isinstance(optim, dict):
                _require(optim, "lr", f"{where}train: {name}: ", "positive number")
        _check_training_values(train, where)
        ema = train.get("ema_decay", 0)
        if isinstance(ema, bool) or not isinstance(ema, int | float) or not 0 <= ema < 1:
            raise OptionError(f"{where}train: ema_decay: {ema!r} must be a number in [0, 1)")
        for key in ("print_freq", "save_checkpoint_freq"):
            _require(logger, key, f"{where}logger: ")
        if isinstance(opt.get("val"), dict):
            _require(opt["val"], "val_freq", f"{where}val: ")
        _require(train_set, "batch_size_per_gpu", f"{where}datasets: train: ")
        _require(train_set, "num_worker_per_gpu", f"{where}datasets: train: ", "non-negative integer", required=False)
        _require(train_set, "dataset_enlarge_ratio", f"{where}datasets: train: ", required=False)
        if not train_set.get("dataroot_gt"):
            raise OptionError(f"{where}datasets: train: 'dataroot_gt' is missing")
    for phase, dataset in datasets.items():
        if isinstance(dataset, dict):
            gt_size = _require(dataset, "gt_size", f"{where}datasets: {phase}: ", required=False)
            if dataset.get("type") == "ArbitraryScaleDataset":
                _check_arbitrary_scale(dataset, f"{where}datasets: {phase}: ", phase.startswith("train"))
            if gt_size and scale and gt_size % scale:
                raise OptionError(
                    f"{where}datasets: {phase}: gt_size {gt_size} is not a multiple of scale {scale} "
                    f"(the LR crop would be {gt_size / scale:g} pixels)"
                )


def _check_iterations(dataset: dict, size: int | None, source: str) -> None:
    """A training set smaller than one batch gives zero iterations (BasicSR drops the last,
    incomplete batch) and an untrained network saved as if trained."""
    if size is None:
        return
    batch, ratio = dataset["batch_size_per_gpu"], dataset.get("dataset_enlarge_ratio", 1)
    if batch > size * ratio:
        raise OptionError(
            f"{source}: datasets: train: batch_size_per_gpu {batch} is larger than the {size} training images"
            f" (x dataset_enlarge_ratio {ratio}): not one iteration would run"
        )


def check_options(opt: dict, source: str, *, is_train: bool, root: str | None = None) -> list[str]:
    """Raise :class:`OptionError` for the first problem found in the parsed options ``opt``;
    returns warnings (one line each) for what is suspicious but not wrong. ``root``: the
    ``--root`` the run's folders go under (:func:`check_run_paths`)."""
    warnings = _check_keys(opt, source)
    check_run_paths(opt, source, is_train=is_train, root=root)
    _check_values(opt, source, is_train=is_train)
    _check_registries(opt, source, is_train=is_train)
    _check_network(opt, source)
    num_gpu = opt.get("num_gpu", "auto")
    if num_gpu != "auto" and num_gpu and not torch.cuda.is_available():
        raise OptionError(f"{source}: num_gpu: {num_gpu} but this machine has no CUDA device; use num_gpu: auto or 0")
    datasets = opt.get("datasets") or {}
    if not datasets:
        raise OptionError(f"{source}: 'datasets' is empty")
    for phase, dataset in datasets.items():
        if isinstance(dataset, dict) and dataset.get("prefetch_mode") == "cuda" and not torch.cuda.is_available():
            raise OptionError(f"{source}: datasets: {phase}: prefetch_mode 'cuda' needs a GPU; use ~ or 'cpu'")
        size = _check_dataset(phase, dataset, opt.get("scale"), source)
        if is_train and phase == "train":
            _check_iterations(dataset, size, source)
    paths = opt.get("path") or {}
    for key in ("pretrain_network_g", "pretrain_network_d", "resume_state"):
        value = paths.get(key)
        if value and not osp.isfile(osp.expanduser(value)):
            raise OptionError(f"{source}: path: {key} {value!r} does not exist")
    if is_train and "train" not in opt:
        raise OptionError(f"{source}: 'train' section is missing")
    if is_train:
        _check_train(opt["train"], opt, source)
    if not is_train and "val" not in opt:
        raise OptionError(f"{source}: 'val' section is missing (BasicSR's test needs val: save_img and metrics)")
    val = opt.get("val") or {}
    if not is_train and val.get("save_img") and "suffix" not in val:  # only basicsr test reads it
        raise OptionError(f"{source}: val: save_img needs a 'suffix' entry (BasicSR's test reads it; use suffix: ~)")
    strip = val.get("crop_strip")
    if strip is not None and not (
        isinstance(strip, dict)
        and set(strip) <= {"size", "zoom"}
        and all(isinstance(v, int) and v > 0 for v in strip.values())
    ):
        raise OptionError(f"{source}: val: crop_strip must be a mapping like {{size: 96, zoom: 2}}; got {strip!r}")
    return warnings
