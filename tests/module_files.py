"""Import a Python file that is not part of a package (scripts/, examples/) as a module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_module_file(path: Path, name: str) -> ModuleType:
    """Run `path` as the module `name` and return it.

    The module is entered in `sys.modules` (and left there): dataclasses look their module
    up there while they are built, and pydantic models when they resolve annotations.
    """
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
