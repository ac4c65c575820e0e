"""Prefix-Tuning in PEFT's T5 layout: the prefix a Hugging Face PEFT adapter computes.

PEFT's `PrefixTuningConfig` on T5 (task SEQ_2_SEQ_LM, checked against peft 0.21.2 with
transformers 5.25) does less than Li & Liang's design (`prefix_tuning.PrefixTuning`):

- Only the decoder's self-attention gets a prefix. The encoder gets none, and the
  cross-attention prefix PEFT builds is thrown away (it resets the cross-attention cache).
- The prefix keys are T5 cache positions: the P positions before the text, so query i
  sees prefix key j with the relative position bias of j - P - i.
- Its one tensor, `prompt_embeddings` [P, num_layers * 2 * d], holds 2N key/value blocks
  of width d, but decoder layer l reads blocks 4l mod 2N (keys) and 4l + 1 mod 2N (values):
  PEFT concatenates the blocks twice and cuts them four per layer (self key, self value,
  cross key, cross value). So with N layers, layers l and l + N/2 share a prefix and the
  odd-numbered pairs of blocks are never read.

This module reproduces exactly that, so an adapter imported with `prompt-tuning
import-peft` computes PEFT's logits, and a prefix trained here with this method exports to
a PEFT adapter unchanged (docs/interop.md). Its parameter is PEFT's tensor as it is, under
`decoder/layer_prompt/prompt_embeddings`; with `reparameterize=True` it is the output of
PEFT's `prefix_projection` MLP (embedding [P, d] -> Linear -> tanh -> Linear), which
`folded_params` computes once.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from prompt_tuning.prompts import prefix_tuning
from prompt_tuning.t5.config import T5Config
from prompt_tuning.t5.layers import LayerPrefix, boxed

Array = jax.Array
Initializer = Callable[..., Array]
PARAM = "prompt_embeddings"


def block_indices(num_layers: int, layer: int) -> tuple[int, int]:
  """(key block, value block) of `prompt_embeddings` that decoder layer `layer` reads, for
  a PEFT config of `num_layers` (module docstring)."""
  blocks = 2 * num_layers
  return (4 * layer) % blocks, (4 * layer + 1) % blocks


@gin.configurable(module="prompts")
class PeftPrefixTuning(nn.Module):
  """The PEFT-layout prefixes of one stack (none for the encoder).

  `num_layers` of PEFT's config is the model's `num_layers`, the encoder's depth, which
  T5 1.1 shares with the decoder.
  """

  config: T5Config
  stack: str
  length: int = 10
  reparameterize: bool = False
  hidden_dim: int | None = None
  prefix_init: Initializer = nn.initializers.normal(1.0)  # torch's nn.Embedding init
  init_dir: str | None = None
  param_dtype: Any = jnp.float32

  @property
  def width(self) -> int:
    return self.config.num_heads * self.config.head_dim

  @nn.compact
  def prompt_embeddings(self) -> Array:
    """PEFT's tensor, [P, num_layers * 2 * heads * head_dim]."""
    if self.length < 1:
      raise ValueError(f"prefix length must be >= 1, got {self.length}")
    features = self.config.num_encoder_layers * 2 * self.width
    if self.reparameterize:
      return prefix_tuning.MlpReparameterization(
        self.length,
        features,
        self.config.emb_dim,
        self.hidden_dim or self.config.emb_dim,
        self.param_dtype,
        name="mlp",
      )()
    init = prefix_tuning.exported_or(self.prefix_init, self.init_dir, self.scope.path, PARAM)
    return self.param(
      PARAM, boxed(init, "prompt", "prompt_embed"), (self.length, features), self.param_dtype
    )

  def __call__(self) -> list[LayerPrefix | None]:
    layers = prefix_tuning.stack_layers(self.config, self.stack)
    if self.stack == "encoder":
      return [None] * layers
    blocks = self.prompt_embeddings().reshape(self.length, -1, self.width)
    prefixes = []
    for layer in range(layers):
      key, value = block_indices(self.config.num_encoder_layers, layer)
      prefixes.append(LayerPrefix(key=blocks[:, key], value=blocks[:, value], positioned=True))
    return prefixes

  def folded_params(self) -> dict[str, Array]:
    """The parameters of this module with `reparameterize=False` that give the same
    prefixes: the projection MLP's output, computed once."""
    if not self.reparameterize:
      raise ValueError("this prefix has no reparameterisation to fold")
    return {PARAM: self.prompt_embeddings()}
