"""Prefix-Tuning in PEFT's T5 layout: decoder-only positioned prefixes read from PEFT's one
tensor, training, folding its projection, export, and cached decoding. Equality with PEFT
itself is in tests/test_peft_interop.py."""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest

from prompt_tuning import export, tree
from prompt_tuning.prompts import family, peft_prefix
from prompt_tuning.t5 import Transformer
from tests.prompts import family_testing
from tests.prompts.family_testing import CFG
from tests.prompts.family_testing import logits as logits_of

WIDTH = CFG.num_heads * CFG.head_dim
PLAIN = functools.partial(peft_prefix.PeftPrefixTuning, length=3)
PROJECTED = functools.partial(PLAIN, reparameterize=True, hidden_dim=16)


def init(hook=None):
  return family_testing.eager_init(layer_prefix=hook)


@pytest.mark.parametrize(
  "num_layers, expected",
  [(2, [(0, 1), (0, 1)]), (3, [(0, 1), (4, 5), (2, 3)]), (4, [(0, 1), (4, 5), (0, 1), (4, 5)])],
)
def test_decoder_layers_read_the_blocks_peft_cuts_them_into(num_layers, expected):
  assert [peft_prefix.block_indices(num_layers, layer) for layer in range(num_layers)] == expected


def test_only_the_decoder_has_the_prefix_as_one_peft_tensor():
  flat = tree.flatten(init(PLAIN))
  prefix = {name: value.shape for name, value in flat.items() if "layer_prompt" in name}
  assert prefix == {
    "decoder/layer_prompt/prompt_embeddings": (3, CFG.num_encoder_layers * 2 * WIDTH)
  }


def test_the_prefix_changes_the_logits_and_its_positions_carry_relative_bias():
  params = init(PLAIN)
  plain = logits_of(Transformer(CFG), init())
  prefixed = logits_of(Transformer(CFG, layer_prefix=PLAIN), params)
  assert not np.allclose(prefixed, plain, atol=1e-3)
  # The same keys and values as memory slots (no position bias) compute something else.
  unpositioned = _without_positions(PLAIN)
  assert not np.allclose(logits_of(Transformer(CFG, layer_prefix=unpositioned), params), prefixed)


def _without_positions(factory):
  class Unpositioned(peft_prefix.PeftPrefixTuning):
    def __call__(self):
      return [None if p is None else p.replace(positioned=False) for p in super().__call__()]

  return functools.partial(Unpositioned, **factory.keywords)


def test_training_moves_only_the_prefix_and_the_loss_falls():
  module = Transformer(CFG, layer_prefix=PLAIN)
  losses, _, _ = family_testing.train_hook(module, init(PLAIN), learning_rate=0.3, steps=8)
  assert losses[-1] < 0.8 * losses[0], losses


def test_folding_the_projection_gives_identical_outputs_and_exports_peft_s_tensor(tmp_path):
  module = Transformer(CFG, layer_prefix=PROJECTED)
  params = init(PROJECTED)
  folded_module, folded = family.fold(module, params)
  assert folded_module.layer_prefix.keywords["reparameterize"] is False
  logits = logits_of(module, params, size=2)
  np.testing.assert_allclose(logits_of(folded_module, folded, size=2), logits, atol=1e-5)
  paths = export.export(module, params, str(tmp_path / "export"))
  assert [os.path.basename(p) for p in paths] == ["decoder.layer_prompt.prompt_embeddings.npy"]
  served = functools.partial(PLAIN, init_dir=str(tmp_path / "export"))
  np.testing.assert_allclose(
    logits_of(Transformer(CFG, layer_prefix=served), init(served), 2), logits, atol=1e-5
  )


def test_cached_decoding_with_a_positioned_prefix_equals_uncached():
  family_testing.assert_cached_greedy_equals_uncached(
    Transformer(CFG, layer_prefix=PLAIN), init(PLAIN), length=5
  )


def test_a_positioned_prefix_in_the_encoder_is_refused():
  class EncoderToo(peft_prefix.PeftPrefixTuning):
    def __call__(self):
      prefixes = super().__call__()
      if self.stack == "encoder":
        key = np.zeros((3, WIDTH), np.float32)
        from prompt_tuning.t5.layers import LayerPrefix

        return [LayerPrefix(key=key, value=key, positioned=True) for _ in prefixes]
      return prefixes

  with pytest.raises(ValueError, match="prefix the decoder only"):
    init(functools.partial(EncoderToo, length=3))
