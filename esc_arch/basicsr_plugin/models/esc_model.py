"""``ESCModel``: BasicSR's ``SRModel`` with what ESC training and evaluation need.

Everything BasicSR already does (losses, EMA, schedulers with ``warmup_iter``, validation
metrics, ``params``/``params_ema`` checkpoints) is reused, with the repairs of
:mod:`esc_arch.basicsr_plugin.compat` (optimisers by name, warm-up, atomic saves), which
apply to every BasicSR model. ESC's own additions:

- test-time reflect padding of the whole input to a multiple of the network's window (the
  paper's protocol; the window is read from the network), optionally tiled
  (``val: {tile: 256, tile_overlap: 64}``);
- a training that diverges (a NaN or Inf loss term or weight) stops at that iteration with
  one line naming the term and the last checkpoint, before anything of it is saved;
- every validation and test output is checked for NaN or Inf
  (:func:`esc_arch.runtime.inference.check_finite_output`): ``basicsr test`` stops with one line naming
  the image, and a training run stops at that validation as at a divergence;
- mixed precision (``train: {mixed_precision: bf16}``, ``val: {mixed_precision: bf16}``;
  ``bf16`` on CUDA and on CPUs with bf16 instructions (elsewhere it runs fp32, saying so once),
  ``fp16`` on CUDA with loss scaling) and gradient clipping
  (``train: {grad_clip: 1.0}``, the max global norm), all off by default;
- checkpoints (``pretrain_network_g``, ``pretrain_network_d``, resume, ``basicsr test``) loaded
  by the load path every door shares (:func:`esc_arch.weights.read_state_dict`, then
  :func:`esc_arch.weights.load_weights`: read with ``weights_only=True``, NaN or Inf refused,
  converted by :func:`esc_arch.convert_state_dict` (logged), shapes checked; ``strict_load_g:
  false`` as BasicSR's non-strict loading); a scale transfer only when training starts
  (``basicsr test`` refuses x2 weights for an x4 network, and a resumed run the network of
  another scale or size, naming the first tensor that differs); each refusal is the line
  ``esc upscale`` and :func:`esc_arch.load_model` give (``<path>: <reason>``), with a hint
  about ``network_g`` after it when the tensors do not fit;
- LR/HR pairs whose sizes do not match the scale stop with a message naming the files;
- in ``basicsr test``, a crop strip per image (LR nearest | bicubic | ESC | HR) when asked
  (``val: {crop_strip: {size: 96, zoom: 2}}``; see :mod:`esc_arch.basicsr_plugin.visual`).
"""

from __future__ import annotations

import math
import os
import re
from collections import OrderedDict
from os import path as osp

import torch
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from ...runtime.hardware import cpu_precision
from ...runtime.inference import TILE_OVERLAP, NonFiniteOutput, autocast, check_finite_output, upscale
from ...weights.files import read_state_dict
from ...weights.load import TensorMismatch, check_tensors, load_weights

__all__ = ["ESCModel", "ESRModel"]


def _latest_checkpoint(opt: dict) -> tuple[str, int] | None:
    """The run's latest saved network file and its iteration, if any."""
    folder = opt["path"].get("models")
    found = []
    if folder and osp.isdir(folder):
        matches = (re.fullmatch(r"net_g_(\d+)\.pth", name) for name in os.listdir(folder))
        found = [(int(m.group(1)), m.group(0)) for m in matches if m]
    if not found:
        return None
    iteration, name = max(found)
    return osp.join(folder, name), iteration


def _last_checkpoint(opt: dict) -> str:
    """Where the run can go on from: its latest saved network file (every saved one is finite:
    the check runs before each save)."""
    latest = _latest_checkpoint(opt)
    if latest is None:
        return "No checkpoint was saved before it."
    return (
        f"Last checkpoint (finite): {latest[0]} (iteration {latest[1]}); lower the learning rate "
        "(or set train: grad_clip) and resume with --auto_resume."
    )


@MODEL_REGISTRY.register()
class ESCModel(SRModel):
    """Single-image SR model for the ESC networks (see module docstring for the options)."""

    # ------------------------------------------------------------------ set-up
    def init_training_settings(self):
        train_opt = self.opt["train"]
        autocast(train_opt.get("mixed_precision"), self.device)  # validates the name and the device
        self.mixed_precision = self._precision(train_opt.get("mixed_precision"), "train")
        self.grad_clip = train_opt.get("grad_clip")
        self.scaler = torch.amp.GradScaler("cuda") if self.mixed_precision == "fp16" else None
        super().init_training_settings()

    def _precision(self, precision: str | None, section: str) -> str | None:
        """The precision to run ``section: mixed_precision`` as here (:func:`esc_arch.runtime.hardware.cpu_precision`:
        bf16 on a CPU without bf16 instructions runs fp32), said once per section."""
        precision, note = cpu_precision(precision, self.device)
        noted = self.__dict__.setdefault("_precision_notes", set())
        if note and section not in noted:
            noted.add(section)
            get_root_logger().warning(f"{section}: mixed_precision: {note}")
        return precision

    # ------------------------------------------------------------------ data
    def feed_data(self, data):
        super().feed_data(data)
        self._lq_path = data["lq_path"][0] if "lq_path" in data else None
        if "gt" in data:
            scale = self.opt["scale"]
            lq_size, gt_size = tuple(self.lq.shape[-2:]), tuple(self.gt.shape[-2:])
            if gt_size != (lq_size[0] * scale, lq_size[1] * scale):
                names = f"{data.get('lq_path', ['?'])[0]} / {data.get('gt_path', ['?'])[0]}"
                raise ValueError(
                    f"LR/HR sizes do not match scale {scale}: LR {lq_size}, HR {gt_size} ({names}); "
                    "check the dataset's scale against the option file's 'scale'"
                )

    # ------------------------------------------------------------------ training
    def optimize_parameters(self, current_iter):
        """One training step (:meth:`_optimize`), then the divergence check: a non-finite loss
        or weight stops the run before anything of this iteration is saved."""
        self._optimize(current_iter)
        self._stop_if_diverged(current_iter)

    def _stop_if_diverged(self, current_iter: int) -> None:
        """``ValueError`` (one line: the iteration, the loss term, the last checkpoint saved)
        when a logged loss or a weight of the network is NaN or Inf."""
        skipped = {"grad_norm"} if getattr(self, "scaler", None) is not None else set()  # fp16: the scaler skips
        bad = [(k, v) for k, v in self.log_dict.items() if k not in skipped and not math.isfinite(float(v))]
        if bad:
            what = ", ".join(f"{k} {float(v)}" for k, v in bad)
        else:
            params = [p for p in self.get_bare_model(self.net_g).parameters()]
            if bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
                return
            losses = ", ".join(f"{k} {float(v):.4g}" for k, v in self.log_dict.items())
            what = f"a weight of network_g became NaN or Inf after the optimizer step (losses: {losses})"
        last = _last_checkpoint(self.opt)
        raise ValueError(f"iteration {current_iter}: {what}; training diverged and was stopped. {last}")

    def _optimize(self, current_iter):
        self.optimizer_g.zero_grad(set_to_none=True)
        with autocast(self.mixed_precision, self.device):
            self.output, target = self._training_pair()
        self.output = self.output.float()

        l_total = 0
        loss_dict = OrderedDict()
        if self.cri_pix:
            l_pix = self.cri_pix(self.output, target)
            l_total += l_pix
            loss_dict["l_pix"] = l_pix
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(self.output, self.gt)
            for name, value in (("l_percep", l_percep), ("l_style", l_style)):
                if value is not None:
                    l_total += value
                    loss_dict[name] = value

        if self.scaler is not None:
            self.scaler.scale(l_total).backward()
            self.scaler.unscale_(self.optimizer_g)
        else:
            l_total.backward()
        if self.grad_clip:
            loss_dict["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.net_g.parameters(), self.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer_g)
            self.scaler.update()
        else:
            self.optimizer_g.step()

        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def _training_pair(self):
        """The network's output on this batch and what the losses compare it with."""
        return self.net_g(self.lq), self.gt

    # ------------------------------------------------------------------ testing
    def test(self):
        val_opt = self.opt.get("val") or {}
        net = self.net_g_ema if hasattr(self, "net_g_ema") else self.net_g
        was_training = net.training
        net.eval()
        precision = self._precision(val_opt.get("mixed_precision"), "val")
        self.output = upscale(
            net,
            self.lq,
            tile=val_opt.get("tile"),
            overlap=val_opt.get("tile_overlap", TILE_OVERLAP),
            precision=precision,
        )
        net.train(was_training)
        self._check_output(precision)
        if val_opt.get("crop_strip") and not self.opt["is_train"]:
            self._save_crop_strip(val_opt["crop_strip"])

    def _check_output(self, precision: str | None) -> None:
        """``ValueError`` (one line naming the image) when the output of :meth:`test` holds NaN or
        Inf; in a training run it stops the run, naming the iteration and the last checkpoint."""
        try:
            check_finite_output(self.output, precision)
        except NonFiniteOutput as error:
            where = f"{getattr(self, '_val_dataset', 'test')}: {self._lq_path or 'an image'}: {error}"
            if not self.opt["is_train"]:
                raise ValueError(where) from error
            latest = _latest_checkpoint(self.opt)
            saved = f"Last checkpoint: {latest[0]} (iteration {latest[1]})." if latest else "No checkpoint was saved."
            iteration = getattr(self, "_val_iter", "?")
            raise ValueError(f"iteration {iteration}: validation on {where}; training was stopped. {saved}") from error

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        self._val_dataset = dataloader.dataset.opt["name"]
        self._val_iter = current_iter
        super().nondist_validation(dataloader, current_iter, tb_logger, save_img)

    def _save_crop_strip(self, strip_opt: dict) -> None:
        from basicsr.utils import imwrite, tensor2img

        from ..visual import crop_strip

        if self._lq_path is None:
            return
        gt = tensor2img([self.gt.detach().cpu()]) if hasattr(self, "gt") else None
        strip = crop_strip(
            tensor2img([self.lq.detach().cpu()]),
            tensor2img([self.output.detach().cpu()]),
            gt,
            scale=self.opt["scale"],
            size=int(strip_opt.get("size", 96)),
            zoom=int(strip_opt.get("zoom", 2)),
        )
        name = osp.splitext(osp.basename(self._lq_path))[0]
        folder = osp.join(self.opt["path"]["visualization"], getattr(self, "_val_dataset", "test"))
        imwrite(strip, osp.join(folder, f"{name}_strip.png"))

    # ------------------------------------------------------------------ checkpoints
    def resume_training(self, resume_state):
        super().resume_training(resume_state)
        if self.scaler is not None and "scaler" in resume_state:
            self.scaler.load_state_dict(resume_state["scaler"])

    def _resuming(self, load_path: str) -> bool:
        """Whether ``load_path`` is a network of the training state being resumed (in the
        ``models/`` folder beside its ``training_states/``)."""
        state = (self.opt.get("path") or {}).get("resume_state")
        if not (self.is_train and state):
            return False
        models = osp.join(osp.dirname(osp.dirname(osp.abspath(state))), "models")
        return osp.dirname(osp.abspath(load_path)) == models

    def _option_of(self, net) -> str:
        """``g`` or ``d``: the option suffix (``network_g``, ``strict_load_g``) of ``net``."""
        discriminator = getattr(self, "net_d", None)
        return "d" if discriminator is not None and net is self.get_bare_model(discriminator) else "g"

    def load_network(self, net, load_path, strict=True, param_key="params"):
        """Load ``load_path`` into ``net`` by the load path every door shares
        (:func:`esc_arch.weights.read_state_dict`, then :func:`esc_arch.weights.load_weights`):
        ``strict`` is BasicSR's ``strict_load_g`` / ``strict_load_d`` (``False``: tensors of
        another shape are left out, logged); the x2 -> x3/x4 scale transfer only when training.
        A resumed run's own network is loaded whole and unconverted (only ``module.`` removed),
        so a changed ``network_g`` or scale is refused. Each refusal is one ``ValueError`` line,
        ``<path>: <reason>`` as :func:`esc_arch.load_model` words it, with a hint of this door
        after it when the tensors do not fit the network."""
        net = self.get_bare_model(net)
        source = os.fspath(load_path)
        option = self._option_of(net)

        def does_not_fit(error: ValueError, remedy: str) -> ValueError:
            return ValueError(
                f"{error}; the file does not fit network_{option} ({type(net).__name__}): network_{option} must be the "
                f"configuration it was trained with ({remedy})"
            )

        state_dict = read_state_dict(source, param_key=param_key)
        if self._resuming(source):  # the run's own network, whole and unconverted
            state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
            try:
                check_tensors(state_dict, net.state_dict())
            except ValueError as error:
                remedy = "a run resumes with its own network, whole; start a new run to change it or the scale"
                raise does_not_fit(ValueError(f"{source}: {error}"), remedy) from error
            strict, scale_transfer = True, False
        else:
            scale_transfer = self.is_train  # basicsr test refuses x2 weights for an x4 network
        try:
            load_weights(net, state_dict, source=source, strict=strict, scale_transfer=scale_transfer)
        except ValueError as error:
            if not (strict and isinstance(error, TensorMismatch)):
                raise
            example = ", e.g. an ESC body for ESCLTE" if option == "g" else ""
            remedy = f"to start from part of a network{example}, set path: strict_load_{option}: false"
            raise does_not_fit(error, remedy) from error
        get_root_logger().info(f"Loaded {type(net).__name__} from {source} [{param_key}].")


@MODEL_REGISTRY.register()
class ESRModel(ESCModel):
    """The authors' name for this model in their option files: ``ESCModel`` itself."""
