"""`trainer.train` called directly: evaluation comes only through `evaluation_factory`,
with the documented arguments; the loss per target token reaches metrics.jsonl and the
progress lines on stderr."""

from __future__ import annotations

import functools
import io
import json
import os

import jax
import numpy as np
import pytest

from prompt_tuning import models
from prompt_tuning.data import demo as demo_data
from prompt_tuning.prompts import Prompt
from prompt_tuning.t5 import T5Config, Transformer
from prompt_tuning.training import logging_utils, partitioning, trainer

FEATURES = {"inputs": 24, "targets": 4}
FAST_COMPILE = {"xla_backend_optimization_level": 0}


@pytest.fixture(scope="module")
def model() -> models.EncoderDecoderModel:
  config = T5Config.from_size("tiny", vocab_size=demo_data.demo_vocab_size())
  return models.EncoderDecoderModel(
    Transformer(config, input_prompt=functools.partial(Prompt, length=3))
  )


class _RecordingEvaluation:
  """Stands in for `prompt_tuning.evaluation`: remembers how it was built and called."""

  def __init__(self):
    self.built_with = None
    self.steps = []

  def factory(self, *args, **kwargs):
    self.built_with = (args, kwargs)
    return self

  def evaluate(self, params, step):
    assert "encoder" in params and "token_embedder" in params  # The merged tree.
    self.steps.append(step)
    return {"demo_sentiment": {"accuracy": 50.0 + step, "note": "not a number"}}


def _train(model, base_checkpoint, model_dir, **kwargs):
  return trainer.train(
    model=model,
    mixture_or_task_name="demo_sentiment",
    task_feature_lengths=FEATURES,
    train_steps=4,
    batch_size=4,
    model_dir=str(model_dir),
    initial_checkpoint_path=base_checkpoint,
    checkpoint_period=2,
    log_period=2,
    partitioner=partitioning.Partitioner(devices=jax.devices()[:1], compiler_options=FAST_COMPILE),
    **kwargs,
  )


def _rows(model_dir, kind):
  with open(os.path.join(model_dir, "metrics.jsonl")) as f:
    return [row for row in map(json.loads, f) if row["kind"] == kind]


def test_evaluation_is_built_by_the_factory_and_runs_every_eval_period(
  tmp_path, model, base_checkpoint, capsys
):
  evaluation = _RecordingEvaluation()
  result = _train(
    model,
    base_checkpoint,
    tmp_path,
    eval_period=2,
    eval_batch_size=2,
    eval_split="test",
    num_eval_examples=5,
    evaluate_at_start=True,
    evaluation_factory=evaluation.factory,
  )
  args, kwargs = evaluation.built_with
  assert args == (model, "demo_sentiment", FEATURES, 2)
  assert kwargs.keys() == {"split", "num_examples", "partitioner", "summary_dir"}
  assert kwargs["summary_dir"] == os.path.join(str(tmp_path), "train")
  assert kwargs["split"] == "test" and kwargs["num_examples"] == 5
  assert isinstance(kwargs["partitioner"], partitioning.Partitioner)
  assert evaluation.steps == [0, 2, 4]
  assert result.last_eval == {"demo_sentiment": {"accuracy": 54.0, "note": "not a number"}}
  # Numbers only, as "task/metric".
  assert [row["demo_sentiment/accuracy"] for row in _rows(tmp_path, "eval")] == [50, 52, 54]
  assert all("demo_sentiment/note" not in row for row in _rows(tmp_path, "eval"))
  assert "eval at step 4: demo_sentiment: accuracy=54.00" in capsys.readouterr().err


def test_without_a_factory_no_evaluation_runs_and_the_loss_is_shown_per_token(
  tmp_path, model, base_checkpoint, capsys
):
  result = _train(model, base_checkpoint, tmp_path, eval_period=2)
  assert result.last_eval == {} and _rows(tmp_path, "eval") == []
  train_rows = _rows(tmp_path, "train")
  assert [row["step"] for row in train_rows] == [2, 4]
  for row in train_rows:
    np.testing.assert_allclose(row["loss_per_token"], row["loss"] / row["num_tokens"])
    assert {"accuracy", "grad_norm", "learning_rate"} <= row.keys()
  lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("step ")]
  # stderr is not a terminal here: one plain line per log period, no progress bar.
  assert [line.split()[1] for line in lines] == ["2/4", "4/4"]
  assert all("steps/s" in line and "ETA" in line for line in lines)
  assert lines[-1].endswith(f"loss/token={train_rows[-1]['loss_per_token']:.4g}")


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def test_on_a_terminal_progress_is_a_tqdm_bar_and_other_processes_print_nothing():
  terminal = _Terminal()
  progress = logging_utils.Progress(4, 0, log_period=2, stream=terminal)
  for step in range(1, 5):
    progress.update(step, 0.25)
  progress.close()
  assert "\r" in terminal.getvalue() and "4/4" in terminal.getvalue()
  assert "loss/token=0.25" in terminal.getvalue()
  for stream in (_Terminal(), io.StringIO()):
    quiet = logging_utils.Progress(4, 0, log_period=1, enabled=False, stream=stream)
    quiet.update(4, 0.25)
    quiet.close()
    assert stream.getvalue() == ""
