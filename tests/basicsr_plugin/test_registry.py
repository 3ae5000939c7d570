"""BasicSR builds the networks from option files (esc_arch/basicsr_plugin/__init__.py registers
them; ``import esc_arch.basicsr_plugin`` then ``import basicsr`` activates the plugin)."""

import sys

import pytest
import yaml
from basicsr.archs import build_network

from esc_arch import ESC, ESCFP, ESCReal

SNIPPET = """
network_g:
  type: {type}
  dim: 64
  pdim: 16
  kernel_size: 13
  n_blocks: 1
  conv_blocks: 5
  window_size: 32
  num_heads: 4
  upscaling_factor: 4
  exp_ratio: 1.25
  attn_type: {attn}
"""


@pytest.mark.parametrize(("name", "cls"), [("ESC", ESC), ("ESCFP", ESCFP), ("ESCReal", ESCReal)])
def test_build_network_from_yaml(name, cls):
    opt = yaml.safe_load(SNIPPET.format(type=name, attn="SDPA"))
    net = build_network(opt["network_g"])
    assert type(net) is cls
    assert net.attn_type == "sdpa" and net.upscaling_factor == 4
    assert opt["network_g"]["type"] == name  # BasicSR copies the options before popping


def test_unknown_option_key_is_an_error():
    opt = yaml.safe_load(SNIPPET.format(type="ESC", attn="Flex"))["network_g"]
    opt["dim_typo"] = 3
    with pytest.raises(TypeError, match="dim_typo"):
        build_network(opt)


@pytest.mark.slow
def test_fresh_interpreter_imports_the_plugin_then_basicsr(run_command):
    """``import esc_arch`` leaves BasicSR alone (no hook); ``import esc_arch.basicsr_plugin`` then
    ``import basicsr`` registers ESC."""
    code = (
        "import sys, esc_arch; hooked = any(type(f).__name__ == '_BasicSRFinder' for f in sys.meta_path); "
        "import esc_arch.basicsr_plugin, basicsr; from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY; "
        "print(hooked, ARCH_REGISTRY.get('ESC') is esc_arch.ESC, 'ESCModel' in MODEL_REGISTRY)"
    )
    assert run_command([sys.executable, "-c", code]).stdout.split() == ["False", "True", "True"]
