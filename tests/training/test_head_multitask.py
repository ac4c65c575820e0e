"""P-Tuning v2's multi-task setting through the CLI: one shared prompt, one head per task
of a mixture (tasks with different label counts), and the shared prompt plus one task's
head starting a single-task run; the checks that refuse a mismatched configuration."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import seqio
import tensorflow as tf

from prompt_tuning.data import classification, metrics, task_mixtures
from prompt_tuning.data import demo as demo_data
from prompt_tuning.data import demo_heads
from prompt_tuning.prompts import Prompt
from prompt_tuning.t5 import T5Config, Transformer, heads
from prompt_tuning.training import initialization
from tests.cli_testing import run_cli, tiny_job_args

LENGTH_TASK = "test_sentence_length_cls"
LENGTH_LABELS = ("short", "medium", "long")
MIXTURE = "test_heads_mix"
WORDS = "the film was good bad long dull bright and very".split()


def _length_dataset(split: str, shuffle_files: bool = False, seed: int | None = None):
  del shuffle_files, seed
  rng = np.random.default_rng(0 if split == "train" else 1)
  inputs, targets = [], []
  for _ in range(64):
    label = int(rng.integers(3))
    count = (2, 5, 9)[label]
    inputs.append("sentence: " + " ".join(rng.choice(WORDS, count)))
    targets.append(LENGTH_LABELS[label])
  return tf.data.Dataset.from_tensor_slices({"inputs": inputs, "targets": targets})


@pytest.fixture(scope="module", autouse=True)
def length_task():
  source = seqio.FunctionDataSource(
    _length_dataset,
    splits=("train", "validation"),
    num_input_examples={"train": 64, "validation": 64},
  )
  classification.add_classification_task(
    LENGTH_TASK,
    source,
    [],
    LENGTH_LABELS,
    None,
    [metrics.accuracy],
    demo_data.get_demo_vocabulary(),
  )
  yield
  seqio.TaskRegistry.remove(LENGTH_TASK)


COMMON = {
  "TASK_FEATURE_LENGTHS": "{'inputs': 24, 'targets': 1}",
  "trainer.train.optimizer_factory": "@optimizers.adamw",
  "trainer.train.num_eval_examples": "16",
  "BATCH_SIZE": "8",
}
MULTI_TASK = {
  **COMMON,
  "MULTI_TASK_MIXTURES": repr({MIXTURE: [demo_heads.SENTIMENT_CLS_TASK, LENGTH_TASK]}),
  "MIXTURE_OR_TASK_NAME": repr(MIXTURE),
  "HEAD_TASKS": "2",
  "NUM_LABELS": "3",
  "HEAD_LABELS_PER_TASK": "(2, 3)",
}


def _eval_rows(model_dir) -> list[dict]:
  rows = [json.loads(line) for line in open(model_dir / "metrics.jsonl")]
  return [row for row in rows if row["kind"] == "eval"]


@pytest.fixture(scope="module")
def multi_task_run(tmp_path_factory, length_task):
  model_dir = tmp_path_factory.mktemp("multi") / "run"
  args = tiny_job_args(
    "train",
    "prompt_finetune.gin",
    "prompt_tuning/configs/heads/sequence.gin",
    MODEL_DIR=repr(str(model_dir)),
    TRAIN_STEPS="8",
    EVAL_PERIOD="8",
    CHECKPOINT_PERIOD="8",
    LEARNING_RATE="0.03",
    **MULTI_TASK,
  )
  result = run_cli(args)
  assert result.returncode == 0, result.stderr[-3000:]
  return model_dir


def test_a_mixture_trains_one_shared_prompt_and_one_head_per_task(multi_task_run):
  exported = multi_task_run / "numpy_checkpoints" / "checkpoint_8"
  kernel, bias = np.load(exported / "head.kernel.npy"), np.load(exported / "head.bias.npy")
  width = T5Config.from_size("tiny").emb_dim
  assert kernel.shape == (2, width, 3) and bias.shape == (2, 3)
  assert np.load(exported / "encoder.prompt.prompt.npy").shape == (3, width)
  # Sentiment (task 0) has two labels: its third class got no gradient, so its bias stays
  # at its zero start (decoupled weight decay keeps zero at zero), while task 1's moved.
  assert bias[0, 2] == 0.0 and np.all(bias[1] != 0.0) and np.all(bias[0, :2] != 0.0)
  (row,) = _eval_rows(multi_task_run)
  for task in (f"{demo_heads.SENTIMENT_CLS_TASK}_prompt_id_0", f"{LENGTH_TASK}_prompt_id_1"):
    assert 0.0 <= row[f"{task}/accuracy"] <= 100.0


def test_the_shared_prompt_and_a_tasks_head_start_a_single_task_run(multi_task_run, tmp_path):
  exported = multi_task_run / "numpy_checkpoints" / "checkpoint_8"
  model_dir = tmp_path / "single"
  args = tiny_job_args(
    "train",
    "prompt_finetune.gin",
    "prompt_tuning/configs/prompts/from_file.gin",
    "prompt_tuning/configs/heads/sequence.gin",
    MODEL_DIR=repr(str(model_dir)),
    PROMPT_FILE=repr(str(exported / "encoder.prompt.prompt.npy")),
    HEAD_DIR=repr(str(exported)),
    HEAD_INIT_TASK="0",
    MIXTURE_OR_TASK_NAME=repr(demo_heads.SENTIMENT_CLS_TASK),
    NUM_LABELS="2",
    TRAIN_STEPS="1",
    EVAL_PERIOD="1",
    CHECKPOINT_PERIOD="1",
    LEARNING_RATE="0.0",
    **COMMON,
  )
  result = run_cli(args)
  assert result.returncode == 0, result.stderr[-3000:]
  # With a zero learning rate the single-task model is the multi-task model's task 0:
  # the same accuracy on the same examples.
  multi = _eval_rows(multi_task_run)[0][f"{demo_heads.SENTIMENT_CLS_TASK}_prompt_id_0/accuracy"]
  single = _eval_rows(model_dir)[0][f"{demo_heads.SENTIMENT_CLS_TASK}/accuracy"]
  assert single == pytest.approx(multi)
  start = np.load(model_dir / "numpy_checkpoints" / "checkpoint_1" / "head.kernel.npy")
  np.testing.assert_array_equal(start, np.load(exported / "head.kernel.npy")[0][:, :2])


# ------------------------------------------------------------------ checks


def _module(**head_kwargs) -> Transformer:
  config = T5Config.from_size("tiny", vocab_size=demo_data.demo_vocab_size())
  return Transformer(
    config,
    input_prompt=functools.partial(Prompt, length=3),
    head_factory=functools.partial(heads.SequenceHead, **head_kwargs),
  )


@pytest.fixture(scope="module")
def mixture(length_task):
  name, _ = task_mixtures.register_mixture(
    "test_heads_check_mix", [demo_heads.SENTIMENT_CLS_TASK, LENGTH_TASK]
  )
  return name


def test_a_mixture_of_label_counts_without_per_task_counts_names_both_settings(mixture):
  with pytest.raises(ValueError, match=r'NUM_LABELS=3 and --gin.HEAD_LABELS_PER_TASK="\(2, 3\)"'):
    initialization.check_head_task(mixture, _module(num_labels=3, num_tasks=2))


def test_per_task_counts_that_disagree_with_the_tasks_are_refused(mixture):
  with pytest.raises(ValueError, match=r"tasks have \(2, 3\) labels"):
    initialization.check_head_task(
      mixture, _module(num_labels=3, num_tasks=2, labels_per_task=(3, 2))
    )
  initialization.check_head_task(
    mixture, _module(num_labels=3, num_tasks=2, labels_per_task=(2, 3))
  )


def test_a_multi_task_head_needs_rows_that_say_their_task(mixture):
  with pytest.raises(ValueError, match="MULTI_TASK_MIXTURES"):
    initialization.check_head_task(
      demo_heads.SENTIMENT_CLS_TASK, _module(num_labels=2, num_tasks=2)
    )
  with pytest.raises(ValueError, match=r"multi-task heads \(HEAD_TASKS > 1\)"):
    initialization.check_head_task(
      LENGTH_TASK, _module(num_labels=3, num_tasks=1, labels_per_task=(3,))
    )
