"""Prompt-only training: frozen stays bit-identical, gradients exist only for the prompt."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning import models, tree
from prompt_tuning.prompts import Prompt
from prompt_tuning.t5 import T5Config, Transformer, init_params
from prompt_tuning.training import optimizers, trainable
from prompt_tuning.training.train_step import TrainState, make_train_step

CFG = T5Config.from_size("tiny", vocab_size=128)
PROMPT = functools.partial(Prompt, length=4)


def _task_batch(seed: int, size: int = 8):
  """Label 5 or 6 depending on the first input token, then EOS."""
  rng = np.random.RandomState(seed)
  enc = rng.randint(3, 128, (size, 6)).astype(np.int32)
  label = np.where(enc[:, 0] < 64, 5, 6).astype(np.int32)
  tgt = np.stack([label, np.ones_like(label)], axis=1)
  dec = np.stack([np.zeros_like(label), label], axis=1)
  return {
    "encoder_input_tokens": enc,
    "decoder_input_tokens": dec,
    "decoder_target_tokens": tgt,
    "decoder_loss_weights": np.ones_like(tgt),
  }


@pytest.fixture(scope="module")
def setup():
  module = Transformer(CFG, input_prompt=PROMPT)
  params = init_params(CFG, jax.random.PRNGKey(0), input_prompt=PROMPT)
  return models.EncoderDecoderModel(module), params


def test_split_selects_only_the_prompt(setup):
  _, params = setup
  train, frozen = trainable.split(params)
  assert tree.names(train) == ["encoder/prompt/prompt"]
  assert "encoder/prompt/prompt" not in tree.names(frozen)
  assert tree.names(trainable.merge(train, frozen)) == tree.names(params)
  with pytest.raises(ValueError, match="matches no parameter"):
    trainable.split(params, "nothing_matches")


def test_training_changes_only_the_prompt_and_the_loss_falls(setup):
  model, params = setup
  train, frozen = trainable.split(params)
  optimizer = optimizers.adafactor(learning_rate=0.3)
  state = TrainState.create(train, optimizer)
  # The optimiser state holds leaves for the prompt only (optax keeps (1,) placeholders
  # for the factored moments of an unfactored parameter).
  shapes = {x.shape for x in jax.tree.leaves(state.opt_state) if x.ndim}
  assert shapes == {(4, CFG.emb_dim), (1,)}
  assert sum(x.size for x in jax.tree.leaves(state.opt_state)) < 4 * CFG.emb_dim + 8
  step = jax.jit(make_train_step(model, optimizer))
  frozen_before = jax.tree.map(np.array, frozen)
  losses = []
  for i in range(30):
    state, metrics = step(state, frozen, _task_batch(i % 4), jax.random.PRNGKey(0))
    losses.append(float(metrics["loss"]))
  for a, b in zip(jax.tree.leaves(frozen_before), jax.tree.leaves(frozen)):
    np.testing.assert_array_equal(a, b)
  assert not np.allclose(
    state.trainable["encoder"]["prompt"]["prompt"], train["encoder"]["prompt"]["prompt"]
  )
  assert int(state.step) == 30
  # A random frozen tiny model limits what a 4-vector prompt can do; 30 steps
  # reliably take about 17% off the loss.
  assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5]), losses


def test_gradients_are_never_built_for_frozen_parameters(setup):
  model, params = setup
  train, frozen = trainable.split(params)
  optimizer = optimizers.adafactor()
  step = make_train_step(model, optimizer)
  jaxpr = jax.make_jaxpr(step)(
    TrainState.create(train, optimizer), frozen, _task_batch(0), jax.random.PRNGKey(0)
  )
  # The logits kernel [emb, vocab] is frozen: no transpose-matmul produces its gradient,
  # so no value of that shape is ever an output of a dot_general.
  shapes = [
    tuple(v.aval.shape)
    for eqn in jaxpr.jaxpr.eqns
    if eqn.primitive.name == "dot_general"
    for v in eqn.outvars
  ]
  assert (CFG.emb_dim, CFG.vocab_size) not in shapes


def test_microbatching_matches_the_full_batch(setup):
  model, params = setup
  train, frozen = trainable.split(params)
  optimizer = optimizers.adafactor()
  batch = _task_batch(0)
  full, m_full = jax.jit(make_train_step(model, optimizer))(
    TrainState.create(train, optimizer), frozen, batch, jax.random.PRNGKey(0)
  )
  micro, m_micro = jax.jit(make_train_step(model, optimizer, num_microbatches=4))(
    TrainState.create(train, optimizer), frozen, batch, jax.random.PRNGKey(0)
  )
  np.testing.assert_allclose(m_full["loss"], m_micro["loss"], rtol=1e-5)
  np.testing.assert_allclose(
    full.trainable["encoder"]["prompt"]["prompt"],
    micro.trainable["encoder"]["prompt"]["prompt"],
    atol=1e-5,
  )


def test_frozen_parameters_in_bfloat16_with_a_float32_prompt(setup):
  model, params = setup
  train, frozen = trainable.split(params)
  frozen16 = trainable.cast(frozen, jnp.bfloat16)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(frozen16))
  optimizer = optimizers.adafactor()
  state, metrics = jax.jit(make_train_step(model, optimizer))(
    TrainState.create(train, optimizer), frozen16, _task_batch(0), jax.random.PRNGKey(0)
  )
  assert state.trainable["encoder"]["prompt"]["prompt"].dtype == jnp.float32
  assert np.isfinite(float(metrics["loss"]))


def test_selecting_everything_is_model_tuning(setup):
  model, params = setup
  train, frozen = trainable.split(params, ".*")
  assert not jax.tree.leaves(frozen)
  optimizer = optimizers.adafactor(learning_rate=1e-3)
  state, _ = jax.jit(make_train_step(model, optimizer))(
    TrainState.create(train, optimizer), frozen, _task_batch(0), jax.random.PRNGKey(0)
  )
  before = params["decoder"]["logits_dense"]["kernel"]
  assert not np.allclose(state.trainable["decoder"]["logits_dense"]["kernel"], before)
