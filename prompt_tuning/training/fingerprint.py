"""The base-model fingerprint: which frozen parameters a run was trained on.

A prompt-tuning checkpoint holds only what trains (docs/design.md, "Checkpoints"), so
resuming re-reads the frozen base; the fingerprint stored in the checkpoint's metadata
tells whether it is the same base. Checkpoints written long ago carry fingerprints made
by this code, so its values must never change: any edit here has to keep every digest
byte for byte.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _key_name(key: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def named_leaves(tree: Any, sep: str = "/") -> list[tuple[str, Any]]:
  """(path joined with `sep`, leaf) for every leaf of any pytree.

  `prompt_tuning.tree` names the leaves of nested dicts; a TrainState or an optax state
  is a pytree of dataclasses and tuples, whose leaves are named here by dict key, field
  name or position.
  """
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return [(sep.join(_key_name(k) for k in path), leaf) for path, leaf in flat]


_GOLDEN = 0x9E3779B9
_NUMPY_CHUNK = 1 << 20


def _fmix32(h: jax.Array) -> jax.Array:
  """MurmurHash3's finaliser: a bijection on uint32 that spreads every bit."""
  h = h ^ (h >> jnp.uint32(16))
  h = h * jnp.uint32(0x85EBCA6B)
  h = h ^ (h >> jnp.uint32(13))
  h = h * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> jnp.uint32(16))


def _lane_sums(bits: jax.Array, index: jax.Array) -> jax.Array:
  """Two position-keyed checksums of 32-bit words, modulo 2**32.

  For a fixed position both terms are bijections of the word (xor with a constant then
  a bijective mix; multiplication by an odd number), so changing any one value changes
  both sums. Integer addition makes the result exact and independent of summation
  order, hence of chunking, sharding and of the device or host that computes it.
  """
  mixed = _fmix32(bits ^ (index * jnp.uint32(_GOLDEN)))
  weighted = bits * (index * jnp.uint32(2) + jnp.uint32(1))
  return jnp.stack([jnp.sum(mixed, dtype=jnp.uint32), jnp.sum(weighted, dtype=jnp.uint32)])


def _unsigned_view_dtype(dtype: Any) -> Any:
  return {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint32}[np.dtype(dtype).itemsize]


@jax.jit
def _device_lanes(x: jax.Array) -> jax.Array:
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  bits = jax.lax.bitcast_convert_type(x, _unsigned_view_dtype(x.dtype)).astype(jnp.uint32)
  # Row-major positions, built from iotas so that a sharded array is never reshaped.
  index = jnp.zeros(bits.shape, jnp.uint32)
  stride = 1
  for dim in reversed(range(bits.ndim)):
    index = index + jax.lax.broadcasted_iota(jnp.uint32, bits.shape, dim) * jnp.uint32(
      stride % (1 << 32)
    )
    stride *= bits.shape[dim]
  return _lane_sums(bits, index)


def _host_chunk_lanes(words: np.ndarray, start: int) -> tuple[int, int]:
  """`_lane_sums` of one chunk with numpy, in place to spare memory traffic; position
  `start + i` enters through (start + i) * c = start * c + i * c (mod 2**32)."""
  i = np.arange(words.size, dtype=np.uint32)
  bits = words.astype(np.uint32)
  mixed = i * np.uint32(_GOLDEN)
  mixed += np.uint32(start * _GOLDEN % (1 << 32))
  mixed ^= bits
  mixed ^= mixed >> np.uint32(16)
  mixed *= np.uint32(0x85EBCA6B)
  mixed ^= mixed >> np.uint32(13)
  mixed *= np.uint32(0xC2B2AE35)
  mixed ^= mixed >> np.uint32(16)
  i *= np.uint32(2)
  i += np.uint32((2 * start + 1) % (1 << 32))
  bits *= i
  return int(mixed.sum(dtype=np.uint32)), int(bits.sum(dtype=np.uint32))


def _host_lanes(x: np.ndarray) -> tuple[int, int]:
  if x.dtype == np.bool_:
    x = x.astype(np.uint8)
  words = np.ascontiguousarray(x).reshape(-1).view(_unsigned_view_dtype(x.dtype))
  starts = range(0, words.size, _NUMPY_CHUNK)
  chunk = lambda start: _host_chunk_lanes(words[start : start + _NUMPY_CHUNK], start)
  if len(starts) > 1:  # numpy releases the GIL, so threads share big leaves.
    with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
      parts = list(pool.map(chunk, starts))
  else:
    parts = [chunk(start) for start in starts]
  return (sum(a for a, _ in parts) & 0xFFFFFFFF, sum(b for _, b in parts) & 0xFFFFFFFF)


def fingerprint_params(params: Any) -> str:
  """A hash of every leaf's name, shape, dtype and values, used to notice that a run is
  resumed on another frozen base than it was trained on.

  Values enter through two exact 32-bit checksums per leaf computed where the leaf lives
  (one fused pass on its devices for a jax array, chunked threads on the host for
  numpy), so an XXL model costs one read of its weights and no copy; the result does
  not depend on sharding or on the number of devices or processes.
  """
  digest = hashlib.sha256()
  for name, leaf in sorted(named_leaves(params), key=lambda item: item[0]):
    if isinstance(leaf, jax.Array):
      a, b = (int(v) for v in np.asarray(_device_lanes(leaf)))
      shape, dtype = leaf.shape, np.dtype(leaf.dtype)
    else:
      array = np.asarray(leaf)
      a, b = _host_lanes(array)
      shape, dtype = array.shape, array.dtype
    digest.update(f"{name}\t{tuple(shape)}\t{dtype.name}\t{a:08x}{b:08x}\n".encode())
  return digest.hexdigest()[:32]
