"""Heads through the real trainer and CLI: gin files, trainable head, numpy export, eval
from the exported files, checks on the task, and the 8-device mesh equal to one."""

from __future__ import annotations

import functools
import json
import os
import re

import jax
import numpy as np
import pytest

from prompt_tuning import convert, head_models, tree
from prompt_tuning.data import demo as demo_data
from prompt_tuning.data import demo_heads  # noqa: F401 (registers the demo head tasks)
from prompt_tuning.prompts import Prompt
from prompt_tuning.t5 import T5Config, Transformer, heads
from prompt_tuning.training import partitioning, trainer
from tests.cli_testing import LEGACY_BASE, run_cli, tiny_job_args

NER = {
  "MIXTURE_OR_TASK_NAME": "'demo_ner'",
  "TASK_FEATURE_LENGTHS": "{'inputs': 24, 'targets': 24}",
  "NUM_LABELS": "7",
  "trainer.train.optimizer_factory": "@optimizers.adamw",
  "LEARNING_RATE": "0.01",
  "trainer.train.num_eval_examples": "16",
}


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory):
  model_dir = tmp_path_factory.mktemp("ner") / "run"
  args = tiny_job_args(
    "train",
    "prompt_finetune.gin",
    "prompt_tuning/configs/heads/token.gin",
    MODEL_DIR=repr(str(model_dir)),
    TRAIN_STEPS="6",
    EVAL_PERIOD="6",
    CHECKPOINT_PERIOD="6",
    **NER,
  )
  result = run_cli(args)
  assert result.returncode == 0, result.stderr[-3000:]
  return model_dir, result


def _eval_values(text: str) -> dict[str, float]:
  return {k: float(v) for k, v in re.findall(r"\b(f1|precision|recall)\W+([\d.]+)", text)}


def test_a_head_run_trains_and_exports_the_head_beside_the_prompt(ner_run):
  model_dir, result = ner_run
  exported = sorted(os.listdir(model_dir / "numpy_checkpoints" / "checkpoint_6"))
  assert exported == ["encoder.prompt.prompt.npy", "head.bias.npy", "head.kernel.npy"]
  kernel = np.load(model_dir / "numpy_checkpoints" / "checkpoint_6" / "head.kernel.npy")
  assert kernel.shape == (T5Config.from_size("tiny").emb_dim, 7)
  rows = [json.loads(line) for line in open(model_dir / "metrics.jsonl")]
  losses = [row["loss"] for row in rows if row["kind"] == "train"]
  assert losses and all(np.isfinite(losses))
  assert any("demo_ner/f1" in row for row in rows if row["kind"] == "eval")


def test_eval_reads_the_trained_head_and_prompt_from_their_files(ner_run):
  model_dir, train = ner_run
  numpy_dir = model_dir / "numpy_checkpoints" / "checkpoint_6"
  result = run_cli(
    tiny_job_args(
      "eval",
      "prompt_eval.gin",
      "prompt_tuning/configs/heads/token.gin",
      PROMPT_FILE=repr(str(numpy_dir / "encoder.prompt.prompt.npy")),
      HEAD_DIR=repr(str(numpy_dir)),
      **{k: v for k, v in NER.items() if not k.startswith("trainer.") and k != "LEARNING_RATE"},
      **{"run_eval.evaluate.num_examples": "16"},
    )
  )
  assert result.returncode == 0, result.stderr[-3000:]
  trained = _eval_values(train.stderr.split("eval at step 6")[-1])
  evaluated = _eval_values(result.stdout + result.stderr)
  assert trained and evaluated["f1"] == pytest.approx(trained["f1"], abs=0.01)


def test_a_wrong_number_of_labels_is_one_line_naming_the_fix(tmp_path):
  args = tiny_job_args(
    "train",
    "prompt_finetune.gin",
    "prompt_tuning/configs/heads/token.gin",
    MODEL_DIR=repr(str(tmp_path / "run")),
    TRAIN_STEPS="1",
    **{**NER, "NUM_LABELS": "9"},
  )
  result = run_cli(args)
  assert result.returncode != 0
  assert "--gin.NUM_LABELS=7" in result.stderr


def test_a_text_task_is_refused_with_a_head(tmp_path):
  args = tiny_job_args(
    "train",
    "prompt_finetune.gin",
    "prompt_tuning/configs/heads/sequence.gin",
    MODEL_DIR=repr(str(tmp_path / "run")),
    TRAIN_STEPS="1",
    NUM_LABELS="2",
  )
  result = run_cli(args)
  assert result.returncode != 0 and "_cls" in result.stderr


# ------------------------------------------------------------------ mesh


@pytest.fixture(scope="module")
def head_model():
  config = T5Config.from_size("tiny", vocab_size=demo_data.demo_vocab_size())
  module = Transformer(
    config,
    input_prompt=functools.partial(Prompt, length=3),
    head_factory=functools.partial(heads.SequenceHead, num_labels=2),
  )
  return head_models.SequenceClassificationModel(module)


def _train(model, model_dir, mesh_shape):
  fast = {"xla_backend_optimization_level": 0}
  if mesh_shape is None:
    partitioner = partitioning.Partitioner(devices=jax.devices()[:1], compiler_options=fast)
  else:
    partitioner = partitioning.Partitioner(mesh_shape=mesh_shape, compiler_options=fast)
  return trainer.train(
    model=model,
    mixture_or_task_name="demo_sentiment_cls",
    task_feature_lengths={"inputs": 24, "targets": 1},
    train_steps=2,
    batch_size=8,
    model_dir=str(model_dir),
    initial_checkpoint_path=LEGACY_BASE,
    eval_period=None,
    checkpoint_period=2,
    log_period=2,
    partitioner=partitioner,
  )


def test_a_head_trains_on_a_2x4_mesh_as_on_one_device(head_model, tmp_path):
  if jax.device_count() < 8:
    pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8")
  one = _train(head_model, tmp_path / "one", None)
  mesh = _train(head_model, tmp_path / "mesh", (2, 4))
  flat_one, flat_mesh = tree.flatten(one.trainable), tree.flatten(mesh.trainable)
  assert set(flat_one) == {"encoder/prompt/prompt", "head/kernel", "head/bias"}
  # Float32 summation order only (see test_mesh_training.py for Adafactor's growth of
  # it): 1.3e-5 measured after two steps, while training moved the head by far more.
  for name in flat_one:
    np.testing.assert_allclose(flat_mesh[name], flat_one[name], atol=4e-5, err_msg=name)
  assert np.abs(flat_one["head/kernel"]).max() > 1e-2
  assert mesh.trainable["head"]["kernel"].sharding.is_fully_replicated
  # Frozen means frozen: after training every base parameter is the checkpoint's, bit for bit.
  base = tree.flatten(convert.load_params(LEGACY_BASE))
  after = tree.flatten(jax.device_get(one.params))
  for name, value in base.items():
    np.testing.assert_array_equal(after[name], value, err_msg=name)
