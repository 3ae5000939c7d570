"""``ESCLTEModel``: arbitrary-scale training and evaluation of ESC-LTE in BasicSR (LIIF's recipe).

Data: :class:`esc_arch.basicsr_plugin.data.ArbitraryScaleDataset`. Everything else is
:class:`ESCModel`'s (BasicSR's ``SRModel``: optimisers, schedulers, EMA, checkpoints, resume;
mixed precision and gradient clipping), with:

- training: the batch's LR crops normalised as ``(x - 0.5) / 0.5``, the network queried at the
  sampled pixels' ``coord`` and ``cell``, the pixel loss (``pixel_opt``, L1 in the recipe)
  between its output and the sampled HR pixels normalised the same way (the authors' loss);
- validation and test: the whole LR image through the encoder and every HR pixel queried,
  ``val: {chunk: 30000}`` at a time (the authors' ``eval_bsize``), output at the HR image's
  size; metric ``psnr_liif`` (:func:`calculate_psnr_liif`) with each dataset's ``test_scale``
  and ``protocol`` (``benchmark``: Y, border ``ceil(s)``; ``div2k``: RGB, ``ceil(s) + 6``); an
  output holding NaN or Inf stops the run with one line naming the image (as ``ESCModel``'s);
- ``pretrain_network_g`` may be an ESC checkpoint: its body becomes the encoder
  (:func:`esc_arch.convert_state_dict`, logged) with ``strict_load_g: false``.

BasicSR computes metrics on the 8-bit images it saves, so ``psnr_liif`` here sees the output
rounded to 8 bits; :func:`esc_arch.io.arbitrary_scale.liif_psnr` on the float output is LIIF's
number exactly (``benchmarks/lte_small.py`` reports that one).
"""

from __future__ import annotations

import numpy as np
import torch
from basicsr.utils.registry import METRIC_REGISTRY, MODEL_REGISTRY

from ...io.arbitrary_scale import liif_psnr
from ...runtime.inference import LTE_QUERY_CHUNK, autocast, query_upscale
from .esc_model import ESCModel

__all__ = ["ESCLTEModel", "calculate_psnr_liif"]


@METRIC_REGISTRY.register()
def calculate_psnr_liif(img, img2, scale, protocol="benchmark", **kwargs):
    """LIIF's PSNR of two 8-bit BGR images (BasicSR's metric call) at ``scale`` by ``protocol``."""

    def rgb(image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(image[..., ::-1].transpose(2, 0, 1))).double() / 255

    return liif_psnr(rgb(img), rgb(img2), scale=scale, protocol=protocol)


@MODEL_REGISTRY.register()
class ESCLTEModel(ESCModel):
    """ESC-LTE in BasicSR (see the module docstring)."""

    def __init__(self, opt):
        for key in ("tile", "crop_strip"):
            if (opt.get("val") or {}).get(key):
                raise ValueError(f"val: {key} is for fixed-scale networks; ESCLTEModel queries whole images in chunks")
        super().__init__(opt)

    def init_training_settings(self):
        if self.opt["train"].get("perceptual_opt"):
            raise ValueError("train: perceptual_opt needs whole images; ESCLTEModel trains on sampled pixels")
        super().init_training_settings()

    def feed_data(self, data):
        self.lq = data["lq"].to(self.device)
        if "gt" in data:
            self.gt = data["gt"].to(self.device)
        self.coord = data["coord"].to(self.device) if "coord" in data else None
        self.cell = data["cell"].to(self.device) if "cell" in data else None
        self._lq_path = data["lq_path"][0] if "lq_path" in data else None

    def _training_pair(self):
        prediction = self.net_g((self.lq - 0.5) / 0.5, self.coord, self.cell)
        return prediction, (self.gt - 0.5) / 0.5

    def test(self):
        val_opt = self.opt.get("val") or {}
        net = self.net_g_ema if hasattr(self, "net_g_ema") else self.net_g
        net = getattr(net, "module", net)
        was_training = net.training
        net.eval()
        if hasattr(self, "gt"):
            size = tuple(self.gt.shape[-2:])
        else:  # no ground truth: the dataset's scale
            height, width = self.lq.shape[-2:]
            size = (round(height * self._test_scale), round(width * self._test_scale))
        precision = self._precision(val_opt.get("mixed_precision"), "val")
        with torch.no_grad(), autocast(precision, self.lq.device):
            self.output = query_upscale(
                net, self.lq, size=size, chunk=int(val_opt.get("chunk", LTE_QUERY_CHUNK))
            ).float()
        net.train(was_training)
        self._check_output(precision)

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        """BasicSR's validation, each metric told the dataset's scale and protocol."""
        dataset_opt = dataloader.dataset.opt
        self._test_scale = float(dataset_opt["test_scale"])
        val_opt = self.opt["val"]
        metrics = {
            name: {**metric, "scale": self._test_scale, "protocol": dataset_opt.get("protocol", "benchmark")}
            if metric.get("type") == "calculate_psnr_liif" else metric
            for name, metric in (val_opt.get("metrics") or {}).items()
        }  # fmt: skip
        self.opt["val"] = {**val_opt, "metrics": metrics}
        try:
            super().nondist_validation(dataloader, current_iter, tb_logger, save_img)
        finally:
            self.opt["val"] = val_opt
