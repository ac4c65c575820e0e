"""A run's own `MODEL_DIR/checkpoint_N` is one more checkpoint format: recognised,
listed and read like the others, its parameters under their model names."""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning import convert, tree
from prompt_tuning.convert import commands, runs
from prompt_tuning.training import checkpoints, optimizers
from prompt_tuning.training.train_step import TrainState

PROMPT = np.arange(12, dtype=np.float32).reshape(3, 4)
EMBEDDING = np.linspace(-1, 1, 40, dtype=np.float32).reshape(10, 4)


def _save(model_dir, steps, *, full=False):
  trainable = {"encoder": {"prompt": {"prompt": jnp.asarray(PROMPT)}}}
  frozen = {"token_embedder": {"embedding": EMBEDDING}}
  with checkpoints.CheckpointManager(
    str(model_dir), keep=None, save_full=full, export_numpy=False
  ) as manager:
    for step in steps:
      state = TrainState.create(trainable, optimizers.adafactor())
      manager.save(
        state.replace(step=jnp.asarray(step, jnp.int32)),
        frozen=frozen if full else None,
        data_position=step,
      )
  return str(model_dir)


def test_a_run_checkpoint_is_detected_and_loads_its_trainable_parameters(tmp_path):
  model_dir = _save(tmp_path / "run", [3])
  path = os.path.join(model_dir, "checkpoint_3")
  assert convert.detect_format(path) == "run"
  assert convert.is_run_checkpoint(path) and not convert.is_run_checkpoint(model_dir)
  params = convert.load_params(path)
  assert tree.names(params) == ["encoder/prompt/prompt"]  # No optimiser state, no step.
  np.testing.assert_array_equal(np.asarray(params["encoder"]["prompt"]["prompt"]), PROMPT)
  with convert.open_checkpoint(path, "orbax") as reader:  # "orbax" also accepts a run.
    assert reader.format == "run"


def test_a_full_run_checkpoint_adds_its_frozen_parameters(tmp_path):
  path = os.path.join(_save(tmp_path / "run", [2], full=True), "checkpoint_2")
  params = tree.flatten(convert.load_params(path))
  assert sorted(params) == ["encoder/prompt/prompt", "token_embedder/embedding"]
  np.testing.assert_array_equal(convert.read_variable(path, "token_embedder/embedding"), EMBEDDING)
  with pytest.raises(ValueError, match="has no parameter 'decoder/logits_dense/kernel'"):
    convert.read_variable(path, "decoder/logits_dense/kernel")


def test_steps_are_listed_in_numeric_order_without_temporary_directories(tmp_path):
  model_dir = _save(tmp_path / "run", [9, 10, 2])
  os.makedirs(os.path.join(model_dir, "checkpoint_11.orbax-checkpoint-tmp-1"))
  os.makedirs(os.path.join(model_dir, "numpy_checkpoints"))
  assert runs.steps(model_dir) == [2, 9, 10]
  assert convert.newest_run_checkpoint(model_dir) == os.path.join(model_dir, "checkpoint_10")
  step_dir = os.path.join(model_dir, "checkpoint_9")
  assert convert.newest_run_checkpoint(step_dir) == step_dir


def test_a_directory_without_run_checkpoints_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match="holds no training checkpoint"):
    convert.newest_run_checkpoint(str(tmp_path))
  with pytest.raises(ValueError, match="missing does not exist; pass a training run"):
    convert.newest_run_checkpoint(str(tmp_path / "missing"))


def test_a_model_dir_passed_as_a_checkpoint_names_its_newest_step(tmp_path):
  model_dir = _save(tmp_path / "run", [4, 12])
  with pytest.raises(convert.CheckpointReadError, match="checkpoint_12 \\(the latest\\)"):
    convert.load_params(model_dir)


def test_inspect_checkpoint_lists_a_run_checkpoint(tmp_path, capsys):
  path = os.path.join(_save(tmp_path / "run", [1]), "checkpoint_1")
  assert commands.inspect_checkpoint(path) == 0
  out = capsys.readouterr().out
  assert "format: run" in out and "encoder/prompt/prompt" in out and "[3, 4]" in out
