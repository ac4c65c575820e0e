"""Splitting the parameter tree into what trains and what stays frozen.

Prompt tuning differentiates only the prompt: the frozen parameters enter the loss as a
plain argument, so JAX never builds their gradients (docs/design.md,
"Decisions"). Selecting `.*` turns the same code into full model tuning.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from prompt_tuning import tree

Params = Mapping[str, Any]
DEFAULT_TRAINABLE = ".*prompt.*"
# A linear head (t5/heads.py) starts random, so it always trains and starts fresh.
HEAD_PARAMETERS = "head/.*"


def with_head(regex: str, module: Any) -> str:
  """`regex` extended by the head's parameters when `module` has a head: what trains
  with a head is the prompt family's parameters plus the head (docs/heads.md)."""
  if getattr(module, "head_factory", None) is None or re.fullmatch(regex, "head/kernel"):
    return regex
  return f"(?:{regex})|{HEAD_PARAMETERS}"


def split(
  params: Params, trainable_regex: str = DEFAULT_TRAINABLE
) -> tuple[dict[str, Any], dict[str, Any]]:
  """(trainable, frozen) nested dicts; a path is trainable when the regex matches fully."""
  pattern = re.compile(trainable_regex)
  trainable, frozen = {}, {}
  for name, value in tree.flatten(params).items():
    (trainable if pattern.fullmatch(name) else frozen)[name] = value
  if not trainable:
    raise ValueError(
      f"trainable-parameter regex {trainable_regex!r} matches no parameter; "
      f"some names: {', '.join(sorted(frozen)[:5])}"
    )
  return tree.unflatten(trainable), tree.unflatten(frozen)


def merge(trainable: Params, frozen: Params) -> dict[str, Any]:
  """The full tree again; raises if both halves claim a parameter."""
  flat_t, flat_f = tree.flatten(trainable), tree.flatten(frozen)
  both = flat_t.keys() & flat_f.keys()
  if both:
    raise ValueError(f"parameters both trainable and frozen: {sorted(both)}")
  return tree.unflatten({**flat_f, **flat_t})


def cast(params: Params, dtype: Any) -> Any:
  """Casts floating leaves (e.g. frozen parameters to bfloat16 to halve their memory)."""
  dtype = jnp.dtype(dtype)

  def _cast(x: Any) -> Any:
    return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x

  return jax.tree.map(_cast, params)
