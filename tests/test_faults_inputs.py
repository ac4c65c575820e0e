"""Bad inputs of the fault catalogue (issue 20, section 3), run as `prompt-tuning` runs
them: each one exits non-zero with one line that names the problem and the fix, no
traceback, and changes nothing already saved.

The runs use the tiny base checkpoint and 6-step MODEL_DIR of `tests/fixtures/legacy_run`
(see tests/test_legacy_fixture.py)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from prompt_tuning.data import demo as demo_data
from prompt_tuning.training import checkpoints
from tests.cli_testing import run_cli, tiny_job_args

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "legacy_run")
BASE = os.path.join(FIXTURE, "base")
MODEL_DIR = os.path.join(FIXTURE, "model_dir")
PROMPT_NAME = "encoder.prompt.prompt.npy"
PROMPT_6 = os.path.join(MODEL_DIR, "numpy_checkpoints", "checkpoint_6", PROMPT_NAME)


def _args(job: str, run_file: str, *gin_files: str, **bindings: str) -> list[str]:
  return tiny_job_args(job, run_file, *gin_files, **bindings)


def _train_args(model_dir: str, *gin_files: str, **bindings: str) -> list[str]:
  settings = {"MODEL_DIR": repr(model_dir), "TRAIN_STEPS": "2", "EVAL_PERIOD": "None"}
  return _args("train", "prompt_finetune.gin", *gin_files, **{**settings, **bindings})


def _digest(path: str) -> dict[str, str]:
  """Every file under `path` (or the file itself) and its content hash."""
  files = [path] if os.path.isfile(path) else []
  for root, _, names in os.walk(path):
    files += [os.path.join(root, name) for name in names]
  return {f: hashlib.sha256(open(f, "rb").read()).hexdigest() for f in sorted(files)}


def _assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
  """Exit code 1, no traceback, and one `prompt-tuning ...: error:` line holding every
  needle; returns that line."""
  assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  lines = [line for line in result.stderr.splitlines() if ": error: " in line]
  assert len(lines) == 1, result.stderr[-3000:]
  for needle in needles:
    assert needle in lines[0], lines[0]
  return lines[0]


@pytest.fixture
def model_dir(tmp_path):
  """A writable copy of the fixture's 6-step MODEL_DIR."""
  path = str(tmp_path / "model_dir")
  shutil.copytree(MODEL_DIR, path)
  return path


# -- prompt files ----------------------------------------------------------------------


def test_a_prompt_file_that_is_not_npy_is_refused_without_numpys_pickle_advice(tmp_path):
  path = tmp_path / "prompt.npy"
  path.write_text("0.1 0.2 0.3\n")
  result = run_cli(_args("eval", "prompt_eval.gin", PROMPT_FILE=repr(str(path))))
  line = _assert_one_line_error(result, str(path), "not a NumPy .npy file")
  assert "pickle" not in line


def test_a_prompt_file_with_nan_names_the_file_and_the_count_in_eval(tmp_path):
  prompt = np.load(PROMPT_6)
  prompt[0, :5] = np.nan
  prompt[2, 0] = np.inf
  path = str(tmp_path / "diverged.npy")
  np.save(path, prompt)
  result = run_cli(_args("eval", "prompt_eval.gin", PROMPT_FILE=repr(path)))
  _assert_one_line_error(result, path, "6 non-finite values")
  assert "accuracy" not in result.stdout


def test_a_prompt_file_with_nan_is_refused_before_training_on_it(tmp_path):
  prompt = np.load(PROMPT_6)
  prompt[1, 1] = np.nan
  path = str(tmp_path / "diverged.npy")
  np.save(path, prompt)
  out = str(tmp_path / "run")
  result = run_cli(
    _train_args(out, "prompt_tuning/configs/prompts/from_file.gin", PROMPT_FILE=repr(path))
  )
  line = _assert_one_line_error(result, path, "1 non-finite values")
  assert "learning rate" not in line
  assert checkpoints.LOCK_FILE not in os.listdir(out)
  assert not [name for name in os.listdir(out) if name.startswith("checkpoint_")]


def test_a_prompt_file_of_the_wrong_shape_is_still_refused(tmp_path):
  path = str(tmp_path / "short.npy")
  np.save(path, np.load(PROMPT_6)[:2])
  result = run_cli(_args("eval", "prompt_eval.gin", PROMPT_FILE=repr(path)))
  _assert_one_line_error(result, path, "has shape (2, 32) but the model expects (3, 32)")


# -- vocabularies ----------------------------------------------------------------------


def test_a_vocabulary_file_that_is_not_sentencepiece_is_named(tmp_path):
  path = str(tmp_path / "vocab.model")
  with open(path, "w") as f:
    f.write("this is not a SentencePiece model\n" * 20)
  out = str(tmp_path / "run")
  result = run_cli(
    _train_args(
      out,
      "prompt_tuning/configs/prompts/from_class_labels.gin",
      CLASS_LABELS="['positive', 'negative']",
      **{"get_vocabulary.spm_path": repr(path)},
    )
  )
  _assert_one_line_error(result, path, "is not a SentencePiece model", "get_vocabulary.spm_path")
  assert not [name for name in os.listdir(out) if name.startswith("checkpoint_")]


def test_a_vocabulary_larger_than_the_embedding_names_both_sizes(tmp_path):
  vocab_size = demo_data.get_demo_vocabulary().vocab_size
  out = str(tmp_path / "run")
  result = run_cli(
    _train_args(out, INITIAL_CHECKPOINT_PATH="None", **{"network.t5_config.vocab_size": "64"})
  )
  _assert_one_line_error(result, f"has {vocab_size} ids", "only 64 rows")
  assert not [name for name in os.listdir(out) if name.startswith("checkpoint_")]


# -- a base checkpoint of another size -------------------------------------------------


@pytest.mark.parametrize(
  "prompt_file, bindings",
  [
    ("from_class_labels.gin", {"CLASS_LABELS": "['positive', 'negative']"}),
    ("from_sampled_vocab.gin", {}),
    ("uniform.gin", {}),
  ],
)
def test_a_base_checkpoint_of_another_size_does_not_fit_whatever_the_initialiser(
  tmp_path, prompt_file, bindings
):
  out = str(tmp_path / "run")
  result = run_cli(
    _train_args(
      out,
      f"prompt_tuning/configs/prompts/{prompt_file}",
      **bindings,
      **{"network.t5_config.emb_dim": "48"},
    )
  )
  _assert_one_line_error(result, BASE, "does not fit the model", "checkpoint (32,) vs model (48,)")
  assert not [name for name in os.listdir(out) if name.startswith("checkpoint_")]


# -- a prompt or MODEL_DIR trained on another base model --------------------------------


def test_eval_refuses_a_runs_prompt_on_another_base_model():
  # No INITIAL_CHECKPOINT_PATH: a freshly initialised base, whose fingerprint differs
  # from the one in the run's checkpoint_6/metadata next to the numpy prompt.
  result = run_cli(
    _args("eval", "prompt_eval.gin", PROMPT_FILE=repr(PROMPT_6), INITIAL_CHECKPOINT_PATH="None")
  )
  # The suggested base is the one the run recorded (the fixture was written elsewhere).
  recorded_base = checkpoints.run_metadata(PROMPT_6)[1]["base_checkpoint"]
  _assert_one_line_error(
    result,
    PROMPT_6,
    "different frozen model",
    os.path.join(MODEL_DIR, "checkpoint_6"),
    f"INITIAL_CHECKPOINT_PATH={recorded_base!r}",
  )
  assert result.stdout == ""


def test_infer_refuses_a_runs_prompt_on_another_base_model(tmp_path):
  out = str(tmp_path / "infer")
  result = run_cli(
    _args(
      "infer",
      "prompt_infer.gin",
      PROMPT_FILE=repr(PROMPT_6),
      OUTPUT_DIR=repr(out),
      INITIAL_CHECKPOINT_PATH="None",
    )
  )
  _assert_one_line_error(result, PROMPT_6, "different frozen model")
  assert not os.path.exists(out)


def test_eval_refuses_a_model_dir_trained_on_another_base_model(tmp_path, model_dir):
  bare = str(tmp_path / "prompt.npy")
  shutil.copy(PROMPT_6, bare)
  before = _digest(model_dir)
  result = run_cli(
    _args(
      "eval",
      "prompt_eval.gin",
      PROMPT_FILE=repr(bare),
      MODEL_DIR=repr(model_dir),
      INITIAL_CHECKPOINT_PATH="None",
    )
  )
  _assert_one_line_error(result, model_dir, "different frozen model")
  assert _digest(model_dir) == before


def test_a_bare_prompt_with_no_run_around_it_is_evaluated_unchecked(tmp_path):
  bare = str(tmp_path / "prompt.npy")
  shutil.copy(PROMPT_6, bare)
  result = run_cli(
    _args("eval", "prompt_eval.gin", PROMPT_FILE=repr(bare), INITIAL_CHECKPOINT_PATH="None")
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "demo_sentiment\taccuracy\t" in result.stdout


# -- two trainers on one MODEL_DIR -----------------------------------------------------


def _hold_lock(model_dir: str, host: str, pid: int) -> str:
  path = os.path.join(model_dir, checkpoints.LOCK_FILE)
  with open(path, "w") as f:
    json.dump({"host": host, "pid": pid, "since": time.time()}, f)
  return path


@pytest.fixture
def live_process():
  """A process that stays alive for the test: the holder of a lock."""
  process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
  yield process.pid
  process.kill()
  process.wait()


def test_a_second_trainer_is_refused_with_the_holder_named(model_dir, live_process):
  lock = _hold_lock(model_dir, socket.gethostname(), live_process)
  before = _digest(model_dir)
  result = run_cli(_train_args(model_dir, TRAIN_STEPS="9"))
  _assert_one_line_error(
    result, "in use by another trainer", f"host {socket.gethostname()}, pid {live_process}", lock
  )
  assert _digest(model_dir) == before


def test_a_lock_held_on_another_host_is_refused_and_says_how_to_clear_it(model_dir):
  lock = _hold_lock(model_dir, "some-other-host", os.getpid())
  result = run_cli(_train_args(model_dir, TRAIN_STEPS="9"))
  _assert_one_line_error(result, "host some-other-host", f"remove {lock}")


def test_a_stale_lock_of_a_finished_process_is_taken_over_and_released(tmp_path):
  out = str(tmp_path / "run")
  os.makedirs(out)
  finished = subprocess.run(
    [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
  )
  _hold_lock(out, socket.gethostname(), int(finished.stdout))
  result = run_cli(_train_args(out))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "checkpoint_2" in os.listdir(out)
  assert checkpoints.LOCK_FILE not in os.listdir(out)


def test_the_lock_is_released_when_training_fails(model_dir):
  result = run_cli(_train_args(model_dir, TRAIN_STEPS="9", INITIAL_CHECKPOINT_PATH="None"))
  _assert_one_line_error(result, "different frozen model")
  assert checkpoints.LOCK_FILE not in os.listdir(model_dir)


# -- a truncated base checkpoint -------------------------------------------------------


# Pytest's own hook turns each "Event loop is closed" of an abandoned read into a warning.
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_a_truncated_base_checkpoint_is_one_line_without_event_loop_tracebacks(tmp_path, capfd):
  # A copy that stopped early: the array data files never arrived.
  base = str(tmp_path / "base")
  shutil.copytree(BASE, base)
  for root, _, names in os.walk(base):
    if os.path.basename(root) == "d":
      for name in names:
        os.remove(os.path.join(root, name))
  out = str(tmp_path / "run")
  result = run_cli(_train_args(out, INITIAL_CHECKPOINT_PATH=repr(base)))
  time.sleep(1)  # The abandoned reads finish (and used to print) after the error.
  leaked = capfd.readouterr()
  _assert_one_line_error(result, base, "damaged or incomplete", "copy or download")
  assert "Event loop is closed" not in result.stderr + leaked.err + leaked.out
  assert not [name for name in os.listdir(out) if name.startswith("checkpoint_")]
