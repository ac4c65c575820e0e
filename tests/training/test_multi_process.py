"""A pod's faults on one CPU: `prompt-tuning train` as a two-process `jax.distributed` job
(2 processes x 4 fake devices) against the one-process run on 8, a host SIGKILLed mid-run,
and the restart.

Each process is a real `python -m prompt_tuning train` with the multi-process flags, as a
user would start one per host; the tests take about two minutes together.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from prompt_tuning import errors
from tests.cli_testing import tiny_job_args

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 60
PERIOD = 3
PROMPT_FILE = "encoder.prompt.prompt.npy"
# As tests/training/test_mesh_training.py: the same 8x1 mesh, but Gloo sums across the
# two processes in another order; the difference grows with the steps (about 5e-6 after
# three here, 4e-4 after eight).
AFTER_THREE_STEPS = dict(atol=4e-5, rtol=0)
# A process blocked outside a collective (in a barrier of a checkpoint save, say) learns
# of a lost peer from jax's heartbeats: after --heartbeat_timeout_seconds (jax's default
# is 100; these tests pass 10). One in a collective learns at once (Gloo's connection
# is reset). Either way it must be gone this soon after its peer.
HEARTBEAT_TIMEOUT_S = 10
LOST_PEER_BOUND_S = 45


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _environment(devices: int) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
  env.update(
    JAX_PLATFORMS="cpu",
    XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    PYTHONPATH=REPO,
  )
  return env


def _start(model_dir, processes: int, logs, **bindings: str) -> list[subprocess.Popen]:
  """`prompt-tuning train` of the tiny job, one process per "host"; output to `logs`."""
  args = tiny_job_args(
    "train",
    "prompt_finetune.gin",
    MODEL_DIR=repr(str(model_dir)),
    TRAIN_STEPS=str(STEPS),
    CHECKPOINT_PERIOD=str(PERIOD),
    BATCH_SIZE="8",
    **bindings,
  )
  port = _free_port()
  started = []
  for index in range(processes):
    flags = []
    if processes > 1:
      flags = [
        f"--coordinator_address=localhost:{port}",
        f"--num_processes={processes}",
        f"--process_id={index}",
        f"--heartbeat_timeout_seconds={HEARTBEAT_TIMEOUT_S}",
      ]
    with (
      open(logs / f"stdout_{index}.txt", "w") as out,
      open(logs / f"stderr_{index}.txt", "w") as err,
    ):
      started.append(
        subprocess.Popen(
          [sys.executable, "-m", "prompt_tuning", *args, *flags],
          cwd=REPO,
          env=_environment(8 // processes),
          stdout=out,
          stderr=err,
        )
      )
  return started


def _finish(started: list[subprocess.Popen], logs, timeout: float = 400) -> list[int]:
  codes = [p.wait(timeout=timeout) for p in started]
  for index, code in enumerate(codes):
    assert code == 0, (logs / f"stderr_{index}.txt").read_text()[-3000:]
  return codes


def _prompt(model_dir, step: int) -> np.ndarray:
  return np.load(model_dir / "numpy_checkpoints" / f"checkpoint_{step}" / PROMPT_FILE)


def _complete_steps(model_dir) -> list[int]:
  names = os.listdir(model_dir) if model_dir.exists() else []
  return sorted(int(n.split("_")[1]) for n in names if n.split("_")[-1].isdigit() and "." not in n)


def _stderr_lines(logs, index: int) -> list[str]:
  return [line for line in (logs / f"stderr_{index}.txt").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """The two-process run, start to end, and its logs."""
  root = tmp_path_factory.mktemp("uninterrupted")
  model_dir = root / "model_dir"
  _finish(_start(model_dir, 2, root), root)
  return model_dir, root


def test_a_two_process_run_trains_the_prompt_of_the_one_process_run(uninterrupted, tmp_path):
  """Each process feeds its own rows of every global batch, cut from the same stream, so
  the batches do not depend on the process count; the one-process run stops after the
  same three steps (stop_after_steps keeps everything else of the run equal)."""
  model_dir, _ = uninterrupted
  single = tmp_path / "model_dir"
  _finish(_start(single, 1, tmp_path, **{"trainer.train.stop_after_steps": "3"}), tmp_path)
  np.testing.assert_allclose(_prompt(model_dir, 3), _prompt(single, 3), **AFTER_THREE_STEPS)
  assert not np.array_equal(_prompt(model_dir, 3), _prompt(model_dir, STEPS))


def test_a_two_process_run_writes_one_set_of_checkpoints_and_logs(uninterrupted):
  model_dir, logs = uninterrupted
  expected = list(range(PERIOD, STEPS + 1, PERIOD))
  assert _complete_steps(model_dir) == expected
  assert not [n for n in os.listdir(model_dir) if "tmp" in n]
  assert (
    sorted(int(n.split("_")[1]) for n in os.listdir(model_dir / "numpy_checkpoints")) == expected
  )
  # Both processes wrote their part into the same step directory (OCDBT, one per process).
  state = os.listdir(model_dir / f"checkpoint_{STEPS}" / "state")
  assert {"ocdbt.process_0", "ocdbt.process_1"} <= set(state)
  # TensorBoard: process 0 writes (training scalars, eval examples); process 1 nothing.
  # Event files are named events.out.tfevents.TIME.HOST.PID.N.v2.
  writers = {re.search(r"\.(\d+)\.\d+\.v2$", n).group(1) for n in os.listdir(model_dir / "train")}
  assert len(writers) == 1
  records = [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]
  steps = [r["step"] for r in records if "loss" in json.dumps(r)]
  assert len(steps) == len(set(steps))  # process 1 logs nothing
  assert "trained to step 60" in (logs / "stdout_0.txt").read_text()
  assert "trained to step" not in (logs / "stdout_1.txt").read_text()
  # Each process is a watched worker that quiets itself (prompt_tuning/quiet.py) as one
  # process would: none of Gloo's or TensorFlow's start-up lines.
  for index in range(2):
    printed = (logs / f"stdout_{index}.txt").read_text() + "\n".join(_stderr_lines(logs, index))
    for mark in ("[Gloo]", "peer ranks", "absl::InitializeLog", "port.cc:", "cudart_stub.cc:"):
      assert mark not in printed, printed[-2000:]


@pytest.mark.parametrize("victim", [1, 0], ids=["worker_lost", "coordinator_lost"])
def test_a_lost_host_stops_the_other_in_one_line_and_a_restart_ends_identical(
  victim, uninterrupted, tmp_path
):
  """SIGKILL one process once the first checkpoints exist: the other exits within the
  bound with one line and exit code 75; both restarted with the same command resume from
  the last complete checkpoint and end bit-identical to the uninterrupted run."""
  reference, _ = uninterrupted
  model_dir = tmp_path / "model_dir"
  started = _start(model_dir, 2, tmp_path)
  deadline = time.monotonic() + 300
  while PERIOD * 2 not in _complete_steps(model_dir):
    assert time.monotonic() < deadline, "no checkpoint within 300 s"
    assert all(p.poll() is None for p in started), "a process ended before the kill"
    time.sleep(0.05)
  started[victim].send_signal(signal.SIGKILL)
  killed_at = time.monotonic()
  survivor = started[1 - victim]
  code = survivor.wait(timeout=LOST_PEER_BOUND_S + 30)
  waited = time.monotonic() - killed_at
  started[victim].wait()
  assert waited < LOST_PEER_BOUND_S
  assert code == errors.EXIT_PEER_LOST
  lines = _stderr_lines(tmp_path, 1 - victim)
  assert errors.LOST_PEER_MARK in lines[-1] and "same command" in lines[-1]
  text = "\n".join(lines)
  assert "Traceback" not in text and "Check failure" not in text and "*** " not in text
  before = _complete_steps(model_dir)
  assert before and before[-1] < STEPS, "the kill came after the run had ended"

  _finish(_start(model_dir, 2, tmp_path), tmp_path)
  assert f"at step {before[-1]} " in (tmp_path / "stderr_0.txt").read_text()
  np.testing.assert_array_equal(_prompt(model_dir, STEPS), _prompt(reference, STEPS))


def test_a_checkpoint_only_one_process_finished_is_never_taken_as_complete(uninterrupted, tmp_path):
  """Orbax writes a step into `checkpoint_N.orbax-checkpoint-tmp-*` and renames it only
  after every process has written its part and process 0 has merged them (on GCS, where
  nothing is renamed, it writes `commit_success.txt` last). Stage what a host lost
  mid-save leaves: the run stopped at step 30 and, for step 33, only process 1's part of
  the state, both as orbax's temporary directory and under the final name. The restart
  skips step 33 with a warning, resumes from step 30 and ends as the uninterrupted run."""
  reference, _ = uninterrupted
  model_dir = tmp_path / "model_dir"
  shutil.copytree(reference, model_dir)
  for step in range(33, STEPS + 1, PERIOD):
    shutil.rmtree(model_dir / f"checkpoint_{step}")
    shutil.rmtree(model_dir / "numpy_checkpoints" / f"checkpoint_{step}")
  for name in ("checkpoint_33.orbax-checkpoint-tmp-1796420000", "checkpoint_33"):
    shutil.copytree(
      model_dir / "checkpoint_30" / "state" / "ocdbt.process_1",
      model_dir / name / "state" / "ocdbt.process_1",
    )
  _finish(_start(model_dir, 2, tmp_path), tmp_path)
  output = (tmp_path / "stderr_0.txt").read_text()
  assert "at step 30 " in output and "skipping unreadable checkpoint" in output
  np.testing.assert_array_equal(_prompt(model_dir, STEPS), _prompt(reference, STEPS))
