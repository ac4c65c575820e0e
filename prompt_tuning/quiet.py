"""Quiet by default: what a run prints is ours (stage, progress, evaluation, where the
outputs are), not the start-up lines of the libraries underneath.

Importing TensorFlow (which seqio and TFDS do) writes C++ log lines to stderr before
absl's logging is initialised, so no setting reaches them: `TF_CPP_MIN_LOG_LEVEL` only
applies once TensorFlow's logging is set up, and absl's C++ log level has no environment
variable. Measured with TensorFlow 2.21 on a CPU machine, `import tensorflow` prints
this set twice:

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:... port.cc:153] oneDNN custom operations are on. ...
    I0000 00:00:... cudart_stub.cc:31] Could not find cuda drivers on your machine, ...

`TF_ENABLE_ONEDNN_OPTS=0` would stop the oneDNN line only, by changing which kernels the
input pipeline runs; the other two have no switch. So the import of TensorFlow runs with
file descriptor 2 passed through a filter that drops exactly these lines (`BANNER`) and
forwards every other byte as it arrives, then puts fd 2 back (`filtered`, installed as
an import hook by `quiet_imports`).

On the Python side, absl prints "WARNING: Logging before flag parsing goes to stderr."
before the first record of a program that never parses absl flags, and seqio warns
"Given sequence lengths are longer than necessary" for every evaluator it builds (the
padding costs compute, it changes no score). `quiet_logging` marks absl's flags parsed
(records still go to the current `sys.stderr`, as before) and drops that one seqio
warning. Its sibling, "Given sequence lengths *may be* insufficient" (inputs may be
truncated), is kept.

A multi-process job on CPU also prints Gloo's "[Gloo] Rank 0 is connected to 1 peer
ranks ..." on stdout whenever a collective group forms; the worker process of such a job
(supervise.py) runs with stdout filtered for those lines (`GLOO_CONNECTED`).

`enable` does the import filter and the logging; `cli.main` calls it unless `--verbose`
(docs/training.md, "Quiet by default").
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import threading
from types import ModuleType
from typing import Iterator, Sequence

# The modules whose import prints C++ start-up lines.
NOISY_IMPORTS = ("tensorflow",)

# The start-up lines, each matched whole: INFO lines of the named source files with the
# named message only, so a warning or an error of the same files, or any other line,
# passes. absl's C++ prefix of an INFO line is `I1204 21:35:27.206831  9630 port.cc:153] `;
# before absl is initialised the time reads `00:00:1796420108.754328`.
_INFO = r"I\d{4} [\d:.]+ +\d+ "
BANNER = re.compile(
  r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
  rf"|{_INFO}port\.cc:\d+\] oneDNN custom operations are on\..*"
  rf"|{_INFO}cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine, GPU will "
  r"not be used\."
  rf"|{_INFO}cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized to use "
  r"available CPU instructions.*"
  r"|To enable the following instructions: .*, in other operations, rebuild TensorFlow "
  r"with the appropriate compiler flags\."
)

SEQIO_LONG_LENGTHS = "Given sequence lengths are longer than necessary"

# What Gloo (jax's CPU collectives) prints on stdout each time a collective group forms
# in a multi-process job: a dozen lines at start-up, none of them ours. Its threads write
# the sentence piece by piece (`std::cout << "[Gloo] Rank " << rank << ...`), so the
# pieces of two sentences interleave ("[Gloo] Rank [Gloo] Rank 0 is connected ...", then
# "0 is connected ..."): a line made of nothing but those pieces, one of them words, is
# Gloo's.
_GLOO_WORDS = (
  r"\[Gloo\] Rank | is connected to | peer ranks\. ?|Expected number of connected peer "
  r"ranks is : "
)
GLOO_CONNECTED = re.compile(rf"(?:{_GLOO_WORDS}|\d+)*(?:{_GLOO_WORDS})(?:{_GLOO_WORDS}|\d+)*")

# How long the end of a filtered block waits for the filter to forward what is left.
_DRAIN_SECONDS = 5.0


def is_banner(line: str, pattern: re.Pattern[str] = BANNER) -> bool:
  """Whether `line` (without its newline) is one of the lines `pattern` names whole."""
  return pattern.fullmatch(line.rstrip("\r\n")) is not None


def _matches(line: bytes, pattern: re.Pattern[str]) -> bool:
  return is_banner(line.decode("utf-8", "replace"), pattern)


def _write_all(fd: int, data: bytes) -> None:
  while data:
    data = data[os.write(fd, data) :]


def _forward(source: int, sink: int, pattern: re.Pattern[str]) -> None:
  """Copies `source` to `sink` line by line, leaving out the lines `pattern` names,
  until EOF."""
  pending = b""
  try:
    while chunk := os.read(source, 65536):
      *lines, pending = (pending + chunk).split(b"\n")
      kept = [line + b"\n" for line in lines if not _matches(line, pattern)]
      if kept:
        _write_all(sink, b"".join(kept))
    if pending and not _matches(pending, pattern):
      _write_all(sink, pending)
  finally:
    os.close(source)


def _flush(fd: int) -> None:
  streams = (sys.stdout, sys.__stdout__) if fd == 1 else (sys.stderr, sys.__stderr__)
  for stream in streams:
    if stream is not None:
      with contextlib.suppress(OSError, ValueError):
        stream.flush()


@contextlib.contextmanager
def filtered(fd: int = 2, pattern: re.Pattern[str] = BANNER) -> Iterator[None]:
  """Runs the block with file descriptor `fd` (C++ code's as well as Python's) passed
  through a filter that drops the lines `pattern` names; everything else is forwarded as
  it arrives, in order. `fd` is restored on the way out, whatever the block raised."""
  _flush(fd)
  try:
    saved = os.dup(fd)
  except OSError:  # Nothing open there to filter.
    yield
    return
  source, sink = os.pipe()
  os.dup2(sink, fd)
  os.close(sink)
  forwarder = threading.Thread(
    target=_forward, args=(source, saved, pattern), name=f"quiet-fd{fd}", daemon=True
  )
  forwarder.start()
  try:
    yield
  finally:
    _flush(fd)
    os.dup2(saved, fd)  # Closes the pipe's last write end: the forwarder reads EOF.
    forwarder.join(_DRAIN_SECONDS)
    if not forwarder.is_alive():
      os.close(saved)
    # Else a process started in the block still holds the pipe: the forwarder keeps
    # writing to `saved` for it, so `saved` stays open.


class _FilteredLoader(importlib.abc.Loader):
  """Runs another loader's `exec_module` inside `filtered` (stderr, `BANNER`); the module
  keeps the real loader as its `__loader__`."""

  def __init__(self, loader: importlib.abc.Loader) -> None:
    self.loader = loader

  def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
    return self.loader.create_module(spec)

  def exec_module(self, module: ModuleType) -> None:
    module.__loader__ = self.loader
    if module.__spec__ is not None:
      module.__spec__.loader = self.loader
    with filtered():
      self.loader.exec_module(module)


class _QuietImports(importlib.abc.MetaPathFinder):
  """Finds `names` with the finders after it and hands them to `_FilteredLoader`: the
  filter covers the import of those packages and nothing else."""

  def __init__(self, names: Sequence[str]) -> None:
    self.names = frozenset(names)

  def find_spec(
    self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
  ) -> importlib.machinery.ModuleSpec | None:
    if fullname not in self.names:
      return None
    for finder in sys.meta_path:
      find = getattr(finder, "find_spec", None)
      if finder is self or find is None:
        continue
      spec = find(fullname, path, target)
      if spec is not None:
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
          spec.loader = _FilteredLoader(spec.loader)
        return spec
    return None


def quiet_imports(names: Sequence[str] = NOISY_IMPORTS) -> None:
  """Filters the banner lines out of stderr while any of `names` is first imported (a
  no-op for those already imported, or when already installed)."""
  wanted = frozenset(names)
  if not any(getattr(finder, "names", None) == wanted for finder in sys.meta_path):
    sys.meta_path.insert(0, _QuietImports(names))


class _DropMessage(logging.Filter):
  """Drops the records whose format string starts with `prefix`."""

  def __init__(self, prefix: str) -> None:
    super().__init__()
    self.prefix = prefix

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(self.prefix)


_SEQIO_FILTER = _DropMessage(SEQIO_LONG_LENGTHS)


def quiet_logging(quiet: bool = True) -> None:
  """Hides absl's pre-flag-parsing notice and seqio's "longer than necessary" warning
  (`quiet`), or shows that warning again (`quiet=False`)."""
  absl_logger = logging.getLogger("absl")
  if not quiet:
    absl_logger.removeFilter(_SEQIO_FILTER)
    return
  from absl import flags
  from absl import logging as absl_logging  # noqa: F401  (defines --logtostderr)

  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
    # Unparsed, absl writes every record to the current sys.stderr; parsed, only with
    # --logtostderr (else to the stream its handler captured when it was made).
    flags.FLAGS.logtostderr = True
  absl_logger.addFilter(_SEQIO_FILTER)  # A filter already there is not added twice.


def enable() -> None:
  """Everything above: the import filter and the logging settings."""
  quiet_imports()
  quiet_logging()
