"""Each periodic evaluation shows in TensorBoard beside the training scalars: its metrics
as scalars and its first decoded examples as text, written by process 0 only."""

from __future__ import annotations

import os
from typing import Any

import pytest
import seqio
import tensorflow as tf
from tensorboard.backend.event_processing import plugin_event_accumulator as event_accumulator

from prompt_tuning.evaluation import evaluator
from prompt_tuning.training import logging_utils
from tests.cli_testing import run_cli, tiny_job_args

STEPS = 2


def _events(directory: str) -> event_accumulator.EventAccumulator:
  """Every event file of `directory` read back, scalars and text (tensors) alike."""
  accumulator = event_accumulator.EventAccumulator(directory, size_guidance={"tensors": 0})
  accumulator.Reload()
  return accumulator


def _tags(accumulator: event_accumulator.EventAccumulator, plugin: str) -> list[str]:
  """The tags TensorBoard's `plugin` ("scalars", "text") shows."""
  return [
    tag
    for tag in accumulator.Tags()["tensors"]
    if accumulator.SummaryMetadata(tag).plugin_data.plugin_name == plugin
  ]


def _values(accumulator: event_accumulator.EventAccumulator, tag: str) -> list[tuple[int, Any]]:
  return [(e.step, tf.make_ndarray(e.tensor_proto).item()) for e in accumulator.Tensors(tag)]


def _texts(accumulator: event_accumulator.EventAccumulator, tag: str) -> list[tuple[int, str]]:
  assert tag in _tags(accumulator, "text")
  return [(step, value.decode()) for step, value in _values(accumulator, tag)]


def _train(model_dir: str, **bindings: str):
  args = tiny_job_args(
    "train",
    "prompt_finetune.gin",
    MODEL_DIR=repr(model_dir),
    TRAIN_STEPS=str(STEPS),
    CHECKPOINT_PERIOD=str(STEPS),
    EVAL_PERIOD="1",
    **{
      "trainer.train.num_eval_examples": "4",
      "evaluator.build_evaluation.summary_dir": repr(os.path.join(model_dir, "train")),
      **bindings,
    },
  )
  result = run_cli(args)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  model_dir = str(tmp_path_factory.mktemp("tb") / "run")
  _train(model_dir)
  return model_dir


def test_a_training_run_with_periodic_evaluation_writes_eval_scalars_beside_train_ones(trained):
  events = _events(os.path.join(trained, "train"))
  scalars = _tags(events, "scalars")
  assert "train/loss" in scalars
  assert "eval/demo_sentiment/accuracy" in scalars
  accuracy = _values(events, "eval/demo_sentiment/accuracy")
  assert [step for step, _ in accuracy] == list(range(1, STEPS + 1))
  jsonl = [r for r in logging_utils.read_metrics(trained) if r["kind"] == "eval"]
  assert [(r["step"], pytest.approx(r["demo_sentiment/accuracy"])) for r in jsonl] == accuracy


def test_each_evaluation_writes_its_first_decoded_examples_as_text(trained):
  texts = _texts(_events(os.path.join(trained, "train")), "eval/demo_sentiment/examples")
  assert [step for step, _ in texts] == list(range(1, STEPS + 1))
  task = seqio.get_mixture_or_task("demo_sentiment")
  dataset = task.get_dataset(None, split="validation", shuffle=False).take(3)
  expected = [
    (e["inputs_pretokenized"].decode(), e["targets_pretokenized"].decode())
    for e in dataset.as_numpy_iterator()
  ]
  for _, text in texts:
    lines = text.split("\n\n")
    assert len(lines) == evaluator.SUMMARY_EXAMPLES
    for line, (inputs, target) in zip(lines, expected):
      assert line.startswith(f"{inputs} -> ") and line.endswith(f" ({target})")


def test_the_eval_job_writes_its_examples_with_the_same_binding(trained, tmp_path):
  prompt = os.path.join(
    trained, "numpy_checkpoints", f"checkpoint_{STEPS}", "encoder.prompt.prompt.npy"
  )
  summary_dir = str(tmp_path / "eval_tb")
  args = tiny_job_args(
    "eval",
    "prompt_eval.gin",
    PROMPT_FILE=repr(prompt),
    **{
      "evaluator.build_evaluation.summary_dir": repr(summary_dir),
      "evaluator.build_evaluation.summary_examples": "2",
    },
  )
  result = run_cli(args)
  assert result.returncode == 0, result.stderr[-3000:]
  texts = _texts(_events(summary_dir), "eval/demo_sentiment/examples")
  assert [step for step, _ in texts] == [0] and len(texts[0][1].split("\n\n")) == 2


def test_only_process_0_writes_the_examples(monkeypatch, tmp_path):
  monkeypatch.setattr(logging_utils, "is_leader", lambda: False)
  summary_dir = str(tmp_path / "tb")
  evaluation = evaluator.SeqioEvaluation(
    "demo_sentiment", {"inputs": 24, "targets": 4}, num_examples=2, summary_dir=summary_dir
  )
  assert len(evaluation.evaluator.loggers) == 1  # The prediction log only.
  monkeypatch.setattr(logging_utils, "is_leader", lambda: True)
  evaluation = evaluator.SeqioEvaluation(
    "demo_sentiment", {"inputs": 24, "targets": 4}, num_examples=2, summary_dir=summary_dir
  )
  assert len(evaluation.evaluator.loggers) == 2


def test_the_text_of_an_example_names_input_prediction_and_target():
  examples = [("great film", "positive"), ("dull", None)]
  lines = evaluator.example_lines(examples, [b"positive", "neutral"])
  assert lines == ["great film -> positive (positive)", "dull -> neutral"]


def test_summary_examples_must_be_a_count(tmp_path):
  with pytest.raises(ValueError, match="summary_examples must be an integer >= 0, got -1"):
    evaluator.SeqioEvaluation(
      "demo_sentiment", {"inputs": 24, "targets": 4}, summary_dir=str(tmp_path), summary_examples=-1
    )


def test_rank_classification_scores_are_shown_when_there_are_no_predictions(tmp_path):
  logger = evaluator._ExampleSummaries(str(tmp_path), max_examples=2)
  task = seqio.get_mixture_or_task("demo_sentiment")
  dataset = task.get_dataset(None, split="validation", shuffle=False)
  logger("demo_sentiment", 7, {}, dataset, {"score": [-1.5, -0.25, -3.0]}, [1, 0, 1])
  texts = _texts(_events(str(tmp_path)), "eval/demo_sentiment/examples")
  assert [step for step, _ in texts] == [7]
  lines = texts[0][1].split("\n\n")
  targets = [e["targets_pretokenized"].decode() for e in dataset.take(2).as_numpy_iterator()]
  assert len(lines) == 2
  assert lines[0].endswith(f" -> -1.5 ({targets[0]})")
  assert lines[1].endswith(f" -> -0.25 ({targets[1]})")


def test_a_text_metric_of_a_task_is_written_as_text_and_nothing_else_is(tmp_path):
  logger = evaluator._ExampleSummaries(str(tmp_path / "a"), max_examples=0)
  metrics = {"accuracy": seqio.metrics.Scalar(0.5), "report": seqio.metrics.Text("all good")}
  logger("demo_sentiment", None, metrics, None, {"prediction": ["x"]}, ["y"])
  events = _events(str(tmp_path / "a"))
  assert _tags(events, "text") == ["eval/demo_sentiment/report"]
  assert _texts(events, "eval/demo_sentiment/report") == [(0, "all good")]
  # With neither examples nor text metrics it writes no file at all.
  empty = evaluator._ExampleSummaries(str(tmp_path / "b"), max_examples=0)
  empty("demo_sentiment", 3, {"accuracy": seqio.metrics.Scalar(1.0)}, None, None, None)
  assert not os.path.exists(tmp_path / "b")
