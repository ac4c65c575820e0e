"""The package's imports point one way (docs/design.md, "Layers"): each layer imports only
from the layers below it, function-level imports included, and no modules import each
other in a cycle. A failure names the offending import and the layers it crosses."""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "prompt_tuning"

# Bottom to top. A top-level module or subpackage of `prompt_tuning` belongs to the layer
# that names it; imports inside one of them are free, imports across them must go down.
LAYERS: list[tuple[str, ...]] = [
  ("tree", "tables", "errors", "quiet", "configs"),  # names, tables, errors, quiet; gin
  ("t5", "data"),  # the backbone; SeqIO tasks and metrics
  ("convert",),  # the checkpoint registry
  ("prompts",),  # what trains
  ("decoding",),
  ("models",),  # loss / score / predict
  ("head_models",),  # the same for linear heads on the encoder
  ("training",),  # state, step, loop, checkpoints, mesh
  ("evaluation",),  # seqio.Evaluator, ensembling, inference
  # The tools: commands built on everything below, then the command line itself.
  ("export", "peft_interop", "info", "plan", "neighbors", "similarity", "recycle", "launch"),
  ("demo", "supervise"),
  ("cli",),
  ("__main__",),
]
_RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}
# Only the command line (cli.py and its gin half, launch.py) may import lazily, for
# start-up time, and only downwards.
LAZY_IMPORTERS = {"cli", "launch"}


def _modules() -> dict[str, pathlib.Path]:
  found = {}
  for path in sorted(PACKAGE.rglob("*.py")):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
      parts = parts[:-1]
    found[".".join(parts)] = path
  return found


def _imports(module: str, path: pathlib.Path) -> list[tuple[str, int, bool]]:
  """(imported prompt_tuning module, line, inside a function) for each import."""
  tree = ast.parse(path.read_text(), str(path))
  in_function = {
    id(node)
    for fn in ast.walk(tree)
    if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
    for node in ast.walk(fn)
  }
  package = module if path.name == "__init__.py" else module.rpartition(".")[0]
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      targets = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
      # `from pkg import name` may import the submodule pkg.name.
      targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
    else:
      continue
    for target in targets:
      if target == "prompt_tuning" or target.startswith("prompt_tuning."):
        found.append((target, node.lineno, id(node) in in_function))
  return found


def _component(module: str) -> str:
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else ""


def _graph() -> dict[str, list[tuple[str, int, bool]]]:
  modules = _modules()
  graph = {}
  for module, path in modules.items():
    edges = []
    for target, line, lazy in _imports(module, path):
      if target in modules and target not in (module, "prompt_tuning"):
        edges.append((target, line, lazy))
    graph[module] = edges
  return graph


def test_every_module_of_the_package_belongs_to_a_layer():
  unplaced = sorted({_component(m) for m in _modules() if m != "prompt_tuning"} - set(_RANK))
  assert not unplaced, f"add these to LAYERS (and to docs/design.md): {unplaced}"


def test_imports_point_down_the_layers_function_level_imports_included():
  wrong = []
  for module, edges in _graph().items():
    source = _component(module)
    if source not in _RANK:
      continue
    for target, line, _ in edges:
      dest = _component(target)
      if dest and dest != source and _RANK.get(dest, -1) >= _RANK[source]:
        wrong.append(
          f"{module}:{line} imports {target} ({source} is layer "
          f"{_RANK[source]}, {dest} layer {_RANK.get(dest)})"
        )
  assert not wrong, "imports that point up or across a layer:\n" + "\n".join(wrong)


def test_no_module_imports_the_package_inside_a_function_except_the_cli():
  lazy = [
    f"{module}:{line} imports {target} inside a function"
    for module, edges in _graph().items()
    if _component(module) not in LAZY_IMPORTERS
    for target, line, inside in edges
    if inside
  ]
  assert not lazy, "\n".join(lazy)


def test_no_two_modules_import_each_other_in_a_cycle():
  graph = {m: sorted({t for t, _, _ in edges}) for m, edges in _graph().items()}
  state: dict[str, int] = {}
  cycles = []

  def visit(node: str, stack: list[str]) -> None:
    state[node] = 1
    for nxt in graph.get(node, []):
      # A package's __init__ importing its own submodules is the normal direction.
      if nxt.startswith(node + "."):
        continue
      if state.get(nxt) == 1:
        cycles.append(" -> ".join(stack[stack.index(nxt) :] + [nxt]))
      elif nxt not in state:
        visit(nxt, stack + [nxt])
    state[node] = 2

  for node in graph:
    if node not in state:
      visit(node, [node])
  assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("source,target", [("prompts", "training"), ("t5", "prompts")])
def test_the_check_catches_an_upward_import(tmp_path, source, target):
  module = tmp_path / "probe.py"
  module.write_text(f"def f():\n  from prompt_tuning.{target} import x\n")
  ((imported, line, lazy),) = [
    e
    for e in _imports(f"prompt_tuning.{source}.probe", module)
    if e[0] == f"prompt_tuning.{target}"
  ]
  assert lazy and line == 2 and _RANK[target] > _RANK[source]
