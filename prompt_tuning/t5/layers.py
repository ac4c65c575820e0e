"""Building blocks of T5 1.1, with T5X's parameter names and logical axis names.

Every parameter is created through `nn.with_logical_partitioning`, and activations pass
through `nn.with_logical_constraint`, so that sharding over a device mesh is decided by
axis rules alone (see `prompt_tuning.training.partitioning`). Without a mesh in context
the constraints are no-ops, so the same code runs on one CPU.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array
DType = Any
Initializer = Callable[..., Array]

# Large negative number used to mask attention logits (T5X's convention).
NEG_INF = -1e10

# Ways `MultiHeadAttention` can compute attention (`T5Config.attention_implementation`).
ATTENTION_IMPLEMENTATIONS = ("einsum", "xla", "cudnn")
# Axes of split attention heads: head-major, so the attention einsums and the decode
# caches have their batch axes (batch, heads) leading.
HEAD_MAJOR_AXES = ("batch", "heads", "length", "kv")

default_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")


def constrain(x: Array, axes: Sequence[str | None]) -> Array:
  """Names the logical axes of an activation so partitioning rules can shard it."""
  return nn.with_logical_constraint(x, tuple(axes))


def boxed(init: Initializer, *axes: str | None) -> Initializer:
  """`init` whose parameter carries its logical axis names, for the partitioning rules;
  every parameter of the backbone and of the prompt modules is created through it."""
  return nn.with_logical_partitioning(init, axes)


def axis_dense(
  features: int, in_axis: str, out_axis: str, param_dtype: DType, name: str
) -> nn.Dense:
  """A float32 dense layer (lecun-normal kernel, zero bias) whose kernel and bias carry
  logical axis names: the layers of the prompt family's reparameterisation MLPs."""
  return nn.Dense(
    features,
    dtype=jnp.float32,
    param_dtype=param_dtype,
    kernel_init=boxed(nn.initializers.lecun_normal(), in_axis, out_axis),
    bias_init=boxed(nn.initializers.zeros, out_axis),
    name=name,
  )


def _param(
  module: nn.Module,
  name: str,
  init: Initializer,
  shape: Sequence[int],
  dtype: DType,
  axes: Sequence[str | None],
) -> Array:
  return module.param(name, boxed(init, *axes), tuple(shape), dtype)


class RMSNorm(nn.Module):
  """T5's layer norm: scale only, no bias, no mean subtraction, computed in float32."""

  epsilon: float = 1e-6
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = jnp.asarray(x, jnp.float32)
    mean_square = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
    normed = jnp.asarray(x * lax.rsqrt(mean_square + self.epsilon), self.dtype)
    scale = _param(
      self, "scale", nn.initializers.ones, (x.shape[-1],), self.param_dtype, ("embed",)
    )
    return normed * jnp.asarray(scale, self.dtype)


class Dense(nn.Module):
  """A bias-free projection whose kernel is stored 2-D, as in T5X checkpoints.

  `in_axes` lets attention fold its (heads, head_dim) input back into `joined_kv`.
  """

  features: int
  kernel_axes: tuple[str | None, str | None]
  kernel_init: Initializer = default_kernel_init
  in_axes: int = 1
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    in_shape = x.shape[-self.in_axes :]
    fan_in = int(np.prod(in_shape))
    kernel = _param(
      self, "kernel", self.kernel_init, (fan_in, self.features), self.param_dtype, self.kernel_axes
    )
    x = jnp.reshape(jnp.asarray(x, self.dtype), x.shape[: -self.in_axes] + (fan_in,))
    return jnp.dot(x, jnp.asarray(kernel, self.dtype))


class Embed(nn.Module):
  """The token embedding table shared by the encoder and decoder inputs."""

  num_embeddings: int
  features: int
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  def setup(self) -> None:
    self.embedding = self.param(
      "embedding",
      nn.with_logical_partitioning(nn.initializers.normal(stddev=1.0), ("vocab", "embed")),
      (self.num_embeddings, self.features),
      self.param_dtype,
    )

  def __call__(self, ids: Array) -> Array:
    return jnp.take(jnp.asarray(self.embedding, self.dtype), ids, axis=0)

  def attend(self, query: Array) -> Array:
    """Logits against the embedding table (only for tied-output variants)."""
    return jnp.dot(query, jnp.asarray(self.embedding, self.dtype).T)


def relative_position_bucket(
  relative_position: np.ndarray, bidirectional: bool, num_buckets: int, max_distance: int
) -> np.ndarray:
  """Maps key-minus-query offsets to T5's log-spaced buckets.

  Half the buckets hold exact small offsets, the rest grow logarithmically up to
  `max_distance`; bidirectional stacks give positive offsets their own half. Computed
  with numpy at trace time since positions are static.
  """
  bucket = np.zeros_like(relative_position)
  n = -relative_position
  if bidirectional:
    num_buckets //= 2
    bucket += (n < 0).astype(np.int32) * num_buckets
    n = np.abs(n)
  else:
    n = np.maximum(n, 0)
  max_exact = num_buckets // 2
  is_small = n < max_exact
  scaled = np.log(n.astype(np.float64) / max_exact + np.finfo(np.float32).eps)
  scaled = scaled / np.log(max_distance / max_exact) * (num_buckets - max_exact)
  large = np.minimum(max_exact + scaled.astype(np.int32), num_buckets - 1)
  return bucket + np.where(is_small, n, large)


class RelativePositionBias(nn.Module):
  """One learned bias per (head, bucket), shared by every layer of a stack."""

  num_heads: int
  num_buckets: int = 32
  max_distance: int = 128
  bidirectional: bool = True
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  @nn.compact
  def __call__(self, query_length: int, key_length: int, query_offset: int = 0) -> Array:
    """Bias of shape [1, heads, query_length, key_length]; query i sits at position
    `query_offset + i`, key j at position j."""
    context = query_offset + np.arange(query_length, dtype=np.int32)[:, None]
    memory = np.arange(key_length, dtype=np.int32)[None, :]
    buckets = relative_position_bucket(
      memory - context, self.bidirectional, self.num_buckets, self.max_distance
    )
    table = _param(
      self,
      "rel_embedding",
      nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"),
      (self.num_heads, self.num_buckets),
      self.param_dtype,
      ("heads", "relpos_buckets"),
    )
    bias = jnp.take(jnp.asarray(table, self.dtype), jnp.asarray(buckets), axis=1)
    return bias[None]


def attention_mask(query_valid: Array, key_valid: Array) -> Array:
  """[batch, 1, q, k] mask that is true where both query and key are real tokens."""
  return jnp.logical_and(query_valid[:, None, :, None], key_valid[:, None, None, :])


def causal_mask(length: int) -> Array:
  return jnp.tril(jnp.ones((length, length), dtype=bool))[None, None]


def mask_to_bias(mask: Array, dtype: DType) -> Array:
  return jnp.where(mask, jnp.zeros((), dtype), jnp.asarray(NEG_INF, dtype))


@flax.struct.dataclass
class LayerPrefix:
  """Extra attention memory of one layer: the backbone's second hook (docs/design.md,
  "The prompt contract").

  `key`/`value` [P, heads * head_dim] are prepended to the layer's self-attention keys
  and values (Prefix-Tuning); `cross_key`/`cross_value` likewise to a decoder layer's
  cross-attention. `hidden` [P, d_model] are deep-prompt positions (P-Tuning v2): the
  layer passes them through its own frozen pre-attention norm and key/value kernels.
  That equals prepending them to the layer's input and dropping their outputs, because
  prompt positions influence the others only as attended keys and values.

  Prefix positions are always visible (the causal and padding masks do not apply) and
  get no relative position bias (zero bias columns): they are memory slots, not places
  in the text, so a prefix works the same at every position and in cached decoding.

  `positioned=True` is PEFT's T5 layout instead (docs/interop.md): the self-attention
  prefix keys sit at the P positions before the text, so query i sees prefix key j at
  relative position j - P - i. The stack computes those bias columns (`key_bias`
  [1, heads, q, P]) and the attention adds them in place of zeros.

  Besides memory, a layer hook may rescale or rewrite what the frozen layer computes:

  `key_scale`/`value_scale` [heads, head_dim] multiply the keys and values the layer's
  own self-attention kernels project (IA3); `cross_key_scale`/`cross_value_scale` those
  of a decoder layer's cross-attention; `mlp_scale` [mlp_dim] the MLP's gated hidden
  state before its output kernel. `layer_input` [P, d_model] rewrites the first P
  positions of the layer's input (the input prompt's positions) before the layer, by
  `combine` "replace" or "add" (per-layer prompts).
  """

  key: Array | None = None
  value: Array | None = None
  hidden: Array | None = None
  cross_key: Array | None = None
  cross_value: Array | None = None
  key_bias: Array | None = None
  positioned: bool = flax.struct.field(pytree_node=False, default=False)
  key_scale: Array | None = None
  value_scale: Array | None = None
  cross_key_scale: Array | None = None
  cross_value_scale: Array | None = None
  mlp_scale: Array | None = None
  layer_input: Array | None = None
  combine: str = flax.struct.field(pytree_node=False, default="replace")


def _pair(key: Array | None, value: Array | None, what: str) -> tuple[Array, Array] | None:
  if (key is None) != (value is None):
    raise ValueError(f"a layer prefix needs both {what} keys and values, got only one")
  return None if key is None else (key, value)


def self_attention_prefix(prefix: LayerPrefix | None) -> tuple[Array, Array] | None:
  return None if prefix is None else _pair(prefix.key, prefix.value, "self-attention")


def cross_attention_prefix(prefix: LayerPrefix | None) -> tuple[Array, Array] | None:
  return None if prefix is None else _pair(prefix.cross_key, prefix.cross_value, "cross-attention")


class MultiHeadAttention(nn.Module):
  """T5 attention: no 1/sqrt(d) at run time (folded into the query init), float32 softmax.

  Heads are split head-major, [batch, heads, length, head_dim]: both einsums then have
  their batch axes leading, which XLA's CPU and GPU dot kernels take without a copy, and
  the decode caches are kept in that layout too, so a decoding step reads them as they
  are (stored length-major, every step transposed each layer's cached encoder keys and
  values: 40% of CPU decode time). Self-attention in decode mode keeps a key/value cache
  of the whole target length and writes one position per call. Cross-attention in
  decode mode projects the encoder output once, when the cache is created, and reuses it
  at every step. A prefix (see `LayerPrefix`) is not cached: it is prepended again at
  every step, so the cache keeps the target length and its masks are unchanged.
  """

  num_heads: int
  head_dim: int
  dropout_rate: float = 0.0
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32
  implementation: str = "einsum"

  def _dense(self, name: str) -> Dense:
    features = self.num_heads * self.head_dim
    return Dense(
      features,
      ("embed", "joined_kv"),
      name=name,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      kernel_init=self._query_init if name == "query" else default_kernel_init,
    )

  def _query_init(self, key: Array, shape: Sequence[int], dtype: DType) -> Array:
    return default_kernel_init(key, shape, dtype) / np.sqrt(self.head_dim).astype(dtype)

  def _split_heads(self, x: Array) -> Array:
    """[batch, length, heads * head_dim] -> [batch, heads, length, head_dim]."""
    x = x.reshape(x.shape[:-1] + (self.num_heads, self.head_dim))
    return constrain(jnp.swapaxes(x, 1, 2), HEAD_MAJOR_AXES)

  @nn.compact
  def __call__(
    self,
    inputs_q: Array,
    inputs_kv: Array | None,
    bias: Array | None,
    *,
    cross_attention: bool = False,
    decode: bool = False,
    deterministic: bool = True,
    prefix_key_value: tuple[Array, Array] | None = None,
    prefix_inputs: Array | None = None,
    prefix_bias: Array | None = None,
    key_scale: Array | None = None,
    value_scale: Array | None = None,
  ) -> Array:
    """Attends `inputs_q` to `inputs_kv`; `bias` is added to the logits (mask + position).

    Shapes: inputs [batch, length, embed]; bias broadcastable to [batch, heads, q, k].
    `prefix_key_value` ([P, heads * head_dim] each) and `prefix_inputs` ([P', embed],
    projected by this layer's key/value kernels) add always-visible key positions, with
    zero bias unless `prefix_bias` ([1, heads, q, P], for `prefix_key_value` alone) gives
    their position bias (`LayerPrefix.positioned`). `key_scale`/`value_scale` [heads,
    head_dim] multiply what this layer's key/value kernels project (IA3), before caching.
    """
    query = self._split_heads(self._dense("query")(inputs_q))
    key_dense = _scaled(self._dense("key"), key_scale)
    value_dense = _scaled(self._dense("value"), value_scale)
    if decode and cross_attention:
      key, value, bias = self._cached_cross_key_value(key_dense, value_dense, inputs_kv, bias)
    else:
      key = self._split_heads(key_dense(inputs_kv))
      value = self._split_heads(value_dense(inputs_kv))
      if decode:
        key, value, bias = self._update_self_cache(key, value, bias)
        if prefix_bias is not None and bias is not None and bias.shape[-2] == 1:
          # A cached step: its row of the prefix bias, as `_update_self_cache` took its own.
          index = self.get_variable("cache", "cache_index") - 1
          prefix_bias = lax.dynamic_slice_in_dim(prefix_bias, index, 1, axis=2)
    if prefix_bias is not None and (prefix_inputs is not None or prefix_key_value is None):
      raise ValueError("a prefix position bias needs prefix keys and values and no deep prompt")
    prefix_keys, prefix_values = [], []
    if prefix_inputs is not None:
      prefix_keys.append(key_dense(prefix_inputs))
      prefix_values.append(value_dense(prefix_inputs))
    if prefix_key_value is not None:
      prefix_keys.append(prefix_key_value[0])
      prefix_values.append(prefix_key_value[1])
    if prefix_keys:
      key, value, bias = self._prepend_prefix(
        key, value, bias, prefix_keys, prefix_values, prefix_bias
      )

    keep = None  # Scaled dropout mask [batch, heads, 1, keys], shared by all queries.
    if not deterministic and self.dropout_rate > 0.0:
      keep = self._key_dropout_mask(query.shape[0], key.shape[2])
    if self.implementation not in ATTENTION_IMPLEMENTATIONS:
      raise ValueError(
        f"unknown attention implementation {self.implementation!r}; "
        f"choose one of {', '.join(ATTENTION_IMPLEMENTATIONS)}"
      )
    if self.implementation == "einsum" or decode:
      logits = jnp.einsum("bhqd,bhkd->bhqk", query, key, preferred_element_type=jnp.float32)
      if bias is not None:
        logits = logits + bias.astype(jnp.float32)
      weights = jax.nn.softmax(logits).astype(self.dtype)
      if keep is not None:
        weights = weights * keep
      out = jnp.swapaxes(jnp.einsum("bhqk,bhkd->bhqd", weights, value), 1, 2)
    else:
      if keep is not None:
        # The same mask on the values: scaling weight column k for every query equals
        # scaling value row k, and the fused kernel sees a plain softmax.
        value = value * jnp.swapaxes(keep, 2, 3)
      # The fused kernel takes a bias of the inputs' dtype; scale 1: T5 folds 1/sqrt(d)
      # into the query kernel. It wants [batch, length, heads, head_dim].
      if bias is not None and self.implementation == "cudnn":
        bias = bias.astype(query.dtype)
      query, key, value = (jnp.swapaxes(x, 1, 2) for x in (query, key, value))
      out = jax.nn.dot_product_attention(
        query, key, value, bias=bias, scale=1.0, implementation=self.implementation
      )
    out = constrain(out, ("batch", "length", "heads", "kv"))
    return Dense(
      inputs_q.shape[-1],
      ("joined_kv", "embed"),
      in_axes=2,
      name="out",
      dtype=self.dtype,
      param_dtype=self.param_dtype,
    )(out)

  def _key_dropout_mask(self, batch: int, keys: int) -> Array:
    """T5X's attention dropout: one mask per (batch, head, key) shared by every query.

    Drawn at [batch, heads, 1, keys] rather than per weight, which also costs q times
    fewer random bits; returned already divided by the keep rate.
    """
    keep_rate = 1.0 - self.dropout_rate
    keep = jax.random.bernoulli(
      self.make_rng("dropout"), keep_rate, (batch, self.num_heads, 1, keys)
    )
    return keep.astype(self.dtype) / jnp.asarray(keep_rate, self.dtype)

  def _prepend_prefix(
    self,
    key: Array,
    value: Array,
    bias: Array | None,
    prefix_keys: Sequence[Array],
    prefix_values: Sequence[Array],
    prefix_bias: Array | None = None,
  ) -> tuple[Array, Array, Array | None]:
    """Puts prefix positions (shared by every row) in front of the keys and values, with
    zero bias columns (always visible, no relative position) or `prefix_bias`."""

    def rows(parts: Sequence[Array]) -> Array:
      joined = jnp.concatenate([jnp.asarray(p, self.dtype) for p in parts], axis=0)
      joined = joined.reshape((joined.shape[0], self.num_heads, self.head_dim))
      joined = jnp.swapaxes(joined, 0, 1)[None]
      return jnp.broadcast_to(joined, (key.shape[0],) + joined.shape[1:])

    prefix_key, prefix_value = rows(prefix_keys), rows(prefix_values)
    key = constrain(jnp.concatenate([prefix_key, key], axis=2), HEAD_MAJOR_AXES)
    value = constrain(jnp.concatenate([prefix_value, value], axis=2), HEAD_MAJOR_AXES)
    if prefix_bias is not None:
      if bias is None:
        bias = jnp.zeros(prefix_bias.shape[:-1] + (key.shape[2] - prefix_key.shape[2],))
      rows = jnp.broadcast_shapes(bias.shape[:-1], prefix_bias.shape[:-1])
      bias = jnp.concatenate(
        [
          jnp.broadcast_to(prefix_bias.astype(bias.dtype), rows + prefix_bias.shape[-1:]),
          jnp.broadcast_to(bias, rows + bias.shape[-1:]),
        ],
        axis=-1,
      )
    elif bias is not None:
      zeros = jnp.zeros(bias.shape[:-1] + (prefix_key.shape[2],), bias.dtype)
      bias = jnp.concatenate([zeros, bias], axis=-1)
    return key, value, bias

  def _update_self_cache(
    self, key: Array, value: Array, bias: Array | None
  ) -> tuple[Array, Array, Array | None]:
    """Creates the cache on the first (full-length) call; afterwards writes one step.

    On a step the bias passed in is the full [.., L, L] one; the row of the current
    position is sliced out here and the not-yet-written positions are masked.
    """
    initialized = self.has_variable("cache", "cached_key")
    cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
    cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape, value.dtype)
    cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
    if not initialized:
      return key, value, bias
    batch, heads, steps, dim = key.shape
    max_length = cached_key.value.shape[2]
    if steps != 1:
      raise ValueError(f"decode step expects one token per call, got {steps}")
    index = cache_index.value
    cached_key.value = lax.dynamic_update_slice(cached_key.value, key, (0, 0, index, 0))
    cached_value.value = lax.dynamic_update_slice(cached_value.value, value, (0, 0, index, 0))
    cache_index.value = index + 1
    visible = (jnp.arange(max_length) <= index)[None, None, None, :]
    step_bias = mask_to_bias(visible, jnp.float32)
    if bias is not None:
      row = lax.dynamic_slice_in_dim(bias, index, 1, axis=2)
      step_bias = step_bias + row.astype(jnp.float32)
    return cached_key.value, cached_value.value, step_bias

  def _cached_cross_key_value(
    self,
    key_dense: Callable[[Array], Array],
    value_dense: Callable[[Array], Array],
    encoded: Array | None,
    bias: Array | None,
  ) -> tuple[Array, Array, Array | None]:
    """Keys, values and the encoder-mask bias, computed once and kept in the cache.

    Keeping the mask in the cache (with batch leading, like the keys) lets beam search
    expand and reorder it together with everything else.
    """
    if not self.has_variable("cache", "cached_cross_key"):
      if encoded is None:
        raise ValueError(
          "cross-attention cache is empty: initialise it with the encoder "
          "output before decoding steps"
        )
      key = self._split_heads(key_dense(encoded))
      value = self._split_heads(value_dense(encoded))
      if bias is None:
        bias = jnp.zeros((key.shape[0], 1, 1, key.shape[2]), jnp.float32)
      step_bias = bias[:, :, :1, :]
      self.variable("cache", "cached_cross_key", lambda: key)
      self.variable("cache", "cached_cross_value", lambda: value)
      self.variable("cache", "cached_cross_bias", lambda: step_bias)
      return key, value, bias
    return (
      self.get_variable("cache", "cached_cross_key"),
      self.get_variable("cache", "cached_cross_value"),
      self.get_variable("cache", "cached_cross_bias"),
    )


def _scaled(project: Callable[[Array], Array], scale: Array | None) -> Callable[[Array], Array]:
  """`project` followed by a per-feature scale [heads, head_dim] (None: unchanged)."""
  if scale is None:
    return project

  def scaled(x: Array) -> Array:
    out = project(x)
    return out * jnp.reshape(scale, (-1,)).astype(out.dtype)

  return scaled


class GatedMlp(nn.Module):
  """T5 1.1 feed-forward: `wo(act_0(x wi_0) * act_1(x wi_1))`, gated GELU by default."""

  mlp_dim: int
  activations: Sequence[str] = ("gelu", "linear")
  dropout_rate: float = 0.0
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  @nn.compact
  def __call__(
    self, x: Array, deterministic: bool = True, hidden_scale: Array | None = None
  ) -> Array:
    """`hidden_scale` [mlp_dim] multiplies the gated hidden state (IA3)."""
    hidden = None
    for i, name in enumerate(self.activations):
      branch_name = "wi" if len(self.activations) == 1 else f"wi_{i}"
      h = Dense(
        self.mlp_dim,
        ("embed", "mlp"),
        name=branch_name,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
      )(x)
      h = _activation(name)(h)
      hidden = h if hidden is None else hidden * h
    if hidden_scale is not None:
      hidden = hidden * jnp.asarray(hidden_scale, hidden.dtype)
    hidden = constrain(hidden, ("batch", "length", "mlp"))
    hidden = nn.Dropout(self.dropout_rate, broadcast_dims=(-2,))(
      hidden, deterministic=deterministic
    )
    return Dense(
      x.shape[-1], ("mlp", "embed"), name="wo", dtype=self.dtype, param_dtype=self.param_dtype
    )(hidden)


def _activation(name: str) -> Callable[[Array], Array]:
  activations = {
    "gelu": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_exact": functools.partial(jax.nn.gelu, approximate=False),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "linear": lambda x: x,
  }
  if name not in activations:
    raise ValueError(f"unknown MLP activation {name!r}; choose one of {sorted(activations)}")
  return activations[name]
