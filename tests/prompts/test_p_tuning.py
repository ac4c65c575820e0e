"""P-Tuning: the prompt encoder's parameters, prompt-only training, zero length, cached
decoding, and the exported prompt served as a plain prompt from its .npy file."""

from __future__ import annotations

import functools
import os

import flax
import flax.linen as nn
import jax
import numpy as np
import pytest

from prompt_tuning import models
from prompt_tuning.prompts import Prompt, family, initializers
from prompt_tuning.prompts.p_tuning import PTuningPrompt
from prompt_tuning.t5 import T5Config, Transformer, abstract_params
from prompt_tuning.training import optimizers, trainable
from prompt_tuning.training.train_step import TrainState, make_train_step

CFG = T5Config.from_size("tiny", vocab_size=128)
LSTM = functools.partial(PTuningPrompt, length=3)
MLP = functools.partial(PTuningPrompt, length=3, prompt_encoder="mlp", hidden_dim=16)


def _batch(size=8):
  """Label 5 or 6 depending on the first input token, then EOS."""
  rng = np.random.RandomState(0)
  enc = rng.randint(3, 128, (size, 6)).astype(np.int32)
  enc[0, 4:] = 0
  label = np.where(enc[:, 0] < 64, 5, 6).astype(np.int32)
  tgt = np.stack([label, np.ones_like(label)], axis=1)
  dec = np.stack([np.zeros_like(label), label], axis=1)
  return {"encoder_input_tokens": enc, "decoder_input_tokens": dec,
          "decoder_target_tokens": tgt}


def _init(input_prompt=None):
  """Eager init (cheaper than compiling one); the backbone's values do not depend on
  the prompt module."""
  tokens = np.ones((1, 1), np.int32)
  return nn.unbox(Transformer(CFG, input_prompt=input_prompt).init(
      jax.random.PRNGKey(0), tokens, tokens, tokens)["params"])


def _logits(module, params, size=8):
  b = _batch(size)
  return np.asarray(jax.jit(module.apply)({"params": params}, b["encoder_input_tokens"],
                                          b["decoder_input_tokens"],
                                          b["decoder_target_tokens"]))


def test_prompt_encoder_parameters_and_the_default_trainable_regex():
  lstm = flax.traverse_util.flatten_dict(abstract_params(CFG, LSTM), sep="/")
  assert lstm["encoder/prompt/embedding"].shape == (3, CFG.emb_dim)
  half = CFG.emb_dim // 2
  for layer in (0, 1):
    for direction in ("forward", "backward"):
      cell = f"encoder/prompt/lstm_{layer}_{direction}"
      assert lstm[f"{cell}/ii/kernel"].shape == (CFG.emb_dim, half)
      assert lstm[f"{cell}/hi/kernel"].shape == (half, half)
  assert lstm["encoder/prompt/mlp_hidden/kernel"].shape == (CFG.emb_dim, CFG.emb_dim)
  assert lstm["encoder/prompt/mlp_out/kernel"].shape == (CFG.emb_dim, CFG.emb_dim)
  train, frozen = trainable.split(abstract_params(CFG, LSTM))
  assert all(n.startswith("encoder/prompt/") for n in trainable.parameter_names(train))
  assert trainable.parameter_names(frozen) == trainable.parameter_names(abstract_params(CFG))
  mlp = trainable.parameter_names(trainable.split(abstract_params(CFG, MLP))[0])
  assert mlp == ["encoder/prompt/embedding", "encoder/prompt/mlp_hidden/bias",
                 "encoder/prompt/mlp_hidden/kernel", "encoder/prompt/mlp_out/bias",
                 "encoder/prompt/mlp_out/kernel"]


def test_zero_length_prompt_equals_the_plain_backbone():
  empty = functools.partial(PTuningPrompt, length=0)
  params = _init(empty)
  assert "prompt" not in params["encoder"]
  np.testing.assert_array_equal(_logits(Transformer(CFG, input_prompt=empty), params),
                                _logits(Transformer(CFG), _init()))


def test_training_moves_only_the_prompt_encoder_and_the_loss_falls():
  module = Transformer(CFG, input_prompt=LSTM)
  train, frozen = trainable.split(_init(LSTM))
  frozen_before = jax.tree.map(np.array, frozen)
  optimizer = optimizers.adafactor(learning_rate=0.1)
  state = TrainState.create(train, optimizer)
  step = jax.jit(make_train_step(models.EncoderDecoderModel(module), optimizer))
  batch = _batch()
  losses = []
  for _ in range(20):
    state, metrics = step(state, frozen, batch, jax.random.PRNGKey(0))
    losses.append(float(metrics["loss"]))
  # Through the input alone, a 3-vector prompt moves a random tiny model slowly: 20 steps
  # take about 14% off the loss.
  assert np.mean(losses[-3:]) < 0.92 * losses[0], losses
  jax.tree.map(np.testing.assert_array_equal, frozen, frozen_before)
  moved = jax.tree.map(lambda a, b: not np.allclose(a, b), state.trainable, train)
  assert all(jax.tree.leaves(moved))


def test_exported_prompt_serves_as_a_plain_prompt_and_cached_decoding_matches(tmp_path):
  module = Transformer(CFG, input_prompt=MLP)
  params = _init(MLP)
  paths = family.export(module, params, str(tmp_path))
  assert [os.path.basename(p) for p in paths] == ["encoder.prompt.prompt.npy"]
  prompt = np.load(paths[0])
  assert prompt.shape == (3, CFG.emb_dim) and prompt.dtype == np.float32
  # The file loads through the plain prompt's `from_file` initialiser (PROMPT_FILE).
  plain = functools.partial(Prompt, length=3, init=initializers.from_file(paths[0]))
  served = _init(plain)
  np.testing.assert_array_equal(served["encoder"]["prompt"]["prompt"], prompt)
  logits = _logits(module, params, size=2)
  np.testing.assert_allclose(_logits(Transformer(CFG, input_prompt=plain), served, size=2),
                             logits, atol=1e-5)
  assert not np.allclose(logits, _logits(Transformer(CFG), _init(), size=2), atol=1e-3)

  # Greedy cached decoding equals step-by-step argmax over uncached full forwards.
  b = _batch(size=2)
  length = 4
  decoded = np.asarray(jax.jit(models.EncoderDecoderModel(module).predict_batch)(params, {
      "encoder_input_tokens": b["encoder_input_tokens"],
      "decoder_target_tokens": np.ones((2, length), np.int32)}))
  forward = jax.jit(module.apply)
  tokens = np.zeros((2, length), np.int32)
  for t in range(length):
    inputs = np.concatenate([np.zeros((2, 1), np.int32), tokens[:, :-1]], axis=1)
    step_logits = forward({"params": params}, b["encoder_input_tokens"], inputs,
                          np.ones_like(inputs))
    tokens[:, t] = np.argmax(np.asarray(step_logits)[:, t], axis=-1)
  for row in range(2):
    end = (list(tokens[row]).index(1) + 1) if 1 in tokens[row] else length
    np.testing.assert_array_equal(decoded[row, :end], tokens[row, :end])


def test_unknown_prompt_encoder_is_a_clear_error():
  with pytest.raises(ValueError, match="unknown P-Tuning prompt encoder 'gru'"):
    abstract_params(CFG, functools.partial(PTuningPrompt, length=2, prompt_encoder="gru"))
