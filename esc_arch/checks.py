"""Early checks of a BasicSR option file, so that a bad run stops at once with one clear
message naming the file or key, instead of a traceback minutes into training.

Checked: ``network_g`` (registered type, accepted keywords, scale), ``num_gpu`` and
``prefetch_mode`` against the machine, every dataset's folders or LMDBs (present, readable,
LQ and GT key sets equal, LMDB image sizes consistent with ``scale``), and the
``pretrain_network_g`` / ``resume_state`` files.
"""

from __future__ import annotations

import inspect
import os
from os import path as osp

import torch

__all__ = ["OptionError", "check_options", "read_lmdb_meta"]


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
    names = {}
    for root, _, files in os.walk(folder):
        for name in files:
            if name.lower().endswith((".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")):
                path = osp.join(root, name)
                names[osp.splitext(osp.relpath(path, folder))[0]] = path
    if not names:
        raise OptionError(f"{where}: folder {folder!r} holds no images")
    return names


def _check_dataset(phase: str, dataset: dict, scale: int | None, source: str) -> None:
    where = f"{source}: datasets: {phase}"
    backend = (dataset.get("io_backend") or {}).get("type", "disk")
    gt_root, lq_root = dataset.get("dataroot_gt"), dataset.get("dataroot_lq")
    if backend == "lmdb":
        gt = _check_lmdb(gt_root, f"{where}: dataroot_gt") if gt_root else None
        lq = _check_lmdb(lq_root, f"{where}: dataroot_lq") if lq_root else None
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
    elif backend == "disk":
        gt = _image_names(gt_root, f"{where}: dataroot_gt") if gt_root else None
        lq = _image_names(lq_root, f"{where}: dataroot_lq") if lq_root else None
        if gt is not None and lq is not None and dataset.get("type") == "PairedImageDataset":
            template = dataset.get("filename_tmpl", "{}")
            expected = {template.format(name) for name in gt}
            missing = sorted(expected - set(lq))
            if missing:
                raise OptionError(f"{where}: {len(missing)} LR image(s) missing from {lq_root!r}, e.g. {missing[0]!r}")
    meta = dataset.get("meta_info_file")
    if meta and not osp.isfile(meta):
        raise OptionError(f"{where}: meta_info_file {meta!r} does not exist")


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
    try:
        arch = ARCH_REGISTRY.get(name)
    except KeyError as error:
        raise OptionError(f"{source}: network_g: type {name!r} is not a registered network") from error
    parameters = inspect.signature(arch).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        unknown = sorted(set(network) - set(parameters))
        if unknown:
            raise OptionError(
                f"{source}: network_g: unknown option {unknown[0]!r} for {name}; accepted: {', '.join(parameters)}"
            )
    if "upscaling_factor" not in parameters:
        return
    factor = network.get("upscaling_factor", parameters["upscaling_factor"].default)
    if opt.get("scale") is not None and factor != opt["scale"]:
        raise OptionError(f"{source}: scale {opt['scale']} differs from network_g: upscaling_factor {factor}")


def check_options(opt: dict, source: str, *, is_train: bool) -> None:
    """Raise :class:`OptionError` for the first problem found in the parsed options ``opt``."""
    _check_network(opt, source)
    num_gpu = opt.get("num_gpu", "auto")
    if num_gpu != "auto" and num_gpu and not torch.cuda.is_available():
        raise OptionError(f"{source}: num_gpu: {num_gpu} but this machine has no CUDA device; use num_gpu: auto or 0")
    datasets = opt.get("datasets") or {}
    if not datasets:
        raise OptionError(f"{source}: 'datasets' is empty")
    for phase, dataset in datasets.items():
        if dataset.get("prefetch_mode") == "cuda" and not torch.cuda.is_available():
            raise OptionError(f"{source}: datasets: {phase}: prefetch_mode 'cuda' needs a GPU; use ~ or 'cpu'")
        _check_dataset(phase, dataset, opt.get("scale"), source)
    paths = opt.get("path") or {}
    for key in ("pretrain_network_g", "resume_state"):
        value = paths.get(key)
        if value and not osp.isfile(osp.expanduser(value)):
            raise OptionError(f"{source}: path: {key} {value!r} does not exist")
    if is_train and "train" not in opt:
        raise OptionError(f"{source}: 'train' section is missing")
    if not is_train and "val" not in opt:
        raise OptionError(f"{source}: 'val' section is missing (BasicSR's test needs val: save_img and metrics)")
