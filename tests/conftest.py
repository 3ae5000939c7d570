import json
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from esc_arch import NETWORKS, convert_state_dict

DATA = Path(__file__).parent / "data"
ARCHS = NETWORKS
GOLDEN_CASES = sorted(p.stem for p in DATA.glob("*.json"))


def load_golden(name: str, attn_type: str = "naive"):
    """(network with the case's weights and mode, input, expected output, case description)."""
    case = json.loads((DATA / f"{name}.json").read_text())
    net = ARCHS[case["arch"]](**case["config"], attn_type=attn_type)
    weights = case.get("loaded_from") or f"{name}.pth"
    state_dict = torch.load(DATA / weights, weights_only=True)["params_ema"]
    net.load_state_dict(convert_state_dict(state_dict, net), strict=True)
    net.train(case["mode"] == "train")
    io = torch.load(DATA / f"{name}_io.pt", weights_only=True)
    return net, io["input"], io["output"], case


def run(args, cwd, check=True, timeout=900) -> subprocess.CompletedProcess:
    """Run a command; with ``check``, a failure shows the ends of its output."""
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def write(path: Path, opt: dict) -> Path:
    """Write an option dict as YAML; returns the path."""
    path.write_text(yaml.safe_dump(opt))
    return path


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
