"""Length buckets: which lengths a feature gets, and how a batch is cut to one."""

from __future__ import annotations

import numpy as np
import pytest

from prompt_tuning.training import buckets


def test_auto_buckets_are_powers_of_two_from_64_up_to_the_feature_length():
  assert buckets.powers_of_two(512) == (64, 128, 256, 512)
  assert buckets.powers_of_two(300) == (64, 128, 256, 300)
  assert buckets.powers_of_two(64) == (64,)
  assert buckets.powers_of_two(24) == (24,)
  assert buckets.resolve("auto", 200) == (64, 128, 200)


def test_given_buckets_are_sorted_capped_at_the_feature_length_which_is_always_one():
  assert buckets.resolve([32, 8, 16, 8], 24) == (8, 16, 24)
  assert buckets.resolve([8, 100], 64) == (8, 64)
  assert buckets.resolve(None, 64) is None


@pytest.mark.parametrize(
  "bad, message", [("powers", "use 'auto', None"), ([], "positive lengths"), ([0, 8], "positive")]
)
def test_bad_buckets_are_one_line_errors(bad, message):
  with pytest.raises(ValueError, match=message) as error:
    buckets.resolve(bad, 64)
  assert "\n" not in str(error.value)


def test_real_length_is_one_past_the_last_non_padding_token():
  tokens = np.array([[5, 6, 1, 0, 0], [5, 0, 7, 1, 0], [0, 0, 0, 0, 0], [1, 2, 3, 4, 5]])
  np.testing.assert_array_equal(buckets.real_lengths(tokens), [3, 4, 0, 5])


def test_rows_are_grouped_by_bucket_in_their_order_shortest_bucket_first():
  groups = buckets.group([30, 5, 9, 70, 8, 17], (8, 16, 32, 64, 100))
  assert groups == {8: [1, 4], 16: [2], 32: [0, 5], 100: [3]}
  assert buckets.bucket_of(0, (8, 16)) == 8


def test_trim_cuts_each_side_to_the_bucket_of_its_longest_row():
  encoder = np.zeros((2, 64), np.int32)
  encoder[0, :5], encoder[1, :11] = 3, 4
  decoder = np.zeros((2, 16), np.int32)
  decoder[:, :3] = 2
  batch = {
    "encoder_input_tokens": encoder,
    "decoder_input_tokens": decoder,
    "decoder_target_tokens": decoder,
    "decoder_loss_weights": (decoder > 0).astype(np.float32),
    "prompt_ids": np.array([0, 1], np.int32),
  }
  cut = buckets.trim(batch, (8, 16, 64), (4, 16))
  assert cut["encoder_input_tokens"].shape == (2, 16)
  np.testing.assert_array_equal(cut["encoder_input_tokens"], encoder[:, :16])
  assert {cut[k].shape for k in buckets.DECODER_FEATURES} == {(2, 4)}
  np.testing.assert_array_equal(cut["prompt_ids"], [0, 1])
  # Without decoder buckets the decoder keeps its length (the decode budget).
  assert buckets.trim(batch, (8, 16, 64))["decoder_target_tokens"].shape == (2, 16)
  assert buckets.trim(batch, None)["encoder_input_tokens"].shape == (2, 64)
