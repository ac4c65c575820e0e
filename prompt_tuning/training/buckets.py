"""Length buckets: batches padded to the smallest of a few lengths that holds their
longest example, instead of always to the task's feature length.

Real inputs are mostly far shorter than TASK_FEATURE_LENGTHS (WiC, COPA and WSC a few
dozen tokens against 512), so a fixed-shape batch spends most of its FLOPs on padding.
JAX needs static shapes, so each bucket length is one compiled shape: the compile count
is bounded by the number of buckets. The prompt is added on top of the bucket, as it is
on top of the feature length.

Trimming a batch's trailing padding changes nothing a model computes for its real
tokens: padded encoder positions are masked out of every attention, relative position
biases depend on distances only, and the decoder is causal, so target positions past the
last real one never reach an earlier one. Outputs equal the fixed-shape ones up to float
rounding (docs/training.md, "Length buckets").

Buckets apply to evaluation and inference (on by default) and, with
TRAIN_LENGTH_BUCKETS, to training (off by default): training batches keep their examples
and order and lose only trailing padding. TRAIN_LENGTH_GROUPING (off by default) also
groups examples of similar length into batches, so more of them fit a small bucket
(training/data.py, `group_by_length_windows`).
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

# The default's shortest bucket: below it the per-call overhead outweighs the padding.
SMALLEST_BUCKET = 64
AUTO = "auto"
ENCODER_FEATURES = ("encoder_input_tokens",)
DECODER_FEATURES = ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights")


def powers_of_two(max_length: int, smallest: int = SMALLEST_BUCKET) -> tuple[int, ...]:
  """Powers of two from `smallest` below `max_length`, then `max_length` itself."""
  if max_length < 1:
    raise ValueError(f"a feature length must be positive, got {max_length}")
  lengths = []
  length = smallest
  while length < max_length:
    lengths.append(length)
    length *= 2
  return tuple(lengths) + (max_length,)


def resolve(buckets: str | Sequence[int] | None, max_length: int) -> tuple[int, ...] | None:
  """The bucket lengths for a feature of `max_length`: "auto" -> `powers_of_two`; None ->
  no buckets (fixed padding); a list -> its lengths up to `max_length`, plus it."""
  if buckets is None:
    return None
  if isinstance(buckets, str):
    if buckets != AUTO:
      raise ValueError(
        f"length buckets {buckets!r}: use 'auto', None (fixed padding) or a list of lengths"
      )
    return powers_of_two(max_length)
  lengths = sorted({int(b) for b in buckets})
  if not lengths or lengths[0] < 1:
    raise ValueError(
      f"length buckets {list(buckets)}: give positive lengths, e.g. [64, 128, 256], or None"
    )
  return tuple(b for b in lengths if b < max_length) + (max_length,)


def real_lengths(tokens: np.ndarray) -> np.ndarray:
  """Per row, one past the last non-padding (non-zero) position; 0 for an empty row."""
  tokens = np.asarray(tokens)
  nonzero = tokens != 0
  last = tokens.shape[1] - np.argmax(nonzero[:, ::-1], axis=1)
  return np.where(nonzero.any(axis=1), last, 0)


def bucket_of(length: int, buckets: Sequence[int]) -> int:
  """The smallest bucket that holds `length` (buckets are sorted; the last is the max)."""
  for bucket in buckets:
    if length <= bucket:
      return bucket
  return buckets[-1]


def group(lengths: Iterable[int], buckets: Sequence[int]) -> dict[int, list[int]]:
  """{bucket: row indices in their original order}, buckets in ascending order."""
  groups: dict[int, list[int]] = {}
  for index, length in enumerate(lengths):
    groups.setdefault(bucket_of(int(length), buckets), []).append(index)
  return {bucket: groups[bucket] for bucket in sorted(groups)}


def trim(
  batch: Mapping[str, np.ndarray],
  encoder_buckets: Sequence[int] | None,
  decoder_buckets: Sequence[int] | None = None,
) -> dict[str, np.ndarray]:
  """`batch` with its encoder features (and, given `decoder_buckets`, its decoder
  features) cut to the smallest bucket that holds the batch's longest row."""
  trimmed = dict(batch)
  for features, buckets, reference in (
    (ENCODER_FEATURES, encoder_buckets, "encoder_input_tokens"),
    (DECODER_FEATURES, decoder_buckets, "decoder_target_tokens"),
  ):
    if buckets is None or reference not in batch:
      continue
    longest = int(real_lengths(batch[reference]).max(initial=0))
    length = bucket_of(max(longest, 1), buckets)
    for name in features:
      if name in trimmed:
        trimmed[name] = trimmed[name][:, :length]
  return trimmed
