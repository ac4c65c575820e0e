"""A deadline on every first touch of a `gs://` path, and the one-line error when it passes.

Released checkpoints and T5's default vocabulary live on Google Cloud Storage. Without
network, tensorstore's GCS listing waits forever and TensorFlow's GCS file system retries
for many seconds before raising an error with a long traceback. Every first access to a
`gs://` path (a checkpoint directory in `convert/storage.py`, the vocabulary in
`data/vocab.py`) therefore runs under one deadline, `PROMPT_TUNING_GCS_TIMEOUT` seconds
(default 20), and fails with one line saying what could not be reached and what to pass
instead. The deadline is an environment variable so that tests (and slow links) can set it
without a flag on every command. The reads after a first touch that tensorstore makes on
its own (a checkpoint's array chunks) cannot run under this deadline; `convert/storage.py`
bounds them by it through tensorstore's retry and curl settings.
"""

from __future__ import annotations

import os
import threading
from typing import Callable, TypeVar

TIMEOUT_ENV = "PROMPT_TUNING_GCS_TIMEOUT"
DEFAULT_TIMEOUT_S = 20.0

T = TypeVar("T")


class UnreachableError(RuntimeError):
  """A `gs://` path could not be read within the deadline (the CLI prints one line)."""


def is_gcs(path: str) -> bool:
  return str(path).startswith("gs://")


def timeout_seconds() -> float:
  """The deadline, from PROMPT_TUNING_GCS_TIMEOUT (seconds > 0), else 20 s."""
  raw = os.environ.get(TIMEOUT_ENV, "").strip()
  if not raw:
    return DEFAULT_TIMEOUT_S
  try:
    value = float(raw)
  except ValueError:
    value = -1.0
  if not value > 0:
    raise ValueError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds > 0; set e.g. 20.")
  return value


def unreachable_message(path: str, what: str, instead: str, reason: str = "") -> str:
  """`what` at `path` could not be read: `reason` (or the deadline), then `instead`."""
  because = reason or (
    f"no answer within {timeout_seconds():g} s ({TIMEOUT_ENV}): no network, or no access "
    "to Google Cloud Storage"
  )
  return f"could not reach {what} {path}: {because}; {instead}"


def first_line(error: BaseException) -> str:
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__


def call_with_deadline(fn: Callable[[], T], path: str, what: str, instead: str) -> T:
  """`fn()` (which reads `path`), or UnreachableError if it raises or outlasts the deadline.

  It runs in a daemon thread: a read stuck in a C++ retry loop cannot be interrupted, but
  it no longer holds up the error, nor the interpreter's exit.
  """
  timeout = timeout_seconds()
  outcome: dict[str, object] = {}

  def target() -> None:
    try:
      outcome["value"] = fn()
    except Exception as e:  # Reported below, in one line.
      outcome["error"] = e

  thread = threading.Thread(target=target, name=f"gcs-read {path}", daemon=True)
  thread.start()
  thread.join(timeout)
  if thread.is_alive():
    raise UnreachableError(unreachable_message(path, what, instead))
  if "error" in outcome:
    reason = first_line(outcome["error"])  # type: ignore[arg-type]
    raise UnreachableError(unreachable_message(path, what, instead, reason)) from None
  return outcome["value"]  # type: ignore[return-value]
