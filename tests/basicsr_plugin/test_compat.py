"""Each adaptation of BasicSR 1.4.2 in esc_arch.basicsr_plugin.compat, tested where it bites.

The adaptations that act at import time, or on a process group, need a fresh interpreter:
those tests are in the slow tier."""

import os
import socket
import sys
import textwrap
from collections import Counter

import numpy as np
import pytest
import torch

from esc_arch.basicsr_plugin import activate, compat

activate()


@pytest.fixture
def python_code(run_command):
    """``python_code(code, **env)``: run ``code`` in a fresh interpreter; returns its stdout."""

    def run(code: str, **env) -> str:
        command = [sys.executable, "-c", textwrap.dedent(code)]
        return run_command(command, env={**os.environ, **env}, timeout=300).stdout

    return run


def _basicsr_namespace() -> dict:
    """Every attribute of BasicSR's modules and of the classes they hold."""
    names = {}
    for module_name, module in list(sys.modules.items()):
        if module is None or not (module_name == "basicsr" or module_name.startswith("basicsr.")):
            continue
        for name, value in list(vars(module).items()):
            names[(module_name, name)] = value
            if isinstance(value, type):
                for member, member_value in list(vars(value).items()):
                    names[(module_name, name, member)] = member_value
    return names


def test_every_adaptation_ran():
    assert set(compat.applied()) == {a.name for a in compat.ADAPTATIONS}
    assert compat.applied()["functional_tensor"] is True  # torchvision >= 0.17 lacks the module


def test_functional_tensor_alias_serves_basicsr_degradations():
    import basicsr.data.degradations as degradations

    img = torch.rand(1, 3, 8, 8)
    gray = degradations.rgb_to_grayscale(img, num_output_channels=3)
    expected = (0.2989 * img[:, 0] + 0.587 * img[:, 1] + 0.114 * img[:, 2]).unsqueeze(1).expand_as(img)
    assert torch.allclose(gray, expected, atol=1e-6)


@pytest.mark.slow
def test_basicsr_imports_without_distutils(python_code):
    out = python_code(
        """
        import sys
        sys.modules['distutils'] = None          # as on Python 3.12 without setuptools
        sys.modules['distutils.version'] = None
        import esc_arch.basicsr_plugin
        from basicsr.archs import arch_util
        from esc_arch.basicsr_plugin import compat
        print(compat.applied()['distutils'], arch_util.LooseVersion('0.29.1') >= arch_util.LooseVersion('0.9.0'))
        """
    )
    assert out.split() == ["True", "True"]


def test_loose_version_ordering():
    v = compat.LooseVersion
    assert v("0.29.1") > v("0.9.0") and v("1.10") > v("1.9") and v("2.14.1") == v("2.14.1")
    assert v("1.0") < v("1.0.1") and v("0.17.0a0") >= v("0.17")


@pytest.mark.slow
def test_basicsr_imports_without_scipy_ndimage_filters(python_code):
    out = python_code(
        """
        import sys, scipy.ndimage
        sys.modules['scipy.ndimage.filters'] = None   # as in SciPy 2.0
        import esc_arch.basicsr_plugin
        import basicsr.metrics.niqe
        from esc_arch.basicsr_plugin import compat
        print(compat.applied()['scipy_filters'])
        """
    )
    assert out.strip() == "True"


def _state(tmp_path, iters):
    from basicsr.models.lr_scheduler import MultiStepRestartLR

    states = tmp_path / "experiments" / "run" / "training_states"
    models = states.parent / "models"
    states.mkdir(parents=True)
    models.mkdir()
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.AdamW([param], lr=5e-4, betas=(0.9, 0.9))
    param.grad = torch.ones(3)
    optimizer.step()
    scheduler = MultiStepRestartLR(optimizer, milestones=[10, 20], gamma=0.5)
    for it in iters:
        state = {"epoch": 0, "iter": it, "optimizers": [optimizer.state_dict()], "schedulers": [scheduler.state_dict()]}
        torch.save(state, states / f"{it}.state")
        torch.save({"params": {}}, models / f"net_g_{it}.pth")  # the network file a state goes with
    return states


def test_auto_resume_finds_the_runs_own_states_on_cpu(tmp_path, monkeypatch):
    import basicsr.train

    states = _state(tmp_path, [5, 20, 100])
    monkeypatch.chdir(tmp_path / "experiments")  # not the root: BasicSR looked under ./experiments
    opt = {"auto_resume": True, "path": {"training_states": str(states)}, "name": "run"}
    resume = basicsr.train.load_resume_state(opt)
    assert resume["iter"] == 100
    assert opt["path"]["resume_state"].endswith("100.state")
    assert resume["optimizers"][0]["state"][0]["exp_avg"].device.type == "cpu"
    assert isinstance(resume["schedulers"][0]["milestones"], Counter)


def test_explicit_resume_state_and_missing_file(tmp_path):
    import basicsr.train

    states = _state(tmp_path, [7])
    opt = {"auto_resume": False, "path": {"resume_state": str(states / "7.state"), "training_states": str(states)}}
    assert basicsr.train.load_resume_state(opt)["iter"] == 7
    opt["path"]["resume_state"] = str(states / "8.state")
    with pytest.raises(FileNotFoundError, match="8.state"):
        basicsr.train.load_resume_state(opt)
    assert (
        basicsr.train.load_resume_state({"auto_resume": True, "path": {"training_states": str(tmp_path / "no")}})
        is None
    )


@pytest.mark.slow
def test_pytorch_launcher_and_ddp_on_cpu(python_code):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = python_code(
        """
        import torch, torch.distributed as dist
        import esc_arch.basicsr_plugin
        from basicsr.utils.dist_util import init_dist
        from basicsr.models.base_model import BaseModel
        init_dist('pytorch')                       # BasicSR asks for nccl and a CUDA device
        model = BaseModel.__new__(BaseModel)
        model.opt = {'dist': True, 'num_gpu': 0}
        model.device = torch.device('cpu')
        net = model.model_to_device(torch.nn.Linear(2, 2))
        net(torch.ones(1, 2)).sum().backward()
        print(dist.get_backend(), type(net).__name__)
        dist.destroy_process_group()
        """,
        RANK="0",
        LOCAL_RANK="0",
        WORLD_SIZE="1",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        CUDA_VISIBLE_DEVICES="",
    )
    assert out.split() == ["gloo", "DistributedDataParallel"]


def test_jpg_compression_with_float_quality():
    import basicsr.data.degradations as degradations

    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(0.5, 0.1, (32, 32, 3)), 0, 1).astype(np.float32)
    out = degradations.random_add_jpg_compression(img, quality_range=(30.0, 95.0))
    assert out.shape == img.shape and out.dtype == np.float32
    assert 0 < np.abs(out - img).mean() < 0.1


def test_apply_is_idempotent():
    """Applying again changes nothing: no function of BasicSR is wrapped a second time."""
    from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY

    before, applied = _basicsr_namespace(), compat.applied()
    registered = (sorted(ARCH_REGISTRY.keys()), sorted(MODEL_REGISTRY.keys()))
    compat.apply_runtime()
    compat.apply_import_time()
    activate()
    after = _basicsr_namespace()
    assert set(after) == set(before)
    assert [key for key, value in before.items() if after[key] is not value] == []
    assert compat.applied() == applied
    assert (sorted(ARCH_REGISTRY.keys()), sorted(MODEL_REGISTRY.keys())) == registered


def test_optimizer_options_survive_basicsr_own_models():
    """BasicSR's SRModel popped 'type' from the live options: a second build failed."""
    from basicsr.models.sr_model import SRModel

    model = SRModel.__new__(SRModel)
    model.net_g, model.optimizers = torch.nn.Linear(2, 2), []
    model.opt = {"train": {"optim_g": {"type": "AdamW", "lr": 1e-3}}}
    model.setup_optimizers()
    model.setup_optimizers()
    assert model.opt["train"]["optim_g"] == {"type": "AdamW", "lr": 1e-3}
    assert [type(o) for o in model.optimizers] == [torch.optim.AdamW, torch.optim.AdamW]


def test_warmup_ends_at_the_configured_rate():
    from basicsr.models.base_model import BaseModel
    from basicsr.models.lr_scheduler import MultiStepRestartLR

    model = BaseModel.__new__(BaseModel)
    param = torch.nn.Parameter(torch.zeros(1))
    model.optimizers = [torch.optim.SGD([param], lr=1.0)]
    model.schedulers = [MultiStepRestartLR(model.optimizers[0], milestones=[100], gamma=0.5)]
    rates = []
    for it in range(1, 7):
        model.update_learning_rate(it, warmup_iter=4)
        rates.append(model.optimizers[0].param_groups[0]["lr"])
    assert rates[:3] == [0.25, 0.5, 0.75] and rates[3:] == [1.0, 1.0, 1.0]  # BasicSR: 0.75 for the whole run


def test_eta_is_never_negative(monkeypatch):
    import basicsr.train

    opt = {"name": "run", "logger": {"print_freq": 1, "use_tb_logger": False}, "train": {"total_iter": 10}}
    message_logger = basicsr.train.MessageLogger(opt, start_iter=0)
    messages = []
    monkeypatch.setattr(message_logger.logger, "info", messages.append)  # BasicSR's logger does not propagate
    message_logger({"epoch": 0, "iter": 10, "lrs": [1e-3], "time": 0.1, "data_time": 0.0})
    assert "eta: 0:00:00" in messages[0] and "day" not in messages[0]


def test_console_shows_progress_and_results_not_dumps():
    import logging

    console = compat.ConsoleFilter()

    def record(message, function, level=logging.INFO):
        entry = logging.LogRecord("basicsr", level, "x", 1, message, None, None, func=function)
        return console.filter(entry)

    assert record("[train..][epoch:  0, iter:     10, lr:(1.000e-03,)] l_pix: 1.0e-02", "__call__")
    assert not record("name: run\nmodel_type: ESCModel\nscale: 2\n", "train_pipeline")  # option dump
    assert not record("ESC(\n  (proj): Conv2d\n  (blocks): ...\n)", "print_network")  # network printout
    assert record("Network: ESC, with parameters: 603,600", "print_network")  # its one-line summary
    assert record("Validation Set5\n\t # psnr: 33.1\tBest: 33.1 @ 4 iter\n", "_log_validation_metric_values")
    assert record("two\nlines\nbut a warning", "train_pipeline", logging.WARNING)


def test_pipelines_take_the_commands_parse_and_leave_argv_alone(monkeypatch):
    import argparse

    import basicsr.test
    import basicsr.train

    monkeypatch.setattr(sys, "argv", ["pytest", "--not-an-option-file"])
    opt, args = {"name": "parsed"}, argparse.Namespace(opt="x.yml")
    with compat.parsed_options(opt, args):
        assert basicsr.train.parse_options("/root", is_train=True) == (opt, args)
        assert basicsr.test.parse_options("/root", is_train=False) == (opt, args)
    assert sys.argv == ["pytest", "--not-an-option-file"]
    with pytest.raises(SystemExit):  # outside the command, BasicSR's own parser reads sys.argv
        basicsr.train.parse_options("/root", is_train=True)


def test_the_docs_list_every_adaptation_and_registration():
    """docs/basicsr-compat.md names each adaptation (as **`name`**) and everything the plugin
    registers with BasicSR."""
    from pathlib import Path

    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

    from esc_arch.families import NETWORKS

    activate()
    text = (Path(__file__).parents[2] / "docs" / "basicsr-compat.md").read_text()
    assert [a.name for a in compat.ADAPTATIONS if f"**`{a.name}`**" not in text] == []
    ours = {"esc_arch"}
    registered = [
        name
        for registry in (ARCH_REGISTRY, MODEL_REGISTRY, DATASET_REGISTRY, METRIC_REGISTRY)
        for name, obj in registry._obj_map.items()
        if getattr(obj, "__module__", "").split(".")[0] in ours
    ]
    assert set(NETWORKS) <= set(registered)
    assert [name for name in registered if f"`{name}`" not in text] == []
