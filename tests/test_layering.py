"""The package's two layers, as docs/layout.md states them: nothing outside
``esc_arch/basicsr_plugin/`` imports BasicSR (read from the source with ``ast``), the networks
in ``esc_arch/archs/`` import only torch, the standard library and the configuration module,
and the inference path runs with BasicSR unimportable, importing nothing heavy (torchvision,
torch's compiler, scipy, scikit-image: start-up cost, benchmarks/startup.py)."""

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
    assert {"basicsr.models.sr_model", "esc_arch.convert", "esc_arch.loading", "math"} <= found


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
print("load_model", net.variant, net.scale)
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
COMMANDS = ("esc_arch.upscale", "esc_arch.export", "esc_arch.onnx_export", "esc_arch.basicsr_plugin.demo",
            "esc_arch.basicsr_plugin.pipeline")  # fmt: skip


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_command(path):
    """What commands share lives outside them (``cli_util``, the core); a command never imports
    another, and nothing else imports a command."""
    name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    bad = sorted(n for n in _imports(path) if n in COMMANDS and n != name)
    assert not bad, f"{name} imports the command module(s) {bad}"
