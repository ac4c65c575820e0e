"""In a multi-process job every process runs `prompt-tuning eval` / `infer` (the decodes
are collectives that need them all), but only process 0 prints the metrics and writes
the prediction and metric files: N writers of one file would race, and N copies of the
metrics on a pod's log are noise (docs/design.md, "Evaluation").

A real multi-process run is not practical here, so the commands run through the CLI in
this process on the legacy fixture's tiny base and step-6 prompt, once as process 0 and
once standing in for process 1 (patched `jax.process_index`); the ensemble and serving
modes are covered the same way in test_run_eval.py and test_serving.py."""

from __future__ import annotations

import os
import shutil

import jax
import pytest

from tests.cli_testing import LEGACY_RUN, run_cli, tiny_job_args

MODEL_DIR = os.path.join(LEGACY_RUN, "model_dir")
PROMPT_6 = os.path.join(MODEL_DIR, "numpy_checkpoints", "checkpoint_6", "encoder.prompt.prompt.npy")


def _as_process(monkeypatch, index):
  monkeypatch.setattr(jax, "process_index", lambda *args, **kwargs: index)


@pytest.fixture
def model_dir(tmp_path):
  """A writable copy of the fixture's run, whose prompt the jobs read and whose MODEL_DIR
  eval logs to."""
  path = str(tmp_path / "model_dir")
  shutil.copytree(MODEL_DIR, path)
  return path


def _prompt(model_dir):
  return os.path.join(model_dir, "numpy_checkpoints", "checkpoint_6", "encoder.prompt.prompt.npy")


def _eval_only_logs(model_dir):
  return os.path.join(model_dir, "eval_only")


@pytest.mark.parametrize("index", [0, 1])
def test_eval_prints_and_logs_its_metrics_only_in_process_0(monkeypatch, model_dir, index):
  _as_process(monkeypatch, index)
  metrics = os.path.join(model_dir, "metrics.jsonl")
  before = open(metrics).read()
  result = run_cli(
    tiny_job_args(
      "eval", "prompt_eval.gin", PROMPT_FILE=repr(_prompt(model_dir)), MODEL_DIR=repr(model_dir)
    )
  )
  assert result.returncode == 0, result.stderr[-3000:]
  after = open(metrics).read()
  if index == 0:
    assert "demo_sentiment\taccuracy\t" in result.stdout
    assert after.startswith(before) and '"kind": "eval_only"' in after[len(before) :]
    assert os.path.isdir(_eval_only_logs(model_dir))
  else:
    assert result.stdout == ""
    assert after == before and not os.path.exists(_eval_only_logs(model_dir))


@pytest.mark.parametrize("index", [0, 1])
def test_infer_writes_its_predictions_only_in_process_0(monkeypatch, tmp_path, index):
  _as_process(monkeypatch, index)
  out = tmp_path / "predictions"
  result = run_cli(
    tiny_job_args(
      "infer",
      "prompt_infer.gin",
      PROMPT_FILE=repr(PROMPT_6),
      OUTPUT_DIR=repr(str(out)),
      **{"run_eval.infer.num_examples": "5"},
    )
  )
  assert result.returncode == 0, result.stderr[-3000:]
  path = out / "demo_sentiment-validation.jsonl"
  if index == 0:
    assert f"wrote {path}" in result.stdout
    assert os.listdir(out) == [path.name] and len(path.read_text().splitlines()) == 5
  else:
    assert result.stdout == "" and not out.exists()
