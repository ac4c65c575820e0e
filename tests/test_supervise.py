"""The watcher of a multi-process job's process: what a user sees when a peer is lost.

The lines fed here are the ones jax 0.10 printed in tests/training/test_multi_process.py's
runs; that file runs the whole thing with real processes.
"""

from __future__ import annotations

import io
import signal

import pytest

from prompt_tuning import errors, supervise

COORDINATOR_GONE = (
  "F1204 21:37:53.455091   13452 client.h:80] Terminating process because the JAX "
  "distributed service detected fatal errors. This most likely indicates that another task "
  "died; see the other task logs for more details. absl::Status: UNAVAILABLE: Failed to send "
  "RPC to coordination service. Either the leader task was preempted/died/restarted "
  "unexpectedly or this task is experiencing network issues.\n"
)
STACK = [
  "Additional GRPC error information from remote target coordination_service:\n",
  "*** Check failure stack trace: ***\n",
  "    @     0x7f0697a40634  absl::lts_20260107::log_internal::LogMessage::SendToLog()\n",
]


def _watch(lines: list[str], returncode: int) -> tuple[int, list[str]]:
  out = io.StringIO()
  watcher = supervise.StderrWatcher(out)
  for line in lines:
    watcher.feed(line)
  code = watcher.finish("train", returncode)
  return code, out.getvalue().splitlines()


def test_jax_aborting_a_survivor_becomes_one_line_and_exit_75():
  code, lines = _watch(["step 50/400\n", COORDINATOR_GONE, *STACK], -signal.SIGABRT)
  assert code == errors.EXIT_PEER_LOST == 75
  assert lines[0] == "step 50/400"
  assert len(lines) == 2
  assert lines[1].startswith(f"prompt-tuning train: error: {errors.LOST_PEER_MARK} (UNAVAILABLE:")
  assert "restart every process with the same command" in lines[1]


def test_a_worker_that_said_it_lost_a_peer_is_not_repeated():
  said = f"prompt-tuning train: error: {errors.LOST_PEER_MARK} (Gloo AllGather failed); ...\n"
  code, lines = _watch([said, COORDINATOR_GONE, *STACK], -signal.SIGABRT)
  assert code == errors.EXIT_PEER_LOST
  assert lines == [said.strip()]


def test_another_fatal_error_is_one_line_with_its_status():
  fatal = "F1204 21:37:53.455091   13452 foo.cc:12] Check failed: x absl::Status: INTERNAL: boom\n"
  code, lines = _watch([fatal, *STACK], -signal.SIGABRT)
  assert code == errors.EXIT_ERROR
  assert lines == [
    "prompt-tuning train: error: jax ended the process: INTERNAL: boom; rerun with --debug "
    "for jax's own output"
  ]


def test_a_worker_killed_by_a_signal_says_which_and_exits_128_plus_it():
  code, lines = _watch(["step 1/4\n"], -signal.SIGKILL)
  assert code == 128 + signal.SIGKILL
  assert lines[-1] == (
    "prompt-tuning train: error: the worker process was killed by SIGKILL; rerun the same command"
  )


def test_a_worker_exit_code_passes_through_with_its_output():
  assert _watch(["W warning line\n", "prompt-tuning train: error: x\n"], 1) == (
    1,
    ["W warning line", "prompt-tuning train: error: x"],
  )


@pytest.mark.parametrize(
  "command, argv, environ, expected",
  [
    ("train", ["--num_processes=2", "--process_id=0"], {}, True),
    ("eval", ["--distributed"], {}, True),
    ("infer", [], {"JAX_NUM_PROCESSES": "4"}, True),
    ("train", ["--num_processes=1"], {}, False),
    ("train", [], {}, False),
    ("train", ["--num_processes=2"], {supervise.WORKER_ENV: "1"}, False),
    ("train", ["--num_processes=2", "--debug"], {}, False),
    ("train", ["--num_processes=two"], {}, False),
    ("convert", ["--num_processes=2"], {}, False),
  ],
)
def test_only_the_gin_jobs_of_a_multi_process_job_are_watched(command, argv, environ, expected):
  assert supervise.wanted(command, argv, environ) is expected


def test_a_lost_peer_is_recognised_only_in_a_multi_process_job(monkeypatch):
  error = RuntimeError(
    "UNKNOWN: Gloo AllGather failed: [pair.cc:538] Read error: Connection reset by peer "
    "In call to configurable 'train' (<function train at 0x7f05d802eca0>)"
  )
  monkeypatch.setattr(errors, "in_multi_process_job", lambda: False)
  assert errors.describe(error)[1] == errors.EXIT_ERROR
  monkeypatch.setattr(errors, "in_multi_process_job", lambda: True)
  message, code = errors.describe(error)
  assert code == errors.EXIT_PEER_LOST
  assert message.startswith(errors.LOST_PEER_MARK) and "In call to configurable" not in message


def test_gins_suffix_is_stripped_from_every_one_line_error():
  error = ValueError("bad value In call to configurable 'train' (<function train at 0x7f0>)")
  assert errors.one_line(error) == "bad value"


def test_gloo_terminating_on_a_message_cut_short_is_a_lost_peer():
  """A peer killed mid-send leaves Gloo a message shorter than announced; it throws, and
  nobody catches it (std::terminate, SIGABRT)."""
  lines = [
    "terminate called after throwing an instance of 'gloo::EnforceNotMet'\n",
    "  what():  [enforce fail at external/gloo/gloo/transport/tcp/pair.cc:459] "
    "op.preamble.length <= op.nbytes. 24 vs 4. Received data size doesn't match expected size.\n",
  ]
  code, said = _watch(lines, -signal.SIGABRT)
  assert code == errors.EXIT_PEER_LOST
  assert len(said) == 1 and said[0].startswith(
    f"prompt-tuning train: error: {errors.LOST_PEER_MARK}"
  )
  assert "Received data size" in said[0]
