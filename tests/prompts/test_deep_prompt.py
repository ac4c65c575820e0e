"""P-Tuning v2 deep prompts: layer ranges and stacks, prompt-only training, zero length,
folding the reparameterisation, export and reload, and cached decoding."""

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
from prompt_tuning.prompts.deep_prompt import DeepPrompt
from prompt_tuning.t5 import T5Config, Transformer, abstract_params
from prompt_tuning.training import optimizers, trainable
from prompt_tuning.training.train_step import TrainState, make_train_step

CFG = T5Config.from_size("tiny", vocab_size=128)
DEEP = functools.partial(DeepPrompt, length=3)
REPARAMETERIZED = functools.partial(DeepPrompt, length=3, reparameterize=True, hidden_dim=16)


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
  """Eager init (cheaper than compiling one); the backbone's values do not depend on
  the hook."""
  tokens = np.ones((1, 1), np.int32)
  return nn.unbox(Transformer(CFG, layer_prefix=layer_prefix).init(
      jax.random.PRNGKey(0), tokens, tokens, tokens)["params"])


def _logits(module, params, size=8):
  b = _batch(size)
  return np.asarray(jax.jit(module.apply)({"params": params}, b["encoder_input_tokens"],
                                          b["decoder_input_tokens"],
                                          b["decoder_target_tokens"]))


def _shapes(factory):
  return {k: v.shape for k, v in flax.traverse_util.flatten_dict(
      abstract_params(CFG, layer_prefix=factory), sep="/").items() if "layer_prompt" in k}


def test_parameters_per_layer_range_stack_and_reparameterisation():
  layers = CFG.num_encoder_layers
  assert _shapes(DEEP) == {"encoder/layer_prompt/prompt": (layers, 3, CFG.emb_dim),
                           "decoder/layer_prompt/prompt": (layers, 3, CFG.emb_dim)}
  assert _shapes(functools.partial(DEEP, layer_range=(1, 2), stacks=("encoder",))) == {
      "encoder/layer_prompt/prompt": (1, 3, CFG.emb_dim)}
  reparameterized = _shapes(REPARAMETERIZED)
  assert reparameterized["encoder/layer_prompt/mlp/embedding"] == (3, CFG.emb_dim)
  assert reparameterized["encoder/layer_prompt/mlp/out/kernel"] == (16, layers * CFG.emb_dim)
  train, frozen = trainable.split(abstract_params(CFG, layer_prefix=DEEP))
  assert trainable.parameter_names(train) == ["decoder/layer_prompt/prompt",
                                              "encoder/layer_prompt/prompt"]
  assert trainable.parameter_names(frozen) == trainable.parameter_names(abstract_params(CFG))


def test_only_the_chosen_layers_get_a_prompt():
  hook = DEEP(CFG, "encoder", layer_range=(1, 2))
  prefixes, variables = hook.init_with_output(jax.random.PRNGKey(0))
  assert prefixes[0] is None
  np.testing.assert_array_equal(prefixes[1].hidden, variables["params"]["prompt"].value[0])
  assert DEEP(CFG, "decoder", stacks=("encoder",)).init_with_output(
      jax.random.PRNGKey(0))[0] == [None, None]
  for bad in [(1, 1), (0, 3), (-1, 1)]:
    with pytest.raises(ValueError, match="is not a non-empty .start, stop. within the 2"):
      DEEP(CFG, "encoder", layer_range=bad).init(jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="unknown stack"):
    DEEP(CFG, "encoder", stacks=("middle",)).init(jax.random.PRNGKey(0))


def test_zero_length_deep_prompt_equals_the_plain_backbone():
  factory = functools.partial(DeepPrompt, length=0)
  np.testing.assert_allclose(_logits(Transformer(CFG, layer_prefix=factory), _init(factory)),
                             _logits(Transformer(CFG), _init()), rtol=0, atol=1e-6)


def test_training_moves_only_the_deep_prompts_and_the_loss_falls():
  module = Transformer(CFG, layer_prefix=DEEP)
  train, frozen = trainable.split(_init(DEEP))
  frozen_before = jax.tree.map(np.array, frozen)
  optimizer = optimizers.adafactor(learning_rate=0.1)
  state = TrainState.create(train, optimizer)
  step = jax.jit(make_train_step(models.EncoderDecoderModel(module), optimizer))
  batch = _batch()
  losses = []
  for _ in range(8):
    state, metrics = step(state, frozen, batch, jax.random.PRNGKey(0))
    losses.append(float(metrics["loss"]))
  assert losses[-1] < 0.7 * losses[0], losses
  jax.tree.map(np.testing.assert_array_equal, frozen, frozen_before)
  moved = jax.tree.map(lambda a, b: not np.allclose(a, b), state.trainable, train)
  assert all(jax.tree.leaves(moved))


def test_fold_export_reload_and_cached_decoding(tmp_path):
  module = Transformer(CFG, layer_prefix=REPARAMETERIZED)
  params = _init(REPARAMETERIZED)
  folded_module, folded = family.fold(module, params)
  assert folded["encoder"]["layer_prompt"]["prompt"].shape == (2, 3, CFG.emb_dim)
  logits = _logits(module, params, size=2)
  np.testing.assert_allclose(_logits(folded_module, folded, size=2), logits, atol=1e-5)

  paths = family.export(module, params, str(tmp_path))
  assert sorted(os.path.basename(p) for p in paths) == [
      "decoder.layer_prompt.prompt.npy", "encoder.layer_prompt.prompt.npy"]
  reloaded = _init(functools.partial(DeepPrompt, length=3, init_dir=str(tmp_path)))
  for stack in ("encoder", "decoder"):
    np.testing.assert_array_equal(reloaded[stack]["layer_prompt"]["prompt"],
                                  folded[stack]["layer_prompt"]["prompt"])

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
