"""Documented commands work as written: every `prompt-tuning ...` and `scripts/sweep.py`
command in README.md and docs/*.md, and the command in the header of every file in gin/
and configs/, parses against the real gin files, sets every required macro and names
registered tasks; sweeps are dry-run point by point; other commands take the flags
shown. Nothing is trained or downloaded."""

from __future__ import annotations

import importlib.util
import pathlib
import re
import shlex

import gin
import pytest
import seqio

from prompt_tuning import cli
from prompt_tuning.data import task_mixtures
from prompt_tuning.data import tasks  # noqa: F401 (registers the tasks)

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
GIN_FILES = sorted((ROOT / "gin").glob("*.gin"))
GRID_FILES = sorted((ROOT / "configs").glob("*.toml"))
# Values for the shell variables the pages set (docs/paper.md); a page's own assignments
# win. PROMPTS is computed from a sweep's results there.
VARIABLES = {
  "SIZE": "base",
  "RUNS": "/runs",
  "PROMPTS": "['/runs/p0.npy', '/runs/p1.npy']",
  "LM100K": "gs://t5-data/pretrained_models/t5x/t5_1_1_lm100k_base/checkpoint_1100000",
  "T5_1_1": "gs://t5-data/pretrained_models/t5x/t5_1_1_base/checkpoint_1000000",
}
COMMAND_STARTS = ("prompt-tuning ", "python scripts/sweep.py ")
GIN_JOBS = ("train", "eval", "infer")
RUN_AS_WRITTEN = ("info", "tasks")  # Fast, offline: run for real.

pytestmark = pytest.mark.usefixtures("clean_gin")


def _expand(text: str, variables: dict[str, str]) -> str:
  return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: variables[m.group(1)], text)


def _page_commands(page: pathlib.Path) -> list[tuple[list[str], str]]:
  """(argv, source line) of the commands in a page's ```bash blocks, with the page's
  shell variables expanded and line continuations joined."""
  variables = dict(VARIABLES)
  commands = []
  for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
    for line in block.replace("\\\n", " ").splitlines():
      line = line.removeprefix("export ")  # Indented lines are inside another command.
      assignment = re.match(r"([A-Z0-9_]+)=(\S+)", line)
      if assignment and not assignment.group(2).startswith("$("):
        variables[assignment.group(1)] = _expand(assignment.group(2), variables)
      elif line.startswith(COMMAND_STARTS):
        commands.append((shlex.split(_expand(line, variables)), f"{page.name}: {line}"))
  return commands


def _header_command(path: pathlib.Path) -> tuple[list[str], str]:
  """The example command in a gin or grid file's header comment (indented, so prose that
  happens to start with a command's name is not taken for one)."""
  raw = [line for line in path.read_text().splitlines() if line.startswith("#")]
  lines = [line.lstrip("#").strip() for line in raw]
  start = next(
    i
    for i, line in enumerate(lines)
    if line.startswith(COMMAND_STARTS) and raw[i].startswith("#   ")
  )
  command = [lines[start]]
  while command[-1].endswith("\\"):
    command[-1] = command[-1][:-1]
    command.append(lines[start + len(command)])
  line = " ".join(command)
  return shlex.split(_expand(line, VARIABLES)), f"{path.name}: {line}"


def _snippet_dir(tmp_path: pathlib.Path) -> str:
  """The gin files the pages show as text ("e.g. `rte_xxl.gin`:" and a block), written
  out so that the commands that use them can be checked too."""
  for page in PAGES:
    for name, text in re.findall(
      r"`([\w.-]+\.gin)`:\s*\n\s*```\w*\n(.*?)```", page.read_text(), re.S
    ):
      (tmp_path / name).write_text(text)
  return str(tmp_path)


def _load_sweep():
  spec = importlib.util.spec_from_file_location("sweep_for_docs", ROOT / "scripts" / "sweep.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _registered() -> set[str]:
  return set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names())


def _task_name() -> str:
  """The configured MIXTURE_OR_TASK_NAME, through macros and the "+ sentinel" switch."""
  value = gin.query_parameter("MIXTURE_OR_TASK_NAME/macro.value")
  while isinstance(value, gin.config.ConfigurableReference):
    if value.selector == "gin.macro":
      value = gin.query_parameter(f"{value.scoped_selector.split('/')[0]}/macro.value")
    else:
      value = gin.query_parameter(f"{value.selector}.name")
  return value


def _check_gin_job(argv: list[str], line: str, snippets: str) -> None:
  distributed, rest = cli.split_distributed_args(argv[2:])
  files, bindings, paths, rest = cli.split_gin_args(rest)
  assert files and not rest, line
  cli.parse_gin(files, bindings, [*paths, snippets])
  cli.require_macros(argv[1])
  # As the CLI's `tasks.register_all()` does last: the gin-configured multi-task mixtures.
  task_mixtures.register_configured()
  gin.finalize()  # Raises for a `%gin.REQUIRED` macro left unset.
  assert _task_name() in _registered(), line


def _check_sweep(sweep, argv: list[str], line: str, tmp_path: pathlib.Path, capsys) -> None:
  args = list(argv[2:])
  args[args.index("--out") + 1] = str(tmp_path / "sweep")  # Dry runs write nothing else.
  assert sweep.main(args + ["--dry-run"]) == 0, (line, capsys.readouterr().err)
  assert "prompt-tuning train" in capsys.readouterr().out, line
  if "--metric" in args:
    task = args[args.index("--metric") + 1].split("/")[0]
    assert task.removesuffix("_sentinel") in _registered(), line


def _check_flags(argv: list[str], line: str, capsys) -> None:
  """A command that needs real data or minutes of compilation: its flags are its own."""
  with pytest.raises(SystemExit) as exit_info:
    cli.main([argv[1], "--help"])
  assert exit_info.value.code in (0, None), line
  usage = capsys.readouterr().out
  flags = {a.split("=")[0] for a in argv[2:] if a.startswith("-") and not a.startswith("--gin")}
  assert all(flag in usage for flag in flags), (line, flags)


def _check(command: tuple[list[str], str], tmp_path: pathlib.Path, capsys, monkeypatch) -> None:
  argv, line = command
  for name, value in VARIABLES.items():  # Grid files read these from the environment.
    monkeypatch.setenv(name, value)
  gin.clear_config()
  if argv[0] == "python":
    _check_sweep(_load_sweep(), argv, line, tmp_path, capsys)
  elif argv[1] in GIN_JOBS:
    _check_gin_job(argv, line, _snippet_dir(tmp_path))
  elif argv[1] in RUN_AS_WRITTEN:
    assert cli.main(argv[1:]) == 0, line
  else:
    _check_flags(argv, line, capsys)
  gin.clear_config()


PAGE_COMMANDS = [command for page in PAGES for command in _page_commands(page)]


@pytest.mark.parametrize("command", PAGE_COMMANDS, ids=[line[:80] for _, line in PAGE_COMMANDS])
def test_documented_command_is_valid(command, tmp_path, capsys, monkeypatch):
  _check(command, tmp_path, capsys, monkeypatch)


@pytest.mark.parametrize("path", GIN_FILES + GRID_FILES, ids=lambda p: p.name)
def test_the_command_in_a_config_files_header_is_valid(path, tmp_path, capsys, monkeypatch):
  argv, line = _header_command(path)
  assert str(path.relative_to(ROOT)) in line or path.name == "tiny_demo.toml", line
  _check((argv, line), tmp_path, capsys, monkeypatch)


def test_every_gin_and_grid_file_is_named_in_the_docs():
  text = " ".join(page.read_text() for page in PAGES)
  missing = [
    str(p.relative_to(ROOT)) for p in GIN_FILES + GRID_FILES if str(p.relative_to(ROOT)) not in text
  ]
  assert not missing, f"not named in README.md or docs/: {missing}"


def test_documented_commands_cover_every_kind_of_job():
  seen = {argv[1] if argv[0] == "prompt-tuning" else "sweep" for argv, _ in PAGE_COMMANDS}
  assert {
    "train",
    "eval",
    "infer",
    "neighbors",
    "info",
    "plan",
    "export-prompt",
    "sweep",
  } <= seen, seen


def test_pages_link_only_to_files_that_exist():
  for page in PAGES:
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
      if not target.startswith(("http://", "https://")):
        assert (page.parent / target).exists(), f"{page.name}: broken link {target}"
