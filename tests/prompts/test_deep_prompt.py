"""P-Tuning v2 deep prompts: layer ranges and stacks, prompt-only training, zero length,
folding the reparameterisation, export and reload, and cached decoding."""

from __future__ import annotations

import functools
import os

import flax
import jax
import numpy as np
import pytest

from prompt_tuning import export, tree
from prompt_tuning.prompts import family
from prompt_tuning.prompts.deep_prompt import DeepPrompt
from prompt_tuning.t5 import Transformer, abstract_params
from prompt_tuning.training import trainable
from tests.prompts import family_testing
from tests.prompts.family_testing import CFG
from tests.prompts.family_testing import logits as logits_of


def init(hook=None):
  return family_testing.eager_init(layer_prefix=hook)


DEEP = functools.partial(DeepPrompt, length=3)
REPARAMETERIZED = functools.partial(DeepPrompt, length=3, reparameterize=True, hidden_dim=16)


def _shapes(factory):
  return {
    k: v.shape
    for k, v in flax.traverse_util.flatten_dict(
      abstract_params(CFG, layer_prefix=factory), sep="/"
    ).items()
    if "layer_prompt" in k
  }


def test_parameters_per_layer_range_stack_and_reparameterisation():
  layers = CFG.num_encoder_layers
  assert _shapes(DEEP) == {
    "encoder/layer_prompt/prompt": (layers, 3, CFG.emb_dim),
    "decoder/layer_prompt/prompt": (layers, 3, CFG.emb_dim),
  }
  assert _shapes(functools.partial(DEEP, layer_range=(1, 2), stacks=("encoder",))) == {
    "encoder/layer_prompt/prompt": (1, 3, CFG.emb_dim)
  }
  reparameterized = _shapes(REPARAMETERIZED)
  assert reparameterized["encoder/layer_prompt/mlp/embedding"] == (3, CFG.emb_dim)
  assert reparameterized["encoder/layer_prompt/mlp/out/kernel"] == (16, layers * CFG.emb_dim)
  train, frozen = trainable.split(abstract_params(CFG, layer_prefix=DEEP))
  assert tree.names(train) == ["decoder/layer_prompt/prompt", "encoder/layer_prompt/prompt"]
  assert tree.names(frozen) == tree.names(abstract_params(CFG))


def test_only_the_chosen_layers_get_a_prompt():
  hook = DEEP(CFG, "encoder", layer_range=(1, 2))
  prefixes, variables = hook.init_with_output(jax.random.PRNGKey(0))
  assert prefixes[0] is None
  np.testing.assert_array_equal(prefixes[1].hidden, variables["params"]["prompt"].value[0])
  assert DEEP(CFG, "decoder", stacks=("encoder",)).init_with_output(jax.random.PRNGKey(0))[0] == [
    None,
    None,
  ]
  for bad in [(1, 1), (0, 3), (-1, 1)]:
    with pytest.raises(ValueError, match="is not a non-empty .start, stop. within the 2"):
      DEEP(CFG, "encoder", layer_range=bad).init(jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="unknown stack"):
    DEEP(CFG, "encoder", stacks=("middle",)).init(jax.random.PRNGKey(0))


def test_depth_prompts_the_first_or_the_last_layers_of_each_stack():
  assert DEEP(CFG, "encoder", depth=1).layer_indices() == range(0, 1)
  assert DEEP(CFG, "encoder", depth=1, depth_from="top").layer_indices() == range(1, 2)
  assert DEEP(CFG, "decoder", depth=2, depth_from="top").layer_indices() == range(0, 2)
  with pytest.raises(ValueError, match="between 1 and the 2"):
    DEEP(CFG, "encoder", depth=3).layer_indices()
  with pytest.raises(ValueError, match="not both"):
    DEEP(CFG, "encoder", depth=1, layer_range=(0, 1)).layer_indices()
  with pytest.raises(ValueError, match="bottom"):
    DEEP(CFG, "encoder", depth=1, depth_from="middle").layer_indices()


def test_zero_length_deep_prompt_equals_the_plain_backbone():
  factory = functools.partial(DeepPrompt, length=0)
  np.testing.assert_allclose(
    logits_of(Transformer(CFG, layer_prefix=factory), init(factory)),
    logits_of(Transformer(CFG), init()),
    rtol=0,
    atol=1e-6,
  )


def test_training_moves_only_the_deep_prompts_and_the_loss_falls():
  module = Transformer(CFG, layer_prefix=DEEP)
  losses, _, _ = family_testing.train_hook(module, init(DEEP), learning_rate=0.1, steps=8)
  assert losses[-1] < 0.7 * losses[0], losses


def test_fold_export_reload_and_cached_decoding(tmp_path):
  module = Transformer(CFG, layer_prefix=REPARAMETERIZED)
  params = init(REPARAMETERIZED)
  folded_module, folded = family.fold(module, params)
  assert folded["encoder"]["layer_prompt"]["prompt"].shape == (2, 3, CFG.emb_dim)
  logits = logits_of(module, params, size=2)
  np.testing.assert_allclose(logits_of(folded_module, folded, size=2), logits, atol=1e-5)

  paths = export.export(module, params, str(tmp_path))
  assert sorted(os.path.basename(p) for p in paths) == [
    "decoder.layer_prompt.prompt.npy",
    "encoder.layer_prompt.prompt.npy",
  ]
  reloaded = init(functools.partial(DeepPrompt, length=3, init_dir=str(tmp_path)))
  for stack in ("encoder", "decoder"):
    np.testing.assert_array_equal(
      reloaded[stack]["layer_prompt"]["prompt"], folded[stack]["layer_prompt"]["prompt"]
    )

  family_testing.assert_cached_greedy_equals_uncached(module, params)
