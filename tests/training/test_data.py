"""The training input: each process's rows of the same global batches."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from prompt_tuning.data import tasks  # noqa: F401 (registers the demo task)
from prompt_tuning.training import data

LENGTHS = {"inputs": 24, "targets": 4}


def _batches(count: int, **kwargs) -> list[dict[str, np.ndarray]]:
  stream = data.train_batches("demo_sentiment", LENGTHS, 8, seed=3, **kwargs)
  return list(itertools.islice(stream, count))


def test_the_rows_of_a_process_are_its_block_of_the_same_global_batches():
  """What a two-process job's processes feed is the one-process run's batches, cut in
  two, so the trained prompt does not depend on the process count."""
  whole = _batches(3)
  first, second = _batches(3, rows=(0, 4)), _batches(3, rows=(4, 8))
  for full, a, b in zip(whole, first, second):
    for name in full:
      np.testing.assert_array_equal(np.concatenate([a[name], b[name]]), full[name])


def test_resuming_at_a_position_continues_each_process_where_it_stopped():
  np.testing.assert_array_equal(
    _batches(1, rows=(4, 8), start_position=2)[0]["encoder_input_tokens"],
    _batches(3, rows=(4, 8))[2]["encoder_input_tokens"],
  )


def test_one_process_feeds_every_row():
  assert data.process_rows(8) == (0, 8)


@pytest.mark.parametrize(
  "kwargs, message",
  [
    (dict(shard_by="files"), "shard_by must be one of"),
    (dict(rows=(4, 12)), "not inside a batch of 8"),
    (dict(rows=(4, 4)), "not inside a batch of 8"),
  ],
)
def test_bad_input_sharding_settings_are_refused(kwargs, message):
  with pytest.raises(ValueError, match=message):
    _batches(1, **kwargs)
