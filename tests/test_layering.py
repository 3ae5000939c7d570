"""The package's layers, as docs/layout.md states them (imports read from the source with
``ast``): nothing outside ``esc_arch/basicsr_plugin/`` imports BasicSR; the networks in
``esc_arch/archs/`` import only torch, the standard library and the configuration module; each
part of the package (families, weights, runtime, io, commands, ...) imports only the parts
below it (:data:`MAY_IMPORT`); no module imports a command's module; and the inference path
runs with BasicSR unimportable, importing nothing heavy (torchvision, torch's compiler, scipy,
scikit-image: start-up cost, benchmarks/startup.py)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "esc_arch"


def _imports(path: Path) -> set[str]:
    """The absolute names of the modules ``path`` imports (relative imports resolved)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
                names.update([module] if node.module else [f"{base}.{a.name}" for a in node.names])
            else:
                names.add(node.module)
    return names


def _core_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "basicsr_plugin" not in p.parts)


def test_the_import_reader_sees_relative_and_absolute_imports():
    found = _imports(PACKAGE / "basicsr_plugin" / "models" / "esc_model.py")
    assert {"basicsr.models.sr_model", "esc_arch.runtime.inference", "math"} <= found


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_nothing_outside_the_plugin_imports_basicsr(path):
    bad = sorted(n for n in _imports(path) if n.split(".")[0] == "basicsr" or n.startswith("esc_arch.basicsr_plugin"))
    assert not bad, f"{path.relative_to(PACKAGE.parent)} imports {bad}: BasicSR belongs to esc_arch/basicsr_plugin/"


@pytest.mark.parametrize("path", sorted((PACKAGE / "archs").glob("*.py")), ids=lambda p: p.name)
def test_the_networks_import_only_torch_the_standard_library_and_the_configuration(path):
    allowed = set(sys.stdlib_module_names) | {"torch", "flash_attn"}  # flash_attn: the optional CUDA kernel
    bad = sorted(
        n
        for n in _imports(path)
        if n.split(".")[0] not in allowed and n != "esc_arch.config" and not n.startswith("esc_arch.archs")
    )
    assert not bad, f"esc_arch/archs/{path.name} imports {bad}"


#: Run in a fresh process where ``import basicsr`` fails, as after ``pip install esc_arch``.
WITHOUT_BASICSR = """
import importlib.abc, sys

class NoBasicSR(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "basicsr":
            raise ModuleNotFoundError(f"No module named {name!r} (not installed)")

sys.meta_path.insert(0, NoBasicSR())
import esc_arch, torch
from esc_arch.cli import esc_main

net = esc_arch.load_model(MODEL)
print("load_model", esc_arch.describe(net).variant, esc_arch.describe(net).scale)
print("esc upscale", esc_main(["upscale", "-i", IMAGE, "-o", OUT, "-m", MODEL]))
heavy = ("torchvision", "torch._dynamo", "torch._inductor", "sympy", "scipy", "skimage")  # start-up cost
print("heavy imports", [m for m in heavy if m in sys.modules])
import spandrel
esc_arch.register_spandrel()
descriptor = spandrel.ModelLoader().load_from_file(MODEL)
print("spandrel", descriptor.scale, tuple(descriptor(torch.rand(1, 3, 16, 16)).shape))
if EXPORT:
    print("esc onnx", esc_main(["onnx", "-m", MODEL, "-o", OUT + "/x.onnx"]))
print("basicsr imported:", "basicsr" in sys.modules)
"""


def _run_without_basicsr(run_command, data_dir, image_dir, tmp_path, export: bool) -> list[str]:
    values = {"MODEL": data_dir / "ESC-light_x2_small.pth", "IMAGE": image_dir / "val" / "bird.png", "OUT": tmp_path}
    code = "".join(f"{k} = {str(v)!r}\n" for k, v in values.items()) + f"EXPORT = {export}\n" + WITHOUT_BASICSR
    return run_command([sys.executable, "-c", code]).stdout.strip().splitlines()


def test_inference_runs_with_basicsr_unimportable(run_command, data_dir, image_dir, tmp_path):
    lines = _run_without_basicsr(run_command, data_dir, image_dir, tmp_path, export=False)
    assert lines == [
        "load_model ESC-light 2", "esc upscale 0", "heavy imports []", "spandrel 2 (1, 3, 32, 32)",
        "basicsr imported: False",
    ]  # fmt: skip
    assert (tmp_path / "bird_ESC-light_x2.png").is_file()


@pytest.mark.slow
def test_onnx_export_runs_with_basicsr_unimportable(run_command, data_dir, image_dir, tmp_path):
    pytest.importorskip("onnxscript")
    lines = _run_without_basicsr(run_command, data_dir, image_dir, tmp_path, export=True)
    assert lines[-2:] == ["esc onnx 0", "basicsr imported: False"] and (tmp_path / "x.onnx").is_file()


def test_basicsr_is_an_extra_not_a_requirement():
    """``pip install esc_arch`` gives the plain-torch package; BasicSR comes with ``[train]``."""
    tree = ast.parse((PACKAGE.parent / "setup.py").read_text())
    setup = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    keywords = {k.arg: k.value for k in setup.keywords}
    required = [ast.literal_eval(e) for e in keywords["install_requires"].elts]
    assert required and not [r for r in required if r.split("=")[0].split(">")[0] in ("basicsr", "torchvision")]
    train = next(n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "TRAIN")
    assert "basicsr==1.4.2" in ast.literal_eval(train.value)


#: The modules of the commands: each one's work, imported by ``esc_arch.cli`` when it runs.
COMMANDS = (
    "esc_arch.commands.upscale",
    "esc_arch.commands.export",
    "esc_arch.commands.onnx_export",
    "esc_arch.basicsr_plugin.demo",
    "esc_arch.basicsr_plugin.pipeline",
)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_command(path):
    """What commands share lives outside them (``commands/common.py``, the core); a command never
    imports another, and nothing else imports a command."""
    name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    bad = sorted(n for n in _imports(path) if n in COMMANDS and n != name)
    assert not bad, f"{name} imports the command module(s) {bad}"


#: The package's parts by job, and which parts each may import (besides itself): the lower
#: layers never import the higher ones (docs/layout.md).
BASE = {"esc_arch.version", "esc_arch.limits", "esc_arch.text", "esc_arch.config"}
MAY_IMPORT = {
    "esc_arch.version": set(),
    "esc_arch.limits": set(),
    "esc_arch.text": set(),
    "esc_arch.config": set(),
    "esc_arch.archs": {"esc_arch.config"},
    "esc_arch.families": {"esc_arch.archs"} | BASE,
    "esc_arch.weights": {"esc_arch.families", "esc_arch.archs"} | BASE,
    "esc_arch.runtime": {"esc_arch.families", "esc_arch.archs"} | BASE,
    "esc_arch.io": BASE,
    "esc_arch.spandrel_support": {"esc_arch.families", "esc_arch.weights"} | BASE,
    "esc_arch.commands": {"esc_arch.families", "esc_arch.weights", "esc_arch.runtime", "esc_arch.io", "esc_arch.archs"}
    | BASE,
    "esc_arch.cli": {"esc_arch.commands.common", "esc_arch.runtime"} | BASE,
    "esc_arch.basicsr_plugin": {
        "esc_arch.families",
        "esc_arch.weights",
        "esc_arch.runtime",
        "esc_arch.io",
        "esc_arch.archs",
        "esc_arch.cli",
        "esc_arch.commands.common",
    }
    | BASE,
    "esc_arch": {"esc_arch.version"},  # the package's __init__: the rest is imported lazily, by name
}


def _part(name: str) -> str:
    """The part of the package ``name`` belongs to (the longest key of MAY_IMPORT it starts with)."""
    return max((p for p in MAY_IMPORT if name == p or name.startswith(p + ".")), key=len)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_part_imports_only_the_layers_below_it(path):
    name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
    part = _part(name)
    allowed = MAY_IMPORT[part] | {part}
    bad = sorted(
        n
        for n in _imports(path)
        if n.split(".")[0] == "esc_arch" and not any(n == a or n.startswith(a + ".") for a in allowed)
    )
    assert not bad, f"{name} ({part}) imports {bad}; it may import {sorted(allowed)}"


def test_every_part_of_the_package_has_its_rule():
    parts = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts[:2]) for p in PACKAGE.rglob("*.py")}
    assert {p.removesuffix(".__init__") for p in parts} <= set(MAY_IMPORT)
