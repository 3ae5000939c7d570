"""ESC-Real training, Real-ESRGAN style, on any device (BasicSR 1.4.2's models call ``.cuda()``).

Two models, registered in BasicSR's ``MODEL_REGISTRY``:

- ``ESCRealESRNetModel``: the first ("MSE") stage, L1 on USM-sharpened targets;
- ``ESCRealESRGANModel``: the GAN stage, L1 + VGG19 perceptual + GAN with BasicSR's
  ``UNetDiscriminatorSN`` (BasicSR's ``RealESRGANModel.optimize_parameters``).

Both synthesise the low-quality inputs on the fly from HR crops made by BasicSR's
``RealESRGANDataset`` (which draws the blur and sinc kernels): two rounds of blur, random
resize, Gaussian or Poisson noise and JPEG (BasicSR's ``DiffJPEG``), then the final sinc filter,
as in Real-ESRGAN; a pool of training pairs mixes degradations across batches. Everything runs
on the model's device (CPU or CUDA) and draws from BasicSR's seeded generators (``random``,
NumPy, torch), so a run with the same ``manual_seed`` synthesises the same pairs.
Validation (paired LR/HR folders) and testing (LR-only folders) reuse ``ESCModel``.
"""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F
from basicsr.data.degradations import random_add_gaussian_noise_pt, random_add_poisson_noise_pt
from basicsr.data.transforms import paired_random_crop
from basicsr.models.realesrgan_model import RealESRGANModel
from basicsr.models.sr_model import SRModel
from basicsr.utils import DiffJPEG, USMSharp
from basicsr.utils.img_process_util import filter2D
from basicsr.utils.registry import MODEL_REGISTRY
from torch import Tensor

from .esc_model import ESCModel

__all__ = [
    "ESCRealESRGANModel",
    "ESCRealESRNetModel",
    "RealESRGANDegradation",
    "RealHATGANModel",
    "RealHATMSEModel",
    "TrainingPairPool",
]

_RESIZE_MODES = ("area", "bilinear", "bicubic")


class RealESRGANDegradation:
    """Real-ESRGAN's second-order degradation of HR batches, on the device of its input.

    ``opt`` holds the option file's top-level degradation settings (``resize_prob``,
    ``resize_range``, ``gaussian_noise_prob``, ``noise_range``, ``poisson_scale_range``,
    ``gray_noise_prob``, ``jpeg_range``, ``second_blur_prob`` and their ``...2`` twins) plus
    ``scale`` and ``gt_size``.
    """

    KEYS = (
        "resize_prob", "resize_range", "gaussian_noise_prob", "noise_range", "poisson_scale_range",
        "gray_noise_prob", "jpeg_range", "second_blur_prob", "resize_prob2", "resize_range2",
        "gaussian_noise_prob2", "noise_range2", "poisson_scale_range2", "gray_noise_prob2", "jpeg_range2",
    )  # fmt: skip

    def __init__(self, opt: dict, device: torch.device | str = "cpu") -> None:
        missing = [key for key in (*self.KEYS, "scale", "gt_size") if key not in opt]
        if missing:
            raise ValueError(f"Real-ESRGAN degradation settings missing from the options: {', '.join(missing)}")
        self.opt = {key: opt[key] for key in (*self.KEYS, "scale", "gt_size")}
        self.jpeger = DiffJPEG(differentiable=False).to(device)
        self.usm_sharpener = USMSharp().to(device)

    def _resize(self, out: Tensor, probs, value_range, size=None) -> Tensor:
        kind = random.choices(["up", "down", "keep"], probs)[0]
        factor = {
            "up": lambda: np.random.uniform(1, value_range[1]),
            "down": lambda: np.random.uniform(value_range[0], 1),
            "keep": lambda: 1,
        }[kind]()
        mode = random.choice(_RESIZE_MODES)
        if size is None:
            return F.interpolate(out, scale_factor=factor, mode=mode)
        return F.interpolate(out, size=(int(size[0] * factor), int(size[1] * factor)), mode=mode)

    def _noise(self, out: Tensor, suffix: str) -> Tensor:
        opt = self.opt
        gray = opt[f"gray_noise_prob{suffix}"]
        if np.random.uniform() < opt[f"gaussian_noise_prob{suffix}"]:
            return random_add_gaussian_noise_pt(
                out, sigma_range=opt[f"noise_range{suffix}"], clip=True, rounds=False, gray_prob=gray
            )
        return random_add_poisson_noise_pt(
            out, scale_range=opt[f"poisson_scale_range{suffix}"], gray_prob=gray, clip=True, rounds=False
        )

    def _jpeg(self, out: Tensor, suffix: str) -> Tensor:
        quality = out.new_zeros(out.size(0)).uniform_(*self.opt[f"jpeg_range{suffix}"])
        return self.jpeger(torch.clamp(out, 0, 1), quality=quality)

    @torch.no_grad()
    def __call__(
        self, gt: Tensor, kernel1: Tensor, kernel2: Tensor, sinc_kernel: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(gt, gt_usm, lq): random ``gt_size`` crops of the HR batch, its USM-sharpened twin, and
        the degraded input (``gt_size / scale``, quantised to 8 bits)."""
        opt, scale = self.opt, self.opt["scale"]
        gt_usm = self.usm_sharpener(gt)
        height, width = gt.shape[2:4]

        # first degradation: blur, resize, noise, JPEG (of the sharpened HR, as Real-ESRGAN)
        out = filter2D(gt_usm.contiguous(), kernel1)
        out = self._resize(out, opt["resize_prob"], opt["resize_range"])
        out = self._jpeg(self._noise(out, ""), "")

        # second degradation: blur (sometimes), resize towards the LR size, noise
        if np.random.uniform() < opt["second_blur_prob"]:
            out = filter2D(out.contiguous(), kernel2)
        out = self._resize(out, opt["resize_prob2"], opt["resize_range2"], size=(height / scale, width / scale))
        out = self._noise(out, "2")

        # resize to the LR size + final sinc filter, and JPEG, in either order
        def resize_and_sinc(x: Tensor) -> Tensor:
            x = F.interpolate(x, size=(height // scale, width // scale), mode=random.choice(_RESIZE_MODES))
            return filter2D(x.contiguous(), sinc_kernel)

        if np.random.uniform() < 0.5:
            out = self._jpeg(resize_and_sinc(out), "2")
        else:
            out = resize_and_sinc(self._jpeg(out, "2"))
        lq = torch.clamp((out * 255.0).round(), 0, 255) / 255.0

        (gt, gt_usm), lq = paired_random_crop([gt, gt_usm], lq, opt["gt_size"], scale)
        return gt, gt_usm, lq.contiguous()


class TrainingPairPool:
    """Real-ESRGAN's pool of training pairs: once full, each batch is swapped with a random
    batch from the pool, so one batch mixes degradations drawn at different iterations."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.lq: Tensor | None = None
        self.gt: Tensor | None = None
        self.filled = 0

    @torch.no_grad()
    def __call__(self, lq: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
        batch = lq.shape[0]
        if self.lq is None:
            if self.size % batch:
                raise ValueError(f"queue_size {self.size} must be a multiple of the batch size {batch}")
            self.lq = lq.new_zeros((self.size, *lq.shape[1:]))
            self.gt = gt.new_zeros((self.size, *gt.shape[1:]))
        if self.filled < self.size:  # filling: store, train on the batch as it is
            self.lq[self.filled : self.filled + batch] = lq
            self.gt[self.filled : self.filled + batch] = gt
            self.filled += batch
            return lq, gt
        order = torch.randperm(self.size, device=lq.device)
        self.lq, self.gt = self.lq[order], self.gt[order]
        out_lq, out_gt = self.lq[:batch].clone(), self.gt[:batch].clone()
        self.lq[:batch], self.gt[:batch] = lq, gt
        return out_lq, out_gt


class _RealESRGANTraining:
    """``feed_data`` with on-the-fly degradations while training; paired data otherwise."""

    def _init_degradation(self) -> None:
        self.degradation = RealESRGANDegradation(self.opt, self.device)
        self.usm_sharpener = self.degradation.usm_sharpener
        self.pool = TrainingPairPool(self.opt.get("queue_size", 180))

    @torch.no_grad()
    def feed_data(self, data):
        if not (self.is_train and self.opt.get("high_order_degradation", True)):
            ESCModel.feed_data(self, data)
            if hasattr(self, "gt"):
                self.gt_usm = self.usm_sharpener(self.gt)
            return
        kernels = [data[k].to(self.device) for k in ("kernel1", "kernel2", "sinc_kernel")]
        gt, gt_usm, lq = self.degradation(data["gt"].to(self.device), *kernels)
        self.lq, self.gt = self.pool(lq, gt)
        self.gt_usm = self.usm_sharpener(self.gt)  # the pool may have swapped the batch
        self.lq = self.lq.contiguous()

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        self.is_train = False  # validate on the given pairs, without synthesis
        try:
            ESCModel.nondist_validation(self, dataloader, current_iter, tb_logger, save_img)
        finally:
            self.is_train = True


@MODEL_REGISTRY.register()
class ESCRealESRNetModel(_RealESRGANTraining, ESCModel):
    """Stage 1 of ESC-Real: L1 on synthesised pairs (``gt_usm: true`` = on USM-sharpened HR)."""

    def __init__(self, opt):
        SRModel.__init__(self, opt)
        self._init_degradation()

    @torch.no_grad()
    def feed_data(self, data):
        super().feed_data(data)
        if self.is_train and self.opt.get("gt_usm", True) and hasattr(self, "gt_usm"):
            self.gt = self.gt_usm


@MODEL_REGISTRY.register()
class ESCRealESRGANModel(_RealESRGANTraining, ESCModel, RealESRGANModel):
    """Stage 2 of ESC-Real: L1 + perceptual + GAN (BasicSR's ``RealESRGANModel`` losses and
    discriminator updates, with ``l1_gt_usm`` / ``percep_gt_usm`` / ``gan_gt_usm``)."""

    def __init__(self, opt):
        SRModel.__init__(self, opt)  # RealESRGANModel.__init__ would move its helpers to CUDA
        self._init_degradation()

    def init_training_settings(self):
        if self.opt["train"].get("mixed_precision"):
            raise ValueError("ESCRealESRGANModel trains in fp32; remove train: mixed_precision")
        super().init_training_settings()

    _optimize = RealESRGANModel.optimize_parameters  # not ESCModel's L1 step


@MODEL_REGISTRY.register()
class RealHATMSEModel(ESCRealESRNetModel):
    """The authors' name (from HAT) for stage 1 in their option files: ``ESCRealESRNetModel``."""


@MODEL_REGISTRY.register()
class RealHATGANModel(ESCRealESRGANModel):
    """The authors' name (from HAT) for stage 2 in their option files: ``ESCRealESRGANModel``."""
