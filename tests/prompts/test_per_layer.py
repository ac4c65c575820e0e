"""Per-layer prompts (the upstream's `per_layer`): before each encoder layer the input
prompt's positions are replaced by, or added to, that layer's prompt."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from prompt_tuning import tree
from prompt_tuning.prompts import Prompt
from prompt_tuning.prompts.deep_prompt import DeepPrompt
from prompt_tuning.t5 import Transformer
from tests.prompts.family_testing import (
  CFG,
  assert_cached_greedy_equals_uncached,
  assert_mesh_scores_equal_one_device,
  eager_init,
  logits,
  train_hook,
)

P = 3
INPUT_PROMPT = functools.partial(Prompt, length=P)


def _per_layer(combine, length=P):
  return functools.partial(DeepPrompt, length=length, stacks=("encoder",), combine=combine)


def _module(combine):
  return Transformer(CFG, input_prompt=INPUT_PROMPT, layer_prefix=_per_layer(combine))


@pytest.fixture(scope="module", params=["replace", "add"])
def setup(request):
  combine = request.param
  return combine, _module(combine), eager_init(INPUT_PROMPT, _per_layer(combine))


def _with(params, name, value):
  return tree.unflatten({**tree.flatten(params), name: value})


def test_replace_prompts_layers_after_the_first_and_add_prompts_every_layer(setup):
  combine, _, params = setup
  layers = CFG.num_encoder_layers - (1 if combine == "replace" else 0)
  flat = tree.flatten(params)
  assert flat["encoder/layer_prompt/prompt"].shape == (layers, P, CFG.emb_dim)
  assert flat["encoder/prompt/prompt"].shape == (P, CFG.emb_dim)
  assert not any(name.startswith("decoder/layer_prompt") for name in flat)


def test_zero_added_prompts_equal_prompt_tuning_exactly():
  params = eager_init(INPUT_PROMPT, _per_layer("add"))
  zero = _with(
    params,
    "encoder/layer_prompt/prompt",
    np.zeros((CFG.num_encoder_layers, P, CFG.emb_dim), np.float32),
  )
  plain = tree.unflatten({n: v for n, v in tree.flatten(params).items() if "layer_prompt" not in n})
  np.testing.assert_array_equal(
    logits(_module("add"), zero), logits(Transformer(CFG, input_prompt=INPUT_PROMPT), plain)
  )


def test_the_input_prompt_and_each_layers_prompt_change_the_outputs(setup):
  _, module, params = setup
  before = logits(module, params)
  flat = tree.flatten(params)
  moved_input = _with(params, "encoder/prompt/prompt", flat["encoder/prompt/prompt"] + 1.0)
  assert not np.allclose(logits(module, moved_input), before)
  layer_prompts = np.array(flat["encoder/layer_prompt/prompt"])
  layer_prompts[-1] += 1.0
  assert not np.allclose(
    logits(module, _with(params, "encoder/layer_prompt/prompt", layer_prompts)), before
  )


def test_layer_1_reads_its_prompt_in_place_of_or_added_to_the_prompt_positions(setup):
  """What layer 1's first norm receives at the P prompt positions, by hand: the layer-1
  prompt (replace) or layer 0's output there plus it (add); the rest is layer 0's."""
  combine, module, params = setup
  assert CFG.num_encoder_layers == 2
  tokens = np.array([[5, 6, 7, 1, 0]], np.int32)
  _, state = module.apply(
    {"params": params},
    tokens,
    method=lambda m, t: m.encode(t),
    capture_intermediates=True,
    mutable=["intermediates"],
  )
  captured = tree.flatten(state["intermediates"])
  layer_0 = np.asarray(captured["encoder/layers_0/__call__"][0])
  normed = np.asarray(captured["encoder/layers_1/pre_attention_layer_norm/__call__"][0])
  prompt = np.asarray(tree.flatten(params)["encoder/layer_prompt/prompt"])[-1]
  expected = layer_0.copy()
  expected[0, :P] = prompt if combine == "replace" else layer_0[0, :P] + prompt
  scale = np.asarray(tree.flatten(params)["encoder/layers_1/pre_attention_layer_norm/scale"])
  rms = np.sqrt(np.mean(np.square(expected), axis=-1, keepdims=True) + CFG.layer_norm_epsilon)
  np.testing.assert_allclose(normed, expected / rms * scale, rtol=1e-5, atol=1e-6)


def test_per_layer_prompts_need_an_input_prompt_of_their_length():
  with pytest.raises(ValueError, match="set the input prompt's length"):
    eager_init(INPUT_PROMPT, _per_layer("add", length=P + 1))
  with pytest.raises(ValueError, match="'replace' or 'add'"):
    eager_init(INPUT_PROMPT, _per_layer("concat"))


def test_training_moves_both_prompts_only_and_the_loss_falls(setup):
  _, module, params = setup
  losses, _, state = train_hook(module, params, 0.3, 8)
  assert losses[-1] < losses[0]
  assert sorted(tree.names(state.trainable)) == [
    "encoder/layer_prompt/prompt",
    "encoder/prompt/prompt",
  ]


def test_cached_decoding_equals_uncached_and_a_mesh_equals_one_device(setup):
  _, module, params = setup
  assert_cached_greedy_equals_uncached(module, params)
  assert_mesh_scores_equal_one_device(module, params)
