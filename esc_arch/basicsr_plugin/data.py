"""HR images only, the LR made on the fly: ``DownsampleImageDataset`` (the authors' fixed-scale
dataset) and ``ArbitraryScaleDataset`` (ESC-LTE's, LIIF's recipe).

Options (as in the authors' option files): ``dataroot_gt`` (a folder, or an LMDB with
``io_backend: {type: lmdb}``), ``meta_info_file`` (optional list of names), ``scale``,
``gt_size``, ``use_hflip``, ``use_rot``. In training each item is a random ``gt_size`` crop of
an HR image, flipped/rotated, and its LR is the crop downsampled by ``scale`` with PIL's
bicubic filter on the 8-bit pixels, as the authors do; in validation the whole image is
cropped to a multiple of ``scale`` and downsampled the same way. Items are BasicSR's
``{'lq', 'gt', 'lq_path', 'gt_path'}`` (RGB tensors in [0, 1]).

``ArbitraryScaleDataset`` (LIIF's ``sr-implicit-downsampled``; :mod:`esc_arch.io.arbitrary_scale`
has the degradation). Training: per item a scale ``s`` uniform in ``[scale_min, scale_max]``, a
random ``round(inp_size * s)`` HR crop (smaller when the image is: the largest scale it
allows, at least ``scale_min``), flipped/rotated (``use_hflip``, ``use_rot``: LIIF's
three flips), its ``inp_size`` LR by PIL's bicubic filter, and ``sample_q`` HR pixels drawn
without replacement: ``gt`` ``(sample_q, 3)``, ``coord`` ``(sample_q, 2)`` (their centres in
[-1, 1], row then column) and ``cell`` ``(sample_q, 2)`` (``2 / crop size``). Validation and
test: the whole image at ``test_scale`` (any positive number), HR cropped to ``round(h * s)``;
``protocol`` (``benchmark`` or ``div2k``) says how the model's ``psnr_liif`` metric crops and
converts. With ``dataroot_lq`` (and ``filename_tmpl``) the LR images are read instead (e.g.
MATLAB-bicubic ``LR_bicubic/X4`` folders at an integer ``test_scale``), the HR cropped to LR x s.
"""

from __future__ import annotations

import math
from os import path as osp

import numpy as np
import torch

from . import activate

activate()  # BasicSR adapted before it is imported below

from basicsr.data.transforms import augment  # noqa: E402
from basicsr.utils import FileClient, imfrombytes, img2tensor  # noqa: E402
from basicsr.utils.registry import DATASET_REGISTRY  # noqa: E402
from torch.utils import data  # noqa: E402

from ..archs.esc_lte_arch import make_coord  # noqa: E402
from ..io.arbitrary_scale import bicubic_resize, downsample, shave, to_tensor  # noqa: E402
from ..io.imageio import image_paths  # noqa: E402
from .checks import lr_fits  # noqa: E402
from .compat import naming_the_item  # noqa: E402

__all__ = ["ArbitraryScaleDataset", "DownsampleImageDataset", "bicubic_downsample_pil"]


def bicubic_downsample_pil(bgr: np.ndarray, scale: int) -> np.ndarray:
    """An 8-bit BGR image (H and W multiples of ``scale``) downsampled by PIL's bicubic filter."""
    height, width = bgr.shape[:2]
    return bicubic_resize(bgr, width // scale, height // scale)


class _HRImages(data.Dataset):
    """HR images from a folder, a meta-info list or an LMDB (``dataroot_gt``), read as 8-bit
    BGR; an item that fails is one line naming the file."""

    def __init__(self, opt: dict) -> None:
        super().__init__()
        self.opt = opt
        self.io_backend_opt = dict(opt.get("io_backend") or {"type": "disk"})
        self.file_client = None
        root = opt["dataroot_gt"]
        if self.io_backend_opt["type"] == "lmdb":
            self.io_backend_opt.update(db_paths=[root], client_keys=["gt"])
            with open(osp.join(root, "meta_info.txt")) as f:
                self.paths = [line.split(" ")[0].rsplit(".", 1)[0] for line in f if line.strip()]
        elif opt.get("meta_info_file"):
            with open(opt["meta_info_file"]) as f:
                self.paths = [osp.join(root, line.strip().split(" ")[0]) for line in f if line.strip()]
        else:
            self.paths = image_paths(root)
        if not self.paths:
            raise ValueError(f"{type(self).__name__}: no images in {root!r}")

    def __len__(self) -> int:
        return len(self.paths)

    @naming_the_item
    def __getitem__(self, index: int) -> dict:
        return self._item(self.paths[index])

    def _read(self, path: str) -> np.ndarray:
        if self.file_client is None:
            self.file_client = FileClient(self.io_backend_opt.pop("type"), **self.io_backend_opt)
        return imfrombytes(self.file_client.get(path, "gt"), float32=False)  # 8-bit BGR

    def _item(self, path: str) -> dict:
        raise NotImplementedError


@DATASET_REGISTRY.register()
class DownsampleImageDataset(_HRImages):
    """HR images whose LR counterparts are made on the fly (see the module docstring)."""

    def __init__(self, opt: dict) -> None:
        super().__init__(opt)
        self.scale = int(opt["scale"])

    def _item(self, path: str) -> dict:
        gt = self._read(path)
        scale = self.scale
        if self.opt.get("phase") == "train":
            size = int(self.opt["gt_size"])
            height, width = gt.shape[:2]
            if height < size or width < size:
                raise ValueError(f"image {height}x{width} is smaller than gt_size {size}")
            top, left = np.random.randint(0, height - size + 1), np.random.randint(0, width - size + 1)
            gt = augment(gt[top : top + size, left : left + size], self.opt.get("use_hflip", True),
                         self.opt.get("use_rot", True))  # fmt: skip
        else:
            gt = gt[: gt.shape[0] - gt.shape[0] % scale, : gt.shape[1] - gt.shape[1] % scale]
        lq = bicubic_downsample_pil(np.ascontiguousarray(gt), scale)
        gt_t, lq_t = img2tensor([gt.astype(np.float32) / 255.0, lq.astype(np.float32) / 255.0], bgr2rgb=True)
        return {"lq": lq_t, "gt": gt_t, "lq_path": path, "gt_path": path}


@DATASET_REGISTRY.register()
class ArbitraryScaleDataset(_HRImages):
    """ESC-LTE's data: random scales and query pixels in training, one scale in validation
    (see the module docstring)."""

    def __init__(self, opt: dict) -> None:
        super().__init__(opt)
        self.train = opt.get("phase") == "train"
        name = f"ArbitraryScaleDataset {opt.get('name', '')!r}"
        if self.train:
            self.inp_size, self.sample_q = int(opt.get("inp_size", 64)), int(opt.get("sample_q", 2304))
            self.scale_min, self.scale_max = float(opt.get("scale_min", 1)), float(opt.get("scale_max", 4))
            if not 0 < self.scale_min <= self.scale_max:
                raise ValueError(f"{name}: need 0 < scale_min <= scale_max; got {self.scale_min}, {self.scale_max}")
            if self.sample_q > round(self.inp_size * self.scale_min) ** 2:
                raise ValueError(
                    f"{name}: sample_q {self.sample_q} is more than the {round(self.inp_size * self.scale_min) ** 2} "
                    f"pixels of the smallest HR crop (inp_size {self.inp_size} x scale_min {self.scale_min:g})"
                )
        else:
            if "test_scale" not in opt:
                raise ValueError(f"{name}: 'test_scale' is missing (the upscaling factor to evaluate)")
            self.test_scale = float(opt["test_scale"])
            if not (math.isfinite(self.test_scale) and self.test_scale > 0):
                raise ValueError(f"{name}: test_scale must be a positive number; got {opt['test_scale']!r}")
            shave(self.test_scale, opt.get("protocol", "benchmark"))  # checks the name
            self.lq_root, self.template = opt.get("dataroot_lq"), opt.get("filename_tmpl", "{}")

    def _item(self, path: str) -> dict:
        hr = self._read(path)
        if not self.train:
            return self._whole(path, hr)
        scale = np.random.uniform(self.scale_min, self.scale_max)
        height, width = hr.shape[:2]
        smallest = round(self.inp_size * self.scale_min)
        if min(height, width) < smallest:
            raise ValueError(
                f"image {height}x{width} is smaller than the {smallest}-pixel crop of scale_min {self.scale_min:g}"
            )
        size = min(round(self.inp_size * scale), height, width)  # a small image: the largest scale it allows
        top, left = np.random.randint(0, height - size + 1), np.random.randint(0, width - size + 1)
        crop = augment(hr[top : top + size, left : left + size], self.opt.get("use_hflip", True),
                       self.opt.get("use_rot", True))  # fmt: skip
        crop = np.ascontiguousarray(crop)
        lq = bicubic_resize(crop, self.inp_size, self.inp_size)
        picked = torch.from_numpy(np.random.choice(size * size, self.sample_q, replace=False))
        coord = make_coord(size, size)[picked]
        return {
            "lq": to_tensor(lq),
            "gt": to_tensor(crop).reshape(3, -1).t()[picked],
            "coord": coord,
            "cell": torch.full_like(coord, 2 / size),
            "lq_path": path,
            "gt_path": path,
        }

    def _whole(self, path: str, hr: np.ndarray) -> dict:
        scale = self.test_scale
        if self.lq_root:
            stem, ext = osp.splitext(osp.basename(path))
            lq_path = osp.join(self.lq_root, self.template.format(stem) + ext)
            lq = imfrombytes(FileClient("disk").get(lq_path, "lq"), float32=False)
            if not lr_fits(lq.shape[:2], hr.shape[:2], scale):
                raise ValueError(
                    f"LR/HR sizes do not match scale {scale:g}: LR {lq_path} is {lq.shape[0]}x{lq.shape[1]}, HR is "
                    f"{hr.shape[0]}x{hr.shape[1]} (expected {hr.shape[0] / scale:.0f}x{hr.shape[1] / scale:.0f})"
                )
            hr = hr[: round(lq.shape[0] * scale), : round(lq.shape[1] * scale)]
        else:
            lq, hr = downsample(hr, scale)
            lq_path = path
        return {"lq": to_tensor(lq), "gt": to_tensor(hr), "lq_path": lq_path, "gt_path": path}
