"""A T5X legacy checkpoint written with msgpack, json and gzip only, from the format's
description (not with the package's writer), so the reader is tested against the
format rather than against itself."""

from __future__ import annotations

import gzip
import itertools
import json
import os
from typing import Any

import msgpack
import numpy as np

from prompt_tuning import tree


def ndarray_ext(array: np.ndarray) -> msgpack.ExtType:
  """flax's msgpack encoding of an ndarray: ext type 1 around (shape, dtype, bytes)."""
  array = np.ascontiguousarray(array)
  return msgpack.ExtType(
    1, msgpack.packb((list(array.shape), array.dtype.name, array.tobytes()), use_bin_type=True)
  )


def write_zarr(directory: str, dotted: str, array: np.ndarray, chunks: list[int]) -> None:
  """zarr v2: `.zarray` json plus one gzip file per chunk, edge chunks padded."""
  path = os.path.join(directory, dotted)
  os.makedirs(path)
  with open(os.path.join(path, ".zarray"), "w") as f:
    json.dump(
      {
        "chunks": chunks,
        "compressor": {"id": "gzip", "level": 1},
        "dtype": array.dtype.str,
        "fill_value": None,
        "filters": None,
        "order": "C",
        "shape": list(array.shape),
        "zarr_format": 2,
      },
      f,
    )
  grid = [range(-(-d // c)) for d, c in zip(array.shape, chunks)]
  for index in itertools.product(*grid):
    block = np.zeros(chunks, array.dtype)
    part = array[tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, chunks))]
    block[tuple(slice(0, s) for s in part.shape)] = part
    with open(os.path.join(path, ".".join(map(str, index))), "wb") as f:
      f.write(gzip.compress(block.tobytes()))


def spec(dotted: str, array: np.ndarray, chunks: list[int], old_layout: bool) -> dict:
  """The placeholder T5X leaves in the msgpack for an array stored in tensorstore."""
  metadata = {"chunks": chunks, "compressor": {"id": "gzip"}, "shape": list(array.shape)}
  if old_layout:  # tensorstore < 0.1.14, written to GCS with T5X's dummy bucket.
    return {
      "driver": "zarr",
      "dtype": array.dtype.name,
      "path": dotted,
      "kvstore": {"driver": "gcs", "bucket": "t5x-dummy-bucket"},
      "metadata": metadata,
    }
  return {
    "driver": "zarr",
    "dtype": array.dtype.name,
    "kvstore": {"driver": "file", "path": dotted},
    "metadata": metadata,
  }


def write_checkpoint(
  directory: str, params: dict, *, old_layout: bool = False, rows_per_chunk: int = 5000
) -> dict[str, Any]:
  """Kernels and the embedding go to zarr (the embedding in several chunks, the last
  one partial); norm scales and relative position tables stay inline. Adds Adafactor
  state (v_row / v_col / v) and a step, which the reader must skip."""
  os.makedirs(directory)
  target: dict[str, Any] = {}
  param_states: dict[str, Any] = {}
  for name, array in tree.flatten(params).items():
    if array.ndim < 2 or name.endswith("rel_embedding"):
      target[name] = ndarray_ext(array)
    else:
      dotted = "target." + name.replace("/", ".")
      chunks = [min(rows_per_chunk, array.shape[0])] + list(array.shape[1:])
      write_zarr(directory, dotted, array, chunks)
      target[name] = spec(dotted, array, chunks, old_layout)
    factored = array.ndim == 2
    param_states[name] = {
      "v_row": ndarray_ext(np.ones(array.shape[0], np.float32)) if factored else None,
      "v_col": ndarray_ext(np.ones(array.shape[1], np.float32)) if factored else None,
      "v": None if factored else ndarray_ext(np.ones_like(array)),
    }
  contents = {
    "version": 3,
    "optimizer": {
      "target": tree.unflatten(target),
      "state": {
        "step": ndarray_ext(np.asarray(1100000, np.int32)),
        "param_states": tree.unflatten(param_states),
      },
    },
  }
  with open(os.path.join(directory, "checkpoint"), "wb") as f:
    f.write(msgpack.packb(contents, use_bin_type=True))
  return contents
