"""Where the checkpoints of a training run are: `MODEL_DIR/checkpoint_N`.

The trainer writes one orbax step directory per saved step (docs/design.md,
"Checkpoints"), holding the items
  state     the TrainState as a plain dict (`step`, `trainable`, `opt_state`),
  progress  JSON `{"step", "data_position"}`,
  metadata  JSON given by the trainer (base checkpoint path and fingerprint, config),
  frozen    the frozen parameters, only in a full checkpoint.
Everything that asks "which checkpoints does this MODEL_DIR hold" or "is this one of
ours" asks here, so the trainer's manager, the checkpoint readers and the tools that
take a MODEL_DIR agree on the answer.
"""

from __future__ import annotations

import os
import re

from prompt_tuning.convert import storage

STEP_PREFIX = "checkpoint"
STATE_ITEM = "state"
PROGRESS_ITEM = "progress"
METADATA_ITEM = "metadata"
FROZEN_ITEM = "frozen"
# Where the trained parameters sit inside the `state` item.
TRAINABLE_KEY = "trainable"

# Orbax names a step `checkpoint_{step}` without padding; its temporary directories
# (`checkpoint_5.orbax-checkpoint-tmp-...`) do not match.
_STEP_DIR = re.compile(rf"^{STEP_PREFIX}_(0|[1-9][0-9]*)$")


def step_name(step: int) -> str:
  return f"{STEP_PREFIX}_{step}"


def step_of(name: str) -> int | None:
  """The step of a directory name `checkpoint_N`, None for any other name."""
  match = _STEP_DIR.match(name)
  return int(match.group(1)) if match else None


def steps(model_dir: str) -> list[int]:
  """Steps of every `checkpoint_N` directory in `model_dir`, in numeric order (a step
  directory is listed whatever it holds; readers decide whether it is usable)."""
  if storage.is_gcs(model_dir):
    names = {key.split("/", 1)[0] for key in storage.Directory(model_dir).keys() if "/" in key}
  elif os.path.isdir(model_dir):
    names = {name for name in os.listdir(model_dir) if os.path.isdir(os.path.join(model_dir, name))}
  else:
    names = set()
  return sorted(step for name in names if (step := step_of(name)) is not None)


def is_run_checkpoint(path: str) -> bool:
  """A `checkpoint_N` written by our trainer: it has the items `state` and `metadata`
  (T5X's own orbax step directories have no `metadata` item)."""
  directory = storage.Directory(path)
  return directory.has(STATE_ITEM) and directory.has(METADATA_ITEM)


def newest_run_checkpoint(path: str) -> str:
  """`path` itself when it is a run checkpoint, else the newest run checkpoint in the
  MODEL_DIR `path`."""
  if is_run_checkpoint(path):
    return path
  if not storage.Directory(path).exists():
    raise ValueError(
      f"{path} does not exist; pass a training run's MODEL_DIR or one of its checkpoint_N"
    )
  found = [step for step in steps(path) if is_run_checkpoint(storage.join(path, step_name(step)))]
  if not found:
    raise ValueError(
      f"{path} holds no training checkpoint (checkpoint_N with orbax "
      "state and metadata); pass MODEL_DIR or MODEL_DIR/checkpoint_N"
    )
  return storage.join(path, step_name(found[-1]))
