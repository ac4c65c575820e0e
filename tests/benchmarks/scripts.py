"""Loading a script from benchmarks/ as a module, for the tests of its functions."""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def script_path(filename: str) -> str:
  return os.path.join(REPO, "benchmarks", filename)


def load_script(filename: str) -> ModuleType:
  """benchmarks/ is not a package, so its scripts are loaded from their files."""
  name = os.path.splitext(filename)[0] + "_script"
  spec = importlib.util.spec_from_file_location(name, script_path(filename))
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses look their module up while loading.
  spec.loader.exec_module(module)
  return module
