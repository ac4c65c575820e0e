"""The fault catalogue (issue 20, section 3), first half: each fault ends the command
with an exit code other than 0, one line that names the problem and the fix, no
traceback, and nothing saved changed.

The runs are `prompt-tuning ...` in this process (`tests.cli_testing.run_cli`) on the
legacy fixture's tiny base checkpoint and the bundled demo task. Faults that cannot be
produced on demand here (a full disk, TensorFlow's file-system errors, Ctrl-C) are
raised from inside the command they would interrupt.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from prompt_tuning import cli, convert
from prompt_tuning.convert import commands
from prompt_tuning.evaluation import run_eval
from prompt_tuning.training import checkpoints as checkpoints_lib
from prompt_tuning.training import settings as settings_lib
from prompt_tuning.training import trainer
from tests.cli_testing import run_cli, tiny_job_args

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(REPO, "tests", "fixtures", "legacy_run")
BASE = os.path.join(FIXTURE, "base")
OLD_RUN = os.path.join(FIXTURE, "model_dir")


def _train_args(model_dir, **bindings):
  settings = {"MODEL_DIR": repr(model_dir), "TRAIN_STEPS": "6", "CHECKPOINT_PERIOD": "2"}
  settings["EVAL_PERIOD"] = "None"
  return tiny_job_args("train", "prompt_finetune.gin", **{**settings, **bindings})


def _error_line(result) -> str:
  """The one line a failed command printed; fails the test on a traceback or more."""
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  lines = [line for line in result.stderr.splitlines() if line.startswith("prompt-tuning")]
  assert len(lines) == 1, result.stderr[-3000:]
  return lines[0]


def _snapshot(directory):
  """Every file under `directory` with its bytes: what "nothing saved changed" compares."""
  files = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        files[os.path.relpath(path, directory)] = f.read()
  return files


def _prompt(model_dir, step):
  return np.load(
    os.path.join(model_dir, "numpy_checkpoints", f"checkpoint_{step}", "encoder.prompt.prompt.npy")
  )


def _steps(model_dir):
  return sorted(
    int(d.split("_")[1])
    for d in os.listdir(model_dir)
    if d.startswith("checkpoint_") and d.split("_")[1].isdigit()
  )


# ------------------------------------------------------ exceptions -> one line each
def _library_errors():
  import tensorflow as tf
  from google.protobuf import message

  return [
    (
      tf.errors.PermissionDeniedError(None, None, "/runs/x/events; Permission denied"),
      "permission denied: /runs/x/events; Permission denied; choose a path you may write to",
    ),
    (
      tf.errors.FailedPreconditionError(None, None, "/runs/x is a directory"),
      "failed precondition: /runs/x is a directory; usually a file where a directory",
    ),
    (
      tf.errors.NotFoundError(None, None, "/data/rte/1.0.2; No such file or directory"),
      "not found: /data/rte/1.0.2; No such file or directory; check the path",
    ),
    (
      OSError(errno.ENOSPC, "No space left on device", "/runs/x/checkpoint_4"),
      "no space left on the device while writing /runs/x/checkpoint_4; free space on that disk",
    ),
    (
      message.DecodeError("Error parsing message with type 'sentencepiece.ModelProto'"),
      "could not be parsed as a protocol buffer (Error parsing message with type "
      "'sentencepiece.ModelProto'): it is damaged or not of the expected kind",
    ),
    (IndexError("index 3 is out of bounds"), "index out of range (index 3 is out of bounds)"),
    (ZeroDivisionError("integer modulo by zero"), "division by zero (integer modulo by zero)"),
    (
      FileExistsError(errno.EEXIST, "File exists", "/out/prompt.npy"),
      "/out/prompt.npy already exists; remove it or choose another path",
    ),
    (LookupError("no such thing"), "LookupError: no such thing"),
    (
      FileNotFoundError(errno.ENOENT, "No such file or directory", "/runs/x/base"),
      "No such file or directory: '/runs/x/base'; check the path",
    ),
  ]


@pytest.mark.parametrize("index", range(10))
def test_a_library_error_is_one_line_naming_the_problem_and_the_fix(monkeypatch, index):
  error, expected = _library_errors()[index]

  def fail(path):
    raise error

  monkeypatch.setattr(commands, "inspect_checkpoint", fail)
  result = run_cli(["inspect-checkpoint", "/some/checkpoint"])
  assert result.returncode == 1
  line = _error_line(result)
  assert expected in line, line
  assert line.endswith("(rerun with --debug for the traceback)")


def test_debug_still_raises_the_original_exception(monkeypatch):
  def fail(path):
    raise ZeroDivisionError("integer modulo by zero")

  monkeypatch.setattr(commands, "inspect_checkpoint", fail)
  with pytest.raises(ZeroDivisionError):
    run_cli(["inspect-checkpoint", "/some/checkpoint", "--debug"])


def test_ctrl_c_outside_training_exits_130_in_one_line(monkeypatch):
  def interrupt(path):
    raise KeyboardInterrupt

  monkeypatch.setattr(commands, "inspect_checkpoint", interrupt)
  result = run_cli(["inspect-checkpoint", "/some/checkpoint"])
  assert result.returncode == 130
  assert _error_line(result) == (
    "prompt-tuning inspect-checkpoint: interrupted before anything was saved"
  )


def test_a_usage_error_is_printed_through_one_line_without_gin_internals(monkeypatch):
  def fail(path):
    raise cli.UsageError(
      "TRAIN_STEPS must be set;\n bind it with --gin.TRAIN_STEPS=N\n"
      "  In call to configurable 'train' (<function train at 0x7f3b2c1d0e50>)"
    )

  monkeypatch.setattr(commands, "inspect_checkpoint", fail)
  result = run_cli(["inspect-checkpoint", "/some/checkpoint"])
  assert result.returncode == 2
  assert _error_line(result) == (
    "prompt-tuning inspect-checkpoint: error: TRAIN_STEPS must be set; bind it with "
    "--gin.TRAIN_STEPS=N"
  )


def test_an_unknown_argument_of_a_gin_job_points_at_its_help():
  result = run_cli(["eval", "--gin_file=x.gin", "--no-such-flag"])
  assert result.returncode == 2
  assert _error_line(result) == (
    "prompt-tuning eval: error: unknown argument(s) for eval: --no-such-flag; see "
    "`prompt-tuning eval --help` for the flags it takes"
  )


def test_a_bad_multi_process_flag_says_what_to_pass():
  result = run_cli(["train", "--gin_file=x.gin", "--num_processes=two"])
  assert result.returncode == 2
  assert "--num_processes must be an integer, got 'two'" in _error_line(result)
  result = run_cli(["train", "--gin_file=x.gin", "--num_processes"])
  assert result.returncode == 2
  assert _error_line(result) == (
    "prompt-tuning train: error: argument --num_processes: expected one argument; see the "
    "command's --help for its flags"
  )


def test_an_unknown_configurable_says_what_to_check():
  result = run_cli(_train_args("/tmp/unused") + ["--gin.no_such_function.value=1"])
  assert result.returncode == 2
  line = _error_line(result)
  assert "no_such_function" in line and "check the name's spelling" in line, line


# ---------------------------------------------------------------- Ctrl-C in training
def _interrupt_at_batch(monkeypatch, number):
  """Ctrl-C while the loop waits for batch `number` (1-based) of this run."""
  # The generator behind `train_batches`, which stays the gin-configured function.
  original = trainer.data_lib._numpy_batches

  def batches(*args, **kwargs):
    for index, batch in enumerate(original(*args, **kwargs), start=1):
      if index == number:
        raise KeyboardInterrupt
      yield batch

  monkeypatch.setattr(trainer.data_lib, "_numpy_batches", batches)


def test_ctrl_c_during_training_names_the_step_and_a_rerun_resumes(tmp_path, monkeypatch):
  model_dir = str(tmp_path / "run")
  _interrupt_at_batch(monkeypatch, 4)  # Steps 1-3 ran; checkpoint_2 is on disk.
  result = run_cli(_train_args(model_dir))
  assert result.returncode == 130
  line = _error_line(result)
  assert "interrupted at step 3; rerun the same command to resume" in line, line
  assert f"continues from checkpoint_2 in {model_dir}" in line
  assert _steps(model_dir) == [2]
  saved = _prompt(model_dir, 2)
  np.testing.assert_array_equal(
    convert.load_params(os.path.join(model_dir, "checkpoint_2"))["encoder"]["prompt"]["prompt"],
    saved,
  )

  monkeypatch.undo()
  resumed = run_cli(_train_args(model_dir))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "at step 2 (2 batches consumed)" in resumed.stderr
  assert _steps(model_dir) == [2, 4, 6]
  np.testing.assert_array_equal(_prompt(model_dir, 2), saved)


def test_a_real_sigint_to_a_training_process_exits_130_with_the_step(tmp_path):
  """The same through the operating system: SIGINT to `python -m prompt_tuning train`
  once its step-2 checkpoint exists (a long run, so it is still training)."""
  model_dir = str(tmp_path / "run")
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
  process = subprocess.Popen(
    [sys.executable, "-m", "prompt_tuning", *_train_args(model_dir, TRAIN_STEPS="100000")],
    cwd=REPO,
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
  )
  deadline = time.time() + 300
  while time.time() < deadline and process.poll() is None:
    if os.path.isdir(os.path.join(model_dir, "numpy_checkpoints", "checkpoint_2")):
      break
    time.sleep(0.05)
  if process.poll() is not None:
    pytest.fail(f"training ended before it could be interrupted: {process.stderr.read()[-3000:]}")
  process.send_signal(signal.SIGINT)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 130, stderr[-3000:]
  assert "Traceback" not in stderr, stderr[-3000:]
  lines = [line for line in stderr.splitlines() if line.startswith("prompt-tuning train:")]
  assert len(lines) == 1 and "interrupted at step " in lines[0], stderr[-3000:]
  assert "rerun the same command to resume" in lines[0]
  # Every checkpoint it left is complete: readable, with its exported prompt.
  assert not [d for d in os.listdir(model_dir) if "tmp" in d]
  for step in _steps(model_dir):
    restored = convert.load_params(os.path.join(model_dir, f"checkpoint_{step}"))
    np.testing.assert_array_equal(restored["encoder"]["prompt"]["prompt"], _prompt(model_dir, step))


def test_ctrl_c_while_a_checkpoint_is_written_lets_it_finish(tmp_path, monkeypatch):
  model_dir = str(tmp_path / "run")
  original = checkpoints_lib.CheckpointManager.save

  def save_then_interrupt(self, state, **kwargs):
    original(self, state, **kwargs)  # Orbax is still writing it in the background.
    raise KeyboardInterrupt

  monkeypatch.setattr(checkpoints_lib.CheckpointManager, "save", save_then_interrupt)
  result = run_cli(_train_args(model_dir))
  assert result.returncode == 130
  line = _error_line(result)
  assert "interrupted at step 2" in line and "continues from checkpoint_2" in line, line
  # Complete and readable: no orbax temporary left, and it holds the exported prompt.
  assert _steps(model_dir) == [2]
  assert not [d for d in os.listdir(model_dir) if "tmp" in d], os.listdir(model_dir)
  assert os.listdir(os.path.join(model_dir, "numpy_checkpoints")) == ["checkpoint_2"]
  restored = convert.load_params(os.path.join(model_dir, "checkpoint_2"))
  np.testing.assert_array_equal(restored["encoder"]["prompt"]["prompt"], _prompt(model_dir, 2))


def _checkpoints_read_back(model_dir):
  """Every checkpoint_N is complete: no orbax temporary, and each reads back holding the
  prompt of its numpy export."""
  assert not [d for d in os.listdir(model_dir) if "tmp" in d], os.listdir(model_dir)
  for step in _steps(model_dir):
    restored = convert.load_params(os.path.join(model_dir, f"checkpoint_{step}"))
    np.testing.assert_array_equal(restored["encoder"]["prompt"]["prompt"], _prompt(model_dir, step))


def _interrupted_waits(monkeypatch):
  """Makes every wait for a pending checkpoint write raise KeyboardInterrupt, as a Ctrl-C
  during it would; returns the managers it stopped (their writes go on) and a snapshot of
  the MODEL_DIR's finished checkpoints at that moment."""
  stopped, finished = [], {}

  def interrupted(self):
    stopped.append(self)
    for step in _steps(self.model_dir):
      finished[step] = _snapshot(os.path.join(self.model_dir, f"checkpoint_{step}"))
    raise KeyboardInterrupt

  monkeypatch.setattr(checkpoints_lib.CheckpointManager, "wait", interrupted)
  return stopped, finished


def _finish_writes(stopped):
  for manager in stopped:
    manager.close()  # What the interrupted wait would have done: the write completes.


def test_a_second_ctrl_c_during_the_pending_save_says_that_checkpoint_may_be_incomplete(
  tmp_path, monkeypatch
):
  model_dir = str(tmp_path / "run")
  _interrupt_at_batch(monkeypatch, 5)  # Steps 1-4 ran; checkpoint_4 is being written.
  stopped, finished = _interrupted_waits(monkeypatch)
  result = run_cli(_train_args(model_dir))
  _finish_writes(stopped)
  assert result.returncode == 130
  line = _error_line(result)
  assert "before training started" not in line and "nothing was saved" not in line, line
  assert (
    "interrupted again at step 4 while checkpoint_4 was being saved; checkpoint_4 may be "
    "incomplete and is never taken as a complete checkpoint; rerun the same command to resume "
    f"(it continues from the last complete checkpoint, checkpoint_2 in {model_dir} (or from "
    "checkpoint_4 if its write had finished))"
  ) in line, line
  # The complete checkpoint is untouched, and the pending one was finished, not damaged.
  assert 2 in finished
  assert _snapshot(os.path.join(model_dir, "checkpoint_2")) == finished[2]
  assert _steps(model_dir) == [2, 4]
  _checkpoints_read_back(model_dir)

  monkeypatch.undo()
  resumed = run_cli(_train_args(model_dir))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "at step 4 (4 batches consumed)" in resumed.stderr
  assert _steps(model_dir) == [2, 4, 6]
  _checkpoints_read_back(model_dir)


def test_a_ctrl_c_during_the_last_save_of_a_run_names_the_checkpoint_and_none_before_it(
  tmp_path, monkeypatch
):
  model_dir = str(tmp_path / "run")
  stopped, _ = _interrupted_waits(monkeypatch)
  # Every step ran; the only checkpoint, step 2's, is still being written at the end.
  result = run_cli(_train_args(model_dir, TRAIN_STEPS="2", CHECKPOINT_PERIOD="5"))
  _finish_writes(stopped)
  assert result.returncode == 130
  line = _error_line(result)
  assert (
    "interrupted at step 2 while checkpoint_2 was being saved; checkpoint_2 may be incomplete"
  ) in line, line
  assert (
    f"no checkpoint was complete before it in {model_dir}, so it starts from step 0 (or from "
    "checkpoint_2 if its write had finished)"
  ) in line
  assert _steps(model_dir) == [2]
  _checkpoints_read_back(model_dir)


# ---------------------------------------------------------------- NaN guard
# The infinite learning rate is meant: casting 1e39 to float32 overflows.
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_the_nan_guard_prints_what_it_saw_and_that_no_checkpoint_exists(tmp_path):
  model_dir = str(tmp_path / "run")
  result = run_cli(_train_args(model_dir, LEARNING_RATE="1e39"))
  assert result.returncode == 1
  line = _error_line(result)
  assert "the updated parameters became non-finite at step 1 (loss " in line, line
  assert f"no checkpoint was saved in {model_dir} yet" in line
  assert "last good checkpoint" not in line
  assert _steps(model_dir) == []


# ---------------------------------------------------------------- up-front checks
@pytest.fixture
def no_loading(monkeypatch):
  """Fails the test if the run gets as far as reading the base checkpoint."""

  def never(*args, **kwargs):
    raise AssertionError("the base checkpoint was read before the settings were checked")

  monkeypatch.setattr(trainer, "place_run", never)


@pytest.mark.parametrize(
  "bindings, expected",
  [
    ({"TRAIN_STEPS": "-5"}, "TRAIN_STEPS must be an integer >= 1, got -5"),
    ({"TRAIN_STEPS": "0"}, "TRAIN_STEPS must be an integer >= 1, got 0"),
    ({"CHECKPOINT_PERIOD": "0"}, "CHECKPOINT_PERIOD must be an integer >= 1, got 0"),
    ({"EVAL_PERIOD": "0"}, "EVAL_PERIOD must be None or an integer >= 1, got 0"),
    ({"trainer.train.log_period": "0"}, "trainer.train.log_period must be an integer >= 1"),
    ({"BATCH_SIZE": "0"}, "BATCH_SIZE must be an integer >= 1, got 0"),
    (
      {"trainer.train.eval_batch_size": "0"},
      "trainer.train.eval_batch_size must be None or an integer >= 1, got 0",
    ),
    (
      {"trainer.train.num_eval_examples": "0"},
      "trainer.train.num_eval_examples must be None or an integer >= 1, got 0",
    ),
    (
      {"TASK_FEATURE_LENGTHS": "{'inputs': 0, 'targets': 4}"},
      "TASK_FEATURE_LENGTHS['inputs'] must be an integer >= 1, got 0",
    ),
    (
      {"TASK_FEATURE_LENGTHS": "{'inputs': 24, 'targets': -1}"},
      "TASK_FEATURE_LENGTHS['targets'] must be an integer >= 1, got -1",
    ),
  ],
)
def test_settings_that_cannot_train_are_refused_before_anything_loads(
  tmp_path, no_loading, bindings, expected
):
  model_dir = str(tmp_path / "run")
  result = run_cli(_train_args(model_dir, **bindings))
  assert result.returncode == 2
  assert expected in _error_line(result)


def test_a_model_dir_that_is_a_file_is_refused_at_once(tmp_path, no_loading):
  path = tmp_path / "run"
  path.write_text("not a directory")
  result = run_cli(_train_args(str(path)))
  assert result.returncode == 2
  assert f"MODEL_DIR {path} exists and is not a directory" in _error_line(result)
  assert path.read_text() == "not a directory"


def test_a_model_dir_that_cannot_be_created_is_refused_at_once(tmp_path, no_loading, monkeypatch):
  (tmp_path / "file").write_text("x")
  model_dir = str(tmp_path / "file" / "run")
  result = run_cli(_train_args(model_dir))
  assert result.returncode == 2
  line = _error_line(result)
  assert f"MODEL_DIR {model_dir} is not writable" in line and "choose a directory" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_model_dir_is_refused_at_once(tmp_path, no_loading, monkeypatch):
  model_dir = tmp_path / "run"
  model_dir.mkdir()
  model_dir.chmod(0o555)
  try:
    result = run_cli(_train_args(str(model_dir)))
  finally:
    model_dir.chmod(0o755)
  assert result.returncode == 2
  assert f"MODEL_DIR {model_dir} is not writable" in _error_line(result)
  assert os.listdir(model_dir) == []


def test_a_model_dir_whose_writes_fail_is_refused_at_once(tmp_path, no_loading, monkeypatch):
  """A read-only directory as root sees it (a read-only mount): the write probe fails."""

  def read_only(*args, **kwargs):
    raise PermissionError(errno.EROFS, "Read-only file system")

  monkeypatch.setattr(settings_lib.tempfile, "mkstemp", read_only)
  model_dir = tmp_path / "run"
  model_dir.mkdir()
  result = run_cli(_train_args(str(model_dir)))
  assert result.returncode == 2
  assert f"MODEL_DIR {model_dir} is not writable (Read-only file system)" in _error_line(result)


# ------------------------------------------------- up-front checks of eval and infer
PROMPT_6 = os.path.join(OLD_RUN, "numpy_checkpoints", "checkpoint_6", "encoder.prompt.prompt.npy")


@pytest.fixture
def nothing_loaded(monkeypatch):
  """Fails the test if eval or infer reads a base checkpoint, a prompt file or a task's
  vocabulary before its settings were checked."""

  def never(*args, **kwargs):
    raise AssertionError("something was loaded before the settings were checked")

  monkeypatch.setattr(run_eval.initialization, "initial_params", never)
  monkeypatch.setattr(run_eval.initialization, "check_task_vocabularies", never)
  monkeypatch.setattr(run_eval.multi_prompt, "load_prompt_files", never)


def _job_args(job, run_file, tmp_path, **bindings):
  """eval / infer of the fixture's step-6 prompt (the serving and ensemble files take
  theirs from TASK_PROMPTS / PROMPT_FILES), writing under `tmp_path/out`."""
  values = {"OUTPUT_DIR": repr(str(tmp_path / "out"))}
  if run_file in ("prompt_eval.gin", "prompt_infer.gin"):
    values["PROMPT_FILE"] = repr(PROMPT_6)
  if run_file == "prompt_eval.gin":
    del values["OUTPUT_DIR"]
  if run_file == "prompt_ensemble_eval.gin":
    values["PROMPT_FILES"] = repr([PROMPT_6, PROMPT_6])
  if run_file == "prompt_serve.gin":
    values["TASK_PROMPTS"] = repr({"demo_sentiment": PROMPT_6})
  return tiny_job_args(job, run_file, **{**values, **bindings})


@pytest.mark.parametrize(
  "job, run_file, bindings, expected",
  [
    ("eval", "prompt_eval.gin", {"BATCH_SIZE": "0"}, "BATCH_SIZE must be an integer >= 1, got 0"),
    (
      "eval",
      "prompt_eval.gin",
      {"TASK_FEATURE_LENGTHS": "{'inputs': 0, 'targets': 4}"},
      "TASK_FEATURE_LENGTHS['inputs'] must be an integer >= 1, got 0",
    ),
    (
      "eval",
      "prompt_eval.gin",
      {"run_eval.evaluate.num_examples": "0"},
      "run_eval.evaluate.num_examples must be None or an integer >= 1, got 0",
    ),
    (
      "eval",
      "prompt_ensemble_eval.gin",
      {"BATCH_SIZE": "-2"},
      "BATCH_SIZE must be an integer >= 1, got -2",
    ),
    ("infer", "prompt_infer.gin", {"BATCH_SIZE": "0"}, "BATCH_SIZE must be an integer >= 1, got 0"),
    (
      "infer",
      "prompt_infer.gin",
      {"TASK_FEATURE_LENGTHS": "{'inputs': 24, 'targets': 2.5}"},
      "TASK_FEATURE_LENGTHS['targets'] must be an integer >= 1, got 2.5",
    ),
    (
      "infer",
      "prompt_infer.gin",
      {"TASK_FEATURE_LENGTHS": "{}"},
      "TASK_FEATURE_LENGTHS must be a dict of feature lengths, got {}",
    ),
    (
      "infer",
      "prompt_infer.gin",
      {"run_eval.infer.num_examples": "-1"},
      "run_eval.infer.num_examples must be None or an integer >= 1, got -1",
    ),
    (
      "infer",
      "prompt_serve.gin",
      {"TASK_FEATURE_LENGTHS": "{'inputs': 24, 'targets': 0}"},
      "TASK_FEATURE_LENGTHS['targets'] must be an integer >= 1, got 0",
    ),
  ],
)
def test_eval_and_infer_settings_that_cannot_work_are_refused_before_anything_loads(
  tmp_path, nothing_loaded, job, run_file, bindings, expected
):
  result = run_cli(_job_args(job, run_file, tmp_path, **bindings))
  assert result.returncode == 2, result.stderr[-3000:]
  line = _error_line(result)
  assert expected in line, line
  setting = expected.split(" must be")[0].split("[")[0]
  assert f"--gin.{setting}" in line or "every feature needs" in line, line
  assert result.stdout == "" and os.listdir(tmp_path) == []


@pytest.mark.parametrize(
  "job, run_file, macro",
  [
    ("eval", "prompt_eval.gin", "MODEL_DIR"),
    ("eval", "prompt_ensemble_eval.gin", "OUTPUT_DIR"),
    ("infer", "prompt_infer.gin", "OUTPUT_DIR"),
  ],
)
def test_an_output_directory_that_is_a_file_is_refused_before_anything_loads(
  tmp_path, nothing_loaded, job, run_file, macro
):
  path = tmp_path / "taken"
  path.write_text("not a directory")
  result = run_cli(_job_args(job, run_file, tmp_path, **{macro: repr(str(path))}))
  assert result.returncode == 2, result.stderr[-3000:]
  assert f"{macro} {path} exists and is not a directory" in _error_line(result)
  assert path.read_text() == "not a directory"
  # Below a file it cannot be created either; nothing is made on the way.
  below = path / "out"
  result = run_cli(_job_args(job, run_file, tmp_path, **{macro: repr(str(below))}))
  assert result.returncode == 2
  assert f"{macro} {below} cannot be created: {path} is not a directory" in _error_line(result)
  assert sorted(os.listdir(tmp_path)) == ["taken"]


# ---------------------------------------------------------------- gin bindings
def test_a_bad_binding_is_named_with_the_quotes_it_needs(tmp_path):
  args = _train_args(str(tmp_path / "run"))
  args = [a for a in args if not a.startswith("--gin.MODEL_DIR=")] + ["--gin.MODEL_DIR=/tmp/x"]
  result = run_cli(args)
  assert result.returncode == 2
  line = _error_line(result)
  assert "bad gin binding --gin.MODEL_DIR=/tmp/x: Unable to parse value" in line, line
  assert "did you mean --gin.MODEL_DIR=\"'/tmp/x'\"?" in line
  assert "line " not in line  # Nothing points into gin's joined bindings string.


def test_a_bare_word_gets_the_quotes_and_a_broken_list_does_not():
  result = run_cli(
    ["train", "--gin_file=prompt_tuning/configs/runs/prompt_finetune.gin", "--gin.SEED=one"]
  )
  assert "did you mean --gin.SEED=\"'one'\"?" in _error_line(result)
  result = run_cli(
    [
      "train",
      "--gin_file=prompt_tuning/configs/runs/prompt_finetune.gin",
      "--gin.TRAIN_STEPS=[unclosed",
    ]
  )
  line = _error_line(result)
  assert "bad gin binding --gin.TRAIN_STEPS=[unclosed" in line and "did you mean" not in line
  assert line.endswith(
    "write VALUE in gin syntax (strings quoted, lists in [...], references as @name() or %MACRO)"
  )


def test_a_binding_to_an_unknown_parameter_is_named():
  result = run_cli(
    [
      "train",
      "--gin_file=prompt_tuning/configs/runs/prompt_finetune.gin",
      "--gin.TRAIN_STEPS=5",
      "--gin.trainer.train.no_such_parameter=3",
    ]
  )
  assert result.returncode == 2
  line = _error_line(result)
  assert "bad gin binding --gin.trainer.train.no_such_parameter=3: Configurable" in line, line
  assert "In bindings string" not in line


# ---------------------------------------------------------------- diff-checkpoints
def test_diff_checkpoints_exit_codes_tell_identical_different_and_unreadable(tmp_path):
  before = _snapshot(OLD_RUN)
  first, second = (os.path.join(OLD_RUN, f"checkpoint_{s}") for s in (3, 6))
  assert run_cli(["diff-checkpoints", first, first]).returncode == 0
  assert run_cli(["diff-checkpoints", first, second]).returncode == 1
  (tmp_path / "notes.txt").write_text("not a checkpoint")
  for other in (str(tmp_path), str(tmp_path / "missing"), str(tmp_path / "notes.txt")):
    result = run_cli(["diff-checkpoints", first, other])
    assert result.returncode == 2, other
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
  assert _snapshot(OLD_RUN) == before


def test_diff_checkpoints_help_documents_its_exit_codes(capsys):
  with pytest.raises(SystemExit):
    cli.main(["diff-checkpoints", "--help"])
  text = " ".join(capsys.readouterr().out.split())
  assert (
    "0 if the checkpoints hold the same names, shapes and values; 1 if they differ; 2 if" in text
  )
