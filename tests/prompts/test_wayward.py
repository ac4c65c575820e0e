"""Wayward prompts: the penalty's value by hand, zero at its own initialisation, logged
and pulling the prompt towards the text in training, counted once per step with
microbatches, its gin file and its one-line errors."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

from prompt_tuning import launch, models, tree
from prompt_tuning.prompts import initializers, wayward
from prompt_tuning.prompts.prompt import Prompt
from prompt_tuning.t5 import Transformer
from prompt_tuning.training import optimizers, trainable
from prompt_tuning.training.train_step import TrainState, make_train_step
from tests.prompts.family_testing import CFG, eager_init, toy_batch

TEXT = "classify the sentiment"


class WordPieces:
  """A stand-in vocabulary: one piece per word, ids from a fixed table."""

  ids = {"classify": 11, "the": 12, "sentiment": 40}
  vocab_size = 128

  def encode(self, text: str) -> list[int]:
    return [self.ids[word] for word in text.split()]


def _penalty(gamma: float = 0.01) -> wayward.WaywardPenalty:
  return wayward.WaywardPenalty(text=TEXT, gamma=gamma, vocabulary=WordPieces())


def _model_and_params(penalty: wayward.WaywardPenalty | None, init=None):
  prompt = functools.partial(Prompt, length=3, **({"init": init} if init else {}))
  params = eager_init(input_prompt=prompt)
  module = Transformer(CFG, input_prompt=prompt)
  penalties = [penalty] if penalty is not None else []
  return models.EncoderDecoderModel(module, penalties=penalties), params


def test_the_penalty_is_gamma_times_the_mean_squared_row_distance_to_the_embedded_text():
  _, params = _model_and_params(None)
  flat = tree.flatten(params)
  embedding = np.asarray(flat[wayward.EMBEDDING_PATH])
  prompt = np.asarray(flat[wayward.PROMPT_PATH])
  target = embedding[[11, 12, 40]]
  by_hand = 0.5 * sum(np.sum((prompt[i] - target[i]) ** 2) for i in range(3)) / 3
  value = jax.jit(_penalty(gamma=0.5))(params)
  np.testing.assert_allclose(float(value), by_hand, rtol=1e-5)


def test_a_prompt_initialised_from_the_same_text_starts_at_zero_penalty():
  _, params = _model_and_params(None)
  embedding = np.asarray(tree.flatten(params)[wayward.EMBEDDING_PATH])
  init = initializers.from_string(text=TEXT, embedding=embedding, vocabulary=WordPieces())
  _, params = _model_and_params(None, init=init)
  assert float(_penalty()(params)) == 0.0


def _train(model, params, steps: int, num_microbatches: int = 1):
  train, frozen = trainable.split(params)
  optimizer = optimizers.adafactor(learning_rate=0.3)
  state = TrainState.create(train, optimizer)
  step = jax.jit(make_train_step(model, optimizer, num_microbatches))
  metrics = []
  for _ in range(steps):
    state, m = step(state, frozen, toy_batch(), jax.random.PRNGKey(0))
    metrics.append(jax.device_get(m))
  return trainable.merge(state.trainable, frozen), frozen, metrics


def test_training_logs_the_term_and_pulls_the_prompt_towards_the_text_with_frozen_weights():
  plain_model, params = _model_and_params(None)
  wayward_model, _ = _model_and_params(_penalty(gamma=10.0))
  plain, _, _ = _train(plain_model, params, steps=5)
  pulled, frozen, metrics = _train(wayward_model, params, steps=5)
  assert "wayward_loss" in metrics[0] and "wayward_loss" not in _train(plain_model, params, 1)[2][0]
  assert metrics[-1]["wayward_loss"] < metrics[0]["wayward_loss"]
  # The logged loss is the data term plus the penalty.
  data_loss = float(wayward_model.loss_fn(params, toy_batch())[0])
  np.testing.assert_allclose(metrics[0]["loss"], data_loss + metrics[0]["wayward_loss"], rtol=1e-5)
  score = _penalty(gamma=1.0)
  assert float(score(pulled)) < float(score(plain))
  before = trainable.split(params)[1]
  jax.tree.map(np.testing.assert_array_equal, frozen, before)


def test_with_microbatches_the_penalty_counts_once_per_step():
  model, params = _model_and_params(_penalty(gamma=10.0))
  whole, _, whole_metrics = _train(model, params, steps=2)
  split, _, split_metrics = _train(model, params, steps=2, num_microbatches=2)
  np.testing.assert_allclose(
    tree.flatten(split)[wayward.PROMPT_PATH], tree.flatten(whole)[wayward.PROMPT_PATH], atol=1e-5
  )
  np.testing.assert_allclose(split_metrics[-1]["loss"], whole_metrics[-1]["loss"], rtol=1e-4)


def test_a_prompt_length_other_than_the_texts_piece_count_is_a_one_line_error():
  _, params = _model_and_params(None)
  penalty = wayward.WaywardPenalty(text="classify the", vocabulary=WordPieces())
  with pytest.raises(ValueError, match=r"has 2 pieces but PROMPT_LENGTH is 3; set --gin.PROMPT"):
    penalty(params)


def test_a_model_without_a_plain_prompt_is_told_what_wayward_prompts_need():
  params = eager_init()
  with pytest.raises(ValueError, match="need a plain input prompt"):
    _penalty()(params)


def test_the_gin_file_adds_the_penalty_to_the_model_with_the_upstream_gamma(clean_gin):
  launch.parse_gin(
    [
      "prompt_tuning/configs/models/t5_1_1_small_prompt.gin",
      "prompt_tuning/configs/prompts/wayward.gin",
    ],
    ["network.t5_config.size = 'tiny'", f"PROMPT_TEXT = '{TEXT}'"],
    [],
  )
  (penalty,) = models.EncoderDecoderModel().penalties
  assert isinstance(penalty, wayward.WaywardPenalty)
  assert (penalty.text, penalty.gamma, penalty.name) == (TEXT, 0.01, "wayward_loss")
