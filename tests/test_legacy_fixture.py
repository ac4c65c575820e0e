"""Runs written by the code before the layered redesign still resume, evaluate, infer
and export: `tests/fixtures/legacy_run/` holds a tiny base checkpoint and a 6-step
MODEL_DIR made by that code (`tests/fixtures/make_legacy_run.py`), and what the old code
made of them (`expected/`)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from prompt_tuning import convert
from prompt_tuning.data import demo as demo_data
from tests.cli_testing import run_cli, tiny_job_args

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "legacy_run")
BASE = os.path.join(FIXTURE, "base")
EXPECTED = os.path.join(FIXTURE, "expected")
PROMPT_6 = os.path.join(
  FIXTURE, "model_dir", "numpy_checkpoints", "checkpoint_6", "encoder.prompt.prompt.npy"
)


def _args(job, run_file, **bindings):
  return tiny_job_args(job, run_file, **bindings)


@pytest.fixture
def model_dir(tmp_path):
  """A writable copy of the old run's MODEL_DIR."""
  path = str(tmp_path / "model_dir")
  shutil.copytree(os.path.join(FIXTURE, "model_dir"), path)
  return path


def test_an_old_run_resumes_at_its_step_and_continues_as_the_old_code_did(model_dir):
  result = run_cli(
    _args(
      "train",
      "prompt_finetune.gin",
      MODEL_DIR=repr(model_dir),
      TRAIN_STEPS="9",
      CHECKPOINT_PERIOD="3",
      EVAL_PERIOD="None",
    )
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "at step 6 (6 batches consumed)" in result.stderr
  resumed = np.load(
    os.path.join(model_dir, "numpy_checkpoints", "checkpoint_9", "encoder.prompt.prompt.npy")
  )
  # The old code ran with optimised XLA, the tests with level 0: float rounding only.
  np.testing.assert_allclose(
    resumed, np.load(os.path.join(EXPECTED, "resumed_step_9.npy")), atol=1e-5
  )


def test_an_old_run_refuses_to_resume_on_another_base_model(model_dir):
  # No INITIAL_CHECKPOINT_PATH: a freshly initialised base, whose fingerprint differs.
  result = run_cli(
    _args(
      "train",
      "prompt_finetune.gin",
      MODEL_DIR=repr(model_dir),
      TRAIN_STEPS="9",
      EVAL_PERIOD="None",
      INITIAL_CHECKPOINT_PATH="None",
    )
  )
  assert result.returncode != 0
  assert "different frozen model" in result.stderr


def test_an_old_numpy_prompt_evaluates_as_it_did():
  result = run_cli(_args("eval", "prompt_eval.gin", PROMPT_FILE=repr(PROMPT_6)))
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(EXPECTED, "eval.json")) as f:
    expected = json.load(f)["demo_sentiment"]
  got = {
    line.split("\t")[1]: float(line.split("\t")[2])
    for line in result.stdout.splitlines()
    if line.startswith("demo_sentiment\t")
  }
  assert got == pytest.approx(expected)


def test_an_old_numpy_prompt_infers_the_same_predictions(tmp_path):
  out_dir = str(tmp_path / "infer")
  result = run_cli(
    _args(
      "infer",
      "prompt_infer.gin",
      PROMPT_FILE=repr(PROMPT_6),
      OUTPUT_DIR=repr(out_dir),
      **{"run_eval.infer.num_examples": "8"},
    )
  )
  assert result.returncode == 0, result.stderr[-3000:]
  name = "demo_sentiment-validation.jsonl"
  with open(os.path.join(out_dir, name)) as f, open(os.path.join(EXPECTED, "infer", name)) as g:
    assert [json.loads(line) for line in f] == [json.loads(line) for line in g]


def test_an_old_checkpoint_exports_its_prompt(tmp_path):
  out_dir = str(tmp_path / "export")
  result = run_cli(
    [
      "export-prompt",
      os.path.join(FIXTURE, "model_dir"),
      out_dir,
      "--gin_file=prompt_tuning/configs/models/t5_1_1_small_prompt.gin",
      "--gin.network.t5_config.size='tiny'",
      f"--gin.network.t5_config.vocab_size={demo_data.demo_vocab_size()}",
      "--gin.PROMPT_LENGTH=3",
    ]
  )
  assert result.returncode == 0, result.stderr[-3000:]
  np.testing.assert_array_equal(
    np.load(os.path.join(out_dir, "encoder.prompt.prompt.npy")), np.load(PROMPT_6)
  )


def test_an_old_run_checkpoint_reads_through_the_checkpoint_registry():
  checkpoint = os.path.join(FIXTURE, "model_dir", "checkpoint_6")
  assert convert.detect_format(checkpoint) == "run"
  assert convert.newest_run_checkpoint(os.path.join(FIXTURE, "model_dir")) == checkpoint
  params = convert.load_params(checkpoint)
  np.testing.assert_array_equal(params["encoder"]["prompt"]["prompt"], np.load(PROMPT_6))
  np.testing.assert_array_equal(
    convert.read_variable(checkpoint, "encoder/prompt/prompt"), np.load(PROMPT_6)
  )
