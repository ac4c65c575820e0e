"""Putting arrays where they belong as they are read, one at a time.

Loading an 11B-parameter checkpoint must not first build the whole tree in host memory
and then copy it to devices: each array is read (only the slices this host's devices
need, when a sharding is given), cast, placed, and its host buffer dropped before the
next array is read.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning import tree

Index = tuple[slice, ...]
# Reads the part `index` of one array (None: all of it) into host memory.
ReadFn = Callable[[Index | None], np.ndarray]


def target_dtype(stored: Any, dtype: Any | None) -> np.dtype:
  """Casting applies to floating-point parameters only; integer arrays keep their type."""
  stored = np.dtype(stored)
  if dtype is None or not jnp.issubdtype(stored, jnp.floating):
    return stored
  return np.dtype(dtype)


def place(
  shape: tuple[int, ...],
  stored_dtype: Any,
  read: ReadFn,
  sharding: jax.sharding.Sharding | None,
  dtype: Any | None = None,
) -> jax.Array:
  """One array, read and cast, on the devices of `sharding` (default device if None)."""
  want = target_dtype(stored_dtype, dtype)
  if sharding is None:
    return jax.device_put(np.asarray(read(None)).astype(want, copy=False))
  # Replicated or partly replicated shardings ask for the same slice once per device;
  # read it once.
  cache: dict[tuple, np.ndarray] = {}

  def callback(index: Index) -> np.ndarray:
    key = tuple(s.indices(d) for s, d in zip(index, shape))
    if key not in cache:
      cache[key] = np.asarray(read(tuple(index))).astype(want, copy=False)
    return cache[key]

  return jax.make_array_from_callback(tuple(shape), sharding, callback)


def flat_shardings(shardings: Any) -> dict[str, jax.sharding.Sharding]:
  """Accepts a nested dict mirroring the parameters, a flat {"a/b": sharding} dict, or
  None; returns the flat form. Parameters without an entry go to the default device."""
  if shardings is None:
    return {}
  if isinstance(shardings, jax.sharding.Sharding):
    raise ValueError(
      "shardings must be a dict of parameter name -> Sharding (nested "
      "like the parameters or flat with '/' names), not one Sharding"
    )
  if not isinstance(shardings, Mapping):
    raise ValueError(f"shardings must be a dict, got {type(shardings).__name__}")
  flat = tree.flatten(shardings)
  bad = [k for k, v in flat.items() if v is not None and not isinstance(v, jax.sharding.Sharding)]
  if bad:
    raise ValueError(f"shardings for {bad[:3]} are not jax.sharding.Sharding objects")
  return {k: v for k, v in flat.items() if v is not None}
