"""End-to-end runs of `prompt-tuning train/eval/infer` on the bundled demo task with a
tiny model: checkpoints, numpy export, exact resume after SIGKILL, NaN guard, eval parity.

One training run (`trained_run`) is shared: the tests read its outputs, check that the
same run killed with SIGKILL and resumed ends identical to it, and make a preempted copy
of it diverge. The killed run is a real `python -m prompt_tuning` process; the others
call the CLI's `main` in this process, which saves a fresh interpreter's imports (about
20 s each on 2 cores).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from prompt_tuning import convert
from prompt_tuning.data import demo as demo_data
from tests.cli_testing import run_cli
from prompt_tuning.t5 import T5Config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = {
  "network.t5_config.size": "'tiny'",
  "network.t5_config.vocab_size": str(demo_data.demo_vocab_size()),
  "DROPOUT_RATE": "0.1",
}
STEPS = 12
# The shared run: checkpoints every 3 steps, evaluations at steps 6 and 12.
RUN = {"TRAIN_STEPS": str(STEPS), "CHECKPOINT_PERIOD": "3", "EVAL_PERIOD": "6"}


def _gin_args(files, bindings):
  args = [f"--gin_file=prompt_tuning/configs/{f}" for f in files]
  args += [f"--gin.{k}={v}" for k, v in {**TINY, **bindings}.items()]
  return args


def _train_args(model_dir, base, **overrides):
  bindings = {
    "MIXTURE_OR_TASK_NAME": "'demo_sentiment'",
    "MODEL_DIR": repr(model_dir),
    "INITIAL_CHECKPOINT_PATH": repr(base),
    "TASK_FEATURE_LENGTHS": "{'inputs': 24, 'targets': 4}",
    "BATCH_SIZE": "4",
    "PROMPT_LENGTH": "3",
    **RUN,
    "trainer.train.log_period": "3",
  }
  bindings.update(overrides)
  return ["train"] + _gin_args(
    ["models/t5_1_1_small_prompt.gin", "runs/prompt_finetune.gin"], bindings
  )


def _prompt_job_args(job, base, model_dir, **bindings):
  """`prompt-tuning eval|infer` with the shared run's final numpy prompt."""
  return [job] + _gin_args(
    ["models/t5_1_1_small_prompt.gin", f"runs/prompt_{job}.gin"],
    {
      "MIXTURE_OR_TASK_NAME": "'demo_sentiment'",
      "INITIAL_CHECKPOINT_PATH": repr(base),
      "PROMPT_LENGTH": "3",
      "TASK_FEATURE_LENGTHS": "{'inputs': 24, 'targets': 4}",
      "PROMPT_FILE": repr(
        os.path.join(
          model_dir, "numpy_checkpoints", f"checkpoint_{STEPS}", "encoder.prompt.prompt.npy"
        )
      ),
      **bindings,
    },
  )


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory, random_params):
  """A random 'pretrained' tiny model saved as an orbax parameter checkpoint."""
  config = T5Config.from_size("tiny", vocab_size=demo_data.demo_vocab_size())
  path = str(tmp_path_factory.mktemp("base") / "tiny_base")
  convert.save_params_orbax(random_params(config, seed=42), path)
  return path


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, base_checkpoint):
  """`prompt-tuning train` for 12 steps, uninterrupted: (model_dir, result)."""
  model_dir = str(tmp_path_factory.mktemp("trained") / "run")
  result = run_cli(_train_args(model_dir, base_checkpoint))
  assert result.returncode == 0, result.stderr[-3000:]
  return model_dir, result


def _prompt(model_dir, step):
  path = os.path.join(
    model_dir, "numpy_checkpoints", f"checkpoint_{step}", "encoder.prompt.prompt.npy"
  )
  return np.load(path)


def _checkpoints(model_dir):
  """Every entry named checkpoint_*, steps in numerical order (shorter names first)."""
  return sorted(
    (d for d in os.listdir(model_dir) if d.startswith("checkpoint_")), key=lambda d: (len(d), d)
  )


def _evals(model_dir):
  with open(os.path.join(model_dir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["kind"] == "eval"]


def test_train_writes_checkpoints_numpy_prompts_and_metrics(trained_run):
  model_dir, result = trained_run
  assert f"trained to step {STEPS}" in result.stdout
  assert _checkpoints(model_dir) == [
    "checkpoint_3",
    "checkpoint_6",
    "checkpoint_9",
    "checkpoint_12",
  ]
  prompt = _prompt(model_dir, 12)
  assert prompt.shape == (3, 32) and prompt.dtype == np.float32
  assert not np.array_equal(prompt, _prompt(model_dir, 3))
  with open(os.path.join(model_dir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  train_rows = [r for r in rows if r["kind"] == "train"]
  assert [r["step"] for r in train_rows] == [3, 6, 9, 12]
  assert all(np.isfinite(r["loss"]) and r["learning_rate"] == 0.3 for r in train_rows)
  evals = [r for r in rows if r["kind"] == "eval"]
  assert [r["step"] for r in evals] == [6, 12]
  assert "demo_sentiment/accuracy" in evals[-1]
  assert os.path.isdir(os.path.join(model_dir, "train"))  # TensorBoard events.


def test_eval_of_the_exported_prompt_reproduces_the_final_evaluation(trained_run, base_checkpoint):
  model_dir, _ = trained_run
  result = run_cli(_prompt_job_args("eval", base_checkpoint, model_dir, BATCH_SIZE="4"))
  assert result.returncode == 0, result.stderr[-3000:]
  line = [row for row in result.stdout.splitlines() if row.startswith("demo_sentiment\taccuracy")]
  assert line, result.stdout
  assert float(line[0].split("\t")[2]) == pytest.approx(
    _evals(model_dir)[-1]["demo_sentiment/accuracy"]
  )


def test_infer_writes_one_json_line_per_validation_example(trained_run, base_checkpoint, tmp_path):
  model_dir, _ = trained_run
  out_dir = str(tmp_path / "infer")
  result = run_cli(
    _prompt_job_args(
      "infer",
      base_checkpoint,
      model_dir,
      BATCH_SIZE="8",
      OUTPUT_DIR=repr(out_dir),
      **{"run_eval.infer.num_examples": "10"},
    )
  )
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(out_dir, "demo_sentiment-validation.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert len(records) == 10
  assert records[0]["inputs"].startswith("sentence:")
  assert records[0]["target"] in demo_data.DEMO_LABELS


def test_sigkill_and_resume_ends_bit_identical(tmp_path, base_checkpoint, trained_run):
  reference_dir, _ = trained_run
  resumed_dir = str(tmp_path / "killed")
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
  process = subprocess.Popen(
    [sys.executable, "-m", "prompt_tuning", *_train_args(resumed_dir, base_checkpoint)],
    cwd=REPO,
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  # Killed once its step-6 checkpoint is complete: the step-6 evaluation (compiled in the
  # fresh process) and six more steps still lie ahead of it.
  deadline = time.time() + 400
  while time.time() < deadline and process.poll() is None:
    if os.path.isdir(os.path.join(resumed_dir, "checkpoint_6")):
      break
    time.sleep(0.05)
  assert process.poll() is None, "training finished before it could be killed"
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert not os.path.exists(os.path.join(resumed_dir, f"checkpoint_{STEPS}"))

  resumed = run_cli(_train_args(resumed_dir, base_checkpoint))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from" in resumed.stderr
  np.testing.assert_array_equal(_prompt(reference_dir, STEPS), _prompt(resumed_dir, STEPS))


# The infinite learning rate is meant: casting 1e39 to float32 overflows.
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(
  tmp_path, base_checkpoint, trained_run
):
  # The shared run as if preempted right after its step-3 checkpoint.
  model_dir = str(tmp_path / "diverged")
  shutil.copytree(trained_run[0], model_dir)
  for step in (6, 9, 12):
    shutil.rmtree(os.path.join(model_dir, f"checkpoint_{step}"))
  assert _checkpoints(model_dir) == ["checkpoint_3"]
  saved = _prompt(model_dir, 3)
  # Resumed with an infinite learning rate, the next update overflows the prompt.
  result = run_cli(
    _train_args(
      model_dir, base_checkpoint, LEARNING_RATE="1e39", CHECKPOINT_PERIOD="1", EVAL_PERIOD="None"
    )
  )
  assert result.returncode == 1
  error_lines = [row for row in result.stderr.splitlines() if "error:" in row]
  assert len(error_lines) == 1, result.stderr[-3000:]
  assert "at step 4" in error_lines[0] and "last good checkpoint" in error_lines[0]
  assert "Traceback" not in result.stderr
  assert _checkpoints(model_dir) == ["checkpoint_3"]
  np.testing.assert_array_equal(_prompt(model_dir, 3), saved)


def _straight_and_resumed(tmp_path, base_checkpoint, bindings: dict[str, str]) -> str:
  """Trains with `bindings` straight through and, in another directory, stopped at
  step 6 and restarted; asserts both end bit-identical; returns the straight run."""
  straight = str(tmp_path / "straight")
  assert run_cli(_train_args(straight, base_checkpoint, **bindings)).returncode == 0
  stopped = str(tmp_path / "stopped")
  first = run_cli(_train_args(stopped, base_checkpoint, **bindings, TRAIN_STEPS="6"))
  assert first.returncode == 0, first.stderr[-3000:]
  second = run_cli(_train_args(stopped, base_checkpoint, **bindings))
  assert second.returncode == 0 and "resumed from" in second.stderr
  np.testing.assert_array_equal(_prompt(straight, STEPS), _prompt(stopped, STEPS))
  return straight


def test_length_bucketed_training_resumes_bit_identical_and_follows_the_fixed_run(
  tmp_path, base_checkpoint, trained_run
):
  """TRAIN_LENGTH_BUCKETS: a run stopped at step 6 and restarted ends bit-identical to
  one that never stopped, and both stay within float rounding of the fixed-shape run
  (the batches hold the same examples; only padding is cut)."""
  buckets = {"TRAIN_LENGTH_BUCKETS": "[8, 16]", "EVAL_PERIOD": "None"}
  straight = _straight_and_resumed(tmp_path, base_checkpoint, buckets)
  np.testing.assert_allclose(
    _prompt(straight, STEPS), _prompt(trained_run[0], STEPS), rtol=1e-4, atol=1e-5
  )


def test_length_grouped_training_resumes_bit_identical(tmp_path, base_checkpoint, trained_run):
  """TRAIN_LENGTH_GROUPING with buckets: other batches than the i.i.d. run's, still a
  function of the seed and the position, so a stopped and restarted run (inside a
  window: step 6 of windows of 4 batches) ends bit-identical to one that never stopped."""
  grouped = {"TRAIN_LENGTH_BUCKETS": "[8, 16]", "TRAIN_LENGTH_GROUPING": "4", "EVAL_PERIOD": "None"}
  straight = _straight_and_resumed(tmp_path, base_checkpoint, grouped)
  assert not np.array_equal(_prompt(straight, STEPS), _prompt(trained_run[0], STEPS))
