"""``DownsampleImageDataset``: HR images only, the LR made on the fly (the authors' dataset).

Options (as in the authors' option files): ``dataroot_gt`` (a folder, or an LMDB with
``io_backend: {type: lmdb}``), ``meta_info_file`` (optional list of names), ``scale``,
``gt_size``, ``use_hflip``, ``use_rot``. In training each item is a random ``gt_size`` crop of
an HR image, flipped/rotated, and its LR is the crop downsampled by ``scale`` with PIL's
bicubic filter on the 8-bit pixels, as the authors do; in validation the whole image is
cropped to a multiple of ``scale`` and downsampled the same way. Items are BasicSR's
``{'lq', 'gt', 'lq_path', 'gt_path'}`` (RGB tensors in [0, 1]).
"""

from __future__ import annotations

from os import path as osp

import numpy as np

from . import activate

activate()  # BasicSR adapted before it is imported below

from basicsr.data.transforms import augment  # noqa: E402
from basicsr.utils import FileClient, imfrombytes, img2tensor  # noqa: E402
from basicsr.utils.registry import DATASET_REGISTRY  # noqa: E402
from torch.utils import data  # noqa: E402

from ..imageio import image_paths  # noqa: E402

__all__ = ["DownsampleImageDataset", "bicubic_downsample_pil"]


def bicubic_downsample_pil(bgr: np.ndarray, scale: int) -> np.ndarray:
    """An 8-bit BGR image (H and W multiples of ``scale``) downsampled by PIL's bicubic filter."""
    from PIL import Image

    height, width = bgr.shape[:2]
    rgb = Image.fromarray(np.ascontiguousarray(bgr[..., ::-1]))
    small = rgb.resize((width // scale, height // scale), Image.Resampling.BICUBIC)
    return np.ascontiguousarray(np.asarray(small)[..., ::-1])


@DATASET_REGISTRY.register()
class DownsampleImageDataset(data.Dataset):
    """HR images whose LR counterparts are made on the fly (see the module docstring)."""

    def __init__(self, opt: dict) -> None:
        super().__init__()
        self.opt = opt
        self.scale = int(opt["scale"])
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
            raise ValueError(f"DownsampleImageDataset: no images in {root!r}")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        try:
            return self._item(path)
        except Exception as error:  # one line naming the file, from inside a DataLoader worker
            raise ValueError(f"DownsampleImageDataset: {path}: {error}") from error

    def _item(self, path: str) -> dict:
        if self.file_client is None:
            self.file_client = FileClient(self.io_backend_opt.pop("type"), **self.io_backend_opt)
        gt = imfrombytes(self.file_client.get(path, "gt"), float32=False)  # 8-bit BGR
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
