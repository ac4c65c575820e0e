"""Up-front checks of a job's settings, shared by `train` (trainer.validate_settings) and
`eval` / `infer` (evaluation/run_eval.py).

Each check runs before anything is loaded or compiled: a period of 0 divides by zero at
step 1, a feature length of 0 trains or decodes on empty inputs, a batch size of 0 never
ends, and finding any of them after minutes of loading a base checkpoint wastes those
minutes. Every refusal is an `errors.ConfigurationError` (exit code 2) that names the
setting the way users set it (its gin macro, or the configurable's parameter) and what
would work instead.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Mapping

from prompt_tuning import errors


def _is_positive_int(value: Any) -> bool:
  # bool is an int subclass, but `True` as a batch size is a typo, not a 1.
  return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def positive(setting: str, value: Any, *, optional: bool = False) -> None:
  """`value` must be an int >= 1 (or None when `optional`); `setting` is its gin name,
  a macro (`BATCH_SIZE`) or a parameter (`trainer.train.log_period`)."""
  if optional and value is None:
    return
  if not _is_positive_int(value):
    allowed = "None or an integer >= 1" if optional else "an integer >= 1"
    raise errors.ConfigurationError(
      f"{setting} must be {allowed}, got {value!r}; set --gin.{setting}=N with N >= 1"
    )


def feature_lengths(value: Any, setting: str = "TASK_FEATURE_LENGTHS") -> None:
  """`value` must be a non-empty {feature: int >= 1}: every feature needs a token."""
  if not isinstance(value, Mapping) or not value:
    raise errors.ConfigurationError(
      f"{setting} must be a dict of feature lengths, got {value!r}; "
      f"e.g. --gin.{setting}=\"{{'inputs': 512, 'targets': 8}}\""
    )
  for feature, length in value.items():
    if not _is_positive_int(length):
      raise errors.ConfigurationError(
        f"{setting}[{feature!r}] must be an integer >= 1, got {length!r}; "
        "every feature needs at least one token"
      )


def _nearest_existing(path: str) -> str:
  """`path` or its nearest ancestor that exists (the current directory at the latest)."""
  path = os.path.abspath(path)
  while not os.path.exists(path):
    parent = os.path.dirname(path)
    if parent == path:
      break
    path = parent
  return path


def writable_directory(setting: str, path: Any, *, create: bool) -> None:
  """`path` must be a directory this process can write, found now rather than when the
  job first writes there (after loading and compiling).

  With `create` the directory is made (the trainer's MODEL_DIR, which it will fill
  anyway) and a real write is tried: permission bits say nothing about a read-only
  mount. Without it nothing is created, so a job that fails later leaves no empty
  directory behind: an existing `path` must be a writable directory, and a missing one
  must have a writable directory as its nearest existing ancestor. Remote paths
  (`gs://...`) are left to their own client."""
  if not isinstance(path, str) or not path:
    raise errors.ConfigurationError(
      f"{setting} must be a directory path, got {path!r}; set --gin.{setting}=\"'/path'\""
    )
  if "://" in path:
    return
  if os.path.exists(path) and not os.path.isdir(path):
    raise errors.ConfigurationError(
      f"{setting} {path} exists and is not a directory; choose a directory path"
    )
  if not create:
    existing = _nearest_existing(path)
    if not os.path.isdir(existing):
      raise errors.ConfigurationError(
        f"{setting} {path} cannot be created: {existing} is not a directory; choose "
        "a directory path"
      )
    if not os.access(existing, os.W_OK | os.X_OK):
      raise errors.ConfigurationError(
        f"{setting} {path} is not writable (permission denied on {existing}); choose a "
        "directory you may write to"
      )
    return
  try:
    os.makedirs(path, exist_ok=True)
    probe, name = tempfile.mkstemp(prefix=".write-check-", dir=path)
    os.close(probe)
    os.remove(name)
  except OSError as error:
    raise errors.ConfigurationError(
      f"{setting} {path} is not writable ({error.strerror or error}); choose a "
      "directory you may write to"
    ) from None
