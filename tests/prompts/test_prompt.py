"""The prompt module in the encoder's input hook."""

from __future__ import annotations

import functools

import flax
import jax
import numpy as np

from prompt_tuning.prompts import Prompt, initializers
from prompt_tuning.t5 import T5Config, Transformer, init_params, logical_axes

CFG = T5Config.from_size("tiny", vocab_size=128)


def _batch():
  rng = np.random.RandomState(1)
  enc = rng.randint(1, 128, (2, 6)).astype(np.int32)
  enc[1, 4:] = 0
  tgt = rng.randint(2, 128, (2, 4)).astype(np.int32)
  dec = np.concatenate([np.zeros((2, 1), np.int32), tgt[:, :-1]], axis=1)
  return enc, dec, tgt


def test_prompt_parameter_path_shape_and_axes():
  factory = functools.partial(Prompt, length=5)
  params = init_params(CFG, jax.random.PRNGKey(0), input_prompt=factory)
  assert params["encoder"]["prompt"]["prompt"].shape == (5, CFG.emb_dim)
  axes = logical_axes(CFG, input_prompt=factory)
  assert tuple(axes["encoder"]["prompt"]["prompt"]) == ("prompt", "embed")


def test_zero_length_prompt_equals_the_plain_backbone():
  params = init_params(CFG, jax.random.PRNGKey(0))
  enc, dec, tgt = _batch()
  plain = jax.jit(Transformer(CFG).apply)({"params": params}, enc, dec, tgt)
  empty = jax.jit(Transformer(CFG, input_prompt=functools.partial(Prompt, length=0)).apply)(
    {"params": params}, enc, dec, tgt
  )
  np.testing.assert_array_equal(plain, empty)


def test_prompt_is_prepended_and_always_visible():
  factory = functools.partial(Prompt, length=3, init=initializers.uniform(0.5))
  model = Transformer(CFG, input_prompt=factory)
  params = init_params(CFG, jax.random.PRNGKey(0), input_prompt=factory)
  enc, dec, tgt = _batch()
  encoded = jax.jit(lambda p, e: model.apply({"params": p}, e, method=model.encode))(params, enc)
  assert encoded.sequence.shape == (2, 3 + 6, CFG.emb_dim)
  # The encoder's mask: prompt positions always visible, then the tokens' own mask.
  np.testing.assert_array_equal(
    encoded.mask, np.concatenate([np.ones((2, 3), bool), enc > 0], axis=1)
  )
  # The prompt changes the output, and every prompt position matters to the decoder,
  # even for the row whose input is mostly padding.
  apply = jax.jit(model.apply)
  logits = apply({"params": params}, enc, dec, tgt)
  for position in range(3):
    bumped = flax.traverse_util.flatten_dict(params, sep="/")
    bumped["encoder/prompt/prompt"] = bumped["encoder/prompt/prompt"].at[position].add(1.0)
    bumped = flax.traverse_util.unflatten_dict(bumped, sep="/")
    changed = apply({"params": bumped}, enc, dec, tgt)
    assert np.abs(np.asarray(changed - logits)).max(axis=(1, 2)).min() > 1e-4
