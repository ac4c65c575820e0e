"""Errors as one line: what the command line prints and what warnings about skipped
checkpoints quote, so that a user sees what went wrong without a traceback.

`describe` turns the exceptions a job can meet (the libraries' as well as ours) into a
line that names the problem and what to do about it, and the exit code to leave with;
the command line prints that line unless `--debug` asks for the traceback.
"""

from __future__ import annotations

import errno
import re
import sys

MAX_LENGTH = 400

# Exit codes: an error of the job, a usage or configuration mistake, Ctrl-C (128 + SIGINT).
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
# Another process of a multi-process job was lost: nothing is wrong with this one, and
# rerunning every process resumes (EX_TEMPFAIL, "try again", for restart scripts).
EXIT_PEER_LOST = 75

LOST_PEER_MARK = "another process of this multi-process job was lost"
PEER_LOST_ADVICE = (
  "restart every process with the same command; training resumes from the last complete checkpoint"
)

# gin appends this to the message of any error raised inside a configurable.
_GIN_SUFFIX = re.compile(r"\s*In call to configurable '[^']*' \(<[^>]*>\)")
# What jax's collectives (Gloo on CPU, the coordination service everywhere) say when the
# process at the other end is gone. Gloo's own exceptions (`gloo::EnforceNotMet`: a message
# shorter than announced) come from a peer killed mid-send: every process runs the same
# compiled collectives, so a real mismatch between them is not what they mean here.
_PEER_LOST = re.compile(
  r"Gloo \w+ failed|gloo::\w+|Connection (reset|closed) by peer|heartbeat timeout|"
  r"detected fatal errors|leader task was preempted|Socket closed|"
  r"Barrier failed because: task is set to ERROR|Timed out while waiting for \S+ barrier"
)


class ConfigurationError(ValueError):
  """A value of the configuration that cannot work (a period of 0, a feature length of 0,
  a MODEL_DIR that is a file), found before anything is loaded: exit code 2."""


class TrainingInterrupted(KeyboardInterrupt):
  """Ctrl-C during training, after pending checkpoint writes finished: `step` is the last
  step that completed, `checkpoint_step` the newest checkpoint on disk (None: none yet)."""

  def __init__(self, step: int, checkpoint_step: int | None, model_dir: str) -> None:
    super().__init__(step)
    self.step = step
    self.checkpoint_step = checkpoint_step
    self.model_dir = model_dir

  def __str__(self) -> str:
    if self.checkpoint_step is None:
      saved = f"no checkpoint was saved yet in {self.model_dir}, so it starts from step 0"
    else:
      saved = f"it continues from checkpoint_{self.checkpoint_step} in {self.model_dir}"
    return f"interrupted at step {self.step}; rerun the same command to resume ({saved})"


def one_line(error: BaseException, *, with_type: bool = False) -> str:
  """The error's message with its whitespace folded, cut to MAX_LENGTH characters;
  `with_type` prefixes the exception's class (for errors from libraries, whose messages
  alone can be cryptic)."""
  text = " ".join(_GIN_SUFFIX.sub("", str(error)).split())
  if len(text) > MAX_LENGTH:
    text = text[: MAX_LENGTH - 3] + "..."
  return f"{type(error).__name__}: {text}" if with_type else text


def shorten(text: str, limit: int = 160) -> str:
  text = " ".join(text.split())
  return text if len(text) <= limit else text[: limit - 3] + "..."


def lost_peer_reason(text: str) -> str | None:
  """Why a message says another process of the job is gone (shortened), or None when it
  says something else."""
  text = _GIN_SUFFIX.sub("", text)
  return shorten(text) if _PEER_LOST.search(text) else None


def in_multi_process_job() -> bool:
  """Whether this process joined a `jax.distributed` job (without importing jax)."""
  jax = sys.modules.get("jax")
  return jax is not None and jax.distributed.is_initialized()


def lost_peer_message(reason: str) -> str:
  return f"{LOST_PEER_MARK} ({reason}); {PEER_LOST_ADVICE}"


def _is_instance(error: BaseException, module: str, name: str) -> bool:
  """isinstance against a library's class, without importing the library: an error of
  that class can only exist once the library is loaded."""
  loaded = sys.modules.get(module)
  cls = getattr(loaded, name, None) if loaded is not None else None
  return isinstance(cls, type) and isinstance(error, cls)


def _tensorflow_message(error: BaseException) -> str:
  # tf.errors.OpError carries the message without TensorFlow's context lines.
  return shorten(_GIN_SUFFIX.sub("", str(getattr(error, "message", None) or error)), MAX_LENGTH)


def _os_error(error: OSError) -> str:
  where = error.filename or "a file"
  if error.filename2:
    where = f"{error.filename} -> {error.filename2}"
  code = error.errno
  if code == errno.ENOSPC or "No space left on device" in str(error):
    return (
      f"no space left on the device while writing {where}; free space on that disk "
      "(or choose a directory on another one) and rerun"
    )
  if isinstance(error, FileExistsError):
    return f"{where} already exists; remove it or choose another path, then rerun"
  if isinstance(error, PermissionError):
    return f"permission denied on {where}; choose a path you may write to or fix its permissions"
  if isinstance(error, (IsADirectoryError, NotADirectoryError)):
    return f"{one_line(error)}; check that the path names what the option expects"
  if isinstance(error, FileNotFoundError):
    return f"{one_line(error)}; check the path (relative paths start from the current directory)"
  return f"{one_line(error, with_type=True)} (while accessing {where}); check the path and the disk"


def describe(error: BaseException) -> tuple[str, int]:
  """(one line naming the problem and the fix, exit code) for any exception."""
  if isinstance(error, TrainingInterrupted):
    return str(error), EXIT_INTERRUPTED
  if isinstance(error, KeyboardInterrupt):
    # Training's own Ctrl-C is a TrainingInterrupted; this one came before any step (or
    # during eval / infer, which save nothing until they end).
    return "interrupted before anything was saved", EXIT_INTERRUPTED
  if isinstance(error, ConfigurationError):
    return one_line(error), EXIT_USAGE
  if in_multi_process_job() and (reason := lost_peer_reason(str(error))) is not None:
    return lost_peer_message(reason), EXIT_PEER_LOST
  if _is_instance(error, "tensorflow.python.framework.errors_impl", "OpError"):
    name = type(error).__name__
    text = _tensorflow_message(error)
    if name == "PermissionDeniedError":
      return (
        f"permission denied: {text}; choose a path you may write to or fix its permissions",
        EXIT_ERROR,
      )
    if name == "NotFoundError":
      return f"not found: {text}; check the path (and TFDS_DATA_DIR for datasets)", EXIT_ERROR
    if name == "FailedPreconditionError":
      return (
        f"failed precondition: {text}; usually a file where a directory is expected (or "
        "the reverse), or a file another process holds; check the path",
        EXIT_ERROR,
      )
    if name == "ResourceExhaustedError":
      return f"out of resources: {text}; free disk or memory, or lower BATCH_SIZE", EXIT_ERROR
    return f"TensorFlow {name}: {text}", EXIT_ERROR
  if _is_instance(error, "google.protobuf.message", "DecodeError"):
    return (
      f"a file could not be parsed as a protocol buffer ({one_line(error)}): it is damaged "
      "or not of the expected kind (a SentencePiece model, a TensorFlow record or event "
      "file); check the path, or replace the file with a good copy",
      EXIT_ERROR,
    )
  if isinstance(error, OSError):
    return _os_error(error), EXIT_ERROR
  if isinstance(error, ZeroDivisionError):
    return (
      f"division by zero ({one_line(error)}): a count or period of the configuration is 0; "
      "set periods, sizes and step counts to at least 1",
      EXIT_ERROR,
    )
  if isinstance(error, IndexError):
    return (
      f"index out of range ({one_line(error)}): an input is shorter than the configuration "
      "expects (an empty split or file, a prompt with fewer rows than PROMPT_LENGTH); "
      "check the inputs against the gin settings",
      EXIT_ERROR,
    )
  if isinstance(error, (ValueError, RuntimeError)):
    return one_line(error), EXIT_ERROR
  return one_line(error, with_type=True), EXIT_ERROR
