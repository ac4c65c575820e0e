"""Partial loading: the base from a checkpoint, trainables fresh, missing ones an error."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

from prompt_tuning.prompts import Prompt
from prompt_tuning.t5 import T5Config, Transformer, init_params
from prompt_tuning.training import initialization

CFG = T5Config.from_size("tiny", vocab_size=128)
MODULE = Transformer(CFG, input_prompt=functools.partial(Prompt, length=3))


@pytest.fixture(scope="module")
def base():
  return init_params(CFG, jax.random.PRNGKey(0))


def test_base_is_loaded_and_the_prompt_initialised_fresh(base):
  params = initialization.initial_params(
    MODULE, jax.random.PRNGKey(1), "ckpt", loader=lambda _: base
  )
  assert params["encoder"]["prompt"]["prompt"].shape == (3, CFG.emb_dim)
  np.testing.assert_array_equal(
    params["decoder"]["logits_dense"]["kernel"], base["decoder"]["logits_dense"]["kernel"]
  )


def test_missing_parameters_are_listed(base):
  partial = jax.tree.map(lambda x: x, base)
  del partial["decoder"]["decoder_norm"]
  with pytest.raises(ValueError, match="missing from the checkpoint: decoder/decoder_norm/scale"):
    initialization.initial_params(MODULE, jax.random.PRNGKey(1), "ckpt", loader=lambda _: partial)
