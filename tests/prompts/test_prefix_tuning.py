"""Prefix-Tuning: parameters, prompt-only training, zero length, cached decoding, and
folding the MLP away (in memory, through export files, and through the CLI)."""

from __future__ import annotations

import functools
import os

import flax
import flax.linen as nn
import jax
import numpy as np
import pytest

from prompt_tuning import models
from prompt_tuning.prompts import family
from prompt_tuning.prompts.prefix_tuning import PrefixTuning
from prompt_tuning.t5 import T5Config, Transformer, abstract_params
from prompt_tuning.training import optimizers, trainable
from prompt_tuning.training.train_step import TrainState, make_train_step

CFG = T5Config.from_size("tiny", vocab_size=128)
WIDTH = CFG.num_heads * CFG.head_dim
PREFIX = functools.partial(PrefixTuning, length=3, hidden_dim=16, cross_attention=True)


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


def _init(layer_prefix=None):
  """Parameters of the tiny model with a hook, initialised eagerly (cheaper than
  compiling an init); the backbone's values do not depend on the hook."""
  tokens = np.ones((1, 1), np.int32)
  return nn.unbox(Transformer(CFG, layer_prefix=layer_prefix).init(
      jax.random.PRNGKey(0), tokens, tokens, tokens)["params"])


@pytest.fixture(scope="module")
def plain_logits():
  return _logits(Transformer(CFG), _init())


def _logits(module, params, size=8):
  b = _batch(size)
  return np.asarray(jax.jit(module.apply)({"params": params}, b["encoder_input_tokens"],
                                          b["decoder_input_tokens"],
                                          b["decoder_target_tokens"]))


def test_parameters_shapes_and_the_default_trainable_regex():
  abstract = abstract_params(CFG, layer_prefix=PREFIX)
  flat = {k: v.shape for k, v in flax.traverse_util.flatten_dict(abstract, sep="/").items()}
  layers = CFG.num_encoder_layers
  assert flat["encoder/layer_prompt/mlp/embedding"] == (3, CFG.emb_dim)
  assert flat["encoder/layer_prompt/mlp/hidden/kernel"] == (CFG.emb_dim, 16)
  assert flat["encoder/layer_prompt/mlp/out/kernel"] == (16, layers * 2 * WIDTH)
  # The decoder's MLP also makes the cross-attention prefixes.
  assert flat["decoder/layer_prompt/mlp/out/kernel"] == (16, layers * 4 * WIDTH)
  train, frozen = trainable.split(abstract)
  assert all("/layer_prompt/mlp/" in name for name in trainable.parameter_names(train))
  assert len(trainable.parameter_names(train)) == 2 * 5
  assert trainable.parameter_names(frozen) == trainable.parameter_names(
      abstract_params(CFG))
  folded = flax.traverse_util.flatten_dict(
      abstract_params(CFG, layer_prefix=functools.partial(PREFIX, reparameterize=False)),
      sep="/")
  assert folded["decoder/layer_prompt/cross_value"].shape == (layers, 3, WIDTH)
  assert folded["encoder/layer_prompt/key"].shape == (layers, 3, WIDTH)
  assert "encoder/layer_prompt/cross_key" not in folded


def test_zero_length_prefix_equals_the_plain_backbone(plain_logits):
  factory = functools.partial(PREFIX, length=0)
  logits = _logits(Transformer(CFG, layer_prefix=factory), _init(factory))
  np.testing.assert_allclose(logits, plain_logits, rtol=0, atol=1e-6)


def test_training_moves_only_the_prefix_mlp_and_the_loss_falls():
  module = Transformer(CFG, layer_prefix=PREFIX)
  params = _init(PREFIX)
  train, frozen = trainable.split(params)
  frozen_before = jax.tree.map(np.array, frozen)
  optimizer = optimizers.adafactor(learning_rate=0.01)
  state = TrainState.create(train, optimizer)
  step = jax.jit(make_train_step(models.EncoderDecoderModel(module), optimizer))
  batch = _batch()
  losses = []
  for _ in range(8):
    state, metrics = step(state, frozen, batch, jax.random.PRNGKey(0))
    losses.append(float(metrics["loss"]))
  assert losses[-1] < 0.8 * losses[0], losses
  jax.tree.map(np.testing.assert_array_equal, frozen, frozen_before)
  moved = jax.tree.map(lambda a, b: not np.allclose(a, b), state.trainable, train)
  assert all(jax.tree.leaves(moved))
  # The optimiser holds state for the trainable parameters only.
  assert sum(x.size for x in jax.tree.leaves(state.opt_state)) < 3 * trainable.count(train)


def test_fold_gives_identical_outputs_and_cached_decoding_equals_uncached(plain_logits):
  module = Transformer(CFG, layer_prefix=PREFIX)
  params = _init(PREFIX)
  folded_module, folded = family.fold(module, params)
  assert folded_module.layer_prefix.keywords["reparameterize"] is False
  assert folded["encoder"]["layer_prompt"]["key"].shape == (CFG.num_encoder_layers, 3,
                                                            WIDTH)
  logits = _logits(module, params, size=2)
  np.testing.assert_allclose(_logits(folded_module, folded, size=2), logits, atol=1e-5)
  assert not np.allclose(logits, plain_logits[:2], atol=1e-3)  # The prefix matters.

  # Greedy cached decoding (through the model layer, the MLP recomputed every step)
  # equals step-by-step argmax over uncached full forwards.
  model = models.EncoderDecoderModel(module)
  b = _batch(size=2)
  length = 4
  decoded = np.asarray(jax.jit(model.predict_batch)(params, {
      "encoder_input_tokens": b["encoder_input_tokens"],
      "decoder_target_tokens": np.ones((2, length), np.int32)}))
  forward = jax.jit(module.apply)
  tokens = np.zeros((2, length), np.int32)
  for t in range(length):
    inputs = np.concatenate([np.zeros((2, 1), np.int32), tokens[:, :-1]], axis=1)
    logits = forward({"params": params}, b["encoder_input_tokens"], inputs,
                     np.ones_like(inputs))
    tokens[:, t] = np.argmax(np.asarray(logits)[:, t], axis=-1)
  # After EOS the decoder pads; compare up to and including the first EOS.
  for row in range(2):
    end = (list(tokens[row]).index(1) + 1) if 1 in tokens[row] else length
    np.testing.assert_array_equal(decoded[row, :end], tokens[row, :end])


def test_export_writes_folded_prefixes_that_load_as_the_plain_module(tmp_path):
  module = Transformer(CFG, layer_prefix=PREFIX)
  params = _init(PREFIX)
  paths = family.export(module, params, str(tmp_path / "export"))
  assert sorted(os.path.basename(p) for p in paths) == [
      "decoder.layer_prompt.cross_key.npy", "decoder.layer_prompt.cross_value.npy",
      "decoder.layer_prompt.key.npy", "decoder.layer_prompt.value.npy",
      "encoder.layer_prompt.key.npy", "encoder.layer_prompt.value.npy"]
  served = functools.partial(PREFIX, reparameterize=False,
                             init_dir=str(tmp_path / "export"))
  loaded = _init(served)
  _, folded = family.fold(module, params)
  for stack in ("encoder", "decoder"):
    for name, value in folded[stack]["layer_prompt"].items():
      np.testing.assert_array_equal(loaded[stack]["layer_prompt"][name], value)
  missing = functools.partial(PREFIX, reparameterize=False, init_dir=str(tmp_path))
  with pytest.raises(ValueError, match="encoder.layer_prompt.key.npy does not exist"):
    abstract_params(CFG, layer_prefix=missing)


def test_bad_lengths_and_stacks_are_clear_errors():
  with pytest.raises(ValueError, match="prefix length must be >= 0"):
    PrefixTuning(CFG, "encoder", length=-1).init(jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="unknown stack 'middle'"):
    PrefixTuning(CFG, "middle", length=2).init(jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="no reparameterisation to fold"):
    PrefixTuning(CFG, "encoder", length=2, reparameterize=False).apply(
        {"params": {}}, method="folded_params")
