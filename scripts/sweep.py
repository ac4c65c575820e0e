"""Scale-curve sweeps: one `prompt-tuning train` run per point of a grid, one CSV, one plot.

The paper's figures are grids over one base configuration: model size x prompt length
{1, 5, 20, 100, 150} (Figure 3a), initialisation {random uniform, sampled vocab, class
label} (Figure 3b), LM-adaptation steps (Figure 3d). This script expands such a grid,
trains every point in its own `--out/<point>` model directory (sequentially, so one
accelerator is enough), takes each run's best dev score (early stopping: the maximum over
its eval rows of `--metric`) and writes `results.csv` plus a PNG of score against
trainable or model parameters (log x), or against a numeric grid key (`--x
TRAIN_EXAMPLES` for low-data runs), one line per value of the other grid keys.

  python scripts/sweep.py --out /runs/fig3a \\
    --gin_file=prompt_tuning/configs/models/t5_1_1_small_prompt.gin \\
    --gin_file=prompt_tuning/configs/runs/prompt_finetune.gin \\
    --gin.MIXTURE_OR_TASK_NAME="'taskless_super_glue_rte_v102'" \\
    --grid SIZE=small,base,large --checkpoint small=/ckpt/lm100k_small/checkpoint_1100000 \\
    --checkpoint base=... --checkpoint large=... \\
    --grid PROMPT_LENGTH=1,5,20,100,150 --metric taskless_super_glue_rte_v102/accuracy \\
    --x model --series PROMPT_LENGTH

Grid keys are gin macros or bindings (values in gin syntax, split at top-level commas),
plus two shortcuts: `SIZE` (binds `network.t5_config.size`, and INITIAL_CHECKPOINT_PATH
from `--checkpoint SIZE=PATH`) and `gin_file` (one extra gin file per point, e.g. the
`prompts/*.gin` initialisers). A finished point is not retrained: its run directory
resumes at its last step, so rerunning an interrupted sweep continues it.

`--grid FILE.toml` reads the paper's grids from `configs/` instead (docs/paper.md): a
`[grid]` table of axes (each a list of gin values; strings are taken as gin text,
numbers and booleans are written as gin writes them), an optional `[checkpoints]` table
(size -> path) and optional `metric`, `x` and `series`. `$NAME` in a string is read from
the environment. The command line wins: `--grid KEY=...` replaces the file's axis of that
key (or adds one), `--checkpoint`, `--metric`, `--x` and `--series` replace the file's.

`--tiny-demo` runs offline on the bundled demo task with a random tiny model, to check
the machinery (its scores are near chance by design). `--dry-run` checks every point's
gin configuration and prints its train command, without training.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import os
import re
import subprocess
import sys
import time
import tomllib
from typing import Any, Callable, NamedTuple, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # Run as a file: make the checkout's package importable.
  sys.path.insert(0, REPO)

from prompt_tuning import cli  # noqa: E402

SIZE_KEY = "SIZE"
GIN_FILE_KEY = "gin_file"
SIZE_BINDING = "network.t5_config.size"
# The plot's x axes that are not grid keys, and the CSV column each reads.
X_FIELDS = {"trainable": "trainable_params", "model": "model_params"}
CSV_FIELDS = (
  "run",
  "status",
  "model_size",
  "model_params",
  "trainable_params",
  "best_score",
  "best_step",
  "final_score",
  "seconds",
  "model_dir",
)

TINY_DEMO_TASK = "demo_sentiment"
TINY_DEMO_GRID_FILE = os.path.join(REPO, "configs", "tiny_demo.toml")
GRID_FILE_KEYS = ("grid", "checkpoints", "metric", "x", "series")


def split_top_level(text: str) -> list[str]:
  """Splits at commas outside brackets and quotes, so gin values like
  `@initializers.uniform()` or `{'inputs': 24, 'targets': 4}` stay whole."""
  parts, depth, quote, current = [], 0, "", []
  for char in text:
    if quote:
      quote = "" if char == quote else quote
    elif char in "'\"":
      quote = char
    elif char in "([{":
      depth += 1
    elif char in ")]}":
      depth -= 1
    elif char == "," and depth == 0:
      parts.append("".join(current).strip())
      current = []
      continue
    current.append(char)
  parts.append("".join(current).strip())
  if depth != 0 or quote:
    raise ValueError(f"unbalanced brackets or quotes in grid values {text!r}")
  return parts


def parse_grid(specs: Sequence[str]) -> list[tuple[str, list[str]]]:
  grid: list[tuple[str, list[str]]] = []
  for spec in specs:
    key, eq, values = spec.partition("=")
    key = key.strip()
    if not eq or not key or not values.strip():
      raise ValueError(f"bad --grid {spec!r}: write KEY=VALUE1,VALUE2,...")
    if key in dict(grid):
      raise ValueError(f"grid key {key!r} given twice; list all its values in one --grid")
    parsed = split_top_level(values)
    if any(not v for v in parsed):
      raise ValueError(f"empty value in --grid {spec!r}")
    grid.append((key, parsed))
  return grid


class GridFile(NamedTuple):
  """What a `configs/*.toml` grid file sets; None where it leaves the default."""

  grid: list[tuple[str, list[str]]]
  checkpoints: dict[str, str]
  metric: str | None = None
  x: str | None = None
  series: list[str] | None = None


def is_grid_file(spec: str) -> bool:
  return spec.endswith(".toml") and "=" not in spec


def _expand_environment(text: str, path: str) -> str:
  """`$NAME` / `${NAME}` from the environment, so one file serves every size and run
  directory; an unset name is an error rather than a literal `$NAME` in a path."""
  expanded = os.path.expandvars(text)
  unset = re.search(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expanded)
  if unset:
    raise ValueError(f"{path}: ${unset.group(1)} is not set in the environment (used in {text!r})")
  return expanded


def _gin_text(value: Any, path: str, key: str) -> str:
  """A TOML value as the gin text a `--grid KEY=...` would carry."""
  if isinstance(value, bool):  # Before int: bool is an int in Python.
    return "True" if value else "False"
  if isinstance(value, (int, float)):
    return repr(value)
  if isinstance(value, str) and value.strip():
    return _expand_environment(value.strip(), path)
  raise ValueError(
    f"{path}: grid values of {key!r} must be non-empty strings (gin text) or numbers, not {value!r}"
  )


def load_grid_file(path: str) -> GridFile:
  try:
    with open(path, "rb") as f:
      data = tomllib.load(f)
  except FileNotFoundError:
    raise ValueError(f"grid file {path!r} not found") from None
  except tomllib.TOMLDecodeError as error:
    raise ValueError(f"{path}: {error}") from None
  unknown = sorted(set(data) - set(GRID_FILE_KEYS))
  if unknown:
    raise ValueError(
      f"{path}: unknown key(s) {', '.join(unknown)} (a grid file has {', '.join(GRID_FILE_KEYS)})"
    )
  axes = data.get("grid", {})
  if not isinstance(axes, dict) or not axes:
    raise ValueError(f"{path}: needs a [grid] table of KEY = [values]")
  grid = []
  for key, values in axes.items():
    if not isinstance(values, list) or not values:
      raise ValueError(f"{path}: grid axis {key!r} must be a non-empty list")
    grid.append((key, [_gin_text(v, path, key) for v in values]))
  checkpoints = {
    size: _expand_environment(str(p), path) for size, p in data.get("checkpoints", {}).items()
  }
  series = data.get("series")
  if series is not None and not (
    isinstance(series, list) and all(isinstance(k, str) for k in series)
  ):
    raise ValueError(f"{path}: series must be a list of grid keys")
  return GridFile(grid, checkpoints, data.get("metric"), data.get("x"), series)


def merge_grids(
  files: Sequence[GridFile], axes: Sequence[tuple[str, list[str]]]
) -> list[tuple[str, list[str]]]:
  """The files' axes in order, then the command line's: an axis the command line names
  replaces the file's in place (narrowing a paper grid to a few sizes keeps its order)."""
  merged: list[tuple[str, list[str]]] = []
  for grid_file in files:
    for key, values in grid_file.grid:
      if key in dict(merged):
        raise ValueError(f"grid key {key!r} is in two grid files")
      merged.append((key, values))
  for key, values in axes:
    keys = [k for k, _ in merged]
    if key in keys:
      merged[keys.index(key)] = (key, values)
    else:
      merged.append((key, values))
  return merged


def grid_points(grid: Sequence[tuple[str, list[str]]]) -> list[dict[str, str]]:
  keys = [k for k, _ in grid]
  return [dict(zip(keys, values)) for values in itertools.product(*(v for _, v in grid))]


def _short(key: str, value: str) -> tuple[str, str]:
  """A readable (key, value) pair: `PROMPT_INIT`, `uniform` for `@initializers.uniform()`."""
  if key == GIN_FILE_KEY:
    return "init", os.path.splitext(os.path.basename(value))[0]
  return key.split(".")[-1], re.sub(r"@?initializers\.|\(\)|['\"]", "", value)


def run_name(point: dict[str, str]) -> str:
  """A directory name that shows the point: `PROMPT_LENGTH-5__PROMPT_INIT-uniform`."""
  parts = []
  for key, value in point.items():
    short_key, short_value = _short(key, value)
    parts.append(f"{short_key}-{re.sub(r'[^A-Za-z0-9_.+-]+', '_', short_value).strip('_')}")
  return "__".join(parts) or "run"


def point_config(
  point: dict[str, str],
  base_files: Sequence[str],
  base_bindings: Sequence[str],
  checkpoints: dict[str, str],
  model_dir: str,
) -> tuple[list[str], list[str]]:
  """Gin files and bindings of one grid point (later bindings win in gin)."""
  files = list(base_files)
  bindings = list(base_bindings)
  for key, value in point.items():
    if key == GIN_FILE_KEY:
      files.append(value)
    elif key == SIZE_KEY:
      size = value.strip("'\"")
      bindings.append(f"{SIZE_BINDING}={size!r}")
      if size in checkpoints:
        bindings.append(f"INITIAL_CHECKPOINT_PATH={checkpoints[size]!r}")
      elif checkpoints:
        raise ValueError(
          f"no --checkpoint for size {size!r}; give --checkpoint "
          f"{size}=PATH (each size needs its own frozen model)"
        )
    else:
      bindings.append(f"{key}={value}")
  bindings.append(f"MODEL_DIR={model_dir!r}")
  return files, bindings


def gin_args(
  files: Sequence[str], bindings: Sequence[str], search_paths: Sequence[str]
) -> list[str]:
  args = [f"--gin_file={f}" for f in files] + [f"--gin.{b}" for b in bindings]
  if search_paths:
    args.append(f"--gin_search_paths={','.join(search_paths)}")
  return args


def describe_model(
  files: Sequence[str], bindings: Sequence[str], search_paths: Sequence[str]
) -> tuple[str, int]:
  """(size name, frozen parameter count) of the configured backbone, from shapes only."""
  import gin

  from prompt_tuning import info
  from prompt_tuning.t5 import network

  gin.clear_config()
  try:
    cli.parse_gin(files, bindings, search_paths)
    config = network.t5_config()
    size = gin.query_parameter(f"{SIZE_BINDING}") if _is_bound(SIZE_BINDING) else "base"
  finally:
    gin.clear_config()
  groups = info.parameter_groups(config)
  return str(size), int(sum(groups.values()))


def _is_bound(name: str) -> bool:
  import gin

  try:
    gin.query_parameter(name)
    return True
  except ValueError:
    return False


CACHE_ENV = {
  "JAX_COMPILATION_CACHE_DIR": None,
  "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
  "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}


def use_compile_cache(cache_dir: str) -> Callable[[], None]:
  """Points at a persistent XLA compilation cache: grid points that differ only in values
  (initialiser, seed, checkpoint) then compile once. Subprocesses read it from the
  environment; in-process runs see it only if this process has not compiled yet.
  Returns a function that puts the previous settings back."""
  import jax

  os.makedirs(cache_dir, exist_ok=True)
  saved_env = {k: os.environ.get(k) for k in CACHE_ENV}
  saved_config = {name: getattr(jax.config, name) for name in _CACHE_CONFIG}
  os.environ.update({k: v or cache_dir for k, v in CACHE_ENV.items()})
  for name, value in zip(_CACHE_CONFIG, (cache_dir, 0.0, 0)):
    jax.config.update(name, value)

  def restore() -> None:
    for key, value in saved_env.items():
      if value is None:
        os.environ.pop(key, None)
      else:
        os.environ[key] = value
    for name, value in saved_config.items():
      jax.config.update(name, value)

  return restore


_CACHE_CONFIG = (
  "jax_compilation_cache_dir",
  "jax_persistent_cache_min_compile_time_secs",
  "jax_persistent_cache_min_entry_size_bytes",
)


def train_point(args: Sequence[str], in_process: bool, log_path: str) -> int:
  """One `prompt-tuning train`; a subprocess keeps gin and jax state apart between
  points, in-process saves the interpreter start-up (about 10 s a point)."""
  if in_process:
    import gin

    gin.clear_config()
    try:
      return cli.main(["train", *args])
    finally:
      gin.clear_config()
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}
  with open(log_path, "w") as log:
    return subprocess.call(
      [sys.executable, "-m", "prompt_tuning", "train", *args],
      stdout=log,
      stderr=subprocess.STDOUT,
      env=env,
      cwd=os.getcwd(),
    )


def check_point(files: Sequence[str], bindings: Sequence[str], search_paths: Sequence[str]) -> None:
  """Raises cli.UsageError if `prompt-tuning train` would refuse this point's
  configuration (a missing gin file, an unknown binding, an unset required macro)."""
  import gin

  gin.clear_config()
  try:
    cli.parse_gin(files, bindings, search_paths)
    cli.require_macros("train")
    try:
      gin.finalize()  # Gin's own check of macros declared `%gin.REQUIRED`.
    except ValueError as error:
      raise cli.UsageError(" ".join(str(error).split())) from error
  finally:
    gin.clear_config()


def dry_run(
  out_dir: str,
  files: Sequence[str],
  bindings: Sequence[str],
  search_paths: Sequence[str],
  grid: Sequence[tuple[str, list[str]]],
  checkpoints: dict[str, str],
) -> list[list[str]]:
  """Checks every point's configuration and prints its train command; trains nothing,
  so a sweep of large models can be vetted before it takes an accelerator for days."""
  commands = []
  for point in grid_points(grid):
    model_dir = os.path.join(out_dir, run_name(point))
    point_files, point_bindings = point_config(point, files, bindings, checkpoints, model_dir)
    check_point(point_files, point_bindings, search_paths)
    command = ["prompt-tuning", "train", *gin_args(point_files, point_bindings, search_paths)]
    print(" ".join(command), flush=True)
    commands.append(command)
  return commands


def best_score(model_dir: str, metric: str) -> tuple[float, int | None, float]:
  """(best, its step, last) of `metric` over the run's eval rows; NaN when none."""
  from prompt_tuning.training import logging_utils

  rows = [
    r
    for r in logging_utils.read_metrics(model_dir)
    if r.get("kind") == "eval" and metric in r and math.isfinite(r[metric])
  ]
  if not rows:
    return float("nan"), None, float("nan")
  best = max(rows, key=lambda r: (r[metric], -r["step"]))
  return float(best[metric]), int(best["step"]), float(rows[-1][metric])


def trainable_params(model_dir: str) -> int:
  """Parameters in the newest exported numpy checkpoint: exactly what was trained."""
  import numpy as np

  from prompt_tuning.training import checkpoints

  root = os.path.join(model_dir, checkpoints.NUMPY_DIR)
  if not os.path.isdir(root):
    return 0
  steps = [d for d in os.listdir(root) if re.fullmatch(r"checkpoint_\d+", d)]
  if not steps:
    return 0
  newest = os.path.join(root, max(steps, key=lambda d: int(d.split("_")[1])))
  return int(
    sum(
      np.load(os.path.join(newest, f), mmap_mode="r").size
      for f in os.listdir(newest)
      if f.endswith(".npy")
    )
  )


def write_csv(path: str, rows: Sequence[dict[str, Any]], grid_keys: Sequence[str]) -> None:
  fields = ["run", *grid_keys, *CSV_FIELDS[1:]]
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    for row in rows:
      writer.writerow({k: row.get(k, "") for k in fields})


def plot(
  rows: Sequence[dict[str, Any]], x_axis: str, series_keys: Sequence[str], metric: str, path: str
) -> None:
  """Figure 1 / 3 style: score against parameters (log x), one line per series."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  x_field = X_FIELDS.get(x_axis, x_axis)
  lines: dict[str, list[tuple[float, float]]] = {}
  for row in rows:
    score = row["best_score"]
    x = float(row[x_field])
    if row["status"] != "ok" or not math.isfinite(score) or x <= 0:
      continue
    label = ", ".join("=".join(_short(k, row[k])) for k in series_keys) or "runs"
    lines.setdefault(label, []).append((x, score))
  fig, axis = plt.subplots(figsize=(6, 4))
  for label, points in lines.items():
    xs, ys = zip(*sorted(points))
    axis.plot(xs, ys, marker="o", label=label)
  axis.set_xscale("log")
  axis.set_xlabel(
    {"trainable": "trainable parameters", "model": "model parameters"}.get(x_axis, x_axis)
  )
  axis.set_ylabel(f"best {metric}")
  axis.grid(alpha=0.3, which="both")
  if lines:
    axis.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _is_number(text: str) -> bool:
  try:
    float(text)
  except ValueError:
    return False
  return True


def default_series(grid_keys: Sequence[str], x_axis: str) -> list[str]:
  """Lines are labelled by every grid key that does not move the point along x."""
  on_x = {"trainable": {"PROMPT_LENGTH"}, "model": {SIZE_KEY, SIZE_BINDING}}.get(x_axis, {x_axis})
  return [k for k in grid_keys if k not in on_x]


def write_tiny_checkpoint(out_dir: str) -> str:
  """A random tiny T5 over the demo vocabulary, as an orbax parameter checkpoint."""
  import jax

  from prompt_tuning import convert
  from prompt_tuning.data import demo as demo_data
  from prompt_tuning.t5 import T5Config, init_params

  path = os.path.join(out_dir, "tiny_base")
  if os.path.isdir(path) and os.listdir(path):
    return path
  config = T5Config.from_size("tiny", vocab_size=demo_data.demo_vocab_size())
  return convert.save_params_orbax(init_params(config, jax.random.PRNGKey(0)), path)


def tiny_demo_setup(out_dir: str, steps: int) -> tuple[list[str], list[str], str]:
  from prompt_tuning.data import demo as demo_data

  checkpoint = write_tiny_checkpoint(out_dir)
  files = [
    "prompt_tuning/configs/models/t5_1_1_small_prompt.gin",
    "prompt_tuning/configs/runs/prompt_finetune.gin",
  ]
  bindings = [
    f"{SIZE_BINDING}='tiny'",
    f"network.t5_config.vocab_size={demo_data.demo_vocab_size()}",
    f"MIXTURE_OR_TASK_NAME={TINY_DEMO_TASK!r}",
    "TASK_FEATURE_LENGTHS={'inputs': 24, 'targets': 4}",
    f"INITIAL_CHECKPOINT_PATH={checkpoint!r}",
    f"TRAIN_STEPS={steps}",
    "BATCH_SIZE=4",
    f"EVAL_PERIOD={steps}",
    f"CHECKPOINT_PERIOD={steps}",
    "DROPOUT_RATE=0.0",
    "initializers.sampled_vocab.embedding=%INITIAL_CHECKPOINT_PATH",
    "initializers.class_labels.embedding=%INITIAL_CHECKPOINT_PATH",
    f"initializers.class_labels.labels={list(demo_data.DEMO_LABELS)!r}",
    f"prompt_tuning.data.vocab.get_vocabulary.spm_path={demo_data.DEMO_SPM_PATH!r}",
    "trainer.train.num_eval_examples=32",
  ]
  return files, bindings, f"{TINY_DEMO_TASK}/accuracy"


def run_sweep(
  out_dir: str,
  files: Sequence[str],
  bindings: Sequence[str],
  search_paths: Sequence[str],
  grid: Sequence[tuple[str, list[str]]],
  metric: str,
  checkpoints: dict[str, str],
  x_axis: str,
  series_keys: Sequence[str] | None,
  in_process: bool,
) -> list[dict[str, Any]]:
  os.makedirs(out_dir, exist_ok=True)
  grid_keys = [k for k, _ in grid]
  series = default_series(grid_keys, x_axis) if series_keys is None else list(series_keys)
  unknown = [k for k in series if k not in grid_keys]
  if unknown:
    raise ValueError(
      f"--series {','.join(unknown)} is not a grid key "
      f"(grid keys: {', '.join(grid_keys) or 'none'})"
    )
  points = grid_points(grid)
  rows = []
  for index, point in enumerate(points, 1):
    name = run_name(point)
    model_dir = os.path.join(out_dir, name)
    point_files, point_bindings = point_config(point, files, bindings, checkpoints, model_dir)
    size, model_params = describe_model(point_files, point_bindings, search_paths)
    print(f"[{index}/{len(points)}] {name} -> {model_dir}", flush=True)
    os.makedirs(model_dir, exist_ok=True)
    started = time.time()
    code = train_point(
      gin_args(point_files, point_bindings, search_paths),
      in_process,
      os.path.join(model_dir, "train.log"),
    )
    seconds = time.time() - started
    best, best_step, final = best_score(model_dir, metric)
    status = "ok" if code == 0 else f"failed (exit {code}; see {model_dir}/train.log)"
    print(
      f"    {status}; best {metric} = {best:.4g} at step {best_step}; {seconds:.0f}s", flush=True
    )
    rows.append(
      {
        "run": name,
        **point,
        "status": "ok" if code == 0 else f"exit {code}",
        "model_size": size,
        "model_params": model_params,
        "trainable_params": trainable_params(model_dir),
        "best_score": best,
        "best_step": best_step if best_step is not None else "",
        "final_score": final,
        "seconds": round(seconds, 1),
        "model_dir": model_dir,
      }
    )
    write_csv(os.path.join(out_dir, "results.csv"), rows, grid_keys)  # After each point.
  plot_name = f"scores_vs_{x_axis}_params" if x_axis in X_FIELDS else f"scores_vs_{x_axis}"
  plot_path = os.path.join(out_dir, f"{plot_name}.png")
  plot(rows, x_axis, series, metric, plot_path)
  print(f"results: {os.path.join(out_dir, 'results.csv')}\nplot: {plot_path}")
  return rows


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="scripts/sweep.py",
    description=__doc__.split("\n\n")[0],
    epilog="Also takes the train command's gin flags: --gin_file, --gin.NAME=VALUE, "
    "--gin_search_paths (shared by every point).",
  )
  parser.add_argument("--out", required=True, help="sweep directory (one run per point)")
  parser.add_argument(
    "--grid",
    action="append",
    default=[],
    metavar="KEY=V1,V2,... | FILE.toml",
    help="a grid axis (a gin macro/binding, SIZE or gin_file), or a grid "
    "file such as configs/figure3a_prompt_length.toml",
  )
  parser.add_argument(
    "--metric", default=None, help="eval metric key in metrics.jsonl, e.g. demo_sentiment/accuracy"
  )
  parser.add_argument(
    "--checkpoint",
    action="append",
    default=[],
    metavar="SIZE=PATH",
    help="frozen checkpoint of one SIZE grid value",
  )
  parser.add_argument(
    "--x",
    default=None,
    help="x axis of the plot: trainable (prompt) or model parameters, or a numeric grid "
    "key such as TRAIN_EXAMPLES (default: the grid file's, else trainable)",
  )
  parser.add_argument(
    "--series",
    default=None,
    help="comma-separated grid keys that label the plot's lines "
    "(default: the grid file's, else the keys that do not move x)",
  )
  parser.add_argument(
    "--in-process",
    action="store_true",
    help="train every point in this process (faster start, shared state)",
  )
  parser.add_argument(
    "--compile-cache",
    default=None,
    metavar="DIR",
    help="persistent XLA compilation cache shared by the points "
    "(default: OUT/jax_cache; 'none' to disable)",
  )
  parser.add_argument(
    "--tiny-demo",
    action="store_true",
    help="offline preset: bundled demo task, random tiny model; default "
    "grid configs/tiny_demo.toml (PROMPT_LENGTH x PROMPT_INIT)",
  )
  parser.add_argument("--steps", type=int, default=20, help="train steps of --tiny-demo")
  parser.add_argument(
    "--dry-run",
    action="store_true",
    help="check every point's configuration and print its train command, without training",
  )
  return parser


class SweepOptions(NamedTuple):
  """The grid and how to score and plot it, command line over grid files."""

  grid: list[tuple[str, list[str]]]
  checkpoints: dict[str, str]
  metric: str | None
  x: str
  series: list[str] | None


def sweep_options(args: argparse.Namespace) -> SweepOptions:
  specs = list(args.grid)
  if args.tiny_demo and not specs:
    specs = [TINY_DEMO_GRID_FILE]
  grid_files = [load_grid_file(spec) for spec in specs if is_grid_file(spec)]
  grid = merge_grids(grid_files, parse_grid([s for s in specs if not is_grid_file(s)]))
  checkpoints: dict[str, str] = {}
  for grid_file in grid_files:
    checkpoints.update(grid_file.checkpoints)
  for spec in args.checkpoint:
    size, eq, path = spec.partition("=")
    if not eq or not size or not path:
      raise ValueError(f"bad --checkpoint {spec!r}: write SIZE=PATH")
    checkpoints[size] = path

  def from_files(name: str) -> Any:
    values = [getattr(f, name) for f in grid_files if getattr(f, name) is not None]
    return values[-1] if values else None

  x_axis = args.x or from_files("x") or "trainable"
  if x_axis not in X_FIELDS and x_axis not in [key for key, _ in grid]:
    raise ValueError(
      f"x = {x_axis!r}: use 'trainable', 'model' or a numeric grid key "
      f"(grid keys: {', '.join(key for key, _ in grid) or 'none'})"
    )
  for key, values in grid:
    if key == x_axis and not all(_is_number(v) for v in values):
      raise ValueError(f"x = {x_axis!r} needs numeric values, got {', '.join(values)}")
  series = from_files("series") if args.series is None else [s for s in args.series.split(",") if s]
  return SweepOptions(grid, checkpoints, args.metric or from_files("metric"), x_axis, series)


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  files, bindings, search_paths, rest = cli.split_gin_args(argv)
  args = _parser().parse_args(rest)
  restore: Callable[[], None] = lambda: None
  try:
    options = sweep_options(args)
    out_dir = os.path.abspath(args.out)
    metric = options.metric
    if (args.compile_cache or "").lower() != "none" and not args.dry_run:
      restore = use_compile_cache(
        os.path.abspath(args.compile_cache or os.path.join(out_dir, "jax_cache"))
      )
    if args.tiny_demo:
      os.makedirs(out_dir, exist_ok=True)
      demo_files, demo_bindings, demo_metric = tiny_demo_setup(out_dir, args.steps)
      files, bindings = demo_files + files, demo_bindings + bindings
      metric = metric or demo_metric
    if not files:
      raise ValueError("give the base configuration with --gin_file (or use --tiny-demo)")
    if not metric:
      raise ValueError(
        "give --metric, the eval key to maximise, e.g. "
        "demo_sentiment/accuracy (see a run's metrics.jsonl)"
      )
    if args.dry_run:
      dry_run(out_dir, files, bindings, search_paths, options.grid, options.checkpoints)
      return 0
    run_sweep(
      out_dir,
      files,
      bindings,
      search_paths,
      options.grid,
      metric,
      options.checkpoints,
      options.x,
      options.series,
      args.in_process,
    )
  except (ValueError, cli.UsageError) as error:
    print(f"sweep: error: {error}", file=sys.stderr)
    return 2
  finally:
    restore()
  return 0


if __name__ == "__main__":
  sys.exit(main())
