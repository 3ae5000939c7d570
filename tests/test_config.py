"""Configurations (esc_arch/archs/*_arch.py) and presets (esc_arch/families/): exact parameter
counts, and every rule on the constructor's values."""

import pytest

from esc_arch import ESC, ESCFP, PRESETS, ESCReal, build_preset

PRESET_SCALES = [(n, s) for n, p in PRESETS.items() for s in p.scales]


@pytest.mark.parametrize(("name", "scale"), PRESET_SCALES)
def test_preset_parameter_counts(name, scale):
    net = build_preset(name, scale)
    assert sum(p.numel() for p in net.parameters()) == PRESETS[name].params[scale]
    assert net.upscaling_factor == scale


@pytest.mark.parametrize("spelling", ["Naive", "SDPA", "Flex", "naive", "sdpa", "flex", "auto", "flash"])
def test_authors_spellings_are_accepted(tiny_config, spelling):
    assert ESC(**tiny_config, attn_type=spelling).attn_type == spelling.lower()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(attn_type="softmax"), "attn_type must be one of .*'naive'.*'sdpa'"),
        (dict(dim=30, num_heads=4), "dim must be divisible by num_heads=4"),
        (dict(pdim=80), "pdim must be at most dim=64"),
        (dict(kernel_size=12), "kernel_size must be odd"),
        (dict(n_blocks=0), "n_blocks must be a positive integer"),
        (dict(window_size=-8), "window_size must be a positive integer"),
        (dict(upscaling_factor=2.5), "upscaling_factor must be a positive integer"),
        (dict(exp_ratio=0), "exp_ratio must be positive"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ESC(**kwargs)


def test_bad_constructor_arguments_of_fixed_variants():
    with pytest.raises(ValueError, match="upscaling_factor must be 4 for ESCReal"):
        ESCReal(upscaling_factor=2)
    with pytest.raises(ValueError, match="use_ln must be True for ESCFP"):
        ESCFP(use_ln=False)
    with pytest.raises(TypeError):
        ESC(64)  # keyword-only
    with pytest.raises(TypeError):
        ESC(dimm=64)  # no **kwargs: typos are errors


def test_unknown_preset_and_scale():
    with pytest.raises(ValueError, match="unknown preset 'ESC-XXL'"):
        build_preset("ESC-XXL", 2)
    with pytest.raises(ValueError, match="accepted scales: \\[4\\]"):
        build_preset("ESC-Real", 2)


def test_the_configuration_imports_no_network_code():
    """config.py is what every configuration shares; the networks import it, never the other way round."""
    import ast
    from pathlib import Path

    import esc_arch.config

    tree = ast.parse(Path(esc_arch.config.__file__).read_text())
    relative = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]
    absolute = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level]
    absolute += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not relative and not [m for m in absolute if m.split(".")[0] == "esc_arch"], (relative, absolute)
