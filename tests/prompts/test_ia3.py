"""IA3: ones-initialised scalings of every attention's keys and values and every MLP's
hidden state, under the per-layer hook; untrained it is the backbone, trained only the
scalings move."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

from prompt_tuning import tree
from prompt_tuning.prompts import Prompt
from prompt_tuning.prompts.ia3 import IA3
from prompt_tuning.t5 import Transformer
from tests.prompts.family_testing import (
  CFG,
  assert_cached_greedy_equals_uncached,
  assert_mesh_scores_equal_one_device,
  eager_init,
  logits,
  train_hook,
)


@pytest.fixture(scope="module")
def ia3_params():
  return eager_init(layer_prefix=IA3)


def test_every_attention_and_mlp_gets_scalings_of_the_upstreams_shapes(ia3_params):
  scalings = {n: v.shape for n, v in tree.flatten(ia3_params).items() if "ia3_scaling" in n}
  heads = (CFG.num_heads, CFG.head_dim)
  for i in range(CFG.num_encoder_layers):
    base = f"encoder/layer_prompt/layers_{i}"
    assert scalings[f"{base}/attention/key/ia3_scaling"] == heads
    assert scalings[f"{base}/attention/value/ia3_scaling"] == heads
    assert scalings[f"{base}/mlp/ia3_scaling"] == (CFG.mlp_dim,)
  for i in range(CFG.num_decoder_layers):
    base = f"decoder/layer_prompt/layers_{i}"
    for attention in ("self_attention", "encoder_decoder_attention"):
      assert scalings[f"{base}/{attention}/key/ia3_scaling"] == heads
      assert scalings[f"{base}/{attention}/value/ia3_scaling"] == heads
  per_layer = 2 * CFG.num_heads * CFG.head_dim
  expected = CFG.num_encoder_layers * (per_layer + CFG.mlp_dim)
  expected += CFG.num_decoder_layers * (2 * per_layer + CFG.mlp_dim)
  assert sum(int(np.prod(s)) for s in scalings.values()) == expected
  assert all(np.all(v == 1) for n, v in tree.flatten(ia3_params).items() if "ia3" in n)


def test_untrained_ia3_computes_exactly_the_backbone(ia3_params):
  flat = tree.flatten(ia3_params)
  backbone = tree.unflatten({n: v for n, v in flat.items() if "layer_prompt" not in n})
  np.testing.assert_array_equal(
    logits(Transformer(CFG, layer_prefix=IA3), ia3_params), logits(Transformer(CFG), backbone)
  )


def _rescaled(params, seed=0):
  """The IA3 scalings drawn around one, so that every scaling changes the outputs."""
  rng = np.random.RandomState(seed)
  flat = {
    name: (rng.uniform(0.5, 1.5, value.shape).astype(np.float32) if "ia3" in name else value)
    for name, value in tree.flatten(params).items()
  }
  return tree.unflatten(flat)


@pytest.mark.parametrize("part", ["attention/key", "attention/value", "mlp", "cross"])
def test_each_scaling_changes_what_the_model_computes(ia3_params, part):
  module = Transformer(CFG, layer_prefix=IA3)
  pattern = "encoder_decoder_attention" if part == "cross" else part
  flat = tree.flatten(ia3_params)
  names = [n for n in flat if "ia3" in n and pattern in n]
  assert names
  changed = tree.unflatten({n: (v * 1.5 if n in names else v) for n, v in flat.items()})
  assert not np.allclose(logits(module, changed), logits(module, ia3_params))


def test_training_moves_only_the_scalings_and_the_loss_falls(ia3_params):
  losses, _, state = train_hook(Transformer(CFG, layer_prefix=IA3), ia3_params, 3e-2, 12)
  assert losses[-1] < losses[0]
  assert all("ia3_scaling" in name for name in tree.names(state.trainable))


def test_ia3_combines_with_an_input_prompt_and_both_train():
  prompt = functools.partial(Prompt, length=3)
  params = eager_init(input_prompt=prompt, layer_prefix=IA3)
  module = Transformer(CFG, input_prompt=prompt, layer_prefix=IA3)
  losses, _, state = train_hook(module, params, 3e-2, 4)
  names = tree.names(state.trainable)
  assert "encoder/prompt/prompt" in names and any("ia3_scaling" in n for n in names)
  assert losses[-1] < losses[0]


def test_cached_decoding_with_scalings_equals_uncached(ia3_params):
  assert_cached_greedy_equals_uncached(Transformer(CFG, layer_prefix=IA3), _rescaled(ia3_params))


def test_scalings_on_a_2x4_mesh_equal_one_device(ia3_params):
  assert jax.device_count() >= 8
  assert_mesh_scores_equal_one_device(Transformer(CFG, layer_prefix=IA3), _rescaled(ia3_params))


def test_scalings_reload_from_an_export_directory(ia3_params, tmp_path):
  params = _rescaled(ia3_params, seed=3)
  for name, value in tree.flatten(params).items():
    if "ia3" in name:
      np.save(tmp_path / (name.replace("/", ".") + ".npy"), value)
  reloaded = eager_init(layer_prefix=functools.partial(IA3, init_dir=str(tmp_path)))
  for name, value in tree.flatten(params).items():
    if "ia3" in name:
      np.testing.assert_array_equal(tree.flatten(reloaded)[name], value)
