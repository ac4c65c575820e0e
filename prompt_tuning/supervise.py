"""One process of a multi-process job, run as a watched child: a lost peer is one line.

When a process of a `jax.distributed` job dies, jax ends the others itself. As soon as
the coordination service knows (at once when the coordinator, process 0, went; after
`--heartbeat_timeout_seconds` when a host stopped answering), its C++ client aborts every
survivor: SIGABRT, exit 134, a fatal log line and a C++ stack trace. Python cannot catch
that. So `train`, `eval` and `infer` in a multi-process job run their work in a child
process of the same command, and this parent:

- passes the child's stdout through untouched (the child itself leaves out Gloo's
  connection lines unless `--verbose`: quiet.py) and its stderr line by line;
- holds back the fatal line and everything after it (the stack trace, gRPC's details);
- ends with one line, "another process of this multi-process job was lost (...);
  restart every process with the same command ...", and exit code 75
  (`errors.EXIT_PEER_LOST`), unless the child already said so itself.

When a collective notices the loss first (Gloo's TCP connection is reset), the child's
own error line says the same (`errors.describe`), and it leaves at once instead of
waiting in jax's shutdown barrier for the peer that is gone (`cli.main`).

The child dies with its parent (Linux's PR_SET_PDEATHSIG), so SIGKILL of `prompt-tuning`
ends the whole process, as a lost host would. The child runs in its own process group:
a terminal's Ctrl-C reaches the parent only, which passes SIGINT and SIGTERM on once, so
the child sees one Ctrl-C, not two. `--debug` runs unsupervised, with jax's raw output.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
from typing import Mapping, Sequence, TextIO

from prompt_tuning import errors
from prompt_tuning.launch import UsageError, split_distributed_args

# Set in the child: it does the work itself.
WORKER_ENV = "PROMPT_TUNING_WORKER"
GIN_JOBS = ("train", "eval", "infer")

# absl's fatal log line (`F1204 21:37:53.455091 13452 client.h:80] ...`) and what follows.
_FATAL = re.compile(r"^F\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ [^\]]+\] (?P<message>.*)")
_STATUS = re.compile(r"absl::Status: (?P<status>.*)")
# std::terminate's line, e.g. when Gloo receives a message that a killed peer cut short.
_TERMINATE = "terminate called after throwing an instance of"
_PR_SET_PDEATHSIG = 1


def wanted(command: str, argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> bool:
  """Whether `prompt-tuning COMMAND ARGV` is a gin job of a multi-process job that this
  process should watch rather than run."""
  if command not in GIN_JOBS or environ.get(WORKER_ENV) or "--debug" in argv:
    return False
  try:
    flags, _ = split_distributed_args(argv)
  except UsageError:
    return False  # The worker would report it; unsupervised, this process does.
  processes = flags.get("num_processes")
  if processes is None and environ.get("JAX_NUM_PROCESSES", "").isdigit():
    processes = int(environ["JAX_NUM_PROCESSES"])
  return bool(flags.get("auto_detect")) or (processes or 1) > 1


def run(command: str, argv: Sequence[str]) -> int:
  """Runs `prompt-tuning COMMAND ARGV` as a watched child; its exit code (module
  docstring), with a lost peer reported as one line."""
  child = subprocess.Popen(
    [sys.executable, "-m", "prompt_tuning", command, *argv],
    stderr=subprocess.PIPE,
    env={**os.environ, WORKER_ENV: "1"},
    start_new_session=True,
    preexec_fn=_die_with_parent(os.getpid()),
    text=True,
    errors="replace",
    bufsize=1,
  )
  previous = {
    number: signal.signal(number, lambda received, _: child.send_signal(received))
    for number in (signal.SIGINT, signal.SIGTERM)
  }
  watcher = StderrWatcher(sys.stderr)
  try:
    assert child.stderr is not None
    for line in child.stderr:
      watcher.feed(line)
    returncode = child.wait()
  finally:
    for number, handler in previous.items():
      signal.signal(number, handler)
  return watcher.finish(command, returncode)


def _die_with_parent(parent: int):
  """The child's pre-exec hook: be killed when the parent dies (Linux; elsewhere the
  child outlives a killed parent until jax notices the lost peer)."""

  def hook() -> None:
    try:
      ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
      return
    if os.getppid() != parent:  # The parent died before the hook ran.
      os._exit(errors.EXIT_PEER_LOST)

  return hook


class StderrWatcher:
  """Passes a worker's stderr through to `out`, holding back jax's fatal line and the
  stack trace after it; `finish` says in one line what happened."""

  def __init__(self, out: TextIO):
    self._out = out
    self._fatal: str | None = None  # jax's fatal message
    self._status: str = ""  # the status it quotes: the reason, shorter
    self._reported_lost_peer = False

  def feed(self, line: str) -> None:
    if self._fatal is None and (match := _FATAL.match(line)):
      self._fatal = match.group("message")
      status = _STATUS.search(self._fatal)
      self._status = status.group("status") if status else self._fatal
      return
    if self._fatal is None and line.startswith(_TERMINATE):
      # A C++ exception nobody caught; its message follows as `  what():  ...`.
      self._fatal = self._status = line.strip()
      return
    if self._fatal is not None:
      if self._fatal.startswith(_TERMINATE) and line.strip().startswith("what():"):
        self._status = line.strip()[len("what():") :].strip()
        self._fatal = f"{self._fatal} {self._status}"
      return  # The dying process's stack trace and gRPC details.
    if errors.LOST_PEER_MARK in line:
      self._reported_lost_peer = True
    self._out.write(line)
    self._out.flush()

  def finish(self, command: str, returncode: int) -> int:
    """The exit code to leave with, after one closing line when the worker could not
    write its own."""
    if self._reported_lost_peer:
      return errors.EXIT_PEER_LOST
    if self._fatal is not None:
      if errors.lost_peer_reason(self._fatal) is not None:
        self._say(command, errors.lost_peer_message(errors.shorten(self._status)))
        return errors.EXIT_PEER_LOST
      self._say(
        command,
        f"jax ended the process: {errors.shorten(self._status)}; rerun with --debug for "
        "jax's own output",
      )
      return errors.EXIT_ERROR
    if returncode < 0:
      name = signal.Signals(-returncode).name
      self._say(command, f"the worker process was killed by {name}; rerun the same command")
      return 128 - returncode
    return returncode

  def _say(self, command: str, message: str) -> None:
    self._out.write(f"prompt-tuning {command}: error: {message}\n")
    self._out.flush()
