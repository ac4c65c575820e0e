"""The command line's gin half: T5X-style flags -> a parsed, checked gin configuration.

`prompt-tuning train|eval|infer|export-prompt`, the demo and the sweep scripts all start
a job the same way: separate `--gin_file` / `--gin.NAME=VALUE` / `--gin_bindings` /
`--gin_search_paths` and the multi-process flags from the rest (argparse), resolve gin
files against the search paths, the current directory and the installed package (so
`prompt_tuning/configs/...` works from anywhere), parse, check the required macros and
finalize. Every configuration mistake becomes a `UsageError`: one line, exit code 2.

Like cli.py, this module imports the package's configurables only when a configuration
is parsed, so that `prompt-tuning --help` and the checkpoint tools start quickly.
"""

from __future__ import annotations

import argparse
import os
import re
from typing import Any, Callable, NoReturn, Sequence

import gin

from prompt_tuning import errors

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
CONFIGS_DIR = os.path.join(PACKAGE_DIR, "configs")

# The macros each gin job cannot run without (docs/training.md lists them).
REQUIRED_MACROS = {
  "train": (
    "MIXTURE_OR_TASK_NAME",
    "TASK_FEATURE_LENGTHS",
    "MODEL_DIR",
    "TRAIN_STEPS",
    "BATCH_SIZE",
    "INITIAL_CHECKPOINT_PATH",
  ),
  "eval": ("MIXTURE_OR_TASK_NAME", "TASK_FEATURE_LENGTHS", "BATCH_SIZE", "INITIAL_CHECKPOINT_PATH"),
  "infer": (
    "MIXTURE_OR_TASK_NAME",
    "TASK_FEATURE_LENGTHS",
    "BATCH_SIZE",
    "INITIAL_CHECKPOINT_PATH",
    "OUTPUT_DIR",
  ),
}

GIN_HELP = """\
gin flags (T5X style):
  --gin_file=PATH         a gin file; repeat for several. Order matters: model file,
                          then prompt / decoding files, then the run file.
  --gin.NAME=VALUE        override a binding or macro, e.g. --gin.MODEL_DIR="'/tmp/run'"
                          (VALUE is gin syntax: strings need quotes inside the shell's).
  --gin_bindings=NAME=VALUE   the same, T5X's older spelling.
  --gin_search_paths=A,B  extra directories to resolve --gin_file and include paths.
"""

DISTRIBUTED_HELP = """\
multi-process flags (one process per host; run the same command on every host):
  --coordinator_address=HOST:PORT  process 0's address, reachable from every host
  --num_processes=N       processes in the job
  --process_id=I          this process, 0 .. N-1
  --distributed           let jax find the cluster itself (Cloud TPU pod slices, SLURM,
                          Open MPI); no other flag needed there
  --heartbeat_timeout_seconds=S  how long a silent process counts as alive (jax's
                          default 100); when one is lost the others stop with exit
                          code 75: rerun every process with the same command to resume
  The environment variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
  JAX_PROCESS_ID stand in for the first three.
"""


# What to do about a gin configuration that does not parse or does not resolve.
SYNTAX_ADVICE = (
  "write VALUE in gin syntax (strings quoted, lists in [...], references as @name() or %MACRO)"
)
UNKNOWN_NAME_ADVICE = (
  "check the name's spelling and that the files are in order (model file first); "
  "`prompt-tuning COMMAND --help` lists the flags, docs/training.md the macros"
)
CONFIG_ADVICE = (
  "check the gin files (model file first, then prompt and run files) and the --gin. "
  "flags; docs/training.md lists the macros"
)


class UsageError(Exception):
  """A configuration or command-line mistake: reported in one line, exit code 2."""


class _FlagParser(argparse.ArgumentParser):
  """An argparse parser for one group of flags: mistakes raise UsageError (argparse
  would print its usage and exit), and it never answers --help itself."""

  def __init__(self) -> None:
    super().__init__(add_help=False, allow_abbrev=False)

  def error(self, message: str) -> NoReturn:
    raise UsageError(f"{message}; see the command's --help for its flags")


def _gin_flag_parser() -> _FlagParser:
  parser = _FlagParser()
  parser.add_argument("--gin_file", action="append", default=[])
  # `--gin.NAME=VALUE` is rewritten to this flag first, so that both spellings keep
  # their relative order (a later binding overrides an earlier one).
  parser.add_argument("--gin_bindings", action="append", default=[])
  parser.add_argument("--gin_search_paths", action="append", default=[])
  return parser


def split_gin_args(argv: Sequence[str]) -> tuple[list[str], list[str], list[str], list[str]]:
  """Separates T5X-style gin flags from the rest: (files, bindings, search paths, rest)."""
  rewritten = []
  for arg in argv:
    if arg.startswith("--gin."):
      name, eq, value = arg.partition("=")
      if not eq:
        raise UsageError(f"{arg} needs a value: --gin.NAME=VALUE")
      arg = f"--gin_bindings={name[len('--gin.') :]}={value}"
    rewritten.append(arg)
  parsed, rest = _gin_flag_parser().parse_known_args(rewritten)
  paths = [p for value in parsed.gin_search_paths for p in value.split(",") if p]
  return parsed.gin_file, parsed.gin_bindings, paths, rest


def split_distributed_args(argv: Sequence[str]) -> tuple[dict[str, object], list[str]]:
  """Takes the multi-process flags out of `argv`: (initialize_distributed kwargs, rest)."""
  parser = _FlagParser()
  parser.add_argument("--coordinator_address")
  parser.add_argument("--num_processes", type=_integer("--num_processes"))
  parser.add_argument("--process_id", type=_integer("--process_id"))
  parser.add_argument("--distributed", dest="auto_detect", action="store_true")
  parser.add_argument("--heartbeat_timeout_seconds", type=_integer("--heartbeat_timeout_seconds"))
  parsed, rest = parser.parse_known_args(list(argv))
  kwargs = {
    name: value for name, value in vars(parsed).items() if value is not None and value is not False
  }
  return kwargs, rest


def _integer(flag: str) -> Callable[[str], int]:
  def parse(value: str) -> int:
    try:
      return int(value)
    except ValueError:
      raise UsageError(f"{flag} must be an integer, got {value!r}") from None

  return parse


def initialize_distributed(kwargs: dict[str, Any]) -> None:
  """Joins the multi-process job, if any, before anything starts jax's backends."""
  from prompt_tuning.training import partitioning

  try:
    partitioning.initialize_distributed(**kwargs)
  except ValueError as error:
    raise UsageError(
      f"{errors.one_line(error)}; check the flags --coordinator_address, --num_processes "
      "and --process_id (or the JAX_* environment variables), the same on every process "
      "but --process_id"
    ) from error


def _resolve(path: str, search_paths: Sequence[str]) -> str:
  if os.path.isabs(path) and os.path.exists(path):
    return path
  for base in search_paths:
    candidate = os.path.join(base, path)
    if os.path.exists(candidate):
      return candidate
  raise UsageError(
    f"gin file {path!r} not found (searched: {', '.join(search_paths)}); "
    "pass --gin_search_paths or an absolute path"
  )


def search_paths(extra: Sequence[str]) -> list[str]:
  """Where gin files and their includes are looked up, first match wins."""
  return [*extra, os.getcwd(), os.path.dirname(PACKAGE_DIR), CONFIGS_DIR]


def register_configurables() -> None:
  """Imports every module whose configurables gin files may name."""
  import prompt_tuning.data.tasks  # noqa: F401
  import prompt_tuning.evaluation.run_eval  # noqa: F401
  import prompt_tuning.models  # noqa: F401
  import prompt_tuning.training.trainer  # noqa: F401


def parse_gin(
  files: Sequence[str], bindings: Sequence[str], extra_search_paths: Sequence[str]
) -> None:
  """Parses gin files and bindings, turning gin's exceptions into one-line errors."""
  register_configurables()
  paths = search_paths(extra_search_paths)
  for path in paths:
    gin.add_config_file_search_path(path)
  resolved = [_resolve(f, paths) for f in files]
  # Each binding alone first: gin parses them joined into one string, so its syntax
  # errors point at a line of that string, not at the flag the user typed.
  for binding in bindings:
    problem = _syntax_problem(binding)
    if problem is not None:
      hint = _quote_hint(binding) or f"; {SYNTAX_ADVICE}"
      raise UsageError(f"bad gin binding {_as_flag(binding)}: {problem}{hint}")
  try:
    gin.parse_config_files_and_bindings(
      resolved, list(bindings), finalize_config=False, skip_unknown=False
    )
  except Exception as error:  # gin raises many exception types for bad configs.
    culprit = _binding_at_fault(error, bindings)
    if culprit is not None:
      message = str(error).split("In bindings string line", 1)[0]
      raise UsageError(
        f"bad gin binding {_as_flag(culprit)}: {errors.one_line(message)}; {_advice(message)}"
      ) from error
    raise UsageError(
      f"bad gin configuration: {errors.one_line(error)}; {_advice(str(error))}"
    ) from error


def _advice(message: str) -> str:
  """What to do about one of gin's complaints."""
  if "No configurable matching" in message:
    return UNKNOWN_NAME_ADVICE
  return CONFIG_ADVICE


def _as_flag(binding: str) -> str:
  return f"--gin.{' '.join(binding.split())}"


def _syntax_problem(binding: str) -> str | None:
  """Gin's complaint about `binding` parsed on its own, or None when it parses. Only the
  syntax is checked: names are resolved later, with every gin file loaded."""
  from gin import config_parser

  try:
    for _ in config_parser.ConfigParser(binding, gin.config.ParserDelegate(skip_unknown=True)):
      pass
  except Exception as error:  # SyntaxError, ValueError, ... as gin's parser raises them.
    text = str(error)
    token = re.search(r"Failed to parse token '[^']*'", text)
    text = token.group(0) if token else text
    return re.sub(r"\s*\(line \d+\)\s*$", "", errors.one_line(text)).rstrip(".")
  return None


def _quote_hint(binding: str) -> str:
  """The quoted spelling when the value looks like a bare string (a path, a name) and
  parses once quoted: the commonest gin mistake on a shell command line."""
  name, eq, value = binding.partition("=")
  value = value.strip()
  if not eq or not value or value[0] in "[({'\"@%-+." or value[0].isdigit():
    return ""
  quoted = f"{name.strip()}={value!r}"
  if _syntax_problem(quoted) is not None:
    return ""
  return (
    f"; did you mean --gin.{name.strip()}=\"{value!r}\"? (gin strings need quotes inside the "
    "shell's)"
  )


def _binding_at_fault(error: Exception, bindings: Sequence[str]) -> str | None:
  """The binding a gin error names by its line in gin's joined bindings string."""
  found = re.search(r"In bindings string line (\d+)", str(error))
  if not found:
    return None
  line = int(found.group(1))
  first = 1
  for binding in bindings:
    last = first + binding.count("\n")
    if first <= line <= last:
      return binding
    first = last + 1
  return None


def macro_value(name: str) -> Any:
  """The value bound to a gin macro, or None when it is not bound."""
  try:
    return gin.query_parameter(f"{name}/macro.value")
  except ValueError:
    return None


def require_macros(command: str) -> None:
  missing = []
  for name in REQUIRED_MACROS.get(command, ()):
    value = macro_value(name)
    if value is None and name != "INITIAL_CHECKPOINT_PATH":
      missing.append(name)
    elif value is gin.REQUIRED or "gin.REQUIRED" in repr(value):
      missing.append(name)  # Declared `%gin.REQUIRED` in a run file, never bound.
  if missing:
    raise UsageError(
      f"required gin macro(s) not set: {', '.join(missing)}; bind them with "
      f"--gin.NAME=VALUE or in a gin file"
    )


def finalize_gin() -> None:
  """Locks the configuration; a `%gin.REQUIRED` macro left unbound is a UsageError."""
  try:
    gin.finalize()
  except ValueError as error:
    # Gin's check of macros a run file declares `%gin.REQUIRED` (PROMPT_FILE, ...).
    name = str(error).split("/macro.value", 1)[0].strip().strip("'`")
    if "/macro.value" not in str(error) or not name.isidentifier():
      raise UsageError(
        f"bad gin configuration: {errors.one_line(error)}; {CONFIG_ADVICE}"
      ) from error
    raise UsageError(
      f"required gin macro(s) not set: {name}; bind them with --gin.NAME=VALUE or in a gin file"
    ) from error


def call_configured(fn: Callable[..., Any], **kwargs: Any) -> Any:
  """Runs a gin-configured function, reporting unbound required parameters in one line."""
  try:
    return fn(**kwargs)
  except (TypeError, ValueError) as error:
    message = str(error)
    if "Required bindings" in message or "gin.REQUIRED" in message or "No values" in message:
      raise UsageError(
        f"{errors.one_line(error)}; bind them with --gin.NAME=VALUE or in a gin file"
      ) from error
    raise
