"""Orbax checkpoints: newer T5X train states, our own parameter trees and run checkpoints.

Newer T5X saves `train_state.state_dict()` (`{"target": params, "state": ...}`) with
orbax's PyTree handler (OCDBT by default, per-array zarr before), usually as the item
`state/` of a step directory `checkpoint_N/`. Our own `save_params_orbax` writes the
plain parameter tree, and our trainer's `MODEL_DIR/checkpoint_N` (see `runs`) keeps the
trained parameters under `state/trainable` and, in a full checkpoint, the frozen ones in
the item `frozen/`: one reader serves all of them. Orbax reads only the slices each
device needs when given a sharding, so placement is delegated to it rather than done
array by array.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import sys
from typing import Any, Iterable, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from prompt_tuning import tree
from prompt_tuning.convert import placement, runs, storage
from prompt_tuning.convert.errors import CheckpointReadError
from prompt_tuning.convert.reader import ArrayInfo, CheckpointReader

METADATA_FILE = "_METADATA"
# Older orbax versions wrote no `_METADATA`, only this aggregate msgpack plus arrays.
LEGACY_AGGREGATE_FILE = "checkpoint"
# Where T5X's orbax CheckpointManager puts the train state inside a step directory.
T5X_STATE_ITEM = "state"
# Orbax restores every array concurrently (96 GB in flight by default), so a load's
# temporary buffers add up to most of a second copy; 1 GB bounds that overhead.
RESTORE_CONCURRENT_GB = 1
RESTORE_GROUP_BYTES = 512 * 1024**2


def item_directory(path: str) -> str | None:
  """The directory orbax's PyTree handler reads: `path` itself, or its `state/` item
  (T5X's layout), as an absolute path. None if neither looks like an orbax checkpoint."""
  path = storage.absolute(path.rstrip("/"))
  for candidate in (path, storage.join(path, T5X_STATE_ITEM)):
    directory = storage.Directory(candidate)
    if directory.read(METADATA_FILE) is not None or directory.has("manifest.ocdbt"):
      return candidate
  return None


def _tree_metadata(item_dir: str) -> Any:
  handler = ocp.PyTreeCheckpointHandler()
  try:
    metadata = handler.metadata(epath.Path(item_dir))
  except Exception as e:
    _silence_abandoned_reads()
    reason = " ".join(str(e).split())[:160]
    raise CheckpointReadError(
      f"orbax checkpoint {item_dir} is damaged or incomplete: its metadata cannot be read "
      f"({reason}); copy or download the checkpoint again"
    ) from e
  return getattr(metadata, "tree", metadata)


def _info(leaf: Any) -> ArrayInfo | None:
  shape = getattr(leaf, "shape", None)
  dtype = getattr(leaf, "dtype", None)
  if shape is None or dtype is None:
    return None
  return ArrayInfo(tuple(int(d) for d in shape), np.dtype(dtype))


@dataclasses.dataclass(frozen=True)
class _Item:
  """One orbax PyTree directory and the keys above the parameters inside it."""

  directory: str
  prefix: tuple[str, ...]


def _items(path: str) -> tuple[str, list[tuple[_Item, Mapping[str, Any]]]]:
  """The format of `path` and each item holding its parameters, with that item's
  parameter metadata (the tree below the prefix)."""
  path = storage.absolute(path)
  if runs.is_run_checkpoint(path):
    items = [_Item(storage.join(path, runs.STATE_ITEM), (runs.TRAINABLE_KEY,))]
    if storage.Directory(path).has(runs.FROZEN_ITEM):
      items.append(_Item(storage.join(path, runs.FROZEN_ITEM), ()))
    found = []
    for item in items:
      metadata = _tree_metadata(item.directory)
      for key in item.prefix:
        metadata = metadata.get(key) if isinstance(metadata, Mapping) else None
      if not isinstance(metadata, Mapping):
        raise CheckpointReadError(
          f"{item.directory} holds no parameter tree under {'/'.join(item.prefix) or 'its root'}"
        )
      found.append((item, metadata))
    return "run", found
  item_dir = item_directory(path)
  if item_dir is None:
    raise CheckpointReadError(f"{path} is not an orbax checkpoint (no {METADATA_FILE})")
  metadata = _tree_metadata(item_dir)
  if not isinstance(metadata, Mapping):
    raise CheckpointReadError(f"orbax checkpoint {item_dir} does not hold a dict tree")
  if isinstance(metadata.get("target"), Mapping):  # A T5X train state.
    return "t5x_orbax", [(_Item(item_dir, ("target",)), metadata["target"])]
  return "orbax", [(_Item(item_dir, ()), metadata)]


class OrbaxReader(CheckpointReader):
  """Reads a parameter tree saved by orbax: our own, only `target` of a T5X train state,
  or the parameters of one of our run checkpoints (`state/trainable`, plus the `frozen`
  item of a full checkpoint) under their model names."""

  def __init__(self, path: str):
    super().__init__(path)
    self.format, items = _items(path)
    self._infos: dict[str, ArrayInfo] = {}
    self._item_of: dict[str, _Item] = {}
    for item, metadata in items:
      for name, leaf in tree.flatten(_plain(metadata)).items():
        info = _info(leaf)
        if info is None:
          continue
        if name in self._infos:
          raise CheckpointReadError(f"{path} holds {name} both as trainable and as frozen")
        self._infos[name] = info
        self._item_of[name] = item

  def arrays(self) -> dict[str, ArrayInfo]:
    return dict(self._infos)

  def _restore(self, restore_args: dict[str, Any]) -> dict[str, Any]:
    """Restores exactly the named leaves (flat names) with their restore args."""
    out: dict[str, Any] = {}
    for item in dict.fromkeys(self._item_of[name] for name in restore_args):
      names = [name for name in restore_args if self._item_of[name] == item]
      out.update(_restore_item(item, {name: restore_args[name] for name in names}))
    return out

  def read_many(self, names: Iterable[str]) -> dict[str, np.ndarray]:
    args = {name: ocp.RestoreArgs(restore_type=np.ndarray) for name in names}
    if not args:
      return {}
    return {k: np.asarray(v) for k, v in self._restore(args).items()}

  def read(self, name: str, index: placement.Index | None = None) -> np.ndarray:
    array = self.read_many([name])[name]
    return array if index is None else array[index]

  def load(
    self, names: Iterable[str], shardings: Mapping[str, jax.sharding.Sharding], dtype: Any | None
  ) -> dict[str, jax.Array]:
    # This process's own device: in a multi-process job jax.devices()[0] belongs to
    # process 0, and the other processes could not hold an array placed there.
    default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    args = {}
    for name in names:
      info = self._infos[name]
      args[name] = ocp.ArrayRestoreArgs(
        sharding=shardings.get(name, default),
        dtype=placement.target_dtype(info.dtype, dtype),
        global_shape=info.shape,
      )
    # Restoring in groups of bounded size keeps orbax's temporary buffers (which it
    # holds for every array in flight) from adding up to a second copy.
    out: dict[str, jax.Array] = {}
    group: dict[str, Any] = {}
    size = 0
    for name, arg in args.items():
      if group and size + self._infos[name].nbytes > RESTORE_GROUP_BYTES:
        out.update(self._restore(group))
        group, size = {}, 0
      group[name] = arg
      size += self._infos[name].nbytes
    if group:
      out.update(self._restore(group))
    return out


def _plain(metadata: Mapping[str, Any]) -> dict[str, Any]:
  """Orbax's metadata tree as plain nested dicts (it may hand back other mappings)."""
  return {
    key: _plain(value) if isinstance(value, Mapping) else value for key, value in metadata.items()
  }


def _restore_item(item: _Item, restore_args: dict[str, Any]) -> dict[str, Any]:
  """Restores the named leaves (flat names below the prefix) of one item."""
  nested_args = tree.unflatten(restore_args)
  nested_item = tree.unflatten({name: 0 for name in restore_args})
  for key in reversed(item.prefix):
    nested_args, nested_item = {key: nested_args}, {key: nested_item}
  checkpointer = ocp.Checkpointer(
    ocp.PyTreeCheckpointHandler(restore_concurrent_gb=RESTORE_CONCURRENT_GB)
  )
  # Orbax logs a warning per restore about partial restores; it is expected here.
  orbax_logger = logging.getLogger("absl")
  level = orbax_logger.level
  orbax_logger.setLevel(logging.ERROR)
  try:
    restored = checkpointer.restore(
      epath.Path(item.directory),
      args=ocp.args.PyTreeRestore(item=nested_item, restore_args=nested_args, partial_restore=True),
    )
  except Exception as e:
    _silence_abandoned_reads()
    raise CheckpointReadError(_read_failure(item, restore_args, e)) from e
  finally:
    orbax_logger.setLevel(level)
  for key in item.prefix:
    restored = restored[key]
  return tree.flatten(restored)


# The array a TensorStore read error is about: its kvstore path inside the OCDBT store,
# the parameter's name with dots (`trainable.decoder.layers_0.mlp.wi_0.kernel/`).
_ARRAY_PATH = re.compile(r"'path': '([^'/]+)/'")


def _read_failure(item: _Item, restore_args: Mapping[str, Any], error: Exception) -> str:
  """One line for a failed read: which array, why in a few words (TensorStore's message
  runs to pages of spec), and the fix. A missing or truncated data file is what a copy
  or download that stopped early leaves behind."""
  text = " ".join(str(error).split())
  reason = text.split(" See full TensorStore details")[0]
  match = _ARRAY_PATH.search(str(error))
  if match:
    parts = match.group(1).split(".")
    name = "/".join(
      parts[len(item.prefix) :] if tuple(parts[: len(item.prefix)]) == item.prefix else parts
    )
    what = f"the array {name}"
  else:
    names = sorted(restore_args)
    what = ", ".join(names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")
  return (
    f"orbax checkpoint {item.directory} is damaged or incomplete: {what} cannot be read "
    f"({reason[:200]}); copy or download the checkpoint again"
  )


def _silence_abandoned_reads() -> None:
  """After a failed restore, orbax abandons the reads still in flight; when each one
  finishes, TensorStore's callback posts to the event loop orbax has closed, and Python
  prints a "RuntimeError: Event loop is closed" traceback per array, after the real error.
  Those exceptions, and only those, are dropped from then on (every other unraisable
  exception still reaches the previous hook)."""
  previous = sys.unraisablehook
  if getattr(previous, "drops_event_loop_closed", False):
    return

  def hook(unraisable: Any) -> None:
    value = unraisable.exc_value
    if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
      return
    previous(unraisable)

  hook.drops_event_loop_closed = True  # type: ignore[attr-defined]
  sys.unraisablehook = hook


def save_params_orbax(params: Mapping[str, Any], path: str) -> str:
  """Saves a parameter tree (numpy or jax arrays) as an orbax PyTree checkpoint that
  `load_params` reads back; refuses to overwrite."""
  path = path.rstrip("/")
  if not storage.is_gcs(path):
    path = os.path.abspath(path)
  if storage.Directory(path).exists() and storage.Directory(path).keys():
    raise ValueError(f"{path} already exists and is not empty; choose a new directory")
  checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler())
  checkpointer.save(epath.Path(storage.absolute(path)), args=ocp.args.PyTreeSave(dict(params)))
  return path
