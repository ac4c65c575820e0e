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


def _rows(batches: list[dict[str, np.ndarray]]) -> list[bytes]:
  return [row.tobytes() for batch in batches for row in batch["encoder_input_tokens"]]


def test_train_examples_trains_on_that_many_examples_chosen_by_their_own_seed():
  """TRAIN_EXAMPLES: 12 examples, the same 12 for any batch seed, other ones for another
  examples seed; every epoch goes over all of them once."""
  picked = _rows(_batches(3, train_examples=12, train_examples_seed=0))  # 24 rows: 2 epochs
  assert len(set(picked)) == 12
  assert sorted(picked[:12]) == sorted(picked[12:])  # Each epoch is the 12, reshuffled.
  stream = data.train_batches("demo_sentiment", LENGTHS, 8, seed=7, train_examples=12)
  assert set(_rows(list(itertools.islice(stream, 3)))) == set(picked)
  other = _rows(_batches(3, train_examples=12, train_examples_seed=1))
  assert set(other) != set(picked)
  # Deterministic, and resumable by position like the full split.
  assert _rows(_batches(3, train_examples=12)) == picked
  resumed = _batches(1, train_examples=12, start_position=2)
  assert _rows(resumed) == picked[16:]


def test_train_examples_larger_than_the_split_is_refused():
  with pytest.raises(ValueError, match="has only 2000 examples"):
    _batches(1, train_examples=5000)
  with pytest.raises(ValueError, match="positive number"):
    _batches(1, train_examples=0)


WIDE = {"inputs": 40, "targets": 4}
BUCKETS = [16, 24, 32]


def _wide(count: int, **kwargs) -> list[dict[str, np.ndarray]]:
  stream = data.train_batches("demo_sentiment", WIDE, 8, seed=3, **kwargs)
  return list(itertools.islice(stream, count))


def test_length_buckets_cut_the_same_batches_to_their_longest_row():
  """TRAIN_LENGTH_BUCKETS: the fixed-shape run's batches, rows and order unchanged, each
  cut to the smallest bucket holding its longest input; every process cuts alike."""
  fixed = _wide(6)
  cut = _wide(6, length_buckets=BUCKETS)
  shapes = set()
  for whole, trimmed in zip(fixed, cut):
    width = trimmed["encoder_input_tokens"].shape[1]
    shapes.add(width)
    longest = int((whole["encoder_input_tokens"] != 0).sum(axis=1).max())
    assert width == min(b for b in (*BUCKETS, 40) if b >= longest)
    for name, value in trimmed.items():
      np.testing.assert_array_equal(value, whole[name][:, : value.shape[1]])
      assert not whole[name][:, value.shape[1] :].any()  # Only padding was cut.
  assert len(shapes) > 1, shapes
  first = _wide(6, length_buckets=BUCKETS, rows=(0, 4))
  second = _wide(6, length_buckets=BUCKETS, rows=(4, 8))
  for a, b, whole in zip(first, second, cut):
    np.testing.assert_array_equal(
      np.concatenate([a["encoder_input_tokens"], b["encoder_input_tokens"]]),
      whole["encoder_input_tokens"],
    )
  resumed = _wide(1, length_buckets=BUCKETS, start_position=4)[0]
  np.testing.assert_array_equal(resumed["encoder_input_tokens"], cut[4]["encoder_input_tokens"])


def test_grouping_by_length_sorts_each_window_into_batches_and_uses_every_example_once():
  """TRAIN_LENGTH_GROUPING = 4: each window of 4 batches (32 examples) of the shuffled
  stream comes back as 4 batches of similar lengths holding exactly those examples; the
  batches' order is shuffled, not ascending, and resuming by position is exact."""
  fixed = _wide(8)
  grouped = _wide(8, group_by_length=4)
  for window in range(2):
    plain = fixed[window * 4 : (window + 1) * 4]
    sorted_ = grouped[window * 4 : (window + 1) * 4]
    assert sorted(_rows(plain)) == sorted(_rows(sorted_))  # The same examples.
    spans = []
    for batch in sorted_:
      lengths = (batch["encoder_input_tokens"] != 0).sum(axis=1)
      spans.append((int(lengths.min()), int(lengths.max())))
    # Sorted then cut: the batches' length ranges do not interleave.
    ordered = sorted(spans)
    assert all(a[1] <= b[0] for a, b in zip(ordered, ordered[1:])), spans
  # Shuffled batch order within windows (for this seed, not ascending in both windows).
  first = [int((b["encoder_input_tokens"] != 0).sum(axis=1).min()) for b in grouped]
  assert first[:4] != sorted(first[:4]) or first[4:] != sorted(first[4:])
  # Grouped rows of one batch share a narrow range: its longest is far below the fixed
  # batches' longest on average, which is what the buckets then save.
  longest = lambda batches: np.mean(
    [(b["encoder_input_tokens"] != 0).sum(1).max() for b in batches]
  )
  assert longest(grouped) < longest(fixed)
  resumed = _wide(3, group_by_length=4, start_position=5)
  assert _rows(resumed) == _rows(grouped[5:8])
  assert _rows(_wide(8, group_by_length=4)) == _rows(grouped)  # Deterministic.
  with_rows = _wide(2, group_by_length=4, rows=(4, 8))
  for part, whole in zip(with_rows, grouped):
    np.testing.assert_array_equal(part["encoder_input_tokens"], whole["encoder_input_tokens"][4:])


def test_grouping_needs_a_positive_window():
  with pytest.raises(ValueError, match="TRAIN_LENGTH_GROUPING must be a positive"):
    _wide(1, group_by_length=0)
