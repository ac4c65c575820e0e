"""Parameters at the start of a run: the frozen base from a checkpoint, fresh trainables.

`INITIAL_CHECKPOINT_PATH` may be any format `prompt_tuning.convert` reads (T5X legacy,
T5X orbax, our orbax, Hugging Face, a `checkpoint_N` of one of our runs). Parameters
whose name matches the assignment-map regex (default `.*prompt.*`) are initialised
fresh; any other parameter missing from the checkpoint is an error that lists them.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import flax
import jax
import numpy as np

from prompt_tuning import convert, tree
from prompt_tuning.t5 import network

Params = dict[str, Any]


def fresh_init(
  module: network.Transformer, rng: jax.Array, names: set[str] | None = None
) -> Params:
  """Random initial values of `names` (all parameters when None).

  Only the requested leaves leave the jitted init, so XLA drops the work and memory of
  everything else: initialising a prompt does not materialise an XXL model.
  """
  tokens = np.ones((1, 1), np.int32)

  def init(r: jax.Array) -> Params:
    params = flax.linen.unbox(module.init(r, tokens, tokens, tokens)["params"])
    if names is None:
      return params
    return {name: value for name, value in tree.flatten(params).items() if name in names}

  values = jax.jit(init)(rng)
  return values if names is None else tree.unflatten(values)


def initial_params(
  module: network.Transformer,
  rng: jax.Array,
  initial_checkpoint_path: str | None,
  fresh_regex: str = ".*prompt.*",
  loader: Callable[[str], Params] | None = None,
) -> Params:
  """The full parameter tree for the start of training (before any resume)."""
  if not initial_checkpoint_path:
    return fresh_init(module, rng)
  abstract = tree.flatten(
    network.abstract_params(module.config, module.input_prompt, module.layer_prefix)
  )
  loader = loader or convert.load_params
  loaded = tree.flatten(loader(initial_checkpoint_path))
  pattern = re.compile(fresh_regex)
  fresh = {name for name in abstract if pattern.fullmatch(name)}
  missing = sorted(name for name in abstract if name not in loaded and name not in fresh)
  wrong_shape = sorted(
    f"{name}: checkpoint {tuple(loaded[name].shape)} vs model {tuple(abstract[name].shape)}"
    for name in abstract
    if name in loaded
    and name not in fresh
    and tuple(loaded[name].shape) != tuple(abstract[name].shape)
  )
  if missing or wrong_shape:
    lines = ([f"missing from the checkpoint: {', '.join(missing)}"] if missing else []) + (
      [f"wrong shapes: {'; '.join(wrong_shape)}"] if wrong_shape else []
    )
    raise ValueError(
      f"checkpoint {initial_checkpoint_path} does not fit the model ("
      + " | ".join(lines)
      + f"); parameters matching {fresh_regex!r} are "
      "initialised fresh, every other one must be in the checkpoint"
    )
  params = {name: loaded[name] for name in abstract if name not in fresh}
  if fresh:
    params.update(tree.flatten(fresh_init(module, rng, fresh)))
  return tree.unflatten(params)
