"""T5X's original checkpoint format (the released `t5_1_1_lm100k_*` checkpoints).

A checkpoint directory holds a msgpack file `checkpoint` with the whole train state:
`{"version": 3, "optimizer": {"target": params, "state": {"step", "param_states"}}}`.
Small arrays sit inline as msgpack extension type 1 (a nested msgpack of shape, dtype
name and raw C-order bytes). Each large array is replaced by a tensorstore spec (driver
`zarr`, `kvstore.path` relative to the checkpoint directory, `metadata` with shape,
chunks and compressor) whose data is a zarr array in a sub-directory named by the
dotted path (`target.encoder.layers_0.mlp.wo.kernel/` with `.zarray` and chunk files
`0.0`, `0.1`, ...). Only `target` is read; optimiser state is skipped.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
from typing import Any, Callable, Mapping

import ml_dtypes
import msgpack
import numpy as np
import tensorstore as ts

from prompt_tuning import tree
from prompt_tuning.convert import placement, storage
from prompt_tuning.convert.errors import CheckpointReadError
from prompt_tuning.convert.reader import ArrayInfo, CheckpointReader

CHECKPOINT_FILE = "checkpoint"
VERSION = 3
_EXT_NDARRAY = 1
_EXT_NPSCALAR = 3
_CHUNKED = "__msgpack_chunked_array__"
# T5X aims for chunks of 64 MiB: large enough for object stores, small enough to slice.
DEFAULT_CHUNK_BYTES = 64 * 1024 * 1024


def _dtype(name: Any) -> np.dtype:
  if isinstance(name, bytes):
    name = name.decode()
  if name in ("bfloat16", "<V2"):
    return np.dtype(ml_dtypes.bfloat16)
  return np.dtype(name)


def _ext_hook(code: int, data: bytes) -> Any:
  if code in (_EXT_NDARRAY, _EXT_NPSCALAR):
    shape, dtype_name, buffer = msgpack.unpackb(data, raw=True)
    array = np.frombuffer(buffer, dtype=_dtype(dtype_name)).reshape(shape)
    return array[()] if code == _EXT_NPSCALAR else array
  return msgpack.ExtType(code, data)


def _ext_default(obj: Any) -> Any:
  if isinstance(obj, (np.ndarray, np.generic)):
    array = np.asarray(obj)
    payload = msgpack.packb(
      (list(array.shape), array.dtype.name, array.tobytes("C")), use_bin_type=True
    )
    return msgpack.ExtType(_EXT_NDARRAY if isinstance(obj, np.ndarray) else _EXT_NPSCALAR, payload)
  raise TypeError(f"cannot write {type(obj).__name__} to a T5X checkpoint")


def _is_ts_spec(value: Any) -> bool:
  return isinstance(value, dict) and "driver" in value and "metadata" in value


def _unchunk(value: dict) -> np.ndarray:
  shape = [value["shape"][str(i)] for i in range(len(value["shape"]))]
  chunks = [value["chunks"][str(i)] for i in range(len(value["chunks"]))]
  return np.concatenate(chunks).reshape(shape)


def _leaves(node: Any, prefix: str, out: dict[str, Any]) -> None:
  """Flattens the msgpack tree; tensorstore specs and chunked arrays are leaves."""
  if isinstance(node, dict) and not _is_ts_spec(node):
    if _CHUNKED in node:
      out[prefix] = _unchunk(node)
      return
    for key, value in node.items():
      key = key.decode() if isinstance(key, bytes) else str(key)
      _leaves(value, f"{prefix}/{key}" if prefix else key, out)
  elif node is not None:
    out[prefix] = node


def checkpoint_dir(path: str) -> str:
  """The directory of a checkpoint, given it or its `checkpoint` file."""
  path = path.rstrip("/")
  if storage.basename(path) == CHECKPOINT_FILE and not storage.Directory(path).exists():
    return storage.dirname(path)
  return path


def read_msgpack(directory: str) -> dict:
  raw = storage.Directory(directory).read(CHECKPOINT_FILE)
  if raw is None:
    raise CheckpointReadError(
      f"no '{CHECKPOINT_FILE}' file in {directory}: not a T5X checkpoint directory"
    )
  try:
    return msgpack.unpackb(raw, ext_hook=_ext_hook, raw=False, strict_map_key=False)
  except Exception as e:  # msgpack raises several unrelated types for damaged input.
    raise CheckpointReadError(
      f"{storage.join(directory, CHECKPOINT_FILE)} is not a readable msgpack file "
      f"(truncated or damaged?): {e}"
    ) from e


def is_t5x_msgpack(contents: Any) -> bool:
  return isinstance(contents, dict) and (
    "optimizer" in contents or ("target" in contents and "state" in contents)
  )


class T5XLegacyReader(CheckpointReader):
  """Reads `target` of a T5X msgpack + tensorstore checkpoint, local or on GCS."""

  format = "t5x"

  def __init__(self, path: str):
    super().__init__(path)
    self.directory = checkpoint_dir(path)
    contents = read_msgpack(self.directory)
    self.version = int(contents.get("version", 0)) if isinstance(contents, dict) else 0
    state = contents.get("optimizer", contents) if isinstance(contents, dict) else None
    if not isinstance(state, dict) or not isinstance(state.get("target"), dict):
      raise CheckpointReadError(
        f"{storage.join(self.directory, CHECKPOINT_FILE)} has no 'optimizer/target' "
        "parameters: not a T5X train-state checkpoint"
      )
    self._leaves: dict[str, Any] = {}
    _leaves(state["target"], "", self._leaves)
    self._infos: dict[str, ArrayInfo] = {}
    self._stores: dict[str, ts.TensorStore] = {}
    self._checked: set[str] = set()

  # --- listing -----------------------------------------------------------------------

  def arrays(self) -> dict[str, ArrayInfo]:
    if not self._infos:
      for name, leaf in self._leaves.items():
        if _is_ts_spec(leaf):
          self._infos[name] = self._spec_info(name, leaf)
        else:
          array = np.asarray(leaf)
          self._infos[name] = ArrayInfo(tuple(array.shape), array.dtype)
    return dict(self._infos)

  def _spec_info(self, name: str, spec: dict) -> ArrayInfo:
    metadata = spec.get("metadata", {})
    dtype = spec.get("dtype", metadata.get("dtype"))
    if "shape" not in metadata or dtype is None:
      store = self._open(name)
      return ArrayInfo(tuple(store.shape), np.dtype(store.dtype.numpy_dtype))
    return ArrayInfo(tuple(int(d) for d in metadata["shape"]), _dtype(dtype))

  # --- reading -----------------------------------------------------------------------

  def array_path(self, name: str) -> str:
    """Where the zarr array of parameter `name` lives (for messages and checks)."""
    spec = self._leaves[name]
    relative = spec.get("kvstore", {}).get("path", spec.get("path"))
    if relative is None:
      raise CheckpointReadError(f"tensorstore spec of {name!r} names no path: {spec}")
    return storage.join(self.directory, relative.rstrip("/"))

  def _open(self, name: str) -> ts.TensorStore:
    if name in self._stores:
      return self._stores[name]
    spec = copy.deepcopy(self._leaves[name])
    location = self.array_path(name)
    spec.pop("path", None)  # tensorstore < 0.1.14 kept the path at the top level.
    spec["kvstore"] = storage.kvstore_spec(location)
    # Chunking and compression are read from `.zarray`, so arrays re-chunked after the
    # msgpack was written still open (T5X reads them the same way).
    metadata = spec.get("metadata", {})
    metadata.pop("chunks", None)
    metadata.pop("compressor", None)
    if spec.get("dtype") == "uint16" or metadata.get("dtype") == "<u2":
      raise CheckpointReadError(
        f"{name!r} is stored as uint16 (bfloat16 of T5X checkpoint version < 3); "
        "re-save it with a current T5X to convert it"
      )
    try:
      store = ts.open(spec, open=True, read=True).result()
    except Exception as e:
      raise CheckpointReadError(f"cannot open parameter {name!r} at {location}: {e}") from e
    self._stores[name] = store
    return store

  def _check_chunks(self, name: str, store: ts.TensorStore) -> None:
    """Missing chunk files would silently read as zeros; T5X writes zarr arrays without
    a fill value, for which every chunk is stored, so a missing one means damage."""
    if name in self._checked:
      return
    metadata = store.spec().to_json().get("metadata", {})
    if metadata.get("fill_value") is None and store.size > 0:
      grid = [-(-int(d) // int(c)) for d, c in zip(metadata["shape"], metadata["chunks"])]
      separator = metadata.get("dimension_separator", ".")
      present = set(storage.Directory(self.array_path(name)).keys())
      for index in np.ndindex(*grid) if grid else [()]:
        key = separator.join(str(i) for i in index) if index else "0"
        if key not in present:
          raise CheckpointReadError(
            f"parameter {name!r}: chunk file {storage.join(self.array_path(name), key)}"
            " is missing; the checkpoint is incomplete (re-download or re-copy it)"
          )
    self._checked.add(name)

  def read(self, name: str, index: placement.Index | None = None) -> np.ndarray:
    leaf = self._leaves[name]
    if not _is_ts_spec(leaf):
      array = np.asarray(leaf)
      return array if index is None else array[index]
    store = self._open(name)
    self._check_chunks(name, store)
    view = store if index is None else store[index]
    try:
      return view.read().result()
    except Exception as e:
      raise CheckpointReadError(
        f"cannot read parameter {name!r} from {self.array_path(name)}: a chunk file is "
        f"truncated or damaged ({e})"
      ) from e

  def close(self) -> None:
    self._stores.clear()


# --- writing ---------------------------------------------------------------------------


def default_inline(name: str, array: np.ndarray) -> bool:
  """As in the released checkpoints: norm scales and relative-position tables inline."""
  return array.ndim < 2 or name.endswith("relpos_bias/rel_embedding")


def chunk_shape(
  shape: tuple[int, ...], itemsize: int, max_bytes: int = DEFAULT_CHUNK_BYTES
) -> list[int]:
  """Chunks that tile the array exactly and hold at most `max_bytes` (greedy: keep
  dividing the largest dimension by its smallest factor)."""
  chunks = [int(d) for d in shape]
  limit = max(1, max_bytes // itemsize)
  while math.prod(chunks) > limit:
    dim = max(range(len(chunks)), key=lambda i: chunks[i])
    if chunks[dim] <= 1:
      break
    factor = next(f for f in range(2, chunks[dim] + 1) if chunks[dim] % f == 0)
    chunks[dim] //= factor
  return chunks


def _write_zarr(
  directory: str, dotted: str, array: np.ndarray, compress: bool, chunk_bytes: int
) -> dict:
  """Writes one zarr array and returns the spec T5X stores in its place."""
  chunks = chunk_shape(array.shape, array.dtype.itemsize, chunk_bytes)
  compressor = {"id": "gzip"} if compress else None
  dtype_name = np.dtype(array.dtype).name
  store = ts.open(
    {
      "driver": "zarr",
      "dtype": dtype_name,
      "kvstore": storage.kvstore_spec(os.path.join(directory, dotted)),
      "metadata": {"compressor": compressor, "shape": list(array.shape), "chunks": chunks},
    },
    create=True,
    delete_existing=True,
  ).result()
  store.write(array).result()
  return {
    "driver": "zarr",
    "dtype": dtype_name,
    "kvstore": {"driver": "file", "path": dotted},
    "metadata": {"chunks": chunks, "compressor": compressor, "shape": list(array.shape)},
  }


def _write_tree(
  directory: str,
  node: Mapping[str, Any],
  prefix: str,
  inline: Callable[[str, np.ndarray], bool],
  compress: bool,
  chunk_bytes: int,
) -> dict:
  out: dict[str, Any] = {}
  for name, value in tree.flatten(node).items():
    array = np.asarray(value)
    if inline(name, array):
      leaf: Any = np.ascontiguousarray(array)
    else:
      leaf = _write_zarr(
        directory, f"{prefix}.{name.replace('/', '.')}", array, compress, chunk_bytes
      )
    out[name] = leaf
  return tree.unflatten(out)


def write_t5x_checkpoint(
  params: Mapping[str, Any],
  directory: str,
  *,
  step: int = 0,
  param_states: Mapping[str, Any] | None = None,
  inline: Callable[[str, np.ndarray], bool] = default_inline,
  compress: bool = True,
  chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> str:
  """Writes `params` (and optional optimiser `param_states`) as a T5X checkpoint that
  T5X and `T5XLegacyReader` read. Written to a temporary directory, then renamed, so
  an interrupted write never leaves a directory that looks complete."""
  if storage.is_gcs(directory):
    raise ValueError(
      "writing T5X checkpoints supports local directories only; copy "
      "the result to GCS with `gsutil -m cp -r`"
    )
  directory = os.path.abspath(directory)
  if os.path.exists(directory):
    raise ValueError(f"{directory} already exists; choose a new directory")
  tmp = directory + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  target = _write_tree(tmp, params, "target", inline, compress, chunk_bytes)
  state: dict[str, Any] = {"step": np.asarray(step, np.int32)}
  if param_states:
    state["param_states"] = _write_tree(
      tmp, param_states, "state.param_states", inline, compress, chunk_bytes
    )
  contents = {"version": VERSION, "optimizer": {"target": target, "state": state}}
  with open(os.path.join(tmp, CHECKPOINT_FILE), "wb") as f:
    f.write(msgpack.packb(contents, default=_ext_default, use_bin_type=True))
  os.rename(tmp, directory)
  return directory
