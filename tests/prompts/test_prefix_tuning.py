"""Prefix-Tuning: parameters, prompt-only training, zero length, cached decoding, and
folding the MLP away (in memory, through export files, and through the CLI)."""

from __future__ import annotations

import functools
import os

import flax
import jax
import numpy as np
import pytest

from prompt_tuning import export, tree
from prompt_tuning.prompts import family
from prompt_tuning.prompts.prefix_tuning import PrefixTuning
from prompt_tuning.t5 import Transformer, abstract_params
from prompt_tuning.training import trainable
from tests.prompts import family_testing
from tests.prompts.family_testing import CFG
from tests.prompts.family_testing import logits as logits_of


def init(hook=None):
  return family_testing.eager_init(layer_prefix=hook)


WIDTH = CFG.num_heads * CFG.head_dim
PREFIX = functools.partial(PrefixTuning, length=3, hidden_dim=16, cross_attention=True)


@pytest.fixture(scope="module")
def plainlogits_of():
  return logits_of(Transformer(CFG), init())


@pytest.fixture(scope="module")
def plain_logits():
  return logits_of(Transformer(CFG), init())


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
  assert all("/layer_prompt/mlp/" in name for name in tree.names(train))
  assert len(tree.names(train)) == 2 * 5
  assert tree.names(frozen) == tree.names(abstract_params(CFG))
  folded = flax.traverse_util.flatten_dict(
    abstract_params(CFG, layer_prefix=functools.partial(PREFIX, reparameterize=False)), sep="/"
  )
  assert folded["decoder/layer_prompt/cross_value"].shape == (layers, 3, WIDTH)
  assert folded["encoder/layer_prompt/key"].shape == (layers, 3, WIDTH)
  assert "encoder/layer_prompt/cross_key" not in folded


def test_zero_length_prefix_equals_the_plain_backbone(plain_logits):
  factory = functools.partial(PREFIX, length=0)
  logits = logits_of(Transformer(CFG, layer_prefix=factory), init(factory))
  np.testing.assert_allclose(logits, plain_logits, rtol=0, atol=1e-6)


def test_training_moves_only_the_prefix_mlp_and_the_loss_falls():
  module = Transformer(CFG, layer_prefix=PREFIX)
  losses, train, state = family_testing.train_hook(
    module, init(PREFIX), learning_rate=0.01, steps=8
  )
  assert losses[-1] < 0.8 * losses[0], losses
  # The optimiser holds state for the trainable parameters only.
  assert sum(x.size for x in jax.tree.leaves(state.opt_state)) < 3 * tree.count(train)


def test_fold_gives_identical_outputs_and_cached_decoding_equals_uncached(plain_logits):
  module = Transformer(CFG, layer_prefix=PREFIX)
  params = init(PREFIX)
  folded_module, folded = family.fold(module, params)
  assert folded_module.layer_prefix.keywords["reparameterize"] is False
  assert folded["encoder"]["layer_prompt"]["key"].shape == (CFG.num_encoder_layers, 3, WIDTH)
  logits = logits_of(module, params, size=2)
  np.testing.assert_allclose(logits_of(folded_module, folded, size=2), logits, atol=1e-5)
  assert not np.allclose(logits, plain_logits[:2], atol=1e-3)  # The prefix matters.

  family_testing.assert_cached_greedy_equals_uncached(module, params)


def test_export_writes_folded_prefixes_that_load_as_the_plain_module(tmp_path):
  module = Transformer(CFG, layer_prefix=PREFIX)
  params = init(PREFIX)
  paths = export.export(module, params, str(tmp_path / "export"))
  assert sorted(os.path.basename(p) for p in paths) == [
    "decoder.layer_prompt.cross_key.npy",
    "decoder.layer_prompt.cross_value.npy",
    "decoder.layer_prompt.key.npy",
    "decoder.layer_prompt.value.npy",
    "encoder.layer_prompt.key.npy",
    "encoder.layer_prompt.value.npy",
  ]
  served = functools.partial(PREFIX, reparameterize=False, init_dir=str(tmp_path / "export"))
  loaded = init(served)
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
      {"params": {}}, method="folded_params"
    )
