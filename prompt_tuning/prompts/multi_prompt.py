"""A table of soft prompts, one chosen per example: multi-task serving and ensembling.

Several prompts trained on the same frozen model can share one batch: each row names its
prompt with an integer in the batch feature `prompt_ids` [batch], which
`EncoderDecoderModel` hands to `Transformer.encode(..., prompt_inputs={"prompt_ids": ...})`
and the encoder to this module. Row i then sees exactly what the single-prompt `Prompt`
holding table[prompt_ids[i]] would give it.

`models.with_prompt_table` turns any configured model into one serving a table of saved
prompts (prompt ensembling, multi-task serving), without touching its initialisers.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning.prompts import initializers
from prompt_tuning.t5.layers import boxed

Array = jax.Array
Initializer = Callable[..., Array]


def load_prompt_files(paths: Sequence[str]) -> np.ndarray:
  """Stacks `.npy` prompts of shape [P, d] into a table [len(paths), P, d]."""
  if not paths:
    raise ValueError("no prompt files given; pass at least one .npy prompt [length, d_model]")
  prompts = []
  for path in paths:
    value = initializers.load_prompt_file(path)
    if value.ndim != 2:
      raise ValueError(
        f"prompt file {path} has shape {tuple(value.shape)}; expected a "
        "2-D [prompt length, d_model] array"
      )
    if prompts and value.shape != prompts[0].shape:
      raise ValueError(
        f"prompt file {path} has shape {tuple(value.shape)} but "
        f"{paths[0]} has {tuple(prompts[0].shape)}; all prompts of one "
        "table need the same length and width"
      )
    prompts.append(value)
  return np.stack(prompts)


@gin.configurable(module="prompts")
def per_prompt(init: Initializer = gin.REQUIRED) -> Initializer:
  """A table initialiser that draws each prompt with `init` for its own [P, d] shape, so
  shape-aware initialisers (vocabulary samples, class labels) work as for `Prompt`."""

  def table_init(rng: Array, shape: Sequence[int], dtype: Any = jnp.float32) -> Array:
    keys = jax.random.split(rng, shape[0])
    return jnp.stack([init(key, tuple(shape[1:]), dtype) for key in keys])

  return table_init


@gin.configurable(module="prompts")
def from_files(paths: Sequence[str] = gin.REQUIRED) -> Initializer:
  """Initialiser of a prompt table from saved prompts, one `.npy` [P, d] per row."""
  paths = list(paths)

  def init(rng: Array, shape: Sequence[int], dtype: Any = jnp.float32) -> Array:
    del rng
    table = load_prompt_files(paths)
    if tuple(table.shape) != tuple(shape):
      raise ValueError(
        f"prompt files {paths} give a table of shape {tuple(table.shape)} "
        f"but the model expects {tuple(shape)} (num_prompts x prompt length "
        "x d_model)"
      )
    return jnp.asarray(table, dtype)

  return init


@gin.configurable(module="prompts")
class MultiPrompt(nn.Module):
  """Owns one parameter, `prompt` [num_prompts, length, d_model], kept in float32.

  `init` fills the whole table: wrap a single-prompt initialiser in `per_prompt`, or load
  saved prompts with `from_files`.

  Ids must lie in [0, num_prompts): under jit an id out of range cannot raise, so callers
  check them on the host (`ensemble.py` does).
  """

  num_prompts: int = 1
  length: int = 100
  init: Initializer = per_prompt(initializers.uniform())
  param_dtype: Any = jnp.float32

  @classmethod
  def from_files(cls, paths: Sequence[str], **kwargs: Any) -> Callable[..., "MultiPrompt"]:
    """A factory for `Transformer(input_prompt=...)` whose table holds these prompts."""
    num_prompts, length, _ = load_prompt_files(paths).shape
    return functools.partial(
      cls, num_prompts=num_prompts, length=length, init=from_files(paths), **kwargs
    )

  @nn.compact
  def __call__(self, embedded: Array, prompt_inputs: Mapping[str, Array] | None = None) -> Array:
    """The rows table[prompt_ids] [batch, P, d]; `prompt_inputs["prompt_ids"]` [batch]."""
    batch, _, width = embedded.shape
    table = self.param(
      "prompt",
      boxed(self.init, "prompts", "prompt", "embed"),
      (self.num_prompts, self.length, width),
      self.param_dtype,
    )
    prompt_ids = read_prompt_ids(
      prompt_inputs,
      batch,
      self.is_initializing(),
      "MultiPrompt",
      "MultiPrompt needs prompt_ids [batch] (which prompt each row uses); add the batch "
      "feature `prompt_ids`",
    )
    return jnp.take(table, prompt_ids, axis=0)


def read_prompt_ids(
  prompt_inputs: Mapping[str, Array] | None,
  batch: int,
  initializing: bool,
  owner: str,
  missing: str,
) -> Array:
  """The `prompt_ids` [batch] of a module that reads only them: zeros while initialising
  without them, else the one-line error `missing`."""
  inputs = dict(prompt_inputs or {})
  ids = inputs.pop("prompt_ids", None)
  if inputs:
    raise ValueError(f"{owner} takes only the prompt input `prompt_ids`, got also {sorted(inputs)}")
  if ids is None:
    if not initializing:
      raise ValueError(missing)
    ids = jnp.zeros((batch,), jnp.int32)
  ids = jnp.asarray(ids, jnp.int32)
  if ids.shape != (batch,):
    raise ValueError(f"prompt_ids has shape {ids.shape}; expected ({batch},), one id per row")
  return ids
