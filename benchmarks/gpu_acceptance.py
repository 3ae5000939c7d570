#!/usr/bin/env python
"""GPU acceptance: every CUDA path of the project in one command, with its evidence written down.

  python benchmarks/gpu_acceptance.py                      # on the GPU machine (about 8 minutes planned)
  python benchmarks/gpu_acceptance.py --device cpu --quick # the same checks at toy size on a CPU (CI)
  python benchmarks/gpu_acceptance.py --only golden train  # some sections only
  python benchmarks/gpu_acceptance.py --render-docs A.json [B.json ...]   # the table of docs/verification.md

It prints the machine, then one row per check: PASS, FAIL, or SKIPPED with the reason (a row
that needs what the machine lacks, e.g. CUDA, fp16, flash-attn, onnxruntime's CUDA provider, is
SKIPPED, never PASS). The exit status is 1 if any row FAILs. ``--out`` gets
``gpu_acceptance.json`` and ``gpu_acceptance.md`` (``--stem`` renames them).

Sections (``--only``):

- ``golden``: every reference case of tests/data/ (paper), tests/data/zoo/ (family, ESC-LTE)
  and tests/data/rib/ (RIB, when ``esc_arch`` has ``ESCRIB``) through ``load_model`` on every
  backend of the device (naive, sdpa, flex, flash, FlashBias factors on sdpa), fp32 against
  the cases' tolerances; bf16 and fp16 autocast against fp32 ``naive`` on a real photo (PSNR).
- ``train``: one training step per family (ESC, ESC with FlashBias factors, ESC-Real with the
  U-Net discriminator, ESCRealM, ESC-LTE, RIB) per training backend, fp32 and bf16 autocast:
  finite loss, gradients against the ``naive`` backend's.
- ``basicsr``: ``basicsr train`` of a toy option file, then ``--auto_resume``; bf16 and fp16
  mixed precision; a ``--launcher pytorch`` run on NCCL.
- ``upscale``: ``esc upscale --device DEVICE`` on the photos of tests/data/images, fp16 and
  bf16, whole and tiled, against the fp32 whole-image output.
- ``latency``: the paper's protocol (x4 to 1280x720), fp32/bf16/fp16, warm-up then the median
  of N, with peak memory; flex against FlashBias; training-step throughput at the published
  batch sizes.
- ``onnx``: ``export_onnx`` of a small network, onnxruntime on the CPU and CUDA providers; the
  fp16 export of the trained ESC-light x2 on the CUDA provider against torch fp32 (PSNR).
- ``video``: ``esc upscale`` on a video made from the photos (lossless FFV1 output), fp32 and
  fp16 against fp32 ``upscale`` of each decoded frame (PSNR), frames and timestamps kept; the
  files of ``esc upscale`` split by ``torchrun`` between the GPUs (NCCL), when there are several.

fp32 on CUDA is run with TF32 off (matmul and cuDNN), so that it is compared at fp32 precision.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import cpu_model, peak_rss_mib, rss_mib, synchronize, time_training_steps  # noqa: E402

DATA = ROOT / "tests" / "data"
#: the project's shared material beside the checkout: full-size cases left out of tests/data
SHARED_GOLDEN = ROOT.parent / "shared" / "golden"
PHOTOS = DATA / "images"
TRAINED = DATA / "ESC-light_x2_small.pth"  # trained ESC-light x2 weights (random ones amplify far outside [0, 1])
DOCS_TABLE = ROOT / "docs" / "verification.md"
BEGIN, END = "<!-- gpu_acceptance table: begin -->", "<!-- gpu_acceptance table: end -->"

#: The tiny network of the tests (tests/conftest.py): one block, window 8.
TINY = dict(dim=16, pdim=8, kernel_size=5, n_blocks=1, conv_blocks=2, window_size=8, num_heads=2, exp_ratio=1.25)


# --------------------------------------------------------------------------- rows and checks
class Skip(Exception):
    """Raised by a check that finds, while running, that the machine lacks what it needs."""


@dataclass
class Check:
    section: str
    name: str
    run: Callable[[Context], str]  # returns the row's detail; raises Skip, or anything else to FAIL
    needs: tuple[str, ...] = ()  # capabilities (``capabilities()``) without which the row is SKIPPED


@dataclass
class Row:
    section: str
    name: str
    status: str  # PASS, FAIL or SKIPPED
    detail: str
    seconds: float


@dataclass
class Context:
    device: object  # torch.device
    quick: bool
    caps: dict[str, str | None]  # capability -> None (present) or why it is missing
    work: Path  # scratch folder
    data: dict = field(default_factory=dict)  # measurements for the JSON, by row name
    cache: dict = field(default_factory=dict)


def capabilities(device) -> dict[str, str | None]:
    """What the machine offers for ``device``: capability -> ``None``, or the reason it is missing."""
    import torch

    cuda = device.type == "cuda"
    no_cuda = "needs CUDA; this run is on the CPU" if not cuda else None
    have = importlib.util.find_spec
    caps: dict[str, str | None] = {"cuda": no_cuda}
    caps["fp16"] = "fp16 autocast needs CUDA (esc_arch refuses it on a CPU)" if not cuda else None
    caps["bf16"] = None if not cuda or torch.cuda.is_bf16_supported() else "this GPU has no bf16"
    caps["flash_attn"] = None if have("flash_attn") else "flash-attn is not installed (pip install 'esc_arch[flash]')"
    if cuda:
        caps["flex"] = None if have("triton") else "CUDA FlexAttention needs triton, which is not installed"
    else:
        compiler = shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++")
        caps["flex"] = None if compiler else "CPU FlexAttention compiles C++ and no compiler was found"
    caps["flex_backward"] = "torch has no FlexAttention backward pass on the CPU" if not cuda else caps["flex"]
    onnx = have("onnxruntime") and have("onnxscript")
    caps["onnx"] = None if onnx else "onnxruntime or onnxscript is not installed (pip install 'esc_arch[onnx]')"
    if not onnx:
        caps["ort_cuda"] = caps["onnx"]
    else:
        import onnxruntime

        providers = onnxruntime.get_available_providers()
        caps["ort_cuda"] = no_cuda or (None if "CUDAExecutionProvider" in providers else
                                       f"onnxruntime {onnxruntime.__version__} has no CUDA provider "
                                       f"(has {', '.join(providers)}; pip install onnxruntime-gpu)")  # fmt: skip
    nccl = torch.distributed.is_available() and torch.distributed.is_nccl_available()
    caps["nccl"] = no_cuda or (None if nccl else "this torch build has no NCCL")
    gpus = torch.cuda.device_count() if cuda else 0
    caps["gpus"] = no_cuda or (None if gpus > 1 else f"needs more than one GPU; this machine has {gpus}")
    caps["video"] = None if have("av") else "PyAV is not installed (pip install 'esc_arch[video]')"
    from esc_arch import NETWORKS

    caps["rib"] = None if "ESCRIB" in NETWORKS else "ESCRIB not available in this build"
    if caps["rib"] is None and not sorted((DATA / "rib").glob("*.json")):
        caps["rib"] = "no RIB reference cases in tests/data/rib"
    return caps


def run_checks(checks: list[Check], ctx: Context, echo: Callable[[str], None] = print) -> list[Row]:
    """Each check in turn: SKIPPED (with the reasons) when a capability is missing, without running it."""
    import torch

    rows = []
    for check in checks:
        missing = [ctx.caps[need] for need in check.needs if ctx.caps.get(need, f"unknown capability {need!r}")]
        start = time.perf_counter()
        if missing:
            status, detail = "SKIPPED", "; ".join(dict.fromkeys(missing))
        else:
            try:
                torch.manual_seed(0)
                status, detail = "PASS", check.run(ctx)
            except Skip as reason:
                status, detail = "SKIPPED", str(reason)
            except Exception as error:  # a failing row is reported, and the next one runs
                status = "FAIL"
                detail = f"{type(error).__name__}: {' '.join(str(error).split())}"[:400]
                traceback.print_exc()
        row = Row(check.section, check.name, status, detail, time.perf_counter() - start)
        rows.append(row)
        echo(f"| {row.section} | {row.name} | {row.status} | {row.detail} | {row.seconds:.1f} |")
    return rows


# --------------------------------------------------------------------------- helpers
def _psnr(a, b) -> float:
    mse = ((a.float().clamp(0, 1) - b.float().clamp(0, 1)) ** 2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def _photo(name: str, crop: int | None = None):
    """A photograph of tests/data/images as an RGB ``(1, 3, H, W)`` tensor in [0, 1]."""
    import cv2
    import torch

    bgr = cv2.imread(str(next(PHOTOS.glob(f"*/{name}.png"))))
    if crop:
        bgr = bgr[:crop, :crop]
    rgb = bgr[..., ::-1].astype("float32") / 255.0
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).unsqueeze(0)


def _precision(name: str, device):
    from esc_arch.runtime.inference import autocast

    return autocast(name, device)


@contextlib.contextmanager
def _sdpa_factors(device, precision: str):
    """FlashBias networks run their factors as extra channels of an unbiased sdpa
    (``esc_arch.archs.attention.sdpa_factors``) while this is active: the ``sdpa`` backend, which
    ``auto`` and ``sdpa`` run in inference, runs it (``attention.backend_kernel``; a table still
    takes the masked sdpa). Yields a list that counts its calls. On CUDA in fp16/bf16, SDPA is
    held to its flash and cuDNN kernels."""
    from esc_arch.archs import attention

    calls: list[int] = []

    def counted(*args):
        calls.append(1)
        return attention.sdpa_factors(*args)

    kernels = contextlib.nullcontext()
    if device.type == "cuda" and precision in ("bf16", "fp16"):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        kernels = sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION])
    with attention.backend_kernel("sdpa", counted), kernels:
        yield calls


def _exact_fp32() -> None:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


# --------------------------------------------------------------------------- 1. golden cases
#: Reference sets: (label, folder, capability needed). A new set is one entry.
GOLDEN_SETS = [
    ("paper", DATA, ()),
    ("family", DATA / "zoo", ()),
    ("RIB", DATA / "rib", ("rib",)),
]

#: Backends of the golden rows: name -> (attn_type, capabilities needed).
GOLDEN_BACKENDS = {
    "naive": ("naive", ()),
    "sdpa": ("sdpa", ()),
    "flex": ("flex", ("flex",)),
    "flash": ("flash", ("cuda", "flash_attn")),
    "flashbias-on-sdpa": ("auto", ()),
}

#: fp32 tolerance per case: max abs (and mean abs) against the reference output. The authors'
#: FlashBias and discriminator code computes in bf16 (zoo README: 1e-3); RIB always computes its
#: attention in bf16 (rib README: max 1e-2 and mean 1.5e-3). Others: 1e-4 (golden README).
TOLERANCE = {"FlashBias": (1e-3, None), "DeepUNetDiscriminatorSN": (1e-3, None), "ESCRIB": (1e-2, 1.5e-3)}
#: flash runs in bf16 whatever the input: its rows are held to 5% of the largest output value
#: (the bound of the discriminator's bf16 check in tests/archs/test_zoo.py).
FLASH_RELATIVE = 0.05

#: Cases whose file is not the network they describe (name -> what the file holds), and
#: architectures that ``load_model`` does not read (built from their class).
TABLE_TO_FLASHBIAS = {"esc_table_to_fb_r48_x2_eval": "a table checkpoint converted to FlashBias factors on loading"}
CONVERTED_ON_LOAD = {**TABLE_TO_FLASHBIAS, "esc_x4_from_x2_eval": "an x2 checkpoint loaded into x4 (scale transfer)"}
NOT_LOADABLE_BY_LOAD_MODEL = {"DeepUNetDiscriminatorSN": "the discriminator is built from its class"}
#: Backends each architecture offers (absent: every backend).
ARCH_BACKENDS = {"DeepUNetDiscriminatorSN": ("naive", "sdpa")}

#: Floors of the reduced-precision rows: PSNR of bf16/fp16 against fp32 ``naive`` on a photo.
PRECISION_FLOOR_DB = {"exact": 50.0, "flash": 40.0}


def golden_cases(folder: Path, full_size: bool = False) -> list[dict]:
    """The cases of ``folder`` (under tests/data); with ``full_size``, also those of its
    counterpart in ../shared/golden that tests/data leaves out (where that folder exists)."""
    paths = {path.stem: path for path in sorted(folder.glob("*.json"))}
    if full_size:
        shared = SHARED_GOLDEN / folder.relative_to(DATA)
        paths = {path.stem: path for path in sorted(shared.glob("*.json"))} | paths
    return [dict(json.loads(p.read_text()), name=name, folder=str(p.parent)) for name, p in sorted(paths.items())]


def _is_flashbias(case: dict) -> bool:
    return case["config"].get("attn_type") in ("FlashBias", "flashbias") or case["name"] in TABLE_TO_FLASHBIAS


def _applies(case: dict, backend: str) -> bool:
    if backend not in ARCH_BACKENDS.get(case["arch"], GOLDEN_BACKENDS):
        return False
    return backend != "flashbias-on-sdpa" or _is_flashbias(case)


def build_case(case: dict, attn_type: str):
    """The case's network with its weights, mode and ``attn_type``: ``load_model`` from the file
    alone where the file holds the network (every case but ``CONVERTED_ON_LOAD`` and
    ``NOT_LOADABLE_BY_LOAD_MODEL``)."""
    import torch

    from esc_arch import NETWORKS, convert_state_dict, load_model

    folder, name, arch = Path(case["folder"]), case["name"], case["arch"]
    weights = folder / f"{name}.pth"
    if not weights.exists():  # a case that shares another's weights (its JSON's loaded_from)
        weights = folder / case["loaded_from"]
    if arch in NOT_LOADABLE_BY_LOAD_MODEL:
        from esc_arch.archs.discriminator_arch import DeepUNetDiscriminatorSN

        net = DeepUNetDiscriminatorSN(**case["config"], attn_type=attn_type)
        net.load_state_dict(torch.load(weights, weights_only=True)["params_ema"], strict=True)
    elif name in CONVERTED_ON_LOAD:
        net = NETWORKS[arch](**case["config"])
        net.load_state_dict(convert_state_dict(torch.load(weights, weights_only=True)["params_ema"], net), strict=True)
        net.set_attn_type(attn_type)
    elif case.get("converted"):  # RIB: saved after convert(), loaded into a converted network (rib README)
        net = NETWORKS[arch](**case["config"])
        net.convert()
        net.load_state_dict(torch.load(weights, weights_only=True)["params_ema"], strict=True)
        net.set_attn_type(attn_type)
    else:  # ESC-RIB's window is not in its tensors: the case's, as `esc upscale --window-size` passes it
        window = case["config"].get("window_size") if arch == "ESCRIB" else None
        net = load_model(weights, attn_type=attn_type, window_size=window)
    return net.train(case["mode"] == "train")


def run_case(net, case: dict, device):
    """``(output, expected)`` of a case in fp32 on ``device`` (returned on the CPU)."""
    import torch

    io = torch.load(Path(case["folder"]) / f"{case['name']}_io.pt", weights_only=True)
    net = net.to(device)
    with torch.no_grad():
        if "coord" in io:  # ESC-LTE: the authors' normalisation, query points and cells
            x = (io["input"].to(device) - 0.5) / 0.5
            out = net(x, io["coord"].to(device), io["cell"].to(device))
        else:
            out = net(io["input"].to(device))
    return out.float().cpu(), io["output"]


def _golden_check(label: str, cases: list[dict], backend: str) -> Callable[[Context], str]:
    def run(ctx: Context) -> str:
        attn_type = GOLDEN_BACKENDS[backend][0]
        chosen = cases[:1] if ctx.quick and backend == "flex" and ctx.device.type == "cpu" else cases
        errors, failures = {}, []
        for case in chosen:
            net = build_case(case, attn_type)
            factors = _sdpa_factors(ctx.device, "fp32") if backend == "flashbias-on-sdpa" else contextlib.nullcontext()
            with factors as calls:
                out, expected = run_case(net, case, ctx.device)
            if backend == "flashbias-on-sdpa" and not calls:
                failures.append(f"{case['name']}: sdpa_factors never ran")
            if out.shape != expected.shape:
                failures.append(f"{case['name']}: shape {tuple(out.shape)} != {tuple(expected.shape)}")
                continue
            diff = (out - expected).abs()
            errors[case["name"]] = [diff.max().item(), diff.mean().item()]
            if backend == "flash":
                bound, mean_bound = FLASH_RELATIVE * expected.abs().max().item(), None
            else:
                bound, mean_bound = TOLERANCE.get(case["arch"], TOLERANCE.get(case["config"].get("attn_type"),
                                                                              (1e-4, None)))  # fmt: skip
            if diff.max().item() > bound or (mean_bound is not None and diff.mean().item() > mean_bound):
                failures.append(f"{case['name']}: max {diff.max().item():.2e} (bound {bound:.1e})")
        ctx.data[f"golden {label} {backend}"] = errors
        if failures:
            raise AssertionError("; ".join(failures))
        worst = max(errors, key=lambda name: errors[name][0])
        subset = f" (--quick on a CPU: {len(chosen)} of {len(cases)})" if len(chosen) < len(cases) else ""
        return f"{len(errors)} cases{subset}, worst max abs {errors[worst][0]:.1e} ({worst})"

    return run


def _flashbias_twin(net):
    """``net`` (a trained table network) with each table's bias matrix replaced by rank-48 FlashBias
    factors (a randomised truncated SVD: fast on a CPU; the rows compare this network with itself)."""
    import torch

    from esc_arch import NETWORKS
    from esc_arch.archs.attention import relative_position_bias

    twin = NETWORKS[type(net).__name__](net.config.replace(attn_type="FlashBias", flashbias_rank=48))
    state = {}
    for key, value in net.state_dict().items():
        if key.endswith("relative_position_bias"):
            torch.manual_seed(0)
            u, s, v = torch.svd_lowrank(relative_position_bias(value, net.config.window_size), q=48, niter=2)
            prefix = key[: -len("relative_position_bias")]
            state[prefix + "flashbias_q"], state[prefix + "flashbias_k"] = u * s.sqrt()[:, None], v * s.sqrt()[:, None]
        else:
            state[key] = value
    twin.load_state_dict(state, strict=True)
    return twin.eval()


def _precision_check(backend: str, precision: str) -> Callable[[Context], str]:
    def run(ctx: Context) -> str:
        import torch

        from esc_arch import load_model

        photo = _photo("bird", crop=64 if ctx.quick else None).to(ctx.device)
        key = ("precision reference", backend == "flashbias-on-sdpa")
        if key not in ctx.cache:
            net = load_model(TRAINED, attn_type="naive", device=ctx.device)
            if backend == "flashbias-on-sdpa":
                net = _flashbias_twin(net).to(ctx.device)
                net.set_attn_type("naive")
            with torch.no_grad():
                ctx.cache[key] = net, net(photo)
        net, reference = ctx.cache[key]
        net.set_attn_type(GOLDEN_BACKENDS[backend][0])
        factors = _sdpa_factors(ctx.device, precision) if backend == "flashbias-on-sdpa" else contextlib.nullcontext()
        with factors as calls, torch.no_grad(), _precision(precision, ctx.device):
            out = net(photo)
        if backend == "flashbias-on-sdpa" and not calls:
            raise AssertionError("sdpa_factors never ran")
        db = _psnr(out, reference)
        floor = PRECISION_FLOOR_DB["flash" if backend == "flash" else "exact"]
        ctx.data[f"{precision} vs fp32 {backend}"] = {"psnr_db": db, "floor_db": floor}
        if not db >= floor:
            raise AssertionError(f"PSNR {db:.1f} dB < {floor:.0f} dB")
        return f"{db:.1f} dB (floor {floor:.0f}), ESC-light x2 trained, bird {tuple(photo.shape[-2:])}"

    return run


def section_golden(quick: bool) -> list[Check]:
    checks = []
    for label, folder, needs in GOLDEN_SETS:
        cases = golden_cases(folder, full_size=not quick)
        for backend, (_, backend_needs) in GOLDEN_BACKENDS.items():
            applicable = [c for c in cases if _applies(c, backend)]
            if cases and not applicable:
                continue  # e.g. no FlashBias case in the set
            if not cases and backend == "flashbias-on-sdpa":
                continue
            check = _golden_check(label, applicable, backend)
            checks.append(Check("golden", f"{label} goldens, {backend}, fp32", check, needs + backend_needs))
    for precision in ("bf16", "fp16"):
        for backend, (_, backend_needs) in GOLDEN_BACKENDS.items():
            checks.append(Check("golden", f"{precision} vs fp32 naive, {backend}, real photo",
                                _precision_check(backend, precision), (precision, *backend_needs)))  # fmt: skip
    return checks


# --------------------------------------------------------------------------- 2. training steps
def _rib_tiny_config() -> dict:
    cases = [c for c in golden_cases(DATA / "rib") if c["mode"] == "train"]
    return dict(cases[0]["config"]) if cases else {}


#: Training families: name -> (builder of the network(s) with an attn_type, capabilities needed).
def _family_esc(attn):
    from esc_arch import NETWORKS

    return NETWORKS["ESC"](**TINY, upscaling_factor=2, attn_type=attn), None


def _family_esc_fb(attn):
    from esc_arch import NETWORKS

    net = NETWORKS["ESC"](**TINY, upscaling_factor=2, attn_type="FlashBias", flashbias_rank=16)
    net.set_attn_type(attn)
    return net, None


def _family_real_gan(attn):
    from esc_arch import NETWORKS
    from esc_arch.archs.discriminator_arch import DeepUNetDiscriminatorSN

    disc_attn = attn if attn in ARCH_BACKENDS["DeepUNetDiscriminatorSN"] else "auto"
    return NETWORKS["ESCReal"](**TINY, upscaling_factor=4, attn_type=attn), DeepUNetDiscriminatorSN(
        num_feat=16, attn_type=disc_attn)  # fmt: skip


def _family_realm(attn):
    from esc_arch import NETWORKS

    return NETWORKS["ESCRealM"](**TINY, mid_dim=16, upscaling_factor=2, upsampler="dysample", attn_type=attn), None


def _family_lte(attn):
    from esc_arch import NETWORKS

    net = NETWORKS["ESCLTE"](encoder=dict(TINY), hidden_dim=32, mlp_hidden=[32, 32])
    net.set_attn_type(attn)
    return net, None


def _family_rib(attn):
    from esc_arch import NETWORKS

    net = NETWORKS["ESCRIB"](**_rib_tiny_config())
    net.set_attn_type(attn)
    return net, None


TRAIN_FAMILIES = {
    "ESC": (_family_esc, ()),
    "ESC-FB": (_family_esc_fb, ()),
    "ESC-Real GAN": (_family_real_gan, ()),
    "ESCRealM": (_family_realm, ()),
    "ESC-LTE": (_family_lte, ()),
    "RIB": (_family_rib, ("rib",)),
}

#: Training backends: name -> (capabilities needed, families it applies to or None for all).
TRAIN_BACKENDS = {
    "sdpa": ((), None),
    "chunked": ((), None),
    "auto": ((), None),
    "flex": (("flex", "flex_backward"), None),
    "flash": (("cuda", "flash_attn"), ("ESC-FB",)),  # a table layout's flash folding is inference only
}

#: Gradients of a backend against ``naive``'s at the same precision: fp32, every parameter's largest
#: difference relative to that parameter's largest gradient; bf16 (and ``flash``, bf16 inside), the
#: cosine of all gradients.
GRAD_TOLERANCE = {"fp32": 1e-3, "bf16": 0.99}


def _training_step(family: str, attn: str, precision: str, device) -> tuple[float, dict]:
    """One step's loss and gradients (on the CPU) of ``family`` with ``attn``, same weights and batch for
    every backend."""
    import torch
    import torch.nn.functional as F

    from esc_arch.runtime.inference import autocast

    torch.manual_seed(0)
    net, disc = TRAIN_FAMILIES[family][0](attn)
    with torch.no_grad():  # trained-like biases: tables and factors start near zero
        for name, p in net.named_parameters():
            if "relative_position_bias" in name or "flashbias" in name:
                p.normal_(0, 0.5 if "relative" in name else 0.1)
    net = net.to(device).train()
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 16, 16, generator=generator).to(device)
    with autocast(precision, device):
        if family == "ESC-LTE":
            from esc_arch.archs.esc_lte_arch import make_coord

            coord = make_coord(40, 40)[None].expand(2, -1, -1).to(device)
            cell = torch.full_like(coord, 2 / 40)
            out = net((x - 0.5) / 0.5, coord, cell).float()
            target = torch.rand(out.shape, generator=generator).to(device)
        else:
            out = net(x).float()
            target = torch.rand(out.shape, generator=generator).to(device)
        loss = F.l1_loss(out, target)
        if disc is not None:
            disc = disc.to(device).train()
            loss = loss + 0.1 * F.softplus(-disc(out)).mean().float()  # generator's GAN term
            loss = loss + F.softplus(-disc(target)).mean().float() + F.softplus(disc(out.detach())).mean().float()
    loss.backward()
    modules = [("g", net)] + ([("d", disc)] if disc is not None else [])
    grads = {f"{tag}.{n}": p.grad.float().cpu() for tag, m in modules for n, p in m.named_parameters()
             if p.grad is not None}  # fmt: skip
    missing = [f"{t}.{n}" for t, m in modules for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    if missing:
        raise AssertionError(f"{family} {attn}: no gradient for {', '.join(missing[:3])}")
    return loss.item(), grads


def _compare(grads: dict, reference: dict, precision: str) -> float:
    import torch

    if precision == "fp32":
        return max(((grads[n] - reference[n]).abs().max() / reference[n].abs().max().clamp_min(1e-30)).item()
                   for n in reference)  # fmt: skip
    a = torch.cat([g.flatten() for g in grads.values()])
    b = torch.cat([reference[n].flatten() for n in grads])
    return torch.nn.functional.cosine_similarity(a, b, dim=0).item()


def _families(ctx: Context, backend: str | None) -> list[str]:
    names = [f for f, (_, needs) in TRAIN_FAMILIES.items() if not any(ctx.caps.get(n) for n in needs)]
    scope = TRAIN_BACKENDS[backend][1] if backend else None
    return [f for f in names if scope is None or f in scope]


def _reference_check(precision: str) -> Callable[[Context], str]:
    def run(ctx: Context) -> str:
        losses = {}
        for family in _families(ctx, None):
            loss, grads = _training_step(family, "naive", precision, ctx.device)
            if not math.isfinite(loss):
                raise AssertionError(f"{family}: loss {loss}")
            ctx.cache[("grads", family, precision)] = grads
            losses[family] = loss
        ctx.data[f"train naive {precision}"] = losses
        return f"loss finite for {', '.join(losses)}"

    return run


def _train_check(backend: str, precision: str) -> Callable[[Context], str]:
    # flash computes in bf16 whatever the input: its fp32 rows are held to the bf16 criterion
    criterion = "bf16" if backend == "flash" else precision

    def run(ctx: Context) -> str:
        results, failures = {}, []
        for family in _families(ctx, backend):
            reference = ctx.cache.get(("grads", family, precision))
            if reference is None:
                reference = _training_step(family, "naive", precision, ctx.device)[1]
                ctx.cache[("grads", family, precision)] = reference
            loss, grads = _training_step(family, backend, precision, ctx.device)
            value = _compare(grads, reference, criterion)
            results[family] = {"loss": loss, "grad_rel_diff" if criterion == "fp32" else "grad_cosine": value}
            within = value <= GRAD_TOLERANCE["fp32"] if criterion == "fp32" else value >= GRAD_TOLERANCE["bf16"]
            if not math.isfinite(loss):
                failures.append(f"{family}: loss {loss}")
            elif not within:
                failures.append(f"{family}: {value:.2e}")
        ctx.data[f"train {backend} {precision}"] = results
        if failures:
            raise AssertionError(f"gradients vs naive outside {GRAD_TOLERANCE[criterion]}: " + "; ".join(failures))
        values = [v["grad_rel_diff" if criterion == "fp32" else "grad_cosine"] for v in results.values()]
        if criterion == "fp32":
            shown = f"max rel grad diff vs naive {max(values):.1e}"
        else:
            shown = f"grad cosine vs naive {min(values):.5f}"
        return f"{len(results)} families ({', '.join(results)}), loss finite, {shown}"

    return run


def _rib_step(ctx: Context) -> str:
    """RIB's own row (the rows above include it too when it is present)."""
    loss, grads = _training_step("RIB", "naive", "fp32", ctx.device)
    if not math.isfinite(loss):
        raise AssertionError(f"loss {loss}")
    return f"loss {loss:.4f}, {len(grads)} parameters with gradients"


def section_train(quick: bool) -> list[Check]:
    checks = []
    for precision in ("fp32", "bf16"):
        need = () if precision == "fp32" else ("bf16",)
        checks.append(Check("train", f"training step, naive (reference), {precision}", _reference_check(precision),
                            need))  # fmt: skip
        for backend, (needs, _) in TRAIN_BACKENDS.items():
            checks.append(Check("train", f"training step, {backend} vs naive, {precision}",
                                _train_check(backend, precision), need + needs))  # fmt: skip
    checks.append(Check("train", "training step, RIB family, naive, fp32", _rib_step, ("rib",)))
    return checks


# --------------------------------------------------------------------------- 3. basicsr train
def _basicsr_options(ctx: Context, name: str, iters: int, **train) -> Path:
    import yaml

    scale = 2
    data = dict(type="DownsampleImageDataset", io_backend={"type": "disk"}, use_hflip=True, use_rot=True)
    opt = {
        "name": name,
        "model_type": "ESCModel",
        "scale": scale,
        "num_gpu": 1 if ctx.device.type == "cuda" else 0,
        "manual_seed": 0,
        "datasets": {
            "train": dict(data, name="T4", dataroot_gt=str(PHOTOS / "train"), gt_size=64 if not ctx.quick else 32,
                          num_worker_per_gpu=0, batch_size_per_gpu=4 if not ctx.quick else 2,
                          dataset_enlarge_ratio=10, prefetch_mode=None),
            "val": dict(data, name="Val", dataroot_gt=str(PHOTOS / "val")),
        },  # fmt: skip
        "network_g": dict(type="ESC", **TINY, upscaling_factor=scale, attn_type="auto"),
        "path": {"pretrain_network_g": None, "strict_load_g": True, "resume_state": None},
        "train": dict({
            "ema_decay": 0.9,
            "optim_g": {"type": "AdamW", "lr": 1e-3, "weight_decay": 0, "betas": [0.9, 0.9]},
            "scheduler": {"type": "MultiStepLR", "milestones": [1000], "gamma": 0.5},
            "total_iter": iters,
            "warmup_iter": -1,
            "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0, "reduction": "mean"},
        }, **train),  # fmt: skip
        "val": {"val_freq": iters, "save_img": False,
                "metrics": {"psnr": {"type": "calculate_psnr", "crop_border": scale, "test_y_channel": True}}},
        "logger": {"print_freq": 1, "save_checkpoint_freq": iters, "use_tb_logger": False},
        "dist_params": {"backend": "nccl", "port": 29517},
    }  # fmt: skip
    path = ctx.work / f"{name}.yml"
    path.write_text(yaml.safe_dump(opt))
    return path


def _basicsr(ctx: Context, options: Path, *extra: str, launcher: list[str] | None = None) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    command = [*(launcher or [sys.executable]), "-m", "esc_arch.cli", "train", "-opt", str(options),
               "--root", str(ctx.work), *extra]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ctx.work)
    if result.returncode != 0:
        tail = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[-1]
        raise AssertionError(f"exit status {result.returncode}: {tail}")
    return result.stdout + result.stderr


def _iterations(ctx: Context) -> tuple[int, int]:
    return (2, 4) if ctx.quick else (20, 30)


def _basicsr_check(precision: str) -> Callable[[Context], str]:
    def run(ctx: Context) -> str:
        first, _ = _iterations(ctx)
        name = f"toy_{precision}"
        train = {} if precision == "fp32" else {"mixed_precision": precision}
        log = _basicsr(ctx, _basicsr_options(ctx, name, first, **train))
        run_dir = ctx.work / "experiments" / name
        for path in (run_dir / "models" / f"net_g_{first}.pth", run_dir / "training_states" / f"{first}.state"):
            if not path.is_file():
                raise AssertionError(f"{path.name} missing after {first} iterations")
        psnr = [line.split("psnr:")[1].split()[0] for line in log.splitlines() if "# psnr:" in line]
        ctx.data[f"basicsr {precision}"] = {"iterations": first, "val_psnr": psnr[-1:] or None}
        shown = psnr[-1] if psnr else "?"
        return f"{first} iterations on {ctx.device.type}, checkpoint and state saved, val PSNR {shown}"

    return run


def _resume_check(ctx: Context) -> str:
    first, second = _iterations(ctx)
    name = "toy_fp32"
    if not (ctx.work / "experiments" / name / "training_states" / f"{first}.state").is_file():
        raise AssertionError("the fp32 run above left no training state to resume")
    log = _basicsr(ctx, _basicsr_options(ctx, name, second), "--auto_resume")
    if f"iter: {first}." not in log:
        raise AssertionError(f"the log does not say it resumed from iteration {first}")
    if not (ctx.work / "experiments" / name / "models" / f"net_g_{second}.pth").is_file():
        raise AssertionError(f"net_g_{second}.pth missing")
    return f"resumed from iteration {first}, trained to {second}"


def _nccl_check(ctx: Context) -> str:
    import torch

    processes = min(2, torch.cuda.device_count())
    first, _ = _iterations(ctx)
    options = _basicsr_options(ctx, "toy_nccl", first)
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", "--master_port=29518"]
    _basicsr(ctx, options, "--launcher", "pytorch", launcher=launcher)
    if not (ctx.work / "experiments" / "toy_nccl" / "models" / f"net_g_{first}.pth").is_file():
        raise AssertionError(f"net_g_{first}.pth missing")
    world = " (one GPU: world size 1)" if processes == 1 else ""
    return f"{processes} process(es) on NCCL, {first} iterations{world}"


def section_basicsr(quick: bool) -> list[Check]:
    return [
        Check("basicsr", "basicsr train, toy options, fp32", _basicsr_check("fp32")),
        Check("basicsr", "basicsr train --auto_resume", _resume_check),
        Check("basicsr", "basicsr train, mixed_precision bf16", _basicsr_check("bf16"), ("bf16",)),
        Check("basicsr", "basicsr train, mixed_precision fp16 (loss scaling)", _basicsr_check("fp16"), ("fp16",)),
        Check("basicsr", "basicsr train --launcher pytorch, NCCL", _nccl_check, ("nccl",)),
    ]


# --------------------------------------------------------------------------- 4. esc upscale
#: esc upscale floors: PSNR against the fp32 whole-image output of the same network.
UPSCALE_FLOOR_DB = {"whole": 45.0, "tiled": 40.0}
UPSCALE_TILE = (64, 32)  # tile, overlap (input pixels)


def _upscale_inputs(ctx: Context) -> list[Path]:
    """Every photograph of tests/data/images; with ``--quick``, one 96x96 crop of one of them."""
    photos = sorted(PHOTOS.glob("*/*.png"))
    if not ctx.quick:
        return photos
    import cv2

    crop = ctx.work / "upscale_input" / "butterfly_crop.png"
    crop.parent.mkdir(exist_ok=True)
    cv2.imwrite(str(crop), cv2.imread(str(PHOTOS / "val" / "butterfly.png"))[64:160, 64:160])
    return [crop]


def _read_rgb(path: Path):
    import cv2
    import torch

    bgr = cv2.imread(str(path))
    if bgr is None:
        raise AssertionError(f"{path.name} missing or unreadable")
    return torch.from_numpy(bgr[..., ::-1].astype("float32") / 255.0).permute(2, 0, 1)[None]


def _upscale_check(precision: str, mode: str) -> Callable[[Context], str]:
    def run(ctx: Context) -> str:
        from esc_arch import load_model
        from esc_arch.cli import esc_main
        from esc_arch.runtime.inference import upscale

        inputs = _upscale_inputs(ctx)
        out_dir = ctx.work / f"upscale_{precision}_{mode}"
        tiling = ["--tile", str(UPSCALE_TILE[0]), "--tile-overlap", str(UPSCALE_TILE[1])] if mode == "tiled" else []
        with contextlib.redirect_stdout(sys.stderr):
            code = esc_main(["upscale", "-m", str(TRAINED), "-i", *map(str, inputs), "-o", str(out_dir), "--device",
                             str(ctx.device), "--precision", precision, "--suffix", "", *tiling])  # fmt: skip
        if code != 0:
            raise AssertionError(f"esc upscale exited {code}")
        net = load_model(TRAINED, device=ctx.device)
        scores = {}
        for path in inputs:
            reference = upscale(net, _read_rgb(path).to(ctx.device)).cpu()
            out = _read_rgb(out_dir / path.name)
            if out.shape != reference.shape:
                raise AssertionError(f"{path.name}: output {tuple(out.shape)}, expected {tuple(reference.shape)}")
            scores[path.stem] = _psnr(out, (reference.clamp(0, 1) * 255).round() / 255)
        ctx.data[f"upscale {precision} {mode}"] = scores
        floor = UPSCALE_FLOOR_DB[mode]
        low = {n: round(db, 1) for n, db in scores.items() if not db >= floor}
        if low:
            raise AssertionError(f"PSNR below {floor:.0f} dB: {low}")
        tile = f", tile {UPSCALE_TILE[0]} overlap {UPSCALE_TILE[1]}" if mode == "tiled" else ""
        return (f"{len(scores)} image(s), lowest {min(scores.values()):.1f} dB vs fp32 whole image "
                f"(floor {floor:.0f}){tile}")  # fmt: skip

    return run


def section_upscale(quick: bool) -> list[Check]:
    return [Check("upscale", f"esc upscale --precision {p}, {m}", _upscale_check(p, m), (p,))
            for p in ("fp16", "bf16") for m in ("whole", "tiled")]  # fmt: skip


# --------------------------------------------------------------------------- 5. latency
#: Published GPU figures of the ESC paper for this protocol. Only figures stated in this project's
#: docs/ or its design notes are filled in; none are, so every row says "not stated".
PUBLISHED: dict[str, str] = {}
NOT_STATED = "not stated in docs/ or the design notes"
PAPER_INPUT_X4 = (180, 320)  # output 1280x720 at x4
#: Published training batches (docs/training.md, docs/esc-real.md): ESC 16 per GPU x 64x64 LR (HR 128 at
#: x2); ESC-Real 12 x 256x256 HR (64x64 LR at x4).
TRAIN_BATCHES = {"ESC x2": ("ESC", 2, 16, 64), "ESC-Real x4": ("ESC-Real", 4, 12, 64)}


def _forward_latency(net, x, precision: str, device, warmup: int, repeats: int, context=None) -> dict:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device) if device.type == "cuda" else rss_mib()
    times = []
    with context or contextlib.nullcontext(), torch.no_grad(), _precision(precision, device):
        for i in range(warmup + repeats):
            synchronize(device)
            start = time.perf_counter()
            out = net(x)
            synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    if not torch.isfinite(out.float()).all():
        raise AssertionError("non-finite output")
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    else:
        peak = max(0.0, peak_rss_mib() - base)
    return {"median_ms": 1e3 * statistics.median(times), "peak_mib": peak, "repeats": repeats, "warmup": warmup}


def _latency_check(preset: str, precision: str, backend: str = "auto") -> Callable[[Context], str]:
    def run(ctx: Context) -> str:
        import torch

        import esc_arch

        torch.manual_seed(0)
        size = (32, 32) if ctx.quick else PAPER_INPUT_X4
        warmup, repeats = (0, 1) if ctx.quick else (5, 20)
        if preset == "ESC-FB48":  # the authors' FlashBias checkpoints: ESC with rank-48 factors
            config = esc_arch.preset_config("ESC", 4).replace(attn_type="FlashBias", flashbias_rank=48)
            net = esc_arch.NETWORKS[config.family()](config)
            net.set_attn_type("auto" if backend == "flashbias-on-sdpa" else backend)
        else:
            net = esc_arch.build_preset(preset, 4, attn_type=backend)
        net = net.to(ctx.device).eval()
        x = torch.rand(1, 3, *size).to(ctx.device)
        context = _sdpa_factors(ctx.device, precision) if backend == "flashbias-on-sdpa" else None
        result = _forward_latency(net, x, precision, ctx.device, warmup, repeats, context)
        result["published"] = PUBLISHED.get(f"{preset} x4 {precision} {backend}", NOT_STATED)
        ctx.data[f"latency {preset} x4 {precision} {backend}"] = dict(result, input=list(size))
        memory = "peak CUDA memory" if ctx.device.type == "cuda" else "peak RSS growth"
        return (f"{result['median_ms']:.1f} ms median of {repeats} after {warmup}, {memory} {result['peak_mib']:.0f} "
                f"MiB, input {size[0]}x{size[1]}; published: {result['published']}")  # fmt: skip

    return run


def _throughput_check(label: str, precision: str) -> Callable[[Context], str]:
    def run(ctx: Context) -> str:
        import torch

        import esc_arch

        preset, scale, batch, lr_size = TRAIN_BATCHES[label]
        if ctx.quick:
            batch, lr_size = 2, 16
        torch.manual_seed(0)
        net = esc_arch.build_preset(preset, scale).to(ctx.device).train()
        optimizer = torch.optim.AdamW(net.parameters(), 1e-4)
        x = torch.rand(batch, 3, lr_size, lr_size, device=ctx.device)
        y = torch.rand(batch, 3, lr_size * scale, lr_size * scale, device=ctx.device)
        if ctx.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(ctx.device)
        warmup, repeats = (0, 1) if ctx.quick else (3, 10)
        wall, _ = time_training_steps(net, optimizer, x, y, precision, warmup=warmup, repeats=repeats)
        step = statistics.median(wall)
        peak = torch.cuda.max_memory_allocated(ctx.device) / 2**20 if ctx.device.type == "cuda" else peak_rss_mib()
        ctx.data[f"train step {label} {precision}"] = {"batch": batch, "lr_size": lr_size, "step_ms": 1e3 * step,
                                                       "patches_per_s": batch / step, "peak_mib": peak}  # fmt: skip
        memory = "peak CUDA memory" if ctx.device.type == "cuda" else "process peak RSS"
        return (f"batch {batch} x {lr_size}x{lr_size} LR: {1e3 * step:.0f} ms/step (median of {repeats} after "
                f"{warmup}), {batch / step:.1f} patches/s, {memory} {peak:.0f} MiB")  # fmt: skip

    return run


def section_latency(quick: bool) -> list[Check]:
    checks = []
    for preset in ("ESC", "ESC-light", "ESC-FP", "ESC-Real"):
        for precision in ("fp32", "bf16", "fp16"):
            need = (precision,) if precision != "fp32" else ()
            checks.append(Check("latency", f"{preset} x4 -> 1280x720, auto, {precision}",
                                _latency_check(preset, precision), need))  # fmt: skip
    for precision in ("bf16", "fp16"):  # the authors' flex against FlashBias, both in reduced precision
        need = (precision,)
        checks += [
            Check("latency", f"ESC x4, flex, {precision}", _latency_check("ESC", precision, "flex"), need + ("flex",)),
            Check("latency", f"ESC-FB48 x4, flashbias-on-sdpa, {precision}",
                  _latency_check("ESC-FB48", precision, "flashbias-on-sdpa"), need),
            Check("latency", f"ESC-FB48 x4, flash, {precision}", _latency_check("ESC-FB48", precision, "flash"),
                  need + ("cuda", "flash_attn")),
        ]  # fmt: skip
    for label in TRAIN_BATCHES:
        for precision in ("fp32", "bf16"):
            need = () if precision == "fp32" else ("bf16",)
            checks.append(Check("latency", f"training step {label}, published batch, {precision}",
                                _throughput_check(label, precision), need))  # fmt: skip
    return checks


# --------------------------------------------------------------------------- 6. ONNX
ONNX_TOLERANCE = {"CPUExecutionProvider": 1e-4, "CUDAExecutionProvider": 1e-3}


def _onnx_check(provider: str) -> Callable[[Context], str]:
    def run(ctx: Context) -> str:
        import onnxruntime
        import torch

        from esc_arch import NETWORKS
        from esc_arch.commands.onnx_export import export_onnx, pad_for_onnx

        path = ctx.cache.get("onnx")
        torch.manual_seed(0)
        net = NETWORKS["ESC"](**TINY, upscaling_factor=2).eval()
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn(p.shape) * 0.05)
        if path is None:
            path = export_onnx(net, str(ctx.work / "tiny.onnx"))
            ctx.cache["onnx"] = path
        session = onnxruntime.InferenceSession(path, providers=[provider])
        if session.get_providers()[0] != provider:
            raise AssertionError(f"onnxruntime fell back to {session.get_providers()[0]}")
        lq = pad_for_onnx(_photo("butterfly", crop=40), net.size_multiple)
        with torch.no_grad():
            expected = net(lq).numpy()
        out = session.run(None, {"lq": lq.numpy()})[0]
        error = float(abs(out - expected).max())
        ctx.data[f"onnx {provider}"] = {"max_abs": error}
        if out.shape != expected.shape or not error <= ONNX_TOLERANCE[provider]:
            raise AssertionError(f"max abs {error:.2e} > {ONNX_TOLERANCE[provider]:.0e} (shape {out.shape})")
        return f"tiny ESC x2, {tuple(lq.shape[-2:])} photo crop: max abs {error:.1e} vs torch fp32 CPU"

    return run


#: fp16 ONNX on the CUDA provider against torch fp32 on the CPU, on real photos (PSNR, dB)
ONNX_FP16_PSNR = 45.0


def _onnx_fp16_check(ctx: Context) -> str:
    """``esc onnx --fp16``'s graph (the trained ESC-light x2, dynamic batch and size) on
    onnxruntime's CUDA provider: a batch of two photo crops of an odd size in float16, against
    torch's fp32 whole-image output."""
    import numpy
    import onnxruntime
    import torch

    from esc_arch import load_model
    from esc_arch.commands.onnx_export import export_onnx
    from esc_arch.runtime.inference import upscale

    net = load_model(TRAINED)
    path = export_onnx(net, str(ctx.work / "trained_fp16.onnx"), fp16=True)
    session = onnxruntime.InferenceSession(path, providers=["CUDAExecutionProvider"])
    if session.get_providers()[0] != "CUDAExecutionProvider":
        raise AssertionError(f"onnxruntime fell back to {session.get_providers()[0]}")
    crop = 100 if ctx.quick else 250
    lq = torch.cat([_photo(name, crop=crop)[..., : crop - 3, : crop - 7] for name in ("butterfly", "bird")])
    with torch.no_grad():
        expected = upscale(net, lq)
    out = session.run(None, {"lq": lq.numpy().astype(numpy.float16)})[0]
    if out.shape != tuple(expected.shape) or out.dtype != numpy.float16:
        raise AssertionError(f"output {out.dtype} {out.shape}; expected float16 {tuple(expected.shape)}")
    psnr = min(_psnr(torch.from_numpy(o.astype("float32")), e) for o, e in zip(out, expected, strict=True))
    ctx.data["onnx fp16 CUDAExecutionProvider"] = {"psnr_db": psnr}
    if not psnr >= ONNX_FP16_PSNR:
        raise AssertionError(f"PSNR {psnr:.1f} dB < {ONNX_FP16_PSNR} dB")
    return f"trained ESC-light x2, 2 photos {tuple(lq.shape[-2:])}: PSNR >= {psnr:.1f} dB vs torch fp32 CPU"


def section_onnx(quick: bool) -> list[Check]:
    return [
        Check("onnx", "ONNX export, onnxruntime CPU provider", _onnx_check("CPUExecutionProvider"), ("onnx",)),
        Check("onnx", "ONNX export, onnxruntime CUDA provider", _onnx_check("CUDAExecutionProvider"), ("ort_cuda",)),
        Check("onnx", "ONNX fp16 export, onnxruntime CUDA provider", _onnx_fp16_check, ("ort_cuda",)),
    ]


# --------------------------------------------------------------------------- 7. video and torchrun
#: PSNR floor of a video's frames (lossless FFV1 output) against fp32 ``upscale`` of each decoded frame.
VIDEO_FLOOR_DB = {"fp32": 60.0, "bf16": 40.0, "fp16": 45.0}


def _video_check(precision: str) -> Callable[[Context], str]:
    def run(ctx: Context) -> str:
        import av
        import numpy as np

        from benchmarks.video_pipeline import make_video
        from esc_arch import load_model
        from esc_arch.cli import esc_main
        from esc_arch.commands.video import upscale_frames

        frames, (height, width) = (8, (32, 40)) if ctx.quick else (48, (180, 320))
        source = ctx.work / f"video_{precision}.mp4"
        make_video(str(source), frames, height, width)
        out_dir = ctx.work / f"video_{precision}"
        with contextlib.redirect_stdout(sys.stderr):
            code = esc_main(["upscale", "-m", str(TRAINED), "-i", str(source), "-o", str(out_dir), "--device",
                             str(ctx.device), "--precision", precision, "--suffix", "", "--codec", "ffv1",
                             "--pix-fmt", "bgr0", "--container", "mkv", "--batch", "8"])  # fmt: skip
        if code != 0:
            raise AssertionError(f"esc upscale exited {code}")
        with av.open(str(source)) as container:
            decoded = [(f.to_ndarray(format="rgb24"), f.pts * f.time_base) for f in container.decode(video=0)]
        with av.open(str(out_dir / f"{source.stem}.mkv")) as container:
            output = [(f.to_ndarray(format="rgb24"), f.pts * f.time_base) for f in container.decode(video=0)]
            streams = [s.type for s in container.streams]
        # Matroska keeps milliseconds, and starts where the copied AAC's priming samples start
        steps = [(a - output[0][1], b - decoded[0][1]) for (_, a), (_, b) in zip(output, decoded, strict=False)]
        shift = max((abs(float(a - b)) for a, b in steps), default=0.0)
        if len(output) != frames or shift > 1e-3:
            raise AssertionError(f"{len(output)} frames of {frames}; timestamps moved by up to {shift * 1e3:.1f} ms")
        if streams != ["video", "audio"]:
            raise AssertionError(f"streams {streams}, expected video and audio")
        net = load_model(TRAINED, device=ctx.device)
        reference = upscale_frames(net, [f for f, _ in decoded], tile=None, overlap=0, precision="fp32",
                                   device=ctx.device)  # fmt: skip
        scores = []
        for (frame, _), expected in zip(output, reference, strict=True):
            mse = float(np.mean((frame.astype(np.float64) - expected) ** 2))
            scores.append(math.inf if mse == 0 else 10 * math.log10(255**2 / mse))
        net_fps = _frames_per_second(net, [f for f, _ in decoded], precision, ctx.device)
        ctx.data[f"video {precision}"] = {"frames": frames, "size": [width, height], "psnr_min": min(scores),
                                          "upscale_fps": net_fps}  # fmt: skip
        floor = VIDEO_FLOOR_DB[precision]
        if not min(scores) >= floor:
            raise AssertionError(f"lowest PSNR {min(scores):.1f} dB (floor {floor:.0f})")
        return (f"{frames} frames {width}x{height}, timestamps and audio kept, lowest {min(scores):.1f} dB vs fp32 "
                f"(floor {floor:.0f}); upscale alone {net_fps:.1f} frames/s")  # fmt: skip

    return run


def _frames_per_second(net, frames, precision: str, device) -> float:
    from esc_arch.commands.video import upscale_frames

    synchronize(device)
    start = time.perf_counter()
    for index in range(0, len(frames), 8):
        upscale_frames(net, frames[index : index + 8], tile=None, overlap=0, precision=precision, device=device)
    synchronize(device)
    return len(frames) / (time.perf_counter() - start)


def _torchrun_upscale_check(ctx: Context) -> str:
    import torch

    processes = min(torch.cuda.device_count(), 8)
    inputs = _upscale_inputs(ctx)
    folder = ctx.work / "torchrun_input"
    folder.mkdir(exist_ok=True)
    for index in range(2 * processes):  # two files per GPU
        shutil.copy(inputs[index % len(inputs)], folder / f"{index:02d}.png")
    out_dir = ctx.work / "torchrun_output"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", "-m",
               "esc_arch.cli", "upscale", "-i", str(folder), "-o", str(out_dir), "-m", str(TRAINED), "--device",
               "cuda", "--precision", "fp16", "--suffix", ""]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ctx.work)
    if result.returncode != 0:
        tail = (result.stderr.strip() or "no output").splitlines()[-1]
        raise AssertionError(f"torchrun exited {result.returncode}: {tail}")
    expected = f"{2 * processes} upscaled, 0 failed by {processes} processes"
    summary = [line for line in result.stderr.splitlines() if line.startswith(expected)]
    if len(summary) != 1 or sorted(p.name for p in out_dir.iterdir()) != sorted(p.name for p in folder.iterdir()):
        raise AssertionError(f"expected one line {expected!r} and every output once")
    return f"{summary[0]} on NCCL, one GPU each"


def section_video(quick: bool) -> list[Check]:
    return [
        Check("video", "esc upscale video, fp32, lossless FFV1", _video_check("fp32"), ("video",)),
        Check("video", "esc upscale video, fp16 on CUDA, lossless FFV1", _video_check("fp16"), ("fp16", "video")),
        Check(
            "video", "esc upscale under torchrun, one GPU per process, NCCL", _torchrun_upscale_check, ("nccl", "gpus")
        ),  # fmt: skip
    ]


SECTIONS: dict[str, Callable[[bool], list[Check]]] = {
    "golden": section_golden,
    "train": section_train,
    "basicsr": section_basicsr,
    "upscale": section_upscale,
    "latency": section_latency,
    "onnx": section_onnx,
    "video": section_video,
}


# --------------------------------------------------------------------------- machine and report
def machine(device) -> dict:
    import torch

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": str(device),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda or "none",
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
        info["cudnn"] = torch.backends.cudnn.version()
    for package in ("flash_attn", "onnxruntime", "triton"):
        try:
            module = importlib.import_module(package) if importlib.util.find_spec(package) else None
        except Exception as error:  # an installed package that fails to import is reported as such
            info[package] = f"import fails: {type(error).__name__}"
            continue
        info[package] = getattr(module, "__version__", "installed") if module else "not installed"
    return info


def machine_line(info: dict) -> str:
    where = f"{info['gpu']} (compute {info['capability']}, {info['gpu_memory_gib']} GiB), cuDNN {info['cudnn']}" \
        if "gpu" in info else f"CPU {info['cpu']}, {info['cores']} cores"  # fmt: skip
    return (f"Machine: {where}; torch {info['torch']} (CUDA {info['torch_cuda']}), flash-attn {info['flash_attn']}, "
            f"onnxruntime {info['onnxruntime']}, triton {info['triton']}; Python {info['python']}; "
            f"{info['date']}")  # fmt: skip


def markdown(info: dict, rows: list[Row], args: dict) -> str:
    lines = [
        "# GPU acceptance" + (" (--quick)" if args.get("quick") else ""),
        "",
        f"Written by `benchmarks/gpu_acceptance.py --device {info['device']}"
        f"{' --quick' if args.get('quick') else ''}`.",
        "",
        machine_line(info),
        "",
        "| section | check | status | detail | s |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r.section} | {r.name} | {r.status} | {r.detail} | {r.seconds:.1f} |" for r in rows]
    lines += ["", summary(rows)]
    return "\n".join(lines) + "\n"


def summary(rows: list[Row]) -> str:
    counts = {s: sum(r.status == s for r in rows) for s in ("PASS", "FAIL", "SKIPPED")}
    return f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIPPED']} skipped"


def _label(report: dict) -> str:
    info = report["machine"]
    where = info.get("gpu") or f"CPU ({info['cpu']})"
    return f"{where}, {info['date'][:10]}" + (", --quick" if report["args"].get("quick") else "")


def render_docs(reports: list[Path], target: Path = DOCS_TABLE) -> str:
    """The table of ``target`` between its markers, rebuilt from the JSON of one or more runs
    (one column per run); returns the table."""
    loaded = [json.loads(Path(p).read_text()) for p in reports]
    names: list[tuple[str, str]] = []
    for report in loaded:
        for row in report["rows"]:
            if (row["section"], row["name"]) not in names:
                names.append((row["section"], row["name"]))
    cells = [{(r["section"], r["name"]): r for r in report["rows"]} for report in loaded]
    lines = ["| section | check | " + " | ".join(_label(r) for r in loaded) + " |",
             "|---|---|" + "---|" * len(loaded)]  # fmt: skip
    for key in names:
        row = []
        for by_name in cells:
            r = by_name.get(key)
            row.append("not run" if r is None else r["status"] if r["status"] != "SKIPPED" else
                       f"SKIPPED: {r['detail']}")  # fmt: skip
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(row) + " |")
    table = "\n".join(lines)
    text = target.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{target}: no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    target.write_text(head + BEGIN + "\n" + table + "\n" + END + rest.split(END, 1)[1])
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: cuda when available)")
    parser.add_argument("--quick", action="store_true", help="toy sizes, one repeat (CI on a CPU)")
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), help="run these sections only")
    parser.add_argument("--out", default="gpu_acceptance_results", help="folder for the JSON and Markdown")
    parser.add_argument("--stem", default="gpu_acceptance", help="their file name without the extension")
    parser.add_argument("--render-docs", nargs="+", metavar="JSON", help="rebuild the table of docs/verification.md")
    args = parser.parse_args(argv)
    if args.render_docs:
        print(render_docs([Path(p) for p in args.render_docs]))
        return 0

    import torch

    try:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except (RuntimeError, ValueError):
        print(f"--device {args.device}: not a device; use cpu, cuda or cuda:N", file=sys.stderr)
        return 2
    if device.type not in ("cpu", "cuda"):
        print(f"--device {args.device}: not supported here; use cpu, cuda or cuda:N", file=sys.stderr)
        return 2
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print(f"--device {device}: torch.cuda.is_available() is False", file=sys.stderr)
            return 2
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
        _exact_fp32()
    info = machine(device)
    print(machine_line(info), flush=True)
    caps = capabilities(device)
    print("Missing here: " + ("; ".join(f"{k} ({v})" for k, v in caps.items() if v) or "nothing"), flush=True)
    print("\n| section | check | status | detail | s |\n|---|---|---|---|---|", flush=True)

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_acceptance_") as work:
        ctx = Context(device=device, quick=args.quick, caps=caps, work=Path(work))
        checks = [c for name in (args.only or SECTIONS) for c in SECTIONS[name](args.quick)]
        rows = run_checks(checks, ctx, echo=lambda line: print(line, flush=True))
    seconds = time.perf_counter() - start
    print(f"\n{summary(rows)} in {seconds:.0f} s")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"machine": info, "capabilities": caps, "args": {"quick": args.quick, "only": args.only},
              "seconds": round(seconds, 1), "rows": [vars(r) for r in rows], "measurements": ctx.data}  # fmt: skip
    (out / f"{args.stem}.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out / f"{args.stem}.md").write_text(markdown(info, rows, report["args"]))
    print(f"wrote {out / args.stem}.json and .md")
    return 1 if any(r.status == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
