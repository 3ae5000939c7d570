"""What the tests of benchmarks/ share: a benchmark script imported by its path."""

import contextlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest


@contextlib.contextmanager
def _benchmark_module(name: str):
    """``benchmarks/<name>.py`` as a module, registered in ``sys.modules`` while the block runs
    (dataclasses look their module up while the file runs)."""
    path = Path(__file__).parents[2] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)


@pytest.fixture(scope="session")
def benchmark_module():
    """``with benchmark_module("roofline") as module:``: a script of benchmarks/ as a module."""
    return _benchmark_module
