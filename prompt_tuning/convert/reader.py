"""What every checkpoint format offers: a listing of arrays and reads of (parts of) them.

Readers list parameters by their names in *our* tree (`encoder/layers_0/mlp/wo/kernel`)
whatever the format stores, so validation, placement and the commands are written once.
"""

from __future__ import annotations

import abc
import math
import dataclasses
from typing import Any, Iterable, Mapping

import jax
import numpy as np

from prompt_tuning.convert import placement


@dataclasses.dataclass(frozen=True)
class ArrayInfo:
  shape: tuple[int, ...]
  dtype: np.dtype

  @property
  def size(self) -> int:
    return math.prod(self.shape)

  @property
  def nbytes(self) -> int:
    return self.size * np.dtype(self.dtype).itemsize


class CheckpointReader(abc.ABC):
  """A checkpoint opened for reading; `format` is one of `detect_format`'s answers."""

  format: str = ""

  def __init__(self, path: str):
    self.path = path

  @abc.abstractmethod
  def arrays(self) -> dict[str, ArrayInfo]:
    """Every parameter in the checkpoint (extra ones such as a prompt included)."""

  @abc.abstractmethod
  def read(self, name: str, index: placement.Index | None = None) -> np.ndarray:
    """The array `name`, or only its part `index`, in host memory."""

  def read_many(self, names: Iterable[str]) -> dict[str, np.ndarray]:
    return {name: self.read(name) for name in names}

  def load(
    self, names: Iterable[str], shardings: Mapping[str, jax.sharding.Sharding], dtype: Any | None
  ) -> dict[str, jax.Array]:
    """Arrays placed on devices one by one (see `placement`)."""
    infos = self.arrays()
    out = {}
    for name in names:
      info = infos[name]
      out[name] = placement.place(
        info.shape,
        info.dtype,
        lambda index, n=name: self.read(n, index),
        shardings.get(name),
        dtype,
      )
    return out

  def close(self) -> None:
    """Releases open files; readers holding none need not override it."""

  def __enter__(self) -> "CheckpointReader":
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()
