"""The backbone's per-layer hook (docs/design.md, "The prompt contract"): extra
keys/values and deep-prompt hidden positions per layer, their masks, and cached decoding
with them."""

from __future__ import annotations

import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning import decoding
from prompt_tuning.t5 import T5Config, Transformer
from prompt_tuning.t5 import layers
from prompt_tuning.t5.network import EncoderLayer

TINY = T5Config.from_size("tiny", vocab_size=128)


class RandomPrefix(nn.Module):
  """A test hook: random prefixes of the given kinds in every layer of both stacks."""

  config: T5Config
  stack: str
  length: int = 3
  kinds: tuple[str, ...] = ("key", "value")

  @nn.compact
  def __call__(self) -> list[layers.LayerPrefix]:
    cfg = self.config
    count = cfg.num_encoder_layers if self.stack == "encoder" else cfg.num_decoder_layers
    prefixes = []
    for i in range(count):
      fields = {}
      for kind in self.kinds:
        if kind.startswith("cross") and self.stack == "encoder":
          continue
        width = cfg.emb_dim if kind == "hidden" else cfg.num_heads * cfg.head_dim
        fields[kind] = self.param(f"{kind}_{i}", nn.initializers.normal(1.0), (self.length, width))
      prefixes.append(layers.LayerPrefix(**fields))
    return prefixes


ALL_KINDS = ("key", "value", "hidden", "cross_key", "cross_value")


def _batch(seed=0, batch=2, inputs=7, targets=5):
  rng = np.random.RandomState(seed)
  enc = rng.randint(1, 100, (batch, inputs)).astype(np.int32)
  enc[0, inputs - 3 :] = 0
  tgt = rng.randint(2, 100, (batch, targets)).astype(np.int32)
  dec_in = np.concatenate([np.zeros((batch, 1), np.int32), tgt[:, :-1]], axis=1)
  return enc, dec_in, tgt


def _init(layer_prefix=None):
  """Eager init (cheaper than compiling one); the backbone's values do not depend on the
  hook, which only adds parameters under {stack}/layer_prompt."""
  tokens = np.ones((1, 1), np.int32)
  return nn.unbox(
    Transformer(TINY, layer_prefix=layer_prefix).init(
      jax.random.PRNGKey(0), tokens, tokens, tokens
    )["params"]
  )


@pytest.fixture(scope="module")
def backbone_params():
  return _init()


def _with_prefix_params(backbone, factory):
  params = _init(factory)
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  plain = flax.traverse_util.flatten_dict(backbone, sep="/")
  assert {k for k in flat if "/layer_prompt/" not in k} == set(plain)
  assert all(np.array_equal(plain[k], flat[k]) for k in plain)
  return params


def test_zero_length_prefixes_of_every_kind_equal_the_plain_backbone(backbone_params):
  enc, dec_in, tgt = _batch()
  plain = jax.jit(Transformer(TINY).apply)({"params": backbone_params}, enc, dec_in, tgt)
  factory = functools.partial(RandomPrefix, length=0, kinds=ALL_KINDS)
  params = _with_prefix_params(backbone_params, factory)
  empty = jax.jit(Transformer(TINY, layer_prefix=factory).apply)(
    {"params": params}, enc, dec_in, tgt
  )
  np.testing.assert_allclose(empty, plain, rtol=0, atol=1e-6)


def test_deep_prompt_equals_positions_prepended_to_the_layer_input():
  """A `hidden` prefix acts as P extra leading positions of the layer's input that are
  always visible, carry no position bias, and whose outputs are dropped."""
  layer = EncoderLayer(TINY, relative_embedding=None)
  rng = np.random.RandomState(3)
  x = jnp.asarray(rng.normal(size=(2, 5, TINY.emb_dim)), jnp.float32)
  hidden = jnp.asarray(rng.normal(size=(3, TINY.emb_dim)), jnp.float32)
  relpos = jnp.asarray(rng.normal(size=(1, TINY.num_heads, 5, 5)), jnp.float32)
  mask = np.ones((2, 5), bool)
  mask[0, 3:] = False  # Padding: masked as a key, and the prompt must stay visible.
  bias = relpos + layers.mask_to_bias(layers.attention_mask(mask, mask), jnp.float32)
  variables = layer.init(jax.random.PRNGKey(0), x, bias, True)
  with_prefix = layer.apply(variables, x, bias, True, layers.LayerPrefix(hidden=hidden))
  # Explicitly longer input: prompt columns get zero bias; prompt rows are irrelevant.
  longer = jnp.concatenate([jnp.broadcast_to(hidden, (2, 3, TINY.emb_dim)), x], axis=1)
  long_bias = jnp.zeros((2, TINY.num_heads, 8, 8)).at[:, :, 3:, 3:].set(bias)
  explicit = layer.apply(variables, longer, long_bias, True)[:, 3:]
  np.testing.assert_allclose(with_prefix, explicit, atol=2e-5)
  assert not np.allclose(with_prefix, layer.apply(variables, x, bias, True), atol=1e-3)


def test_key_value_prefix_equals_the_hidden_prefix_it_projects_to():
  layer = EncoderLayer(TINY, relative_embedding=None)
  rng = np.random.RandomState(4)
  x = jnp.asarray(rng.normal(size=(2, 5, TINY.emb_dim)), jnp.float32)
  hidden = jnp.asarray(rng.normal(size=(3, TINY.emb_dim)), jnp.float32)
  bias = jnp.zeros((1, TINY.num_heads, 5, 5))
  variables = nn.unbox(layer.init(jax.random.PRNGKey(0), x, bias, True))
  p = variables["params"]
  normed = layers.RMSNorm().apply({"params": p["pre_attention_layer_norm"]}, hidden)
  key = normed @ p["attention"]["key"]["kernel"]
  value = normed @ p["attention"]["value"]["kernel"]
  by_hidden = layer.apply(variables, x, bias, True, layers.LayerPrefix(hidden=hidden))
  by_key_value = layer.apply(variables, x, bias, True, layers.LayerPrefix(key=key, value=value))
  np.testing.assert_allclose(by_hidden, by_key_value, atol=2e-5)
  with pytest.raises(ValueError, match="both self-attention keys and values"):
    layer.apply(variables, x, bias, True, layers.LayerPrefix(key=key))


def _full_and_cached_logits(model, params, enc, dec_in):
  """Teacher-forced logits of one full forward and of cached one-token steps, the jitted
  step function and the freshly initialised cache."""
  length = dec_in.shape[1]
  full = jax.jit(model.apply)({"params": params}, enc, dec_in, np.ones_like(dec_in))
  encoded = jax.jit(lambda p, e: model.apply({"params": p}, e, method=model.encode))(params, enc)
  _, init = jax.jit(
    lambda p, x: model.apply(
      {"params": p},
      x.sequence,
      x.mask,
      jnp.zeros_like(dec_in),
      decode=True,
      max_decode_length=length,
      mutable=["cache"],
      method=model.decode,
    )
  )(params, encoded)

  @jax.jit
  def step(cache, token):
    logits, mutated = model.apply(
      {"params": params, "cache": cache},
      None,
      None,
      token,
      decode=True,
      max_decode_length=length,
      mutable=["cache"],
      method=model.decode,
    )
    return logits[:, 0], mutated["cache"]

  cache, steps = init["cache"], []
  for t in range(length):
    logits, cache = step(cache, dec_in[:, t : t + 1])
    steps.append(logits)
  return np.asarray(full), np.stack(steps, axis=1), step, init["cache"]


def test_cached_decoding_with_prefixes_equals_uncached(backbone_params):
  factory = functools.partial(RandomPrefix, kinds=ALL_KINDS)
  model = Transformer(TINY, layer_prefix=factory)
  params = _with_prefix_params(backbone_params, factory)
  enc, dec_in, _ = _batch()
  full, cached, step, cache = _full_and_cached_logits(model, params, enc, dec_in)
  np.testing.assert_allclose(cached, full, atol=1e-4)
  plain = jax.jit(Transformer(TINY).apply)(
    {"params": backbone_params}, enc, dec_in, np.ones_like(dec_in)
  )
  # The prefixes reach the decoder's first position (causal masking leaves them visible).
  assert not np.allclose(full[:, 0], plain[:, 0], atol=1e-3)
  # Sampling and beam search repeat the cache rows; the prefix follows the rows given.
  token = np.full((2, 1), 7, np.int32)
  one, _ = step(cache, token)
  repeated, _ = step(decoding.repeat_rows(cache, 3), np.repeat(token, 3, axis=0))
  np.testing.assert_allclose(repeated, np.repeat(one, 3, axis=0), atol=1e-5)


def test_wrong_number_of_layer_prefixes_is_a_clear_error(backbone_params):

  class TooFew(nn.Module):
    config: T5Config
    stack: str

    def __call__(self):
      return [None]

  enc, dec_in, tgt = _batch()
  with pytest.raises(ValueError, match="gave 1 prefixes for the 2 encoder layers"):
    Transformer(TINY, layer_prefix=TooFew).apply({"params": backbone_params}, enc, dec_in, tgt)
