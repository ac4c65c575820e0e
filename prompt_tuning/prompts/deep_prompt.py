"""P-Tuning v2 (Liu et al. 2022): deep prompts, trainable positions at every layer.

Where prompt tuning adds P vectors at the input only, a deep prompt gives each chosen
layer its own P hidden vectors [P, d_model]. They plug into the backbone's per-layer
hook as `LayerPrefix.hidden`: each layer passes them through its own frozen
pre-attention norm and key/value kernels, so they act exactly like positions prepended
to that layer's input whose outputs are dropped (a new prompt replaces them at the next
layer). Prompt positions are always visible and carry no relative position bias.

With `combine="replace"` or `"add"` the same parameters are the upstream's per-layer
prompts instead (`configs/prompts/per_layer.gin`): before each chosen encoder layer the
first P positions of its input, the input prompt's, are replaced by (or added to) the
layer's prompt, which then goes through the layer's frozen Q/K/V and MLP like any
position (unlike Prefix-Tuning's direct keys and values) and keeps its relative
positions. This needs an input prompt of the same length P. By default "replace" starts
at layer 1 and "add" at layer 0: the upstream also replaces before layer 0, which leaves
its input prompt without any effect (a dead parameter); here the input prompt is layer
0's prompt, the same functions with P x d_model fewer parameters.

`layer_range` picks the layers ([start, stop) in each stack, all by default) and
`stacks` the stacks. With `reparameterize=True` the prompts come from the same MLP as
Prefix-Tuning's (embedding [P, h] -> tanh MLP -> [layers, P, d_model]); `folded_params`
turns that into the plain module's parameters.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from prompt_tuning.prompts import initializers
from prompt_tuning.prompts import real_words as real_words_lib
from prompt_tuning.prompts.prefix_tuning import (
  STACKS,
  MlpReparameterization,
  exported_or,
  stack_layers,
)
from prompt_tuning.t5.config import T5Config
from prompt_tuning.t5.layers import LayerPrefix, boxed

Array = jax.Array
Initializer = Callable[..., Array]
# How a layer's prompt meets the layer: None, P-Tuning v2's extra attended positions;
# "replace" / "add", the upstream's per-layer prompts on the input prompt's positions.
COMBINES = (None, "replace", "add")


DEPTH_FROM = ("bottom", "top")


@gin.configurable(module="prompts")
class DeepPrompt(nn.Module):
  """The deep prompts of one stack; `config` and `stack` are given by the backbone.

  Parameters: `prompt` [layers in range, P, d_model] (initialised by `prompt_init`, per
  layer, from the frozen model's layer inputs on a string with `real_words`, or read from
  `init_dir`), or with `reparameterize=True` the MLP's
  (`mlp/embedding`, `mlp/hidden`, `mlp/out`). A stack not in `stacks` gets no prompts
  and no parameters.
  """

  config: T5Config
  stack: str
  length: int = 100
  layer_range: tuple[int, int] | None = None
  stacks: tuple[str, ...] = STACKS
  reparameterize: bool = False
  embedding_dim: int | None = None
  hidden_dim: int = 512
  prompt_init: Initializer = initializers.uniform()
  init_dir: str | None = None
  param_dtype: Any = jnp.float32
  combine: str | None = None
  real_words: Any = None
  depth: int | None = None
  depth_from: str = "bottom"

  def layer_indices(self) -> range:
    """The layers of this stack that get a prompt.

    `depth` (P-Tuning v2's depth ablation, its Figure 3) prompts that many layers of the
    stack, counted from the input side (`depth_from="bottom"`, ascending: layers 0 to
    depth - 1) or from the output side ("top", descending: the last `depth` layers),
    whatever the stack's size; it replaces `layer_range`.
    """
    unknown = [s for s in self.stacks if s not in STACKS]
    if unknown:
      raise ValueError(f"unknown stack(s) {unknown} in deep prompt stacks; use {STACKS}")
    num_layers = stack_layers(self.config, self.stack)
    if self.stack not in self.stacks:
      return range(0)
    if self.depth is not None:
      if self.layer_range is not None:
        raise ValueError("set DEEP_PROMPT_LAYERS or DEEP_PROMPT_DEPTH, not both")
      if self.depth_from not in DEPTH_FROM:
        raise ValueError(f"DEEP_PROMPT_FROM must be one of {DEPTH_FROM}, got {self.depth_from!r}")
      if not 1 <= self.depth <= num_layers:
        raise ValueError(
          f"DEEP_PROMPT_DEPTH {self.depth} is not between 1 and the {num_layers} "
          f"{self.stack} layers"
        )
      if self.depth_from == "top":
        return range(num_layers - self.depth, num_layers)
      return range(0, self.depth)
    if self.layer_range is None:
      # Replacing before layer 0 would discard the input prompt: it is layer 0's prompt.
      return range(1 if self.combine == "replace" else 0, num_layers)
    start, stop = self.layer_range
    if not 0 <= start < stop <= num_layers:
      raise ValueError(
        f"deep prompt layer_range {tuple(self.layer_range)} is not a "
        f"non-empty [start, stop) within the {num_layers} {self.stack} "
        "layers"
      )
    return range(start, stop)

  @nn.compact
  def prompts(self) -> Array:
    """[len(layer_indices()), P, d_model]."""
    if self.length < 0:
      raise ValueError(f"deep prompt length must be >= 0, got {self.length}")
    count, width = len(self.layer_indices()), self.config.emb_dim
    if self.reparameterize:
      if self.real_words is not None:
        real_words_lib.refuse_reparameterized("P-Tuning v2")
      flat = MlpReparameterization(
        self.length,
        count * width,
        self.embedding_dim or self.config.emb_dim,
        self.hidden_dim,
        self.param_dtype,
        name="mlp",
      )()
      return jnp.transpose(flat.reshape(self.length, count, width), (1, 0, 2))
    init = _per_layer(self.prompt_init)
    if self.real_words is not None:
      if self.combine is not None:
        raise ValueError(
          "real-word initialisation gives P-Tuning v2's deep prompts (combine None) the "
          f"string's layer inputs; per-layer prompts (combine {self.combine!r}) are not supported"
        )
      init = self.real_words.initializer(self.config, self.stack, "hidden", self.layer_indices())
    init = exported_or(init, self.init_dir, self.scope.path, "prompt")
    return self.param(
      "prompt",
      boxed(init, "layers", "prompt", "embed"),
      (count, self.length, width),
      self.param_dtype,
    )

  def __call__(self) -> list[LayerPrefix | None]:
    prefixes: list[LayerPrefix | None] = [None] * stack_layers(self.config, self.stack)
    indices = self.layer_indices()
    if not indices:
      return prefixes
    if self.combine not in COMBINES:
      raise ValueError(
        f"unknown deep prompt combine {self.combine!r}; use None (P-Tuning v2's attended "
        "positions), 'replace' or 'add' (per-layer prompts)"
      )
    prompts = self.prompts()
    for row, layer in enumerate(indices):
      if self.combine is None:
        prefixes[layer] = LayerPrefix(hidden=prompts[row])
      else:
        prefixes[layer] = LayerPrefix(layer_input=prompts[row], combine=self.combine)
    return prefixes

  def folded_params(self) -> dict[str, Array]:
    """The parameters of this module with `reparameterize=False` that give the same
    prompts: the MLP's output, computed once."""
    if not self.reparameterize:
      raise ValueError("this deep prompt has no reparameterisation to fold")
    return {"prompt": self.prompts()} if self.layer_indices() else {}


def _per_layer(init: Initializer) -> Initializer:
  """Applies a [P, d] prompt initialiser to each layer's slice of [layers, P, d], so the
  shape-checking initialisers of `prompts.initializers` (vocabulary samples, class
  labels) work for deep prompts too."""

  def table_init(rng: Array, shape: Any, dtype: Any = jnp.float32) -> Array:
    if not shape[0]:
      return jnp.zeros(shape, dtype)
    keys = jax.random.split(rng, shape[0])
    return jnp.stack([init(key, tuple(shape[1:]), dtype) for key in keys])

  return table_init
