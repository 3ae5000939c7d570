"""Every change this project makes to BasicSR 1.4.2 (the last PyPI release), in one place.

BasicSR 1.4.2 predates today's torch, torchvision, numpy and Python, and assumes CUDA. This
module adapts it, and repairs what BasicSR gets wrong for every model, not only ESC's. Each
change is an entry of :data:`ADAPTATIONS` (declared with :func:`adaptation` above its
function), keeps BasicSR's behaviour where BasicSR already
worked, and has a test in ``tests/basicsr_plugin/test_compat.py``. Nothing else in the
project modifies BasicSR; :func:`esc_arch.basicsr_plugin.activate` applies these once.

Import time (before ``import basicsr``; applied by the import hook that ``import esc_arch``
installs, so ``import esc_arch`` then ``import basicsr`` works):

- ``functional_tensor``: ``torchvision.transforms.functional_tensor`` disappeared in
  torchvision 0.17; BasicSR's ``data/degradations.py`` imports ``rgb_to_grayscale`` from it,
  so *every* BasicSR import failed. The module is aliased to its private successor.
- ``distutils``: gone from Python 3.12; ``archs/arch_util.py`` imports
  ``distutils.version.LooseVersion``. A minimal stand-in, only when the import fails.
- ``scipy_filters``: ``scipy.ndimage.filters`` (``metrics/niqe.py``) goes away in SciPy
  2.0; aliased to ``scipy.ndimage`` when missing.

Run time (after ``import basicsr``):

- ``parse_options``: the ``basicsr`` command parses the option file once (with its checks)
  and BasicSR's pipelines take that parse instead of reading ``sys.argv`` and the file
  again; without the command, BasicSR's own ``parse_options`` runs, and a ``name`` or
  ``path:`` folder that would lie outside the run's folder is refused before any folder is
  made (``mkdir_and_rename`` renames an existing one).
- ``safe_yaml``: ``parse_options`` read option files with PyYAML's full loader (a value
  tagged ``!!python/object/apply:...`` ran code as the file was read) and ``eval``-ed
  ``--force_yml`` values starting with ``[``; both now go through
  :mod:`.option_yaml` (YAML's safe loader, key order kept, the file's size, depth and
  node count bounded without expanding its aliases).
- ``resume``: ``load_resume_state`` mapped every state onto ``torch.cuda.current_device()``
  (no resume without a GPU), relied on ``torch.load``'s changing ``weights_only`` default,
  and looked for ``--auto_resume`` states under ``./experiments`` instead of the run's own
  ``training_states`` folder. ``--auto_resume`` now also skips a latest state that cannot be
  read (or whose network file is missing) for the previous one, saying so, and removes the
  temporary files of saves a kill interrupted. ``path: resume_state`` may name a state of
  another run: its networks are read beside it (``check_resume`` looked in this run's
  ``models/``) and this run's folders are created (BasicSR skipped that when resuming).
- ``dist_cpu``: ``_init_dist_pytorch`` always called ``torch.cuda.set_device`` and used
  NCCL, so ``--launcher pytorch`` failed without GPUs; without CUDA: gloo, no device.
- ``ddp_cpu``: ``model_to_device`` passed a CUDA ``device_ids`` to DDP; on CPU, none.
- ``jpg_quality``: ``add_jpg_compression`` handed OpenCV >= 4.11 a float quality (rejected)
  and a float image; both converted explicitly.
- ``optimizers``: ``get_optimizer`` knew only Adam; every ``torch.optim`` optimizer by name
  (the paper uses AdamW), with an error listing them.
- ``optimizer_options``: ``setup_optimizers`` popped ``type`` from the live ``optim_g`` /
  ``optim_d`` options (a second model built from them failed); it now works on copies.
- ``warmup``: BasicSR's chained ``MultiStepRestartLR`` left the rate at
  ``(warmup_iter - 1) / warmup_iter`` of the configured one after linear warm-up, for the
  whole run; warm-up now ends at the configured rate.
- ``atomic_saves``: ``save_network`` / ``save_training_state`` wrote in place, so a kill
  mid-save left a truncated file that ``--auto_resume`` then loaded; now atomic (models
  first, then the state), tensors moved to the CPU, ``module.`` prefixes removed, and the
  ``GradScaler`` state of mixed-precision models kept.
- ``realesrgan_folder``: ``RealESRGANDataset`` demanded a ``meta_info`` list on disk; without
  one (the authors' files) it now reads every image under ``dataroot_gt``.
- ``dataset_errors``: an empty or undecodable image raised ``AttributeError`` on ``None``
  inside a DataLoader worker, naming no file; now a ``ValueError`` naming the dataset class
  and the file.
- ``eta``: the progress line's ETA counted one iteration too many and printed
  ``-1 day, 23:59:59`` at the last one.
- ``console``: the console shows progress, results and warnings; the environment banner,
  the option dump and the network printout (multi-line records of the pipelines and of
  ``print_network``) go to the log file only.

Checked and needing nothing: numpy 2 (BasicSR uses none of the removed aliases), the AMP
APIs (BasicSR 1.4.2 uses none), and ``torch.load``'s ``weights_only=True`` default for
BasicSR's own model and state files.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import logging
import os
import re
import sys
import types
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from os import path as osp

import torch

__all__ = ["ADAPTATIONS", "Adaptation", "applied", "apply_import_time", "apply_runtime", "parsed_options"]

logger = logging.getLogger("basicsr.esc")


@dataclass(frozen=True)
class Adaptation:
    name: str
    phase: str  # "import": before BasicSR is imported; "runtime": after
    summary: str
    install: Callable[[], bool]  # returns whether anything was changed


#: Every adaptation, in the order of this file (each declares itself with @adaptation).
ADAPTATIONS: list[Adaptation] = []


def adaptation(name: str, phase: str, summary: str) -> Callable[[Callable[[], bool]], Callable[[], bool]]:
    """Declare ``install`` as the adaptation ``name`` of ``phase`` (``import`` or ``runtime``)."""

    def register(install: Callable[[], bool]) -> Callable[[], bool]:
        ADAPTATIONS.append(Adaptation(name, phase, summary, install))
        return install

    return register


def _replace(owner: str | object, name: str, value: object) -> bool:
    """Set ``owner.name`` (``owner``: a module's dotted name, or a class) to ``value``."""
    setattr(importlib.import_module(owner) if isinstance(owner, str) else owner, name, value)
    return True


# --------------------------------------------------------------------------- import time


def _alias_missing_module(name: str, replacement: str) -> bool:
    """Serve ``replacement`` as ``name`` when ``name`` cannot be imported; whether it did."""
    try:
        importlib.import_module(name)
        return False
    except ImportError:
        sys.modules[name] = importlib.import_module(replacement)
        return True


@adaptation("functional_tensor", "import", "alias torchvision.transforms.functional_tensor")
def _alias_functional_tensor() -> bool:
    return _alias_missing_module(
        "torchvision.transforms.functional_tensor", "torchvision.transforms._functional_tensor"
    )


class LooseVersion:
    """The part of ``distutils.version.LooseVersion`` BasicSR uses: parse and compare."""

    _component = re.compile(r"(\d+|[a-z]+|\.)", re.IGNORECASE)

    def __init__(self, vstring: str) -> None:
        self.vstring = vstring
        parts = [p for p in self._component.split(vstring) if p and p != "."]
        self.version = [int(p) if p.isdigit() else p for p in parts]

    def _key(self, other):
        other = other if isinstance(other, LooseVersion) else LooseVersion(str(other))
        # Mixed int/str positions compare as strings, as distutils did not allow that at all.
        pairs = [
            (a, b) if type(a) is type(b) else (str(a), str(b))
            for a, b in zip(self.version, other.version, strict=False)
        ]
        return pairs, len(self.version), len(other.version)

    def _cmp(self, other) -> int:
        pairs, mine, theirs = self._key(other)
        for a, b in pairs:
            if a != b:
                return -1 if a < b else 1
        return (mine > theirs) - (mine < theirs)

    def __eq__(self, other) -> bool:
        return self._cmp(other) == 0

    def __lt__(self, other) -> bool:
        return self._cmp(other) < 0

    def __le__(self, other) -> bool:
        return self._cmp(other) <= 0

    def __gt__(self, other) -> bool:
        return self._cmp(other) > 0

    def __ge__(self, other) -> bool:
        return self._cmp(other) >= 0

    def __repr__(self) -> str:
        return f"LooseVersion({self.vstring!r})"


@adaptation("distutils", "import", "stand-in distutils.version.LooseVersion")
def _provide_distutils_version() -> bool:
    try:
        importlib.import_module("distutils.version")
        return False
    except ImportError:
        package = types.ModuleType("distutils")
        package.__path__ = []
        module = types.ModuleType("distutils.version")
        module.LooseVersion = LooseVersion
        package.version = module
        sys.modules["distutils"] = package
        sys.modules["distutils.version"] = module
        return True


# --------------------------------------------------------------------------- run time


def _states_newest_first(states_dir: str) -> list[str]:
    if not osp.isdir(states_dir):
        return []
    iters = [int(name[: -len(".state")]) for name in os.listdir(states_dir) if re.fullmatch(r"\d+\.state", name)]
    return [osp.join(states_dir, f"{it}.state") for it in sorted(iters, reverse=True)]


def _remove_unfinished_saves(*folders: str) -> None:
    """Temporary files of saves that a kill interrupted (see esc_arch.io.fileio) are removed."""
    for folder in folders:
        if not osp.isdir(folder):
            continue
        leftovers = [n for n in os.listdir(folder) if n.startswith(".") and n.endswith(".tmp")]
        for name in leftovers:
            os.remove(osp.join(folder, name))
        if leftovers:
            print(f"resume: removed {len(leftovers)} unfinished save(s) from {folder}", file=sys.stderr)


def _read_state(path: str, device: torch.device) -> dict:
    """A BasicSR training state (``weights_only``: no code runs), or a one-line ``ValueError``."""
    from ..commands.common import first_line
    from ..weights import check_declared_sizes

    if osp.getsize(path) == 0:
        raise ValueError(f"{path}: not a training state (empty file)")
    try:  # what the file declares it holds, within the limits, before anything is inflated
        kind = check_declared_sizes(path)
    except OSError as error:
        raise ValueError(f"{path}: cannot be read: {error.strerror or first_line(error)}") from error
    except ValueError as error:
        if "not a checkpoint" in str(error):
            raise ValueError(f"{path}: not a training state (neither a torch zip nor a pickle file)") from error
        raise
    if kind == "safetensors":
        raise ValueError(f"{path}: not a training state (a safetensors file holds weights only)")
    try:
        with open(path, "rb") as f:
            state = torch.load(f, map_location=device, weights_only=True)
    except Exception as error:
        if "Weights only load failed" in str(error):
            reason = "holds pickled Python objects besides tensors and was refused (it could run code when loaded; " \
                "training states are read with weights_only=True)"  # fmt: skip
        else:
            reason = f"not a readable training state (truncated or corrupt): {first_line(error)}"
        raise ValueError(f"{path}: {reason}") from error
    if not (isinstance(state, dict) and isinstance(state.get("iter"), int) and "optimizers" in state):
        raise ValueError(f"{path}: not a BasicSR training state (no 'iter' and 'optimizers')")
    return state


def _readable_state(path: str, device: torch.device) -> dict:
    """A training state and its network file, or an exception saying what is wrong."""
    state = _read_state(path, device)
    models = osp.join(osp.dirname(osp.dirname(path)), "models", f"net_g_{state['iter']}.pth")
    if not osp.isfile(models):
        raise FileNotFoundError(f"its network {models} is missing")
    return state


def load_resume_state(opt: dict) -> dict | None:
    """BasicSR's ``load_resume_state``, on any device and from the run's own folder.

    ``--auto_resume`` looks in ``opt['path']['training_states']`` (under the run's root);
    otherwise ``path: resume_state`` is used. Tensors are mapped to the current CUDA device
    when there is one, else to the CPU, and loaded with ``weights_only=True``.
    """
    from basicsr.utils import check_resume

    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if opt["auto_resume"]:
        states = opt["path"]["training_states"]
        _remove_unfinished_saves(states, osp.join(osp.dirname(states), "models"))
        candidates = _states_newest_first(states)
        for path in candidates:
            try:
                resume_state = _readable_state(path, device)
            except Exception as error:  # a truncated or foreign file: fall back to the previous state
                print(f"resume: {path} cannot be used ({error}); trying the previous state", file=sys.stderr)
                continue
            opt["path"]["resume_state"] = path
            check_resume(opt, resume_state["iter"])
            return resume_state
        if candidates:
            raise ValueError(f"--auto_resume: none of the {len(candidates)} training states in {states} can be read")
        return None
    resume_state_path = opt["path"].get("resume_state")
    if resume_state_path is None:
        return None
    if not osp.isfile(resume_state_path):
        raise FileNotFoundError(f"resume_state {resume_state_path!r} does not exist")
    resume_state = _read_state(resume_state_path, device)
    _resume_from(opt, resume_state_path, resume_state["iter"])
    return resume_state


def _resume_from(opt: dict, state_path: str, iteration: int) -> None:
    """BasicSR's ``check_resume`` for a state that may belong to another run: its networks are
    read from the ``models/`` folder beside its ``training_states/`` (``check_resume`` looked in
    this run's), and this run's folders are created when the run is new (BasicSR creates them
    only for runs that do not resume)."""
    from basicsr.utils import check_resume, make_exp_dirs

    paths = opt["path"]
    own_models, models = paths.get("models"), osp.join(osp.dirname(osp.dirname(osp.abspath(state_path))), "models")
    paths["models"] = models
    try:
        check_resume(opt, iteration)
    finally:
        paths["models"] = own_models
        if own_models is None:
            del paths["models"]
    for key, value in paths.items():
        if key.startswith("pretrain_network_") and value and osp.dirname(value) == models and not osp.isfile(value):
            raise ValueError(
                f"resume_state {state_path!r}: its network {value} is missing (a state's networks are read from "
                "the models/ folder beside its training_states/)"
            )
    if paths.get("experiments_root") and not osp.isdir(paths["experiments_root"]):
        make_exp_dirs(opt)


def _init_dist_pytorch(backend: str, **kwargs) -> None:
    """BasicSR's ``_init_dist_pytorch``; without CUDA, gloo and no ``set_device``."""
    import torch.distributed as dist

    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        torch.cuda.set_device(int(os.environ["RANK"]) % torch.cuda.device_count())
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, **kwargs)


@adaptation("resume", "runtime", "device-agnostic load_resume_state")
def _patch_train() -> bool:
    return _replace("basicsr.train", "load_resume_state", load_resume_state)


@adaptation("dist_cpu", "runtime", "gloo process group without CUDA")
def _patch_dist() -> bool:
    return _replace("basicsr.utils.dist_util", "_init_dist_pytorch", _init_dist_pytorch)


@adaptation("ddp_cpu", "runtime", "DistributedDataParallel on CPU")
def _patch_model_to_device() -> bool:
    from basicsr.models.base_model import BaseModel
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    def model_to_device(self, net):
        """Move ``net`` to the model's device and wrap it in (Distributed)DataParallel."""
        net = net.to(self.device)
        if self.opt["dist"]:
            find_unused = self.opt.get("find_unused_parameters", False)
            device_ids = [torch.cuda.current_device()] if self.device.type == "cuda" else None
            net = DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=find_unused)
        elif self.opt["num_gpu"] > 1:
            net = DataParallel(net)
        return net

    BaseModel.model_to_device = model_to_device
    return True


def add_jpg_compression(img, quality=90):
    """BasicSR's ``add_jpg_compression`` (HWC float32 in [0, 1] -> JPEG round trip), with the
    integer quality and 8-bit image that OpenCV >= 4.11 requires."""
    import cv2
    import numpy as np

    img = (np.clip(img, 0, 1) * 255.0).round().astype(np.uint8)
    _, encimg = cv2.imencode(".jpg", img, [int(cv2.IMWRITE_JPEG_QUALITY), int(round(float(quality)))])
    return np.float32(cv2.imdecode(encimg, 1)) / 255.0


@adaptation("jpg_quality", "runtime", "integer JPEG quality for OpenCV")
def _patch_jpg_quality() -> bool:
    return _replace("basicsr.data.degradations", "add_jpg_compression", add_jpg_compression)


@adaptation("scipy_filters", "import", "alias scipy.ndimage.filters")
def _alias_scipy_ndimage_filters() -> bool:
    return _alias_missing_module("scipy.ndimage.filters", "scipy.ndimage")


# --------------------------------------------------------------------------- parse_options

#: The ``basicsr`` command's parse ``(opt, args)``, taken by BasicSR's pipelines.
_parsed: list[tuple[dict, argparse.Namespace]] = []


@contextlib.contextmanager
def parsed_options(opt: dict, args: argparse.Namespace) -> Iterator[None]:
    """Within this block, BasicSR's ``parse_options`` returns ``(opt, args)`` (already parsed
    and prepared by :mod:`esc_arch.basicsr_plugin.pipeline`) instead of reading ``sys.argv``."""
    _parsed.append((opt, args))
    try:
        yield
    finally:
        _parsed.clear()


@adaptation("parse_options", "runtime", "pipelines take the basicsr command's parse")
def _patch_parse_options() -> bool:
    import basicsr.test
    import basicsr.train
    from basicsr.utils import options

    from .checks import check_run_paths

    original = options.parse_options

    def parse_options(root_path, is_train=True):
        if _parsed:
            return _parsed[-1]
        opt, args = original(root_path, is_train)
        check_run_paths(opt, args.opt, is_train=is_train, root=root_path)  # before any folder is made
        return opt, args

    basicsr.train.parse_options = parse_options
    basicsr.test.parse_options = parse_options
    return True


@adaptation("safe_yaml", "runtime", "option files read with YAML's safe loader; --force_yml without eval")
def _safe_option_yaml() -> bool:
    from basicsr.utils import options

    from .option_yaml import OptionLoader, parse_value

    dumper = options.ordered_yaml()[1]
    options.ordered_yaml = lambda: (OptionLoader, dumper)
    options._postprocess_yml_value = parse_value
    return True


# --------------------------------------------------------------------------- models


def get_optimizer(self, optim_type, params, lr, **kwargs):
    """Any ``torch.optim`` optimizer by class name."""
    optimizer = getattr(torch.optim, str(optim_type), None)
    if not (isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer)):
        names = sorted(
            n
            for n, c in vars(torch.optim).items()
            if isinstance(c, type) and issubclass(c, torch.optim.Optimizer) and n != "Optimizer"
        )
        raise ValueError(f"train: optimizer type {optim_type!r} is not a torch.optim optimizer; accepted: {names}")
    return optimizer(params, lr, **kwargs)


def _with_optimizer_options_copied(setup: Callable) -> Callable:
    @functools.wraps(setup)
    def setup_optimizers(self):
        train_opt = self.opt["train"]
        originals = {k: v for k, v in train_opt.items() if k.startswith("optim_") and isinstance(v, dict)}
        train_opt.update({k: dict(v) for k, v in originals.items()})
        try:
            setup(self)
        finally:
            train_opt.update(originals)

    return setup_optimizers


@adaptation("optimizers", "runtime", "every torch.optim optimizer by name")
def _patch_optimizers() -> bool:
    from basicsr.models.base_model import BaseModel

    return _replace(BaseModel, "get_optimizer", get_optimizer)


@adaptation("optimizer_options", "runtime", "setup_optimizers works on copies")
def _patch_optimizer_options() -> bool:
    from basicsr.models.sr_model import SRModel
    from basicsr.models.srgan_model import SRGANModel

    for model in (SRModel, SRGANModel):
        model.setup_optimizers = _with_optimizer_options_copied(model.setup_optimizers)
    return True


@adaptation("warmup", "runtime", "linear warm-up ends at the configured rate")
def _patch_warmup() -> bool:
    from basicsr.models.base_model import BaseModel

    original = BaseModel.update_learning_rate

    def update_learning_rate(self, current_iter, warmup_iter=-1):
        """BasicSR's schedule and linear warm-up, except that warm-up ends at the full rate."""
        original(self, current_iter, warmup_iter)
        if warmup_iter > 0 and current_iter == warmup_iter:
            self._set_lr(self._get_init_lr())

    BaseModel.update_learning_rate = update_learning_rate
    return True


@adaptation("atomic_saves", "runtime", "atomic model and state files")
def _patch_atomic_saves() -> bool:
    from basicsr.models.base_model import BaseModel
    from basicsr.utils.dist_util import master_only

    from ..io.fileio import atomic_torch_save

    @master_only
    def save_network(self, net, net_label, current_iter, param_key="params"):
        label = "latest" if current_iter == -1 else current_iter
        nets = net if isinstance(net, list) else [net]
        keys = param_key if isinstance(param_key, list) else [param_key]
        if len(nets) != len(keys):
            raise ValueError("save_network: one param_key per network is required")
        save_dict = {
            key: OrderedDict(
                (k.removeprefix("module."), v.detach().cpu()) for k, v in self.get_bare_model(n).state_dict().items()
            )
            for n, key in zip(nets, keys, strict=True)
        }
        atomic_torch_save(save_dict, osp.join(self.opt["path"]["models"], f"{net_label}_{label}.pth"))

    @master_only
    def save_training_state(self, epoch, current_iter):
        if current_iter == -1:
            return
        state = {
            "epoch": epoch,
            "iter": current_iter,
            "optimizers": [o.state_dict() for o in self.optimizers],
            "schedulers": [s.state_dict() for s in self.schedulers],
        }
        if getattr(self, "scaler", None) is not None:
            state["scaler"] = self.scaler.state_dict()
        atomic_torch_save(state, osp.join(self.opt["path"]["training_states"], f"{current_iter}.state"))

    BaseModel.save_network = save_network
    BaseModel.save_training_state = save_training_state
    return True


# --------------------------------------------------------------------------- data


def imfrombytes(content, flag="color", float32=False):
    """BasicSR's ``imfrombytes``, raising ``ValueError`` where OpenCV returns ``None``."""
    import cv2
    import numpy as np

    flags = {"color": cv2.IMREAD_COLOR, "grayscale": cv2.IMREAD_GRAYSCALE, "unchanged": cv2.IMREAD_UNCHANGED}
    img = cv2.imdecode(np.frombuffer(content, np.uint8), flags[flag]) if len(content) else None
    if img is None:
        raise ValueError("cannot decode the image (empty file, or not an image)")
    return img.astype(np.float32) / 255.0 if float32 else img


def naming_the_item(getitem: Callable) -> Callable:
    """A dataset's ``__getitem__`` whose errors are one ``ValueError`` naming the dataset class and
    the item's file (``self.paths[index]``), raised from inside a DataLoader worker too; used by
    BasicSR's datasets (``dataset_errors``) and this plugin's own."""

    @functools.wraps(getitem)
    def __getitem__(self, index):
        try:
            return getitem(self, index)
        except Exception as error:
            paths = getattr(self, "paths", None)
            item = paths[index % len(paths)] if paths else index
            raise ValueError(f"{type(self).__name__}: {item}: {error}") from error

    return __getitem__


@adaptation("realesrgan_folder", "runtime", "RealESRGANDataset without meta_info scans dataroot_gt")
def _patch_realesrgan_folder() -> bool:
    """BasicSR's RealESRGANDataset needs a ``meta_info`` list on disk (a ``KeyError`` without
    one); the authors' option files have none and their dataset reads every image under
    ``dataroot_gt``. Without ``meta_info`` the folder is now scanned (recursively, sorted)."""
    import tempfile

    from basicsr.data.realesrgan_dataset import RealESRGANDataset

    from ..io.imageio import image_paths

    original = RealESRGANDataset.__init__

    @functools.wraps(original)
    def __init__(self, opt):
        if opt.get("meta_info") or (opt.get("io_backend") or {}).get("type") == "lmdb":
            return original(self, opt)
        root = opt["dataroot_gt"]
        names = [osp.relpath(p, root) for p in image_paths(root)]
        with tempfile.TemporaryDirectory() as folder:
            listing = osp.join(folder, "meta_info.txt")
            with open(listing, "w") as f:
                f.write("\n".join(names) + "\n")
            original(self, {**opt, "meta_info": listing})
        self.opt = opt

    RealESRGANDataset.__init__ = __init__
    return True


@adaptation("dataset_errors", "runtime", "dataset errors name the file")
def _patch_dataset_errors() -> bool:
    """An undecodable image raised an AttributeError on ``None`` deep in a DataLoader worker,
    naming no file; now a ``ValueError`` naming the dataset and the file."""
    from basicsr.data import (
        paired_image_dataset,
        realesrgan_dataset,
        realesrgan_paired_dataset,
        single_image_dataset,
    )
    from basicsr.utils import img_util

    modules = (paired_image_dataset, realesrgan_dataset, realesrgan_paired_dataset, single_image_dataset)
    img_util.imfrombytes = imfrombytes
    for module in modules:
        module.imfrombytes = imfrombytes
    for dataset in (module.__dict__[name] for module in modules for name in dir(module) if name.endswith("Dataset")):
        if isinstance(dataset, type) and "__getitem__" in vars(dataset):
            dataset.__getitem__ = naming_the_item(vars(dataset)["__getitem__"])
    return True


# --------------------------------------------------------------------------- console


@adaptation("eta", "runtime", "ETA reaches zero at the last iteration")
def _patch_eta() -> bool:
    import basicsr.train
    from basicsr.utils.logger import MessageLogger as BasicSRMessageLogger

    class MessageLogger(BasicSRMessageLogger):
        """BasicSR's progress line with an ETA that reaches zero at the last iteration."""

        def __call__(self, log_vars):
            max_iters = self.max_iters
            self.max_iters = max(max_iters, log_vars["iter"] + 1)  # BasicSR counts one too many
            try:
                super().__call__(log_vars)
            finally:
                self.max_iters = max_iters

    basicsr.train.MessageLogger = MessageLogger
    return True


class ConsoleFilter(logging.Filter):
    """Keeps the environment banner and the option dump (multi-line records of the pipelines)
    and the network printout off the console; they stay in the log file. Progress lines,
    validation results and warnings pass."""

    QUIET = frozenset({"train_pipeline", "test_pipeline", "print_network"})

    def filter(self, record: logging.LogRecord) -> bool:
        multi_line = record.getMessage().count("\n") >= 2
        return record.levelno >= logging.WARNING or not (multi_line and record.funcName in self.QUIET)


@adaptation("console", "runtime", "multi-line records go to the log file only")
def _patch_console() -> bool:
    import basicsr.test
    import basicsr.train
    from basicsr.utils import logger as basicsr_logger

    original = basicsr_logger.get_root_logger

    def get_root_logger(*args, **kwargs):
        logger = original(*args, **kwargs)
        for handler in logger.handlers:
            console = type(handler) is logging.StreamHandler
            if console and not any(isinstance(f, ConsoleFilter) for f in handler.filters):
                handler.addFilter(ConsoleFilter())
        return logger

    basicsr.train.get_root_logger = get_root_logger
    basicsr.test.get_root_logger = get_root_logger
    return True


# --------------------------------------------------------------------------- the table

_applied: dict[str, bool] = {}


def applied() -> dict[str, bool]:
    """Which adaptations ran, and whether each changed something (a copy)."""
    return dict(_applied)


def _apply(phase: str) -> None:
    for adaptation in ADAPTATIONS:
        if adaptation.phase == phase and adaptation.name not in _applied:
            _applied[adaptation.name] = adaptation.install()


def apply_import_time() -> None:
    """The adaptations BasicSR needs before it is imported (idempotent)."""
    _apply("import")


def apply_runtime() -> None:
    """The adaptations of BasicSR's loaded modules (idempotent; imports basicsr)."""
    apply_import_time()
    importlib.import_module("basicsr")
    _apply("runtime")
