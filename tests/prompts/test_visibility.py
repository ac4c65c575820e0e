"""Attention visibility between the input prompt and the input in the encoder: the
upstream's five options, the encoder-decoder default of everything visible."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from prompt_tuning import launch, tree
from prompt_tuning.prompts import Prompt
from prompt_tuning.t5 import Transformer, network
from prompt_tuning.training import trainable
from tests.prompts.family_testing import (
  CFG,
  assert_cached_greedy_equals_uncached,
  assert_mesh_scores_equal_one_device,
  eager_init,
  logits,
  train_hook,
)

P = 2
PROMPT = functools.partial(Prompt, length=P)
SEES_PROMPT = ("input->input", "input->prompt", "prompt->prompt")
CAUSAL = ("input->input", "input->prompt", "prompt->prompt;causal")
ALONE = ("input->input", "input->prompt")


def _mask(visibility):
  real = np.array([[True, True, True, True, False]])  # P=2 prompt positions, 2 tokens, 1 pad.
  visible = network.check_visibility(visibility)
  return np.asarray(network.prompt_attention_mask(real, P, visible))[0, 0].astype(int)


def test_masks_follow_the_upstreams_rules():
  everything = [[1, 1, 1, 1, 0]] * 4 + [[0] * 5]
  np.testing.assert_array_equal(_mask(network.ALL_VISIBLE), everything)
  inputs = [[1, 1, 1, 1, 0]] * 2 + [[0] * 5]
  np.testing.assert_array_equal(_mask(SEES_PROMPT), [[1, 1, 0, 0, 0]] * 2 + inputs)
  np.testing.assert_array_equal(_mask(CAUSAL), [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0]] + inputs)
  np.testing.assert_array_equal(_mask(ALONE), [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0]] + inputs)
  # Only the prompt's own choice: prompt->input without prompt->prompt sees itself and inputs.
  np.testing.assert_array_equal(
    _mask(("prompt->input",)), [[1, 0, 1, 1, 0], [0, 1, 1, 1, 0]] + inputs
  )


def test_the_always_on_pairs_are_added_and_causal_wins_over_plain_prompt_to_prompt():
  assert network.check_visibility(()) == {"input->input", "input->prompt"}
  both = network.check_visibility(("prompt->prompt", "prompt->prompt;causal"))
  assert "prompt->prompt" not in both and "prompt->prompt;causal" in both
  with pytest.raises(ValueError, match="unknown prompt visibility \\['prompt->everything'\\]"):
    network.check_visibility(("prompt->everything",))


def _encoded(visibility, params, tokens):
  module = Transformer(CFG, input_prompt=PROMPT, prompt_visibility=visibility)
  encoded = module.apply({"params": params}, tokens, method=lambda m, t: m.encode(t))
  return np.asarray(encoded.sequence)


@pytest.fixture(scope="module")
def params():
  return eager_init(PROMPT)


def test_a_prompt_that_does_not_see_the_input_encodes_alike_for_every_input(params):
  a = np.array([[5, 6, 7, 1]], np.int32)
  b = np.array([[9, 8, 1, 0]], np.int32)
  for visibility in (SEES_PROMPT, CAUSAL, ALONE):
    np.testing.assert_allclose(
      _encoded(visibility, params, a)[:, :P], _encoded(visibility, params, b)[:, :P], atol=1e-6
    )
  assert not np.allclose(
    _encoded(network.ALL_VISIBLE, params, a)[:, :P], _encoded(network.ALL_VISIBLE, params, b)[:, :P]
  )


def test_a_causal_prompt_position_does_not_see_later_prompt_rows(params):
  tokens = np.array([[5, 6, 7, 1]], np.int32)
  flat = tree.flatten(params)
  prompt = np.array(flat["encoder/prompt/prompt"])
  prompt[1] += 1.0
  later = tree.unflatten({**flat, "encoder/prompt/prompt": prompt})
  np.testing.assert_allclose(
    _encoded(CAUSAL, params, tokens)[:, 0], _encoded(CAUSAL, later, tokens)[:, 0], atol=1e-6
  )
  assert not np.allclose(
    _encoded(SEES_PROMPT, params, tokens)[:, 0], _encoded(SEES_PROMPT, later, tokens)[:, 0]
  )


def test_the_default_is_the_encoder_decoder_setting_everything_visible(params):
  default = Transformer(CFG, input_prompt=PROMPT)
  explicit = Transformer(CFG, input_prompt=PROMPT, prompt_visibility=network.ALL_VISIBLE)
  np.testing.assert_array_equal(logits(default, params), logits(explicit, params))
  assert not np.allclose(
    logits(default, params),
    logits(Transformer(CFG, input_prompt=PROMPT, prompt_visibility=ALONE), params),
  )


def test_restricted_visibility_trains_decodes_cached_and_shards(params):
  module = Transformer(CFG, input_prompt=PROMPT, prompt_visibility=CAUSAL)
  losses, _, state = train_hook(module, params, 0.3, 8)
  assert losses[-1] < losses[0]
  trained = trainable.merge(state.trainable, trainable.split(params)[1])
  assert_cached_greedy_equals_uncached(module, trained)
  assert_mesh_scores_equal_one_device(module, params)


@pytest.mark.parametrize(
  "file, expected",
  [
    ("all", network.ALL_VISIBLE),
    ("prompt_sees_prompt", SEES_PROMPT),
    ("prompt_causal", CAUSAL),
    ("prompt_alone", ALONE),
  ],
)
def test_each_visibility_gin_file_sets_its_option(clean_gin, file, expected):
  launch.parse_gin(
    [
      "prompt_tuning/configs/models/t5_1_1_small_prompt.gin",
      f"prompt_tuning/configs/prompts/visibility/{file}.gin",
    ],
    ["network.t5_config.size = 'tiny'"],
    [],
  )
  assert network.transformer().prompt_visibility == expected
