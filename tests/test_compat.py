"""Each adaptation of BasicSR 1.4.2 in esc_arch.compat, tested where it bites."""

import os
import socket
import subprocess
import sys
import textwrap
from collections import Counter

import numpy as np
import pytest
import torch

import esc_arch
from esc_arch import compat


def _run(code: str, **env) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_every_adaptation_ran():
    assert set(compat.applied()) == {a.name for a in compat.ADAPTATIONS}
    assert compat.applied()["functional_tensor"] is True  # torchvision >= 0.17 lacks the module


def test_functional_tensor_alias_serves_basicsr_degradations():
    import basicsr.data.degradations as degradations

    img = torch.rand(1, 3, 8, 8)
    gray = degradations.rgb_to_grayscale(img, num_output_channels=3)
    expected = (0.2989 * img[:, 0] + 0.587 * img[:, 1] + 0.114 * img[:, 2]).unsqueeze(1).expand_as(img)
    assert torch.allclose(gray, expected, atol=1e-6)


def test_basicsr_imports_without_distutils():
    out = _run(
        """
        import sys
        sys.modules['distutils'] = None          # as on Python 3.12 without setuptools
        sys.modules['distutils.version'] = None
        import esc_arch
        from basicsr.archs import arch_util
        from esc_arch import compat
        print(compat.applied()['distutils'], arch_util.LooseVersion('0.29.1') >= arch_util.LooseVersion('0.9.0'))
        """
    )
    assert out.split() == ["True", "True"]


def test_loose_version_ordering():
    v = compat.LooseVersion
    assert v("0.29.1") > v("0.9.0") and v("1.10") > v("1.9") and v("2.14.1") == v("2.14.1")
    assert v("1.0") < v("1.0.1") and v("0.17.0a0") >= v("0.17")


def test_basicsr_imports_without_scipy_ndimage_filters():
    out = _run(
        """
        import sys, scipy.ndimage
        sys.modules['scipy.ndimage.filters'] = None   # as in SciPy 2.0
        import esc_arch
        import basicsr.metrics.niqe
        print(esc_arch.compat.applied()['scipy_filters'])
        """
    )
    assert out.strip() == "True"


def _state(tmp_path, iters):
    from basicsr.models.lr_scheduler import MultiStepRestartLR

    states = tmp_path / "experiments" / "run" / "training_states"
    states.mkdir(parents=True)
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.AdamW([param], lr=5e-4, betas=(0.9, 0.9))
    param.grad = torch.ones(3)
    optimizer.step()
    scheduler = MultiStepRestartLR(optimizer, milestones=[10, 20], gamma=0.5)
    for it in iters:
        state = {"epoch": 0, "iter": it, "optimizers": [optimizer.state_dict()], "schedulers": [scheduler.state_dict()]}
        torch.save(state, states / f"{it}.state")
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


def test_pytorch_launcher_and_ddp_on_cpu():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = _run(
        """
        import torch, torch.distributed as dist
        import esc_arch
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
    before = compat.applied()
    esc_arch.compat.apply()
    assert compat.applied() == before
