"""Orbax checkpoints of a training run: save, keep the newest N, resume, export prompts.

A step directory `MODEL_DIR/checkpoint_{step}` holds the orbax items that
`prompt_tuning.convert.runs` describes (state, progress, metadata and, with
`save_full=True`, frozen); that module also lists the steps, and `prompt_tuning.convert`
reads the parameters back for every other use (evaluation, export, a new run's base).
Prompt tuning saves only what trains (docs/design.md, "Checkpoints"): resuming re-reads
the frozen base, and the fingerprint in `metadata` (`fingerprint`) tells whether it is
the same base. Each save also exports every trainable leaf as `.npy` under
`MODEL_DIR/numpy_checkpoints/checkpoint_{step}/`, the upstream's format for prompts.

Orbax writes a step into `checkpoint_{step}.orbax-checkpoint-tmp` and renames it when
complete, so a run killed mid-save leaves only a temporary directory, which is never read
and is removed when the next manager opens the directory. A finished checkpoint that was
damaged later is caught by reading it before use: the newest readable one wins, with a
warning naming each one skipped.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import socket
import time
import uuid
from typing import Any, Callable

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from prompt_tuning import errors
from prompt_tuning.convert import runs, storage
from prompt_tuning.convert.errors import CheckpointMismatchError
from prompt_tuning.training.fingerprint import named_leaves
from prompt_tuning.training.train_step import TrainState

STEP_PREFIX = runs.STEP_PREFIX
NUMPY_DIR = "numpy_checkpoints"
STATE_ITEM = runs.STATE_ITEM
PROGRESS_ITEM = runs.PROGRESS_ITEM
METADATA_ITEM = runs.METADATA_ITEM
FROZEN_ITEM = runs.FROZEN_ITEM
# A state at most this large is read completely to check a checkpoint (prompt tuning's
# is a few MB); a larger one (model tuning) is checked through its metadata only, and a
# damaged array then shows up when `restore` reads it (which also falls back).
FULL_READ_CHECK_BYTES = 64 << 20

_NUMPY_TMP_MARK = ".tmp-"


class NoUsableCheckpointError(RuntimeError):
  """MODEL_DIR has checkpoints, but none of them can be read."""


@dataclasses.dataclass
class RestoredCheckpoint:
  step: int
  state: TrainState
  data_position: int | None
  metadata: dict[str, Any]
  frozen: Any | None


# ---------------------------------------------------------------------------------------
# Tree helpers.


def _shape(leaf: Any) -> tuple[int, ...]:
  # Orbax's metadata leaves carry `.shape` but are not arrays.
  return tuple(int(d) for d in (leaf.shape if hasattr(leaf, "shape") else np.shape(leaf)))


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  return {name: _shape(leaf) for name, leaf in named_leaves(tree)}


def _nbytes(tree: Any) -> int:
  return sum(
    math.prod(_shape(leaf)) * np.dtype(leaf.dtype).itemsize
    for _, leaf in named_leaves(tree)
    if hasattr(leaf, "dtype")
  )


def _describe_mismatch(what: str, stored: Any, wanted: Any) -> str | None:
  """One clause naming the first differences between two trees' names and shapes."""
  have, want = _shapes(stored), _shapes(wanted)
  problems = [
    f"{name} is {have[name]} there but {want[name]} here"
    for name in sorted(have.keys() & want.keys())
    if have[name] != want[name]
  ]
  problems += [f"{name} only in the checkpoint" for name in sorted(have.keys() - want.keys())]
  problems += [f"{name} missing from the checkpoint" for name in sorted(want.keys() - have.keys())]
  if not problems:
    return None
  more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
  return f"{what}: " + "; ".join(problems[:3]) + more


def _abstract(tree: Any) -> Any:
  """ShapeDtypeStructs with a sharding for array leaves, so orbax knows where to put them.

  Leaves without a sharding go to this process's first device; numpy leaves stay numpy.
  """
  default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

  def leaf(x: Any) -> Any:
    if isinstance(x, (np.ndarray, np.generic)):
      return x
    if isinstance(x, (jax.Array, jax.ShapeDtypeStruct)):
      sharding = getattr(x, "sharding", None) or default
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
    if isinstance(x, (int, float, bool)):
      return np.asarray(x)
    raise TypeError(f"cannot restore a checkpoint into a leaf of type {type(x).__name__}")

  return jax.tree.map(leaf, tree)


def _to_host(x: Any) -> np.ndarray:
  """The whole array on this host; gathers across processes when it is split among them
  (a collective: every process must call it for the same arrays)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    x = multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(x)


# ---------------------------------------------------------------------------------------
# Which run a prompt came from.


def _read_run_metadata(step_dir: str) -> dict[str, Any] | None:
  """The JSON `metadata` item of a run checkpoint, None when absent or unreadable."""
  raw = storage.Directory(storage.join(step_dir, METADATA_ITEM)).read(METADATA_ITEM)
  if raw is None:
    return None
  try:
    metadata = json.loads(raw)
  except ValueError:
    return None
  return metadata if isinstance(metadata, dict) else None


def run_metadata(path: str) -> tuple[str, dict[str, Any]] | None:
  """(checkpoint directory, its metadata) of the training run `path` belongs to: a run
  checkpoint `MODEL_DIR/checkpoint_N`, a MODEL_DIR (its newest checkpoint), or a numpy
  prompt `MODEL_DIR/numpy_checkpoints/checkpoint_N/NAME.npy` (that step's checkpoint, or
  the run's newest when it was pruned: a run never changes its frozen base, since
  resuming on another one is refused). None when no run is around `path` (a bare .npy,
  a base checkpoint), which then cannot be checked."""
  path = str(path).rstrip("/")
  candidates: list[str] = []
  if not storage.is_gcs(path) and os.path.isfile(path):
    step_dir = os.path.dirname(os.path.abspath(path))
    numpy_root = os.path.dirname(step_dir)
    if (
      runs.step_of(os.path.basename(step_dir)) is None or os.path.basename(numpy_root) != NUMPY_DIR
    ):
      return None
    path = os.path.dirname(numpy_root)
    candidates.append(os.path.join(path, os.path.basename(step_dir)))
  elif runs.is_run_checkpoint(path):
    candidates.append(path)
  candidates += [storage.join(path, runs.step_name(step)) for step in reversed(runs.steps(path))]
  for candidate in candidates:
    if runs.is_run_checkpoint(candidate):
      metadata = _read_run_metadata(candidate)
      if metadata is not None:
        return candidate, metadata
  return None


# ---------------------------------------------------------------------------------------
# One trainer per MODEL_DIR.

LOCK_FILE = "train.lock"


class ModelDirLockedError(RuntimeError):
  """Another trainer holds MODEL_DIR: two would overwrite each other's checkpoints."""


def _process_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Alive, owned by another user.
    return True
  return True


class ModelDirLock:
  """An exclusive lock file `MODEL_DIR/train.lock` naming its holder (host, pid, start
  time), taken by process 0 of a training job for as long as it trains.

  The file is created complete or not at all (written under a unique name, then
  hard-linked to `train.lock`, which fails when it exists), so a reader never sees a
  half-written holder. A lock whose holder was on this host and is gone (killed, crashed)
  is stale and taken over; a holder on another host cannot be checked from here, so the
  message says to remove the file once that job is known to be gone. Object stores
  (gs://) have no exclusive create: no lock is taken there.
  """

  def __init__(self, model_dir: str, *, enabled: bool | None = None):
    self.model_dir = str(model_dir)
    self.path = os.path.join(self.model_dir, LOCK_FILE)
    self._enabled = (jax.process_index() == 0) if enabled is None else enabled
    self._held = False

  def _holder(self) -> dict[str, Any] | None:
    try:
      with open(self.path) as f:
        holder = json.load(f)
    except FileNotFoundError:
      return None
    except (OSError, ValueError):
      return {}
    return holder if isinstance(holder, dict) else {}

  def acquire(self) -> None:
    if not self._enabled or storage.is_gcs(self.model_dir):
      return
    me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
    tmp = f"{self.path}.{uuid.uuid4().hex[:8]}"
    try:
      os.makedirs(self.model_dir, exist_ok=True)
      with open(tmp, "w") as f:
        json.dump(me, f)
    except OSError:
      # Not a writable directory: the trainer's own check of MODEL_DIR says so.
      return
    try:
      for _ in range(2):
        try:
          os.link(tmp, self.path)
          self._held = True
          return
        except FileExistsError:
          holder = self._holder()
          if holder is None:
            continue  # Released meanwhile.
          if (
            holder.get("host") == me["host"]
            and isinstance(holder.get("pid"), int)
            and holder["pid"] != me["pid"]
            and not _process_alive(holder["pid"])
          ):
            logging.warning("taking over the stale lock %s of process %s", self.path, holder)
            os.remove(self.path)
            continue
          raise ModelDirLockedError(self._refusal(holder))
      raise ModelDirLockedError(self._refusal(self._holder() or {}))
    finally:
      os.remove(tmp)

  def _refusal(self, holder: dict[str, Any]) -> str:
    since = holder.get("since")
    when = (
      f", since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}"
      if isinstance(since, (int, float))
      else ""
    )
    who = f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}{when}"
    return (
      f"{self.model_dir} is in use by another trainer ({who}); wait for it to finish or "
      f"use another MODEL_DIR (if that process is gone, remove {self.path})"
    )

  def release(self) -> None:
    if not self._held:
      return
    self._held = False
    holder = self._holder()
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
      os.remove(self.path)

  def __enter__(self) -> "ModelDirLock":
    self.acquire()
    return self

  def __exit__(self, *exc: Any) -> None:
    self.release()


def holding_model_dir_lock(train_fn: Callable[..., Any]) -> Callable[..., Any]:
  """Runs `train_fn(*, model_dir, ...)` holding `ModelDirLock(model_dir)`, released when
  it returns or raises (KeyboardInterrupt included)."""

  @functools.wraps(train_fn)
  def wrapper(*args: Any, **kwargs: Any) -> Any:
    with ModelDirLock(kwargs["model_dir"], enabled=None if kwargs.get("model_dir") else False):
      return train_fn(*args, **kwargs)

  return wrapper


# ---------------------------------------------------------------------------------------
# Numpy export.


def _numpy_value(x: np.ndarray) -> np.ndarray:
  # bfloat16 has no portable .npy encoding; float32 holds it exactly.
  if x.dtype.kind == "V" or x.dtype.name == "bfloat16":
    return x.astype(np.float32)
  return x


def export_numpy(params: Any, directory: str) -> list[str]:
  """Writes each leaf to `directory/{dotted.path}.npy`; returns the file paths.

  The files are written into a temporary sibling directory that is renamed into place,
  so `directory` is either absent or complete. An existing `directory` is replaced.
  Every process must call this (arrays split across processes are gathered); only
  process 0 writes.
  """
  final = epath.Path(directory)
  named = [(name, _numpy_value(_to_host(leaf))) for name, leaf in named_leaves(params, ".")]
  paths = [str(final / f"{name}.npy") for name, _ in named]
  if jax.process_index() != 0:
    return paths
  final.parent.mkdir(parents=True, exist_ok=True)
  tmp = final.parent / f"{final.name}{_NUMPY_TMP_MARK}{uuid.uuid4().hex[:8]}"
  tmp.mkdir()
  for name, value in named:
    with (tmp / f"{name}.npy").open("wb") as f:
      np.save(f, value, allow_pickle=False)
  if final.exists():
    old = final.parent / f"{final.name}{_NUMPY_TMP_MARK}old-{uuid.uuid4().hex[:8]}"
    final.rename(old)
    tmp.rename(final)
    old.rmtree()
  else:
    tmp.rename(final)
  return paths


# ---------------------------------------------------------------------------------------
# The manager.


class CheckpointManager:
  """Checkpoints of one run under `model_dir`; every process of a job makes one.

  `keep`: how many newest checkpoints (and numpy exports) to keep; None keeps all.
  Saving is asynchronous (orbax copies the arrays to host memory before `save` returns,
  so the caller may donate or overwrite them); `wait` blocks until the write is done.
  """

  def __init__(
    self,
    model_dir: str,
    *,
    keep: int | None = 3,
    save_full: bool = False,
    export_numpy: bool = True,
  ):
    if keep is not None and keep < 1:
      raise ValueError(f"keep must be at least 1 (or None to keep every checkpoint), got {keep}")
    self.model_dir = storage.absolute(str(model_dir))
    self._keep = keep
    self._save_full = save_full
    self._export_numpy = export_numpy
    self._warned: set[int] = set()
    policy = ocp.checkpoint_managers.LatestN(keep) if keep is not None else None
    options = ocp.CheckpointManagerOptions(
      step_prefix=STEP_PREFIX, create=True, cleanup_tmp_directories=True, preservation_policy=policy
    )
    self._manager = ocp.CheckpointManager(
      epath.Path(self.model_dir),
      options=options,
      item_handlers={
        STATE_ITEM: ocp.PyTreeCheckpointHandler(),
        PROGRESS_ITEM: ocp.JsonCheckpointHandler(),
        METADATA_ITEM: ocp.JsonCheckpointHandler(),
        FROZEN_ITEM: ocp.PyTreeCheckpointHandler(),
      },
    )
    if jax.process_index() == 0:
      self._remove_numpy_temporaries()

  # -- paths ----------------------------------------------------------------------------

  def step_dir(self, step: int) -> str:
    return str(epath.Path(self.model_dir) / runs.step_name(step))

  def numpy_dir(self, step: int) -> str:
    return str(epath.Path(self.model_dir) / NUMPY_DIR / runs.step_name(step))

  # -- queries --------------------------------------------------------------------------

  def all_steps(self) -> list[int]:
    """Every finished checkpoint on disk, oldest first (readability not checked)."""
    self._manager.wait_until_finished()
    return runs.steps(self.model_dir)

  def latest_step(self) -> int | None:
    """The newest step whose checkpoint reads cleanly; None when there is none at all.

    Damaged checkpoints are skipped with a warning. If checkpoints exist but none is
    readable, raises NoUsableCheckpointError rather than letting a run start over.
    """
    self._manager.wait_until_finished()
    self._manager.reload()
    steps = self.all_steps()
    chosen = None
    for step in reversed(steps):
      problem = self._problem(step)
      if problem is None:
        chosen = step
        break
      self._warn_skipped(step, problem)
    if jax.process_count() > 1:
      # All processes must resume from the same step even if their views of the
      # filesystem disagree; process 0 decides.
      chosen = int(multihost_utils.broadcast_one_to_all(np.int64(-1 if chosen is None else chosen)))
      chosen = None if chosen < 0 else chosen
    if chosen is None and steps:
      raise self._none_usable(steps)
    return chosen

  def _none_usable(self, steps: list[int]) -> NoUsableCheckpointError:
    return NoUsableCheckpointError(
      f"none of the checkpoints {steps} in {self.model_dir} can be read (see the "
      "warnings above); move them away to start over, or use a new MODEL_DIR"
    )

  def _warn_skipped(self, step: int, problem: str) -> None:
    if step not in self._warned:
      self._warned.add(step)
      logging.warning("skipping unreadable checkpoint %s: %s", self.step_dir(step), problem)

  def _items(self, step: int) -> dict[str, Any]:
    return dict(self._manager.item_metadata(step).items())

  def _problem(self, step: int) -> str | None:
    """Why `step` cannot be restored, or None if it looks sound."""
    try:
      items = self._items(step)
      for name in (STATE_ITEM, PROGRESS_ITEM, METADATA_ITEM):
        if name not in items:
          return f"item {name!r} is missing"
      self._read_json(step)
      tree = items[STATE_ITEM].tree
      if _nbytes(tree) <= FULL_READ_CHECK_BYTES:
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        self._manager.restore(
          step,
          args=ocp.args.Composite(
            **{STATE_ITEM: ocp.args.PyTreeRestore(restore_args=restore_args)}
          ),
        )
    except Exception as e:  # Any failure to read means "do not use this one".
      return errors.one_line(e, with_type=True)
    return None

  def _read_json(self, step: int) -> tuple[dict[str, Any], dict[str, Any]]:
    restored = self._manager.restore(
      step,
      args=ocp.args.Composite(
        **{PROGRESS_ITEM: ocp.args.JsonRestore(), METADATA_ITEM: ocp.args.JsonRestore()}
      ),
    )
    progress, metadata = restored[PROGRESS_ITEM], restored[METADATA_ITEM]
    if not isinstance(progress, dict) or not isinstance(metadata, dict):
      raise ValueError("progress or metadata item is not a JSON object")
    return progress, metadata

  # -- save -----------------------------------------------------------------------------

  def save(
    self,
    state: TrainState,
    *,
    frozen: Any | None = None,
    data_position: int | None = None,
    metadata: dict | None = None,
  ) -> None:
    """Saves `state` as `checkpoint_{state.step}`; frozen params too when save_full.

    A step that already has a readable checkpoint is not written again (the state at a
    given step is the same in a deterministic run); an unreadable one is replaced.
    """
    step = int(
      np.asarray(state.step.addressable_data(0))
      if isinstance(state.step, jax.Array)
      else state.step
    )  # Replicated; may span processes.
    data_position = None if data_position is None else int(data_position)
    metadata = dict(metadata or {})
    try:
      json.dumps(metadata)
    except TypeError as e:
      raise ValueError(f"checkpoint metadata must be JSON-serialisable: {e}") from e
    if self._save_full and frozen is None:
      raise ValueError("save_full=True needs the frozen parameters: pass save(..., frozen=)")
    self._manager.wait_until_finished()
    self._manager.reload()  # Orbax deletes only the steps it knows of.
    problems = {other: self._problem(other) for other in self.all_steps() if other >= step}
    if problems.get(step, "absent") is None:
      logging.info("checkpoint %s already exists; not saved again", self.step_dir(step))
      return
    if jax.process_count() > 1:
      # Every process has finished reading them before process 0 deletes any (a process
      # still reading one that vanished fails with FileNotFoundError).
      multihost_utils.sync_global_devices(f"checkpoint-{step}-inspected")
    for other, problem in problems.items():
      if problem is None:
        continue
      # A damaged checkpoint at or after this step would shadow the new one.
      logging.warning(
        "removing unreadable checkpoint %s before saving step %d: %s",
        self.step_dir(other),
        step,
        problem,
      )
      self._manager.delete(other)
    items = {
      STATE_ITEM: ocp.args.PyTreeSave(flax.serialization.to_state_dict(state)),
      PROGRESS_ITEM: ocp.args.JsonSave({"step": step, "data_position": data_position}),
      METADATA_ITEM: ocp.args.JsonSave(metadata),
    }
    if self._save_full:
      items[FROZEN_ITEM] = ocp.args.PyTreeSave(frozen)
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)
    if self._export_numpy:
      export_numpy(state.trainable, self.numpy_dir(step))
      if jax.process_index() == 0:
        self._prune_numpy()

  def _numpy_steps(self) -> list[int]:
    root = epath.Path(self.model_dir) / NUMPY_DIR
    if not root.exists():
      return []
    return sorted(step for p in root.iterdir() if (step := runs.step_of(p.name)) is not None)

  def _prune_numpy(self) -> None:
    if self._keep is None:
      return
    for step in self._numpy_steps()[: -self._keep]:
      epath.Path(self.numpy_dir(step)).rmtree()

  def _remove_numpy_temporaries(self) -> None:
    root = epath.Path(self.model_dir) / NUMPY_DIR
    if root.exists():
      for path in root.iterdir():
        if _NUMPY_TMP_MARK in path.name:
          path.rmtree()

  # -- restore --------------------------------------------------------------------------

  def restore(
    self, target: TrainState, step: int | None = None, *, frozen_target: Any | None = None
  ) -> RestoredCheckpoint:
    """Reads a checkpoint onto `target`'s structure, dtypes and shardings.

    `target` may hold concrete arrays or jax.ShapeDtypeStructs (with `.sharding`); the
    arrays come back placed as the target says, whatever mesh wrote them. Without
    `step`, the newest readable checkpoint is used, falling back past damaged ones
    with a warning. `frozen_target` also reads the frozen parameters of a full
    checkpoint.
    """
    self._manager.wait_until_finished()
    if step is not None:
      if step not in self.all_steps():
        raise ValueError(
          f"no checkpoint for step {step} in {self.model_dir}; available steps: {self.all_steps()}"
        )
      self._check_fits(step, target, frozen_target)
      return self._read(step, target, frozen_target)
    self._manager.reload()
    steps = self.all_steps()
    if not steps:
      raise FileNotFoundError(
        f"no checkpoint in {self.model_dir} to restore; point MODEL_DIR at a run that "
        "saved one (checkpoint_N), or train first"
      )
    for candidate in reversed(steps):
      problem = self._problem(candidate)
      if problem is None:
        self._check_fits(candidate, target, frozen_target)
        try:
          return self._read(candidate, target, frozen_target)
        except Exception as e:  # Damage that the metadata check could not see.
          problem = errors.one_line(e, with_type=True)
      self._warn_skipped(candidate, problem)
    raise self._none_usable(steps)

  def _check_fits(self, step: int, target: TrainState, frozen_target: Any | None) -> None:
    items = self._items(step)
    if STATE_ITEM not in items:
      raise ValueError(
        f"{self.step_dir(step)} has no {STATE_ITEM!r} item; it was not "
        "written by prompt_tuning's CheckpointManager"
      )
    differences = [
      _describe_mismatch("state", items[STATE_ITEM].tree, flax.serialization.to_state_dict(target))
    ]
    if frozen_target is not None:
      if FROZEN_ITEM not in items:
        raise CheckpointMismatchError(
          f"{self.step_dir(step)} holds no frozen parameters (it was saved without "
          "save_full); read them from the base checkpoint instead"
        )
      differences.append(_describe_mismatch("frozen", items[FROZEN_ITEM].tree, frozen_target))
    differences = [d for d in differences if d]
    if differences:
      raise CheckpointMismatchError(
        f"{self.step_dir(step)} does not fit this run ({' | '.join(differences)}); "
        "use a new MODEL_DIR for a different model or prompt, or the configuration "
        "this one was trained with"
      )

  def _read(self, step: int, target: TrainState, frozen_target: Any | None) -> RestoredCheckpoint:
    progress, metadata = self._read_json(step)
    state_abstract = _abstract(flax.serialization.to_state_dict(target))
    items = {
      STATE_ITEM: ocp.args.PyTreeRestore(
        item=state_abstract,
        restore_args=ocp.checkpoint_utils.construct_restore_args(state_abstract),
      )
    }
    if frozen_target is not None:
      frozen_abstract = _abstract(frozen_target)
      items[FROZEN_ITEM] = ocp.args.PyTreeRestore(
        item=frozen_abstract,
        restore_args=ocp.checkpoint_utils.construct_restore_args(frozen_abstract),
      )
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    state = flax.serialization.from_state_dict(target, restored[STATE_ITEM])
    data_position = progress.get("data_position")
    return RestoredCheckpoint(
      step=step,
      state=state,
      data_position=None if data_position is None else int(data_position),
      metadata=metadata,
      frozen=restored[FROZEN_ITEM] if frozen_target is not None else None,
    )

  # -- lifetime -------------------------------------------------------------------------

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> "CheckpointManager":
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()
