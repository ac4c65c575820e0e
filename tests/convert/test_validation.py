"""A checkpoint that is not the configured model fails once, saying what it is."""

from __future__ import annotations

import numpy as np
import pytest

from prompt_tuning import tree
from prompt_tuning.convert import (
  CheckpointMismatchError,
  check,
  infer_config,
  load_params,
  save_params_orbax,
  write_t5x_checkpoint,
)
from prompt_tuning.convert.validation import expected_shapes, size_name
from prompt_tuning.t5 import T5Config
from tests.convert.conftest import random_params


@pytest.mark.parametrize("size", ["tiny", "small", "base", "mt5_small"])
def test_infer_config_names_the_size(size):
  config = infer_config(expected_shapes(T5Config.from_size(size)))
  assert size_name(config) == size


def test_base_checkpoint_for_small_model_lists_everything_and_names_base():
  base = expected_shapes(T5Config.from_size("base"))
  with pytest.raises(CheckpointMismatchError) as error:
    check(base, T5Config.from_size("small"), source="gs://bucket/t5_1_1_lm100k_base")
  e = error.value
  assert e.looks_like == "'base'"
  assert e.missing == []
  assert "encoder/layers_11/mlp/wo/kernel" in e.unexpected  # base has 12 layers.
  assert ("token_embedder/embedding", (32128, 768), (32128, 512)) in e.wrong_shape
  message = str(e)
  assert "gs://bucket/t5_1_1_lm100k_base" in message and "'small'" in message
  assert "looks like 'base'" in message
  assert "token_embedder/embedding: (32128, 768) vs (32128, 512)" in message
  assert message.count("\n") < 60  # Long lists are summarised.


def test_mismatched_checkpoint_on_disk(tmp_path, tiny_config):
  other = tiny_config.replace(mlp_dim=48)  # Same names, different MLP width.
  path = save_params_orbax(random_params(other), str(tmp_path / "p"))
  with pytest.raises(CheckpointMismatchError) as error:
    load_params(path, tiny_config)
  e = error.value
  assert len(e.wrong_shape) == 3 * 4  # wi_0, wi_1, wo in 2 encoder + 2 decoder layers.
  assert e.looks_like.startswith("an unnamed size (d_model=32") and "d_ff=48" in e.looks_like


def test_missing_and_unexpected_with_regexes(tmp_path, tiny_params, tiny_config):
  flat = tree.flatten(tiny_params)
  del flat["decoder/logits_dense/kernel"]
  flat["encoder/prompt/prompt"] = np.zeros((3, 32), np.float32)
  path = write_t5x_checkpoint(tree.unflatten(flat), str(tmp_path / "ck"))
  with pytest.raises(CheckpointMismatchError) as error:
    load_params(path, tiny_config)
  assert error.value.missing == ["decoder/logits_dense/kernel"]
  assert error.value.unexpected == []  # The prompt is tolerated by default...
  loaded = load_params(path, tiny_config, allow_missing="logits_dense")
  assert loaded["encoder"]["prompt"]["prompt"].shape == (3, 32)  # ...and returned.
  with pytest.raises(CheckpointMismatchError) as error:
    load_params(path, tiny_config, allow_missing="logits_dense", allow_unexpected=None)
  assert error.value.unexpected == ["encoder/prompt/prompt"]
