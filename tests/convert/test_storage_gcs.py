"""`gs://` paths without a reachable Cloud Storage: every first touch (a checkpoint
directory, the default vocabulary) fails within PROMPT_TUNING_GCS_TIMEOUT seconds with one
line naming what could not be reached and what to pass instead.

No test reaches the network: tensorstore's GCS driver is pointed (TENSORSTORE_GCS_HTTP_URL)
at a local server that accepts connections and never answers, which is what a dead link
looks like; TensorFlow's GCS reads are replaced by reads that block or fail."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import tensorflow as tf
import tensorstore as ts

from prompt_tuning.convert import storage
from prompt_tuning.data import remote
from prompt_tuning.data import vocab
from tests.cli_testing import run_cli

CHECKPOINT = "gs://test-bucket/models/checkpoint_1000"


def _within(seconds: float, fn):
  """`fn()`'s exception (or result), failing the test instead of hanging past `seconds`."""
  outcome = {}

  def target():
    try:
      outcome["value"] = fn()
    except BaseException as e:
      outcome["error"] = e

  thread = threading.Thread(target=target, daemon=True)
  thread.start()
  thread.join(seconds)
  assert not thread.is_alive(), f"still waiting after {seconds} s"
  if "error" in outcome:
    raise outcome["error"]
  return outcome["value"]


@pytest.fixture
def silent_gcs(monkeypatch):
  """A GCS endpoint that never answers, and a 1-second deadline."""
  server = socket.socket()
  server.bind(("127.0.0.1", 0))
  server.listen(16)
  held = []

  def accept():
    while True:
      try:
        held.append(server.accept()[0])
      except OSError:
        return

  threading.Thread(target=accept, daemon=True).start()
  monkeypatch.setenv("TENSORSTORE_GCS_HTTP_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
  monkeypatch.setenv(remote.TIMEOUT_ENV, "1")
  yield held
  server.close()
  for connection in held:
    connection.close()


def test_listing_a_bucket_that_never_answers_fails_at_the_deadline_naming_the_path(silent_gcs):
  with pytest.raises(remote.UnreachableError) as e:
    _within(10, lambda: storage.Directory(CHECKPOINT).keys())
  assert silent_gcs, "the request must have gone to the silent local endpoint"
  assert str(e.value) == (
    f"could not reach the checkpoint location {CHECKPOINT}: no answer within 1 s "
    "(PROMPT_TUNING_GCS_TIMEOUT): no network, or no access to Google Cloud Storage; copy it "
    f"to a local directory (`gsutil -m cp -r {CHECKPOINT} DIR`) and pass DIR instead"
  )


def test_reading_a_file_from_a_bucket_that_never_answers_fails_at_the_deadline(silent_gcs):
  with pytest.raises(
    remote.UnreachableError, match=f"^could not reach .* {CHECKPOINT}/checkpoint:"
  ):
    _within(10, lambda: storage.Directory(CHECKPOINT).read("checkpoint"))


def test_inspect_checkpoint_on_an_unreachable_bucket_is_one_line_and_exit_1(silent_gcs):
  result = _within(15, lambda: run_cli(["inspect-checkpoint", CHECKPOINT]))
  assert result.returncode == 1
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  assert f"could not reach the checkpoint location {CHECKPOINT}" in lines[0]
  assert "pass DIR instead" in lines[0]
  assert "Traceback" not in result.stderr


def test_a_vocabulary_on_gcs_that_never_answers_fails_at_the_deadline_naming_spm_path(monkeypatch):
  monkeypatch.setenv(remote.TIMEOUT_ENV, "0.5")
  release = threading.Event()
  monkeypatch.setattr(tf.io.gfile, "exists", lambda path: release.wait(30))
  path = "gs://test-bucket/vocabs/sentencepiece.model"
  start = time.monotonic()
  try:
    with pytest.raises(remote.UnreachableError) as e:
      vocab.get_vocabulary(spm_path=path).vocab_size
  finally:
    release.set()
  assert time.monotonic() - start < 5
  assert str(e.value).startswith(f"could not reach the SentencePiece vocabulary {path}: ")
  assert "no answer within 0.5 s" in str(e.value)
  assert "--gin.get_vocabulary.spm_path=\"'DIR/sentencepiece.model'\"" in str(e.value)


def test_a_vocabulary_on_gcs_whose_read_fails_reports_the_first_line_of_the_failure(monkeypatch):
  def refuse(path):
    raise tf.errors.FailedPreconditionError(None, None, "Could not resolve host\n  details")

  monkeypatch.setattr(tf.io.gfile, "exists", refuse)
  path = "gs://test-bucket/vocabs/other.model"
  with pytest.raises(remote.UnreachableError) as e:
    vocab.get_vocabulary(spm_path=path).vocab_size
  assert str(e.value).startswith(
    f"could not reach the SentencePiece vocabulary {path}: Could not resolve host; pass "
  )


def test_a_missing_vocabulary_on_gcs_is_file_not_found(monkeypatch):
  monkeypatch.setattr(tf.io.gfile, "exists", lambda path: False)
  with pytest.raises(FileNotFoundError, match="does not exist; set get_vocabulary.spm_path"):
    vocab.get_vocabulary(spm_path="gs://test-bucket/vocabs/missing.model").vocab_size


def test_a_local_vocabulary_is_read_without_the_gcs_check(monkeypatch, tmp_path):
  monkeypatch.setattr(tf.io.gfile, "exists", lambda path: pytest.fail("checked a local path"))
  model = vocab.train_sentencepiece(["a b c d e f g"] * 20, str(tmp_path / "v.model"), 30)
  assert vocab.get_vocabulary(spm_path=model, extra_ids=0).vocab_size > 3


@pytest.mark.parametrize("raw", ["0", "-3", "soon"])
def test_a_deadline_that_is_not_a_positive_number_is_one_line_naming_the_variable(monkeypatch, raw):
  monkeypatch.setenv(remote.TIMEOUT_ENV, raw)
  with pytest.raises(ValueError, match=f"^PROMPT_TUNING_GCS_TIMEOUT='{raw}' is not a number"):
    remote.timeout_seconds()


def test_the_deadline_defaults_to_20_seconds(monkeypatch):
  monkeypatch.delenv(remote.TIMEOUT_ENV, raising=False)
  assert remote.timeout_seconds() == 20.0


def test_a_chunk_read_after_the_first_touch_gives_up_within_a_few_deadlines(silent_gcs):
  """The zarr arrays of a T5X checkpoint are opened by tensorstore itself, with no
  deadline of ours around the call: the bounded retries and curl timeouts that every
  gs:// kvstore spec carries make it fail instead of waiting on the silent endpoint."""
  spec = {
    "driver": "zarr",
    "kvstore": storage.kvstore_spec(f"{CHECKPOINT}/target.encoder.layers_0.attention.key"),
  }
  start = time.monotonic()
  with pytest.raises(ValueError, match="retry attempts failed"):
    _within(30, lambda: ts.open(spec, open=True, read=True).result())
  # (1 + GCS_MAX_RETRIES) stalled attempts of 1 s each, and the delays between them.
  assert time.monotonic() - start < 10
  assert silent_gcs, "the request must have gone to the silent local endpoint"


def test_gcs_kvstore_specs_bound_tensorstores_retries_by_the_deadline(monkeypatch):
  monkeypatch.setenv(remote.TIMEOUT_ENV, "5")
  spec = storage.kvstore_spec("gs://test-bucket/models/checkpoint_1000")
  assert spec["context"]["gcs_request_retries"] == {
    "max_retries": storage.GCS_MAX_RETRIES,
    "initial_delay": "1s",
    "max_delay": "5s",
  }
  assert "context" not in storage.kvstore_spec("/local/checkpoint_1000")
