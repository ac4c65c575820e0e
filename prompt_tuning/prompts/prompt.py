"""The soft prompt: P trainable vectors put in front of the embedded input.

It plugs into the encoder's input hook (`Transformer(config, input_prompt=...)`) and, as
every input prompt (docs/design.md, "The prompt contract"), returns only its rows; the
backbone prepends them and makes them always visible to attention.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from prompt_tuning.prompts import initializers
from prompt_tuning.t5.layers import boxed

Array = jax.Array


def no_prompt_inputs(prompt_inputs: Mapping[str, Array] | None, module: str) -> None:
  """A prompt shared by every example takes no per-example inputs; silently ignoring
  `prompt_ids` would serve one prompt where the batch asked for several."""
  if prompt_inputs:
    raise ValueError(
      f"{module} holds one prompt for every example but was given prompt "
      f"inputs {sorted(prompt_inputs)}; use prompts.MultiPrompt to pick a "
      "prompt per example"
    )


@gin.configurable(module="prompts")
class Prompt(nn.Module):
  """Owns one parameter, `prompt` [length, d_model], kept in float32.

  The prompt is stored in float32 even when the frozen model runs in bfloat16: Adafactor
  updates on a bfloat16 prompt would round away.
  """

  length: int = 100
  init: Callable[..., Array] = initializers.uniform()
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, embedded: Array, prompt_inputs: Mapping[str, Array] | None = None) -> Array:
    """The prompt rows [P, d] (no parameter when P is 0)."""
    no_prompt_inputs(prompt_inputs, "Prompt")
    width = embedded.shape[-1]
    if self.length == 0:
      return jnp.zeros((0, width), embedded.dtype)
    return self.param(
      "prompt", boxed(self.init, "prompt", "embed"), (self.length, width), self.param_dtype
    )
