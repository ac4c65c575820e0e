"""Prefix-Tuning (Li & Liang 2021): trainable keys and values in every attention layer.

The module plugs into the backbone's per-layer hook (`Transformer(layer_prefix=...)`),
which builds one per stack: the encoder's prefixes its self-attention, the decoder's
its self-attention and, with `cross_attention=True`, its cross-attention as well.

Training the prefixes directly is unstable, so the paper reparameterises them: a small
embedding [P, h] goes through an MLP (tanh) whose output is reshaped to
[layers, 2, P, heads * head_dim]. After training the MLP is folded away: its output is
computed once and becomes the parameters of the same module with
`reparameterize=False`, which gives identical outputs (`folded_params`).
"""

from __future__ import annotations

import os
from typing import Any, Callable

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from prompt_tuning.prompts import initializers
from prompt_tuning.prompts import real_words as real_words_lib
from prompt_tuning.t5.config import T5Config
from prompt_tuning.t5.layers import LayerPrefix, axis_dense, boxed

Array = jax.Array
Initializer = Callable[..., Array]
STACKS = ("encoder", "decoder")


class MlpReparameterization(nn.Module):
  """`embedding` [P, h] -> Dense(hidden) -> tanh -> Dense(features): Li & Liang's MLP.

  Shared by every layer of a stack, so one small network produces all the prefixes; the
  tanh keeps their scale bounded early in training, which is what makes it stable.
  """

  length: int
  features: int
  embedding_dim: int = 512
  hidden_dim: int = 512
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self) -> Array:
    """[P, features], float32."""
    embedding = self.param(
      "embedding",
      boxed(nn.initializers.normal(1.0), "prompt", "prompt_embed"),
      (self.length, self.embedding_dim),
      self.param_dtype,
    )
    x = axis_dense(self.hidden_dim, "prompt_embed", "prompt_mlp", self.param_dtype, "hidden")(
      embedding
    )
    x = jnp.tanh(x)
    return axis_dense(self.features, "prompt_mlp", "prompt_out", self.param_dtype, "out")(x)


def exported_or(
  init: Initializer, init_dir: str | None, path: tuple[str, ...], name: str
) -> Initializer:
  """`init`, or the `.npy` that `prompt-tuning export-prompt` (or the trainer's numpy
  checkpoint) wrote for this parameter: `{init_dir}/{dotted path}.npy`."""
  if init_dir is None:
    return init
  return initializers.from_file(os.path.join(init_dir, ".".join((*path, name)) + ".npy"))


def stack_layers(config: T5Config, stack: str) -> int:
  if stack not in STACKS:
    raise ValueError(f"unknown stack {stack!r}; expected one of {STACKS}")
  return config.num_encoder_layers if stack == "encoder" else config.num_decoder_layers


@gin.configurable(module="prompts")
class PrefixTuning(nn.Module):
  """The prefixes of one stack; `config` and `stack` are given by the backbone.

  With `reparameterize=True` the parameters are the MLP's (`mlp/embedding` [P, h] with h
  = `embedding_dim`, d_model by default; `mlp/hidden` with `hidden_dim` units, 512 as in
  the paper's code; `mlp/out`); with False they are the prefixes themselves: `key`, `value`
  (and `cross_key`, `cross_value` in the decoder with cross-attention), each
  [layers, P, heads * head_dim], initialised by `prefix_init`, from the frozen model's
  activations on a string (`real_words`, a `prompts.RealWords`) or read from `init_dir`.
  """

  config: T5Config
  stack: str
  length: int = 100
  reparameterize: bool = True
  embedding_dim: int | None = None
  hidden_dim: int = 512
  cross_attention: bool = False
  prefix_init: Initializer = nn.initializers.normal(1.0)
  init_dir: str | None = None
  param_dtype: Any = jnp.float32
  real_words: Any = None

  def kinds(self) -> tuple[str, ...]:
    """Which prefixes this stack has, in the order of the MLP's output."""
    if self.cross_attention and self.stack == "decoder":
      return ("key", "value", "cross_key", "cross_value")
    return ("key", "value")

  @nn.compact
  def prefixes(self) -> dict[str, Array]:
    """{kind: [layers, P, heads * head_dim]} for every kind in `kinds()`."""
    if self.length < 0:
      raise ValueError(f"prefix length must be >= 0, got {self.length}")
    num_layers = stack_layers(self.config, self.stack)
    width = self.config.num_heads * self.config.head_dim
    kinds = self.kinds()
    if self.reparameterize:
      if self.real_words is not None:
        real_words_lib.refuse_reparameterized("Prefix-Tuning")
      flat = MlpReparameterization(
        self.length,
        num_layers * len(kinds) * width,
        self.embedding_dim or self.config.emb_dim,
        self.hidden_dim,
        self.param_dtype,
        name="mlp",
      )()
      # [P, layers * kinds * width] -> [kinds, layers, P, width].
      grouped = flat.reshape(self.length, num_layers, len(kinds), width)
      grouped = jnp.transpose(grouped, (2, 1, 0, 3))
      return {kind: grouped[i] for i, kind in enumerate(kinds)}
    prefixes = {}
    for kind in kinds:
      init = self.prefix_init
      if self.real_words is not None:
        init = self.real_words.initializer(self.config, self.stack, kind, range(num_layers))
      init = exported_or(init, self.init_dir, self.scope.path, kind)
      prefixes[kind] = self.param(
        kind,
        boxed(init, "layers", "prompt", "prompt_embed"),
        (num_layers, self.length, width),
        self.param_dtype,
      )
    return prefixes

  def __call__(self) -> list[LayerPrefix]:
    prefixes = self.prefixes()
    return [
      LayerPrefix(**{kind: value[i] for kind, value in prefixes.items()})
      for i in range(stack_layers(self.config, self.stack))
    ]

  def folded_params(self) -> dict[str, Array]:
    """The parameters of this module with `reparameterize=False` that give the same
    prefixes: the MLP's output, computed once."""
    if not self.reparameterize:
      raise ValueError("this prefix has no reparameterisation to fold")
    return self.prefixes()
