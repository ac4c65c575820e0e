"""Slash-joined names for nested parameter dicts: the one flatten/unflatten of the project.

Every layer speaks of parameters by these names (`encoder/prompt/prompt`,
`decoder/layers_0/mlp/wi_0/kernel`): checkpoints store them (T5X joins with "/" in its
msgpack), regexes select by them (what trains, what is initialised fresh), and errors
list them. `flax.traverse_util` does the work; empty sub-dicts hold nothing and vanish.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
from flax import traverse_util

SEP = "/"


def flatten(tree: Mapping[str, Any]) -> dict[str, Any]:
  """Nested dicts -> {"a/b/c": leaf}."""
  return traverse_util.flatten_dict(dict(tree), sep=SEP)


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  """{"a/b/c": leaf} -> nested dicts; a name that nests under another leaf is an error."""
  for name in flat:
    parts = name.split(SEP)
    for end in range(1, len(parts)):
      if SEP.join(parts[:end]) in flat:
        raise ValueError(f"parameter name {name!r} nests under the leaf {SEP.join(parts[:end])!r}")
  return traverse_util.unflatten_dict(dict(flat), sep=SEP)


def names(tree: Mapping[str, Any]) -> list[str]:
  """Sorted names of every leaf."""
  return sorted(flatten(tree))


def count(tree: Any) -> int:
  """Number of values in every leaf (arrays, ShapeDtypeStructs or orbax metadata)."""
  return sum(int(leaf.size) if hasattr(leaf, "size") else 1 for leaf in jax.tree.leaves(tree))
