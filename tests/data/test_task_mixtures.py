"""Multi-task mixtures: every example says its task, as the batch feature prompt_ids or
as the upstream's task-index token, through training batches and evaluation."""

from __future__ import annotations

import functools

import gin
import numpy as np
import seqio

from prompt_tuning import models
from prompt_tuning.data import demo, task_mixtures
from prompt_tuning.evaluation import evaluator
from prompt_tuning.prompts.multi_task import MultiTaskPrompt
from prompt_tuning.t5 import T5Config, Transformer, init_params
from prompt_tuning.training import data

LENGTHS = {"inputs": 24, "targets": 4}
TASKS = [demo.SENTIMENT_TASK, demo.SENTIMENT_TASK]


def test_training_batches_carry_each_examples_task_id():
  name, index_name = task_mixtures.register_mixture("demo_two_tasks", TASKS)
  assert index_name == "task_index_demo_two_tasks"
  batch = next(data.train_batches(name, LENGTHS, 16, seed=0))
  assert batch["prompt_ids"].shape == (16,) and set(batch["prompt_ids"]) == {0, 1}
  plain = next(data.train_batches(demo.SENTIMENT_TASK, LENGTHS, 4, seed=0))
  assert "prompt_ids" not in plain
  indexed = next(data.train_batches(index_name, LENGTHS, 16, seed=0))
  assert "prompt_ids" not in indexed
  assert set(indexed["encoder_input_tokens"][:, 0]) == {32099, 32098}


def test_a_task_index_example_is_its_task_with_the_sentinel_in_front():
  task_mixtures.register_mixture("demo_two_tasks", TASKS)
  plain = seqio.get_mixture_or_task(demo.SENTIMENT_TASK).get_dataset(
    LENGTHS, "validation", shuffle=False
  )
  indexed = seqio.get_mixture_or_task(f"task_index_1_{demo.SENTIMENT_TASK}").get_dataset(
    LENGTHS, "validation", shuffle=False
  )
  a, b = next(plain.as_numpy_iterator()), next(indexed.as_numpy_iterator())
  np.testing.assert_array_equal(b["inputs"], np.concatenate([[32098], a["inputs"]]))
  np.testing.assert_array_equal(b["targets"], a["targets"])


def test_a_multi_task_model_evaluates_on_the_mixture_per_task():
  name, _ = task_mixtures.register_mixture("demo_two_tasks", TASKS)
  config = T5Config.from_size("tiny", vocab_size=demo.demo_vocab_size())
  prompt = functools.partial(MultiTaskPrompt, num_tasks=2, length=2)
  model = models.EncoderDecoderModel(Transformer(config, input_prompt=prompt))
  evaluation = evaluator.Evaluation(
    name, LENGTHS, 4, model.predict_batch, model.score_batch, num_examples=6
  )
  seen = []
  real = evaluation._predict
  evaluation._predict = lambda params, batch: (
    seen.append(batch["prompt_ids"]) or real(params, batch)
  )
  results = evaluation.evaluate(init_params(config, np.zeros(2, np.uint32), prompt))
  assert sorted(results) == [f"{demo.SENTIMENT_TASK}_prompt_id_{k}" for k in (0, 1)]
  assert {int(i) for ids in seen for i in ids} == {0, 1}


def test_gin_registers_the_configured_mixtures(clean_gin):
  gin.parse_config(
    "from __gin__ import dynamic_registration\n"
    "from prompt_tuning.data import task_mixtures\n"
    f"task_mixtures.register_configured.mixtures = {{'demo_gin_mix': {TASKS!r}}}\n"
  )
  assert task_mixtures.register_configured() == ["demo_gin_mix", "task_index_demo_gin_mix"]
  assert "demo_gin_mix" in seqio.MixtureRegistry.names()
