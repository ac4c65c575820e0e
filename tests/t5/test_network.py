"""The backbone: T5X parameter names and shapes, logical axes, masks, cached decoding."""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning.t5 import T5Config, Transformer, abstract_params, init_params, logical_axes
from prompt_tuning.t5 import layers

# A small vocabulary keeps the test compiles fast; shapes are otherwise `tiny`.
TINY = T5Config.from_size("tiny", vocab_size=128)


def _flat(tree):
  return flax.traverse_util.flatten_dict(tree, sep="/")


@pytest.fixture(scope="module")
def tiny_params():
  return init_params(TINY, jax.random.PRNGKey(0))


def _batch(seed=0, batch=2, inputs=7, targets=5, vocab=100):
  rng = np.random.RandomState(seed)
  enc = rng.randint(1, vocab, (batch, inputs)).astype(np.int32)
  enc[0, inputs - 2 :] = 0
  tgt = rng.randint(2, vocab, (batch, targets)).astype(np.int32)
  tgt[-1, targets - 2 :] = 0
  dec_in = np.concatenate([np.zeros((batch, 1), np.int32), tgt[:, :-1]], axis=1) * (tgt > 0)
  return enc, dec_in, tgt


def test_parameter_tree_uses_t5x_names_and_shapes():
  cfg = T5Config.from_size("small")
  flat = {k: v.shape for k, v in _flat(abstract_params(cfg)).items()}
  qkv = cfg.num_heads * cfg.head_dim
  assert flat["token_embedder/embedding"] == (32128, 512)
  assert flat["encoder/relpos_bias/rel_embedding"] == (6, 32)
  assert flat["decoder/relpos_bias/rel_embedding"] == (6, 32)
  assert flat["encoder/layers_7/attention/query/kernel"] == (512, qkv)
  assert flat["encoder/layers_0/attention/out/kernel"] == (qkv, 512)
  assert flat["encoder/layers_0/mlp/wi_0/kernel"] == (512, 1024)
  assert flat["encoder/layers_0/mlp/wo/kernel"] == (1024, 512)
  assert flat["decoder/layers_0/encoder_decoder_attention/key/kernel"] == (512, qkv)
  assert flat["decoder/layers_0/pre_cross_attention_layer_norm/scale"] == (512,)
  assert flat["decoder/logits_dense/kernel"] == (512, 32128)
  assert flat["encoder/encoder_norm/scale"] == (512,)
  assert flat["decoder/decoder_norm/scale"] == (512,)
  # Exactly the T5X tree: the embedding; encoder relpos + norm + 9 per layer;
  # decoder relpos + norm + logits + 14 per layer.
  assert len(flat) == 1 + (2 + 9 * 8) + (3 + 14 * 8)


@pytest.mark.parametrize(
  "size,expected",
  [("small", 77e6), ("base", 248e6), ("large", 783e6), ("xl", 2.85e9), ("xxl", 11.1e9)],
)
def test_parameter_counts_match_the_published_sizes(size, expected):
  count = sum(
    int(np.prod(x.shape)) for x in jax.tree.leaves(abstract_params(T5Config.from_size(size)))
  )
  assert abs(count - expected) / expected < 0.01


def test_mt5_sizes_use_the_large_vocabulary():
  flat = _flat(abstract_params(T5Config.from_size("mt5_small")))
  assert flat["token_embedder/embedding"].shape == (250112, 512)


def test_every_parameter_has_logical_axes():
  axes = _flat(logical_axes(TINY))
  shapes = _flat(abstract_params(TINY))
  assert axes.keys() == shapes.keys()
  for name, spec in axes.items():
    assert len(spec) == len(shapes[name].shape), name
    assert all(a is not None for a in spec), name
  assert tuple(axes["token_embedder/embedding"]) == ("vocab", "embed")
  assert tuple(axes["encoder/layers_0/mlp/wi_0/kernel"]) == ("embed", "mlp")
  assert tuple(axes["encoder/relpos_bias/rel_embedding"]) == ("heads", "relpos_buckets")


def test_unknown_size_is_a_clear_error():
  with pytest.raises(ValueError, match="unknown model size 'huge'"):
    T5Config.from_size("huge")


def test_from_size_accepts_overrides():
  cfg = T5Config.from_size("base", dropout_rate=0.1, dtype="bfloat16")
  assert cfg.emb_dim == 768 and cfg.dropout_rate == 0.1 and cfg.dtype == "bfloat16"


def test_relative_position_buckets_match_t5():
  rel = np.arange(-200, 201)
  bi = layers.relative_position_bucket(rel, True, 32, 128)
  # Exact buckets for small offsets, separate halves for both directions.
  assert bi[200] == 0 and bi[201] == 17 and bi[199] == 1
  assert bi.min() == 0 and bi.max() == 31
  uni = layers.relative_position_bucket(rel, False, 32, 128)
  assert (uni[201:] == 0).all()  # The future gets bucket 0 in a causal stack.
  assert uni[200 - 15] == 15 and uni[0] == 31
  assert (np.diff(uni[:201]) <= 0).all()  # Monotone in distance.


def test_forward_is_jittable_and_padding_does_not_leak(tiny_params):
  model = Transformer(TINY)
  enc, dec_in, tgt = _batch()
  apply = jax.jit(model.apply)
  logits = apply({"params": tiny_params}, enc, dec_in, tgt)
  assert logits.shape == (2, 5, TINY.vocab_size) and logits.dtype == jnp.float32
  # Changing tokens behind the padding changes nothing at real positions.
  enc2 = enc.copy()
  enc2[0, -2:] = 0  # Already padding; now also vary a padded target region's input.
  longer = np.concatenate([enc, np.zeros((2, 3), np.int32)], axis=1)
  logits_padded = apply({"params": tiny_params}, longer, dec_in, tgt)
  real = tgt > 0
  np.testing.assert_allclose(np.asarray(logits)[real], np.asarray(logits_padded)[real], atol=1e-5)


def test_dropout_is_active_only_when_enabled(tiny_params):
  model = Transformer(TINY.replace(dropout_rate=0.5))
  enc, dec_in, tgt = _batch()
  v = {"params": tiny_params}
  apply = jax.jit(model.apply, static_argnames="enable_dropout")
  a = apply(v, enc, dec_in, tgt)
  b = apply(v, enc, dec_in, tgt)
  np.testing.assert_array_equal(a, b)
  c = apply(v, enc, dec_in, tgt, enable_dropout=True, rngs={"dropout": jax.random.PRNGKey(1)})
  assert not np.allclose(a, c)


def test_cached_greedy_decoding_equals_uncached_argmax(tiny_params):
  model = Transformer(TINY)
  enc, _, _ = _batch()
  length = 6
  v = {"params": tiny_params}
  encoded = jax.jit(lambda v, e: model.apply(v, e, method=model.encode))(v, enc)
  _, init = jax.jit(
    lambda v, x: model.apply(
      v,
      x.sequence,
      x.mask,
      jnp.zeros((2, length), jnp.int32),
      decode=True,
      max_decode_length=length,
      mutable=["cache"],
      method=model.decode,
    )
  )(v, encoded)

  @jax.jit
  def step(cache, token):
    logits, mutated = model.apply(
      {**v, "cache": cache},
      None,
      None,
      token,
      decode=True,
      max_decode_length=length,
      mutable=["cache"],
      method=model.decode,
    )
    return logits[:, 0], mutated["cache"]

  @jax.jit
  def full(decoder_inputs):
    return model.apply(v, encoded.sequence, encoded.mask, decoder_inputs, None, method=model.decode)

  cache = init["cache"]
  # Head-major caches: a step's einsums read them without a transpose per layer.
  layer = cache["decoder"]["layers_0"]
  heads, head_dim = TINY.num_heads, TINY.head_dim
  assert layer["self_attention"]["cached_key"].shape == (2, heads, length, head_dim)
  assert layer["encoder_decoder_attention"]["cached_cross_value"].shape == (
    2,
    heads,
    enc.shape[1],
    head_dim,
  )
  sequence = np.zeros((2, 1), np.int32)
  for _ in range(length):
    step_logits, cache = step(cache, jnp.asarray(sequence[:, -1:]))
    reference = full(jnp.asarray(sequence))[:, -1]
    np.testing.assert_allclose(step_logits, reference, atol=1e-5)
    np.testing.assert_array_equal(np.argmax(step_logits, -1), np.argmax(reference, -1))
    sequence = np.concatenate([sequence, np.argmax(step_logits, -1)[:, None]], axis=1)


@pytest.mark.parametrize("policy", ["full", "dots"])
def test_rematerialisation_keeps_values_and_gradients(tiny_params, policy):
  enc, dec_in, tgt = _batch()

  def loss(params, cfg):
    logits = Transformer(cfg).apply({"params": params}, enc, dec_in, tgt)
    return jnp.sum(jax.nn.log_softmax(logits)[..., 3])

  plain = jax.jit(jax.value_and_grad(lambda p: loss(p, TINY)))(tiny_params)
  remat_cfg = TINY.replace(remat_policy=policy)
  remat = jax.jit(jax.value_and_grad(lambda p: loss(p, remat_cfg)))(tiny_params)
  np.testing.assert_allclose(plain[0], remat[0], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(plain[1]), jax.tree.leaves(remat[1])):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_bfloat16_activations_stay_close_to_float32(tiny_params):
  enc, dec_in, tgt = _batch()
  f32 = jax.jit(Transformer(TINY).apply)({"params": tiny_params}, enc, dec_in, tgt)
  bf16 = jax.jit(Transformer(TINY.replace(dtype="bfloat16")).apply)(
    {"params": tiny_params}, enc, dec_in, tgt
  )
  assert bf16.dtype == jnp.float32  # Logits are always float32.
  assert np.mean(np.argmax(f32, -1) == np.argmax(bf16, -1)) > 0.8


def test_attention_dropout_mask_is_shared_by_every_query_as_in_t5x():
  # Zero queries give uniform weights 1/K; one-hot keys/values with identity kernels make
  # each output row show which key positions that query's dropout mask kept.
  length = 6
  attention = layers.MultiHeadAttention(num_heads=1, head_dim=length, dropout_rate=0.5)
  eye = jnp.eye(length)
  params = {
    "query": {"kernel": jnp.zeros((length, length))},
    "key": {"kernel": eye},
    "value": {"kernel": eye},
    "out": {"kernel": eye},
  }
  inputs = eye[None]

  @jax.jit
  def attend(rng):
    return attention.apply(
      {"params": params}, inputs, inputs, None, deterministic=False, rngs={"dropout": rng}
    )[0]

  kept_patterns = set()
  for seed in range(4):
    out = np.asarray(attend(jax.random.PRNGKey(seed)))
    np.testing.assert_allclose(out, np.broadcast_to(out[:1], out.shape))
    assert set(np.round(out.ravel() * length * 0.5, 6)) <= {0.0, 1.0}
    kept_patterns.add(tuple(out[0] > 0))
  assert len(kept_patterns) > 1 and any(not all(p) for p in kept_patterns)


def test_fused_attention_implementation_equals_einsum(tiny_params):
  # "xla" is jax.nn.dot_product_attention, the same call "cudnn" makes on a GPU; with the
  # same dropout key it must give the einsum path's logits and input gradients.
  enc, dec_in, tgt = _batch()
  rngs = {"dropout": jax.random.PRNGKey(3)}

  def loss_and_grad(implementation):
    model = Transformer(TINY.replace(dropout_rate=0.2, attention_implementation=implementation))

    def loss(params):
      logits = model.apply({"params": params}, enc, dec_in, tgt, enable_dropout=True, rngs=rngs)
      return jnp.sum(jax.nn.log_softmax(logits)[..., 0] * (tgt > 0)), logits

    return jax.jit(jax.value_and_grad(loss, has_aux=True))(tiny_params)

  (loss_einsum, logits_einsum), grads_einsum = loss_and_grad("einsum")
  (loss_xla, logits_xla), grads_xla = loss_and_grad("xla")
  np.testing.assert_allclose(logits_xla, logits_einsum, atol=1e-5, rtol=1e-5)
  for name, grad in _flat(grads_einsum).items():
    np.testing.assert_allclose(_flat(grads_xla)[name], grad, atol=1e-5, rtol=1e-4, err_msg=name)


def test_unknown_attention_implementation_is_a_clear_error(tiny_params):
  enc, dec_in, tgt = _batch()
  model = Transformer(TINY.replace(attention_implementation="flash"))
  with pytest.raises(ValueError, match="unknown attention implementation 'flash'"):
    model.apply({"params": tiny_params}, enc, dec_in, tgt)
