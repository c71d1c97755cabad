"""Loads a script of the top-level benchmark folder as a module, for tests of its arithmetic."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from tests.support.processes import REPO_ROOT

BENCHMARKS = REPO_ROOT / "benchmarks"


def load_script(name: str) -> ModuleType:
    """``<benchmarks>/<name>.py`` as the module ``name``."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
