"""Adapt BasicSR 1.4.2 (the last PyPI release) to today's torch, torchvision and numpy, and to CPUs.

This is the one place where the project changes BasicSR's behaviour. :func:`apply` runs
when :mod:`esc_arch` is imported; it must run before BasicSR is first imported, so import
``esc_arch`` before ``basicsr`` (the ``basicsr`` command does). Each adaptation is a row of
:data:`ADAPTATIONS`, keeps BasicSR's behaviour where BasicSR already worked, and is tested in
``tests/test_compat.py``.

Import time (before ``import basicsr``):

- ``torchvision.transforms.functional_tensor`` disappeared in torchvision 0.17; BasicSR's
  ``data/degradations.py`` imports ``rgb_to_grayscale`` from it, so *every* BasicSR import
  failed. The module is aliased to its private successor.
- ``distutils`` is gone from Python 3.12 (it only survives through setuptools);
  ``archs/arch_util.py`` imports ``distutils.version.LooseVersion``. A minimal stand-in is
  provided only when the import fails.
- ``scipy.ndimage.filters`` (imported by ``metrics/niqe.py``) is deprecated and goes away in
  SciPy 2.0; when it is missing it is aliased to ``scipy.ndimage``.

Run time (after ``import basicsr``):

- ``train.load_resume_state`` mapped every resumed state onto ``torch.cuda.current_device()``
  (no resume without a GPU), relied on ``torch.load``'s changing default for
  ``weights_only``, and looked for ``--auto_resume`` states under ``./experiments`` instead
  of the run's own ``training_states`` folder. Replaced by a device-agnostic version.
- ``utils.dist_util._init_dist_pytorch`` always called ``torch.cuda.set_device`` and used
  NCCL, so ``--launcher pytorch`` (torchrun) failed without GPUs. Without CUDA it now uses
  gloo and sets no device.
- ``models.base_model.BaseModel.model_to_device`` passed ``device_ids=[cuda device]`` to
  DistributedDataParallel; on CPU it now passes none.
- ``data.degradations.add_jpg_compression`` handed OpenCV a float JPEG quality and a float
  image, which OpenCV >= 4.11 rejects (quality) or converts with a warning (image); both are
  now converted explicitly (quality rounded, image rounded to 8 bits).

Checked and needing nothing: numpy 2 (BasicSR uses none of the removed aliases), the AMP
APIs (BasicSR 1.4.2 uses none; this project uses ``torch.autocast``), and ``torch.load``'s
``weights_only=True`` default for BasicSR's own model and state files (tensors, lists,
dicts and ``collections.Counter`` only).
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from os import path as osp

import torch

__all__ = ["ADAPTATIONS", "Adaptation", "apply", "applied"]

logger = logging.getLogger("basicsr.esc")


@dataclass(frozen=True)
class Adaptation:
    name: str
    phase: str  # "import": before BasicSR is imported; "runtime": after
    summary: str
    install: Callable[[], bool]  # returns whether anything was changed


# --------------------------------------------------------------------------- import time


def _alias_functional_tensor() -> bool:
    try:
        importlib.import_module("torchvision.transforms.functional_tensor")
        return False
    except ImportError:
        sys.modules["torchvision.transforms.functional_tensor"] = importlib.import_module(
            "torchvision.transforms._functional_tensor"
        )
        return True


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


def _latest_state(states_dir: str) -> str | None:
    if not osp.isdir(states_dir):
        return None
    iters = [int(name[: -len(".state")]) for name in os.listdir(states_dir) if re.fullmatch(r"\d+\.state", name)]
    return osp.join(states_dir, f"{max(iters)}.state") if iters else None


def load_resume_state(opt: dict) -> dict | None:
    """BasicSR's ``load_resume_state``, on any device and from the run's own folder.

    ``--auto_resume`` looks in ``opt['path']['training_states']`` (under the run's root);
    otherwise ``path: resume_state`` is used. Tensors are mapped to the current CUDA device
    when there is one, else to the CPU, and loaded with ``weights_only=True``.
    """
    from basicsr.utils import check_resume

    if opt["auto_resume"]:
        resume_state_path = _latest_state(opt["path"]["training_states"])
        if resume_state_path is not None:
            opt["path"]["resume_state"] = resume_state_path
    else:
        resume_state_path = opt["path"].get("resume_state")
    if resume_state_path is None:
        return None
    if not osp.isfile(resume_state_path):
        raise FileNotFoundError(f"resume_state {resume_state_path!r} does not exist")
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    resume_state = torch.load(resume_state_path, map_location=device, weights_only=True)
    check_resume(opt, resume_state["iter"])
    return resume_state


def _init_dist_pytorch(backend: str, **kwargs) -> None:
    """BasicSR's ``_init_dist_pytorch``; without CUDA, gloo and no ``set_device``."""
    import torch.distributed as dist

    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        torch.cuda.set_device(int(os.environ["RANK"]) % torch.cuda.device_count())
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, **kwargs)


def _patch_train() -> bool:
    import basicsr.train

    basicsr.train.load_resume_state = load_resume_state
    return True


def _patch_dist() -> bool:
    import basicsr.utils.dist_util

    basicsr.utils.dist_util._init_dist_pytorch = _init_dist_pytorch
    return True


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


def _patch_jpg_quality() -> bool:
    import basicsr.data.degradations as degradations

    degradations.add_jpg_compression = add_jpg_compression
    return True


def _alias_scipy_ndimage_filters() -> bool:
    try:
        importlib.import_module("scipy.ndimage.filters")
        return False
    except ImportError:
        sys.modules["scipy.ndimage.filters"] = importlib.import_module("scipy.ndimage")
        return True


ADAPTATIONS: tuple[Adaptation, ...] = (
    Adaptation(
        "functional_tensor", "import", "alias torchvision.transforms.functional_tensor", _alias_functional_tensor
    ),
    Adaptation("distutils", "import", "stand-in distutils.version.LooseVersion", _provide_distutils_version),
    Adaptation("scipy_filters", "import", "alias scipy.ndimage.filters", _alias_scipy_ndimage_filters),
    Adaptation("resume", "runtime", "device-agnostic load_resume_state", _patch_train),
    Adaptation("dist_cpu", "runtime", "gloo process group without CUDA", _patch_dist),
    Adaptation("ddp_cpu", "runtime", "DistributedDataParallel on CPU", _patch_model_to_device),
    Adaptation("jpg_quality", "runtime", "integer JPEG quality for OpenCV", _patch_jpg_quality),
)

_applied: dict[str, bool] = {}


def applied() -> dict[str, bool]:
    """Which adaptations ran, and whether each changed something (a copy)."""
    return dict(_applied)


def apply() -> None:
    """Apply every adaptation once (idempotent)."""
    if _applied:
        return
    for adaptation in ADAPTATIONS:
        if adaptation.phase == "import":
            _applied[adaptation.name] = adaptation.install()
    importlib.import_module("basicsr")
    for adaptation in ADAPTATIONS:
        if adaptation.phase == "runtime":
            _applied[adaptation.name] = adaptation.install()
