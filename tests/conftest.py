"""Fixtures shared by the whole suite (docs/testing.md lists them).

Tests take what they need as fixtures; nothing is imported from this file. The module-level
names below are constants (paths, the list of golden cases) used where a fixture cannot be:
in ``pytest_generate_tests`` and at collection time.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
import yaml

import esc_arch.basicsr_plugin  # noqa: F401  (as a BasicSR script does: the first `import basicsr` is adapted)

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
#: The project's shared material beside the checkout (CI has it): the full-size reference cases
#: that tests/data leaves out because a smaller case there covers the same layout.
SHARED_GOLDEN = ROOT.parent / "shared" / "golden"
GOLDEN_CASES = sorted(p.stem for p in DATA.glob("*.json"))
BIN = Path(sys.executable).parent

#: The one tiny network used across the suite: one block, window 8, seconds per run on a CPU.
TINY_CONFIG = dict(dim=16, pdim=8, kernel_size=5, n_blocks=1, conv_blocks=2, window_size=8, num_heads=2, exp_ratio=1.25)


def pytest_generate_tests(metafunc):
    """``golden_name``: every reference case of tests/data/."""
    if "golden_name" in metafunc.fixturenames:
        metafunc.parametrize("golden_name", GOLDEN_CASES)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# --------------------------------------------------------------------------- paths


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (options/, datasets/, benchmarks/)."""
    return ROOT


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """tests/data: reference tensors, weights (tests/data/README.md)."""
    return DATA


@pytest.fixture(scope="session")
def reference_folder():
    """``reference_folder(name, sub="")``: the folder holding reference case ``name`` (its JSON):
    ``tests/data/<sub>``, else ``../shared/golden/<sub>`` (full-size cases kept out of the
    repository); the test is skipped, saying so, when neither has it."""

    def find(name: str, sub: str = "") -> Path:
        for folder in (DATA / sub, SHARED_GOLDEN / sub):
            if (folder / f"{name}.json").is_file():
                return folder
        pytest.skip(f"full-size reference case {name} is not in tests/data/{sub} nor {SHARED_GOLDEN / sub}")

    return find


@pytest.fixture(scope="session")
def image_dir() -> Path:
    """tests/data/images: real photographs, ``train/`` (four T91) and ``val/`` (bird, butterfly)."""
    return DATA / "images"


@pytest.fixture(scope="session")
def esc_bin() -> str:
    """The ``esc`` console script of this interpreter's environment."""
    return str(BIN / "esc")


@pytest.fixture(scope="session")
def basicsr_bin() -> str:
    """The ``basicsr`` console script of this interpreter's environment."""
    return str(BIN / "basicsr")


@pytest.fixture(scope="session")
def torchrun_bin() -> str:
    return str(BIN / "torchrun")


# --------------------------------------------------------------------------- networks


@pytest.fixture
def tiny_config() -> dict:
    """The tiny network's keywords (a new dict each time; add ``upscaling_factor`` etc.)."""
    return dict(TINY_CONFIG)


def _perturb(net: torch.nn.Module, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * std)
    return net


@pytest.fixture
def perturbed():
    """``perturbed(net, seed=0, std=0.05)``: ``net`` with seeded noise added to every parameter
    (in place; returned), so that no layer sits at its initial value (the dynamic-kernel
    heads start at zero)."""
    return _perturb


@pytest.fixture
def tiny_net(tiny_config):
    """``tiny_net(arch="ESC", perturb=True, **changes)``: the tiny network of class ``arch``
    (``ESC``, ``ESCFP``, ``ESCReal``; ESCReal at x4, the others at x2 unless changed),
    perturbed by seeded noise unless ``perturb=False``."""
    from esc_arch import NETWORKS

    def build(arch: str = "ESC", *, perturb: bool = True, seed: int = 0, **changes) -> torch.nn.Module:
        config = dict(tiny_config, upscaling_factor=4 if arch == "ESCReal" else 2)
        net = NETWORKS[arch](**dict(config, **changes))
        return _perturb(net, seed) if perturb else net

    return build


@pytest.fixture
def tiny_model(tiny_net, tmp_path):
    """The tiny ESC x2 (perturbed) as a model-zoo file."""
    path = tmp_path / "tiny_x2.pth"
    torch.save({"params_ema": tiny_net().state_dict()}, path)
    return path


@pytest.fixture
def training_run(tiny_net, tmp_path):
    """A BasicSR training run folder at iteration 5 of the tiny ESC x2: ``(state_path, net)``
    with ``models/net_g_5.pth`` (``params`` noisy, ``params_ema`` the network) and the matching
    ``training_states/5.state``."""
    net = tiny_net().eval()
    run = tmp_path / "experiments" / "run"
    (run / "models").mkdir(parents=True)
    (run / "training_states").mkdir()
    noise = {k: v + 1 for k, v in net.state_dict().items()}
    torch.save({"params": noise, "params_ema": net.state_dict()}, run / "models" / "net_g_5.pth")
    state = run / "training_states" / "5.state"
    torch.save({"epoch": 0, "iter": 5, "optimizers": [], "schedulers": []}, state)
    return state, net


class Golden(NamedTuple):
    net: torch.nn.Module
    input: torch.Tensor
    expected: torch.Tensor
    case: dict


@pytest.fixture
def golden():
    """``golden(name, attn_type="naive")``: a reference case of tests/data/ as (network with the
    case's weights and mode, input, expected output, case description)."""
    from esc_arch import NETWORKS, convert_state_dict

    def load(name: str, attn_type: str = "naive") -> Golden:
        case = json.loads((DATA / f"{name}.json").read_text())
        net = NETWORKS[case["arch"]](**case["config"], attn_type=attn_type)
        weights = case.get("loaded_from") or f"{name}.pth"
        state_dict = torch.load(DATA / weights, weights_only=True)["params_ema"]
        net.load_state_dict(convert_state_dict(state_dict, net), strict=True)
        net.train(case["mode"] == "train")
        io = torch.load(DATA / f"{name}_io.pt", weights_only=True)
        return Golden(net, io["input"], io["output"], case)

    return load


# --------------------------------------------------------------------------- commands


class CommandResult(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run_command():
    """``run_command(args, cwd=None, check=True, timeout=900, env=None)``: run a command and
    return its ``CompletedProcess``; with ``check``, a non-zero exit fails the test showing
    the ends of its output."""

    def run(args, cwd=None, *, check: bool = True, timeout: float = 900, env=None) -> subprocess.CompletedProcess:
        args = [str(a) for a in args]
        result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
        if check and result.returncode != 0:
            pytest.fail(
                f"{' '.join(args)} failed ({result.returncode}):\n"
                f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
            )
        return result

    return run


class Denied(NamedTuple):
    folder: Path  #: a folder every user may enter and write (mode 777), inside one they may enter
    denied: object  #: ``with denied():`` the mode bits are enforced (as root: effective uid 65534)


@pytest.fixture
def permissions():
    """``(folder, denied)``: make files or folders of mode 000 in ``folder``, then run the command
    under ``with denied():``, where reading them fails as it does for an ordinary user. Root
    reads any file whatever its mode, so there the block runs with effective uid 65534 (nobody)
    and gets the uid back after it."""
    root = Path(tempfile.mkdtemp(prefix="esc-permissions-"))
    root.chmod(0o755)
    folder = root / "work"
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)

    @contextlib.contextmanager
    def denied():
        if os.geteuid() != 0:
            yield
            return
        os.seteuid(65534)
        try:
            yield
        finally:
            os.seteuid(0)

    yield Denied(folder, denied)
    for path in sorted(root.rglob("*"), reverse=True):
        with contextlib.suppress(OSError):
            path.chmod(0o700)
    import shutil

    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def esc_cli(capsys):
    """``esc_cli(*args)``: the ``esc`` command in this process (``esc_arch.cli.esc_main``);
    returns (returncode, stdout, stderr)."""
    from esc_arch.cli import esc_main

    def call(*args) -> CommandResult:
        capsys.readouterr()
        code = esc_main([str(a) for a in args])
        out, err = capsys.readouterr()
        return CommandResult(code, out, err)

    return call


@pytest.fixture
def basicsr_cli(capsys, monkeypatch):
    """``basicsr_cli(*args, cwd)``: the ``basicsr`` command in this process
    (``esc_arch.cli.basicsr_main``), run from ``cwd``; returns (returncode, stdout, stderr).

    BasicSR sets its logger up once per process (console and log-file handlers); the handlers
    a run adds are closed and removed afterwards, so that each run writes its own log file and
    no handler outlives the captured streams."""
    from esc_arch.basicsr_plugin import activate
    from esc_arch.cli import basicsr_main

    activate()
    from basicsr.utils import logger as basicsr_logger

    def call(*args, cwd) -> CommandResult:
        monkeypatch.chdir(cwd)
        log = logging.getLogger("basicsr")
        handlers, propagate, level = list(log.handlers), log.propagate, log.level
        initialized = dict(basicsr_logger.initialized_logger)
        basicsr_logger.initialized_logger.clear()  # this run sets up its own handlers (its log file)
        capsys.readouterr()
        try:
            code = basicsr_main([str(a) for a in args])
        finally:
            for handler in [h for h in log.handlers if h not in handlers]:
                log.removeHandler(handler)
                handler.close()
            log.propagate, log.level = propagate, level
            basicsr_logger.initialized_logger.clear()
            basicsr_logger.initialized_logger.update(initialized)
        out, err = capsys.readouterr()
        return CommandResult(code, out, err)

    return call


@pytest.fixture
def tiny_training(image_dir):
    """``tiny_training(name, **train)``: options of a 2-iteration ``basicsr train`` of a tiny ESC x2
    on the four training photographs (LR made on the fly), checkpoints every 2 iterations;
    ``train`` entries replace those of ``train:``."""

    def make(name: str, **train) -> dict:
        dataset = {
            "name": "T4",
            "type": "DownsampleImageDataset",
            "dataroot_gt": str(image_dir / "train"),
            "io_backend": {"type": "disk"},
            "gt_size": 32,
            "num_worker_per_gpu": 0,
            "batch_size_per_gpu": 2,
        }
        network = {
            "type": "ESC",
            "dim": 16,
            "pdim": 8,
            "kernel_size": 5,
            "n_blocks": 1,
            "conv_blocks": 1,
            "window_size": 8,
            "num_heads": 2,
            "upscaling_factor": 2,
            "exp_ratio": 1.25,
        }
        return {
            "name": name, "model_type": "ESCModel", "scale": 2, "num_gpu": "auto", "manual_seed": 0,
            "datasets": {"train": dataset}, "network_g": network,
            "path": {"pretrain_network_g": None, "resume_state": None},
            "train": {"optim_g": {"type": "AdamW", "lr": 1e-3}, "total_iter": 2, "warmup_iter": -1,
                      "scheduler": {"type": "MultiStepLR", "milestones": [100], "gamma": 0.5},
                      "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0}, **train},
            "logger": {"print_freq": 1, "save_checkpoint_freq": 2, "use_tb_logger": False},
        }  # fmt: skip

    return make


@pytest.fixture
def write_options():
    """``write_options(path, opt)``: write an option dict as YAML; returns ``path``."""

    def write(path: Path, opt: dict) -> Path:
        path.write_text(yaml.safe_dump(opt))
        return path

    return write


# --------------------------------------------------------------------------- data


_scripts: dict[str, object] = {}


@pytest.fixture(scope="session")
def data_script():
    """``data_script(name)``: the module of ``datasets/{name}.py`` (its ``main(argv)`` returns
    the exit status), to run a data script in this process."""

    def load(name: str):
        if name not in _scripts:
            spec = importlib.util.spec_from_file_location(f"datasets_{name}", ROOT / "datasets" / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            _scripts[name] = module
        return _scripts[name]

    return load


@pytest.fixture(scope="session")
def sr_data(tmp_path_factory, data_script) -> Path:
    """Training LMDBs (``T4/``: 96 px HR sub-images of the four training photos and their x2
    LR) and a validation set (``Set5/``: bird and butterfly, HR and x2 LR), made in this
    process by the datasets/ scripts from real photographs."""
    root = tmp_path_factory.mktemp("sr_data")
    images = DATA / "images"
    assert data_script("prepare_sr_lmdb").main(
        ["--hr", str(images / "train"), "--name", "T4", "--out", str(root / "T4"), "--scales", "2",
         "--crop-size", "96", "--step", "48", "--workers", "1"]
    ) == 0  # fmt: skip
    assert data_script("prepare_benchmark").main(
        ["--hr", f"Set5={images / 'val'}", "--out", str(root), "--scales", "2", "--workers", "1"]
    ) == 0  # fmt: skip
    return root
