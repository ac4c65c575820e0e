"""P-Tuning: the prompt encoder's parameters, prompt-only training, zero length, cached
decoding, and the exported prompt served as a plain prompt from its .npy file."""

from __future__ import annotations

import functools
import os

import flax
import numpy as np
import pytest

from prompt_tuning import export, tree
from prompt_tuning.prompts import Prompt, initializers
from prompt_tuning.prompts.p_tuning import PTuningPrompt
from prompt_tuning.t5 import Transformer, abstract_params
from prompt_tuning.training import trainable
from tests.prompts import family_testing
from tests.prompts.family_testing import CFG
from tests.prompts.family_testing import logits as logits_of


def init(hook=None):
  return family_testing.eager_init(input_prompt=hook)


LSTM = functools.partial(PTuningPrompt, length=3)
MLP = functools.partial(PTuningPrompt, length=3, prompt_encoder="mlp", hidden_dim=16)


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
  assert all(n.startswith("encoder/prompt/") for n in tree.names(train))
  assert tree.names(frozen) == tree.names(abstract_params(CFG))
  mlp = tree.names(trainable.split(abstract_params(CFG, MLP))[0])
  assert mlp == [
    "encoder/prompt/embedding",
    "encoder/prompt/mlp_hidden/bias",
    "encoder/prompt/mlp_hidden/kernel",
    "encoder/prompt/mlp_out/bias",
    "encoder/prompt/mlp_out/kernel",
  ]


def test_zero_length_prompt_equals_the_plain_backbone():
  empty = functools.partial(PTuningPrompt, length=0)
  params = init(empty)
  assert "prompt" not in params["encoder"]
  np.testing.assert_array_equal(
    logits_of(Transformer(CFG, input_prompt=empty), params), logits_of(Transformer(CFG), init())
  )


def test_training_moves_only_the_prompt_encoder_and_the_loss_falls():
  module = Transformer(CFG, input_prompt=LSTM)
  losses, _, _ = family_testing.train_hook(module, init(LSTM), learning_rate=0.1, steps=20)
  # Through the input alone, a 3-vector prompt moves a random tiny model slowly: 20 steps
  # take about 14% off the loss.
  assert np.mean(losses[-3:]) < 0.92 * losses[0], losses


def test_exported_prompt_serves_as_a_plain_prompt_and_cached_decoding_matches(tmp_path):
  module = Transformer(CFG, input_prompt=MLP)
  params = init(MLP)
  paths = export.export(module, params, str(tmp_path))
  assert [os.path.basename(p) for p in paths] == ["encoder.prompt.prompt.npy"]
  prompt = np.load(paths[0])
  assert prompt.shape == (3, CFG.emb_dim) and prompt.dtype == np.float32
  # The file loads through the plain prompt's `from_file` initialiser (PROMPT_FILE).
  plain = functools.partial(Prompt, length=3, init=initializers.from_file(paths[0]))
  served = init(plain)
  np.testing.assert_array_equal(served["encoder"]["prompt"]["prompt"], prompt)
  logits = logits_of(module, params, size=2)
  np.testing.assert_allclose(
    logits_of(Transformer(CFG, input_prompt=plain), served, size=2), logits, atol=1e-5
  )
  assert not np.allclose(logits, logits_of(Transformer(CFG), init(), size=2), atol=1e-3)

  family_testing.assert_cached_greedy_equals_uncached(module, params)


def test_unknown_prompt_encoder_is_a_clear_error():
  with pytest.raises(ValueError, match="unknown P-Tuning prompt encoder 'gru'"):
    abstract_params(CFG, functools.partial(PTuningPrompt, length=2, prompt_encoder="gru"))
