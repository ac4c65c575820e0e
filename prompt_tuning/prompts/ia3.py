"""IA3 (Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper
than In-Context Learning"): learned rescalings of the frozen model's activations.

Every attention layer's keys and values (encoder self-attention, decoder self- and
cross-attention) are multiplied by a learned vector [heads, head_dim], and every MLP's
gated hidden state by one of [mlp_dim], broadcast over batch and length. All start at
one, so an untrained IA3 model computes exactly what the backbone does.

The scalings plug into the backbone's per-layer hook (`LayerPrefix.key_scale`, ...;
docs/design.md, "The prompt contract"), so they live under
`{stack}/layer_prompt/layers_{i}/{attention}/{key,value}/ia3_scaling` and
`.../layers_{i}/mlp/ia3_scaling`, apart from the frozen tree, and train under the
trainer's '.*prompt.*' (they also match the upstream's '.*ia3_scaling.*'). The upstream
keeps them inside the frozen layers (flaxformer's `k_conv` / `v_conv` and the MLP's `ia3`
submodule), so its checkpoints name them differently; the values mean the same. Keys
and values the layer projects itself are scaled (also deep-prompt positions, which go
through the same kernels); prefix keys given directly (Prefix-Tuning) are not.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from prompt_tuning.prompts.prefix_tuning import exported_or, stack_layers
from prompt_tuning.t5.config import T5Config
from prompt_tuning.t5.layers import LayerPrefix, boxed

Array = jax.Array
SCALING = "ia3_scaling"
# The attention sublayers of each stack, by their names in the backbone's tree.
ATTENTIONS = {"encoder": ("attention",), "decoder": ("self_attention", "encoder_decoder_attention")}


class _Scaling(nn.Module):
  """One `ia3_scaling` vector (ones at init, or read from `init_dir`)."""

  shape: tuple[int, ...]
  axes: tuple[str, ...]
  init_dir: str | None = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self) -> Array:
    init = exported_or(nn.initializers.ones, self.init_dir, self.scope.path, SCALING)
    return self.param(SCALING, boxed(init, *self.axes), self.shape, self.param_dtype)


class _AttentionScalings(nn.Module):
  config: T5Config
  init_dir: str | None = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self) -> tuple[Array, Array]:
    shape = (self.config.num_heads, self.config.head_dim)
    return tuple(
      _Scaling(shape, ("heads", "kv"), self.init_dir, self.param_dtype, name=name)()
      for name in ("key", "value")
    )


class _LayerScalings(nn.Module):
  config: T5Config
  stack: str
  init_dir: str | None = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self) -> LayerPrefix:
    scales = {}
    for name in ATTENTIONS[self.stack]:
      key, value = _AttentionScalings(self.config, self.init_dir, self.param_dtype, name=name)()
      kind = "cross_" if name == "encoder_decoder_attention" else ""
      scales[f"{kind}key_scale"], scales[f"{kind}value_scale"] = key, value
    scales["mlp_scale"] = _Scaling(
      (self.config.mlp_dim,), ("mlp",), self.init_dir, self.param_dtype, name="mlp"
    )()
    return LayerPrefix(**scales)


@gin.configurable(module="prompts")
class IA3(nn.Module):
  """The IA3 scalings of one stack; `config` and `stack` are given by the backbone.

  Parameters per layer i: `layers_{i}/{attention}/{key,value}/ia3_scaling` [heads,
  head_dim] and `layers_{i}/mlp/ia3_scaling` [mlp_dim]. `init_dir`: read them from the
  `.npy` files an export or numpy checkpoint wrote (evaluation, runs/layer_prompt_eval.gin).
  """

  config: T5Config
  stack: str
  init_dir: str | None = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self) -> list[LayerPrefix]:
    return [
      _LayerScalings(self.config, self.stack, self.init_dir, self.param_dtype, name=f"layers_{i}")()
      for i in range(stack_layers(self.config, self.stack))
    ]
