"""Batches from seqio, deterministic and resumable by position.

Training data is `seqio.get_dataset` with a fixed seed, so the order of batches is a
function of (task, lengths, seed) alone; resuming skips the batches already consumed.

In a multi-process job each process keeps only the rows of each global batch that its own
devices hold, and the partitioner assembles the global arrays from them. By default
(`shard_by="batch"`) every process reads the same example stream and cuts its rows out of
each global batch, so the batches, and the trained prompt, do not depend on how many
processes a run has: a run on 2 hosts equals the same run on 1, and a run resumed on
another number of hosts continues with the batches it would have seen. The price is that
every process preprocesses every example, which is nothing for the paper's tasks (tens of
thousands of short examples) and too much for a C4-sized corpus; there `shard_by="source"`
lets seqio give each process its own part of the source (by files), so each preprocesses
only its share, and the batches then depend on the process count (docs/scale.md,
"Multi-process input").
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Sequence

import gin
import jax
import numpy as np
import seqio
import tensorflow as tf
from absl import logging

from prompt_tuning.data import labels as labels_lib
from prompt_tuning.data import listing
from prompt_tuning.training import buckets as buckets_lib
from prompt_tuning.training import partitioning


class EncDecWithPromptIds(seqio.EncDecFeatureConverter):
  """seqio's encoder-decoder features plus, where the examples carry it, `prompt_ids`
  (which prompt or task each row uses; data/task_mixtures.py) as one int32 per row.

  The ids go through seqio's own pass-through features (the examples' [1] vector, length
  1), in the same single pass over the source as the other features."""

  def __call__(
    self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]
  ) -> tf.data.Dataset:
    # seqio's evaluator measures every output feature, prompt_ids included.
    lengths = {k: v for k, v in task_feature_lengths.items() if k in self.TASK_FEATURES}
    if "prompt_ids" not in ds.element_spec:
      return super().__call__(ds, lengths)
    with_ids = seqio.EncDecFeatureConverter(
      pack=self.pack,
      bos_id=self.bos_id,
      passthrough_features={"prompt_ids": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)},
    )
    converted = with_ids(ds, {**lengths, "prompt_ids": 1})
    return converted.map(lambda f: {**f, "prompt_ids": tf.reshape(f["prompt_ids"], [])})


class EncoderLabels(seqio.FeatureConverter):
  """Features of a linear-head task (data/labels.py): the encoder's tokens and the label
  ids, no decoder. `label_ids` has the length its vocabulary gives (1 per example, 2 for
  a span, the inputs' length for tagging), whatever TASK_FEATURE_LENGTHS["targets"]
  says; `prompt_ids` passes through as one int32 per row, as in `EncDecWithPromptIds`."""

  TASK_FEATURES = {
    "inputs": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
    "targets": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
  }
  MODEL_FEATURES = {
    "encoder_input_tokens": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
    "label_ids": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
  }
  PACKING_FEATURE_DTYPES = {}

  def __init__(self, label_length: Callable[[int], int], **kwargs: Any):
    super().__init__(pack=False, **kwargs)
    self.label_length = label_length

  def __call__(
    self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]
  ) -> tf.data.Dataset:
    inputs = int(task_feature_lengths["inputs"])
    lengths = {"inputs": inputs, "targets": self.label_length(inputs)}
    if "prompt_ids" not in ds.element_spec or self._passthrough_features:
      if "prompt_ids" in self._passthrough_features:
        lengths["prompt_ids"] = 1
      return super().__call__(ds, lengths)
    with_ids = EncoderLabels(
      self.label_length,
      passthrough_features={"prompt_ids": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)},
    )
    converted = with_ids(ds, lengths)
    return converted.map(lambda f: {**f, "prompt_ids": tf.reshape(f["prompt_ids"], [])})

  def _convert_features(
    self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]
  ) -> tf.data.Dataset:
    ds = seqio.utils.trim_and_pad_dataset(ds, task_feature_lengths)

    def convert(features: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
      converted = {
        "encoder_input_tokens": features["inputs"],
        "label_ids": tf.cast(features["targets"], tf.int32),
      }
      for name in self._passthrough_features:
        converted[name] = features[name]
      return converted

    return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> dict[str, int]:
    lengths = {
      "encoder_input_tokens": task_feature_lengths["inputs"],
      "label_ids": task_feature_lengths["targets"],
    }
    for name in self._passthrough_features:
      lengths[name] = task_feature_lengths[name]
    return lengths


def feature_converter(mixture_or_task_name: str | None = None) -> seqio.FeatureConverter:
  """The features a task's model reads: for the text tasks encoder-decoder features,
  unpacked (the paper's setting), with `prompt_ids` kept; for the linear-head tasks
  (targets in a `data.labels` vocabulary) `EncoderLabels`. A mixture must not mix the
  two kinds, nor tasks whose labels have different lengths."""
  if mixture_or_task_name is None:
    return EncDecWithPromptIds(pack=False)
  tasks = listing.member_tasks(mixture_or_task_name)
  heads = [task for task in tasks if labels_lib.is_head_task(task)]
  if not heads:
    return EncDecWithPromptIds(pack=False)
  if len(heads) != len(tasks):
    text = sorted(task.name for task in tasks if task not in heads)
    raise ValueError(
      f"{mixture_or_task_name} mixes linear-head tasks with text tasks ({', '.join(text)}); "
      "a head model trains on head tasks only (docs/heads.md)"
    )
  kinds = {_label_kind(task) for task in heads}
  if len(kinds) > 1:
    raise ValueError(
      f"{mixture_or_task_name} mixes tasks of different head kinds; a mixture for one "
      "(multi-task) head holds tasks of one kind: sequence, token or span labels"
    )
  return EncoderLabels(heads[0].output_features["targets"].vocabulary.label_length)


def _label_kind(task: seqio.Task) -> str:
  vocabulary = task.output_features["targets"].vocabulary
  if isinstance(vocabulary, labels_lib.PositionVocabulary):
    return "span"
  return "token" if vocabulary.per_token else "sequence"


SHARD_BY = ("batch", "source")


def shard_info() -> seqio.ShardInfo | None:
  """This process's share of the source in a multi-process job (None: read everything).

  seqio shards a file-based source by files, so it needs at least as many files as
  processes; in-memory and function sources are split example by example.
  """
  if jax.process_count() == 1:
    return None
  return partitioning.process_shard_info()


def process_rows(batch_size: int) -> tuple[int, int]:
  """The rows [start, stop) of each global batch this process feeds: a contiguous block in
  process order, the layout `Partitioner.shard_batch` assembles (and checks)."""
  count = jax.process_count()
  if batch_size % count:
    raise ValueError(
      f"BATCH_SIZE {batch_size} is not divisible by the number of processes {count}; "
      "use a multiple of it"
    )
  per_process = batch_size // count
  start = jax.process_index() * per_process
  return start, start + per_process


@gin.configurable(denylist=["mixture_or_task_name", "task_feature_lengths", "batch_size", "seed"])
def train_batches(
  mixture_or_task_name: str,
  task_feature_lengths: Mapping[str, int],
  batch_size: int,
  seed: int,
  start_position: int = 0,
  split: str = "train",
  shard_by: str = "batch",
  rows: tuple[int, int] | None = None,
  train_examples: int | None = None,
  train_examples_seed: int = 0,
  length_buckets: str | Sequence[int] | None = None,
  group_by_length: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
  """Endless per-process batches, starting after `start_position` batches.

  `batch_size` is global; each process yields its `rows` of every global batch (default
  `process_rows`: all of them in a one-process run). `shard_by` says where a
  multi-process job splits the input (module docstring): "batch", the same batches
  whatever the process count, or "source", each process reading its own part of the
  source.

  `train_examples` (gin macro TRAIN_EXAMPLES) trains on that many examples of the split
  only, the low-data runs of Prefix-Tuning's paper (50 / 100 / 200 / 500): see
  `subsample`. `train_examples_seed` (TRAIN_EXAMPLES_SEED) picks which; the batch order
  over them still follows `seed`.

  `length_buckets` (gin macro TRAIN_LENGTH_BUCKETS): None (default) pads every batch to
  the feature lengths, as the original does; "auto" or a list of lengths cuts each batch
  to the smallest bucket that holds its longest input (and target), as
  `training/buckets.py` does for evaluation. The batches hold the same examples in the
  same order either way, only their trailing padding differs, so training follows the
  fixed-shape run up to float rounding, resumes as it does, and compiles once per bucket
  pair used (docs/training.md, "Length buckets").

  `group_by_length` (gin macro TRAIN_LENGTH_GROUPING): None (default) keeps the
  shuffled stream's batches. A number K groups examples of similar length: each window
  of K batches' worth of the shuffled stream is sorted by length, cut into K batches,
  and those K batches come in an order shuffled by (`seed`, window). Every example of a
  window is used inside it, so no length waits (no bucket starves), and the batches
  stay a function of (task, lengths, seed) and the position, so resuming is exact. With
  buckets, most batches then fit a small bucket (`group_by_length_windows`).
  """
  if shard_by not in SHARD_BY:
    raise ValueError(f"train_batches.shard_by must be one of {SHARD_BY}, got {shard_by!r}")
  encoder_buckets = buckets_lib.resolve(length_buckets, int(task_feature_lengths["inputs"]))
  decoder_buckets = buckets_lib.resolve(length_buckets, int(task_feature_lengths["targets"]))
  if group_by_length is not None and int(group_by_length) < 1:
    raise ValueError(
      f"TRAIN_LENGTH_GROUPING must be a positive number of batches per window, got "
      f"{group_by_length}; None turns grouping off"
    )
  if train_examples is not None and train_examples < 1:
    raise ValueError(f"TRAIN_EXAMPLES must be a positive number of examples, got {train_examples}")
  by_source = shard_by == "source" and jax.process_count() > 1
  # What needs every process to read the same global stream: cutting each global batch
  # to its longest row, sorting windows of it, subsampling the whole split.
  global_stream = {
    "TRAIN_LENGTH_BUCKETS": encoder_buckets is not None,
    "TRAIN_LENGTH_GROUPING": group_by_length is not None,
    "TRAIN_EXAMPLES": train_examples is not None,
  }
  settings = [name for name, used in global_stream.items() if used]
  if by_source and settings:
    raise ValueError(
      f"{' and '.join(settings)} need every process to read the same global example "
      "stream, which processes that read their own part of the source do not; use "
      f"train_batches.shard_by = 'batch' (the default) or set {' and '.join(settings)} = None"
    )
  start, stop = rows if rows is not None else process_rows(batch_size)
  if not 0 <= start < stop <= batch_size:
    raise ValueError(f"rows {start}:{stop} are not inside a batch of {batch_size}")
  # Checked above at the call, not at the first batch (after compiling the step).
  return _numpy_batches(
    mixture_or_task_name,
    task_feature_lengths,
    batch_size,
    seed,
    start_position,
    split,
    (start, stop),
    by_source,
    None if train_examples is None else (train_examples, train_examples_seed),
    None if encoder_buckets is None else (encoder_buckets, decoder_buckets),
    None if group_by_length is None else int(group_by_length),
  )


def _real_length(tokens: tf.Tensor) -> tf.Tensor:
  """Per row of [rows, length] ids: one past the last non-zero position (0 if none);
  `buckets.real_lengths` inside a tf.data map."""
  positions = tf.range(1, tf.shape(tokens)[1] + 1)[None, :]
  return tf.reduce_max(tf.where(tokens != 0, positions, 0), axis=1)


def group_by_length_windows(
  examples: tf.data.Dataset, batch_size: int, window_batches: int, seed: int
) -> tf.data.Dataset:
  """Batches of `batch_size` from converted `examples`, grouped by length in windows of
  `window_batches` batches (`train_batches`' `group_by_length`).

  Within a window the examples are ordered by input length, then target length (a
  stable sort, so ties keep the stream's order), and cut into batches; the window's
  batches are then permuted by a stateless shuffle of (`seed`, window index). Nothing
  depends on anything but the stream and the seed, so `skip(n)` resumes exactly."""
  window = batch_size * window_batches

  def arrange(index: tf.Tensor, features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    key = tf.cast(_real_length(features["encoder_input_tokens"]), tf.int64)
    # Targets: the decoder's, or a head's labels (every training batch has one of them).
    targets = features.get("decoder_target_tokens", features.get("label_ids"))
    key = key * (int(targets.shape[1]) + 1) + tf.cast(_real_length(targets), tf.int64)
    order = tf.argsort(key, stable=True)
    batch_order = tf.random.experimental.stateless_shuffle(
      tf.range(window_batches), seed=tf.stack([tf.cast(seed, tf.int64), index])
    )

    def cut(values: tf.Tensor) -> tf.Tensor:
      values = tf.gather(values, order)
      shape = tf.concat([[window_batches, batch_size], tf.shape(values)[1:]], axis=0)
      return tf.gather(tf.reshape(values, shape), batch_order)

    return {name: cut(values) for name, values in features.items()}

  windows = examples.batch(window, drop_remainder=True).enumerate()
  return windows.map(arrange).unbatch()


def subsample(
  dataset: tf.data.Dataset, num_examples: int, seed: int, what: str = "the training split"
) -> tf.data.Dataset:
  """`num_examples` examples of a finite `dataset`, chosen uniformly without replacement
  by `seed` alone and kept in their original order.

  The choice depends on (dataset, num_examples, seed) only, so two runs with the same
  TRAIN_EXAMPLES and TRAIN_EXAMPLES_SEED train on the same examples, whatever their batch
  seed or resumption point. It costs one pass over the split to count it; the chosen
  examples are then held in memory (low-data runs are small)."""
  total = int(dataset.reduce(np.int64(0), lambda count, _: count + 1))
  if num_examples > total:
    raise ValueError(
      f"TRAIN_EXAMPLES = {num_examples} but {what} has only {total} examples; ask for at "
      f"most {total} (or unset TRAIN_EXAMPLES to train on all of them)"
    )
  chosen = np.random.default_rng(seed).choice(total, num_examples, replace=False)
  mask = np.zeros(total, bool)
  mask[chosen] = True
  keep = tf.constant(mask)
  picked = dataset.enumerate().filter(lambda index, _: keep[index]).map(lambda _, x: x)
  return picked.cache()


def _numpy_batches(
  mixture_or_task_name: str,
  task_feature_lengths: Mapping[str, int],
  batch_size: int,
  seed: int,
  start_position: int,
  split: str,
  rows: tuple[int, int],
  by_source: bool,
  examples: tuple[int, int] | None = None,
  buckets: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
  group_by_length: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
  start, stop = rows
  if examples is None:
    dataset = seqio.get_dataset(
      mixture_or_task_name,
      task_feature_lengths=dict(task_feature_lengths),
      dataset_split=split,
      shuffle=True,
      num_epochs=None,
      seed=seed,
      feature_converter=feature_converter(mixture_or_task_name),
      shard_info=shard_info() if by_source else None,
      use_cached=False,
    )
  else:
    # One ordered pass to pick the examples, then epochs over them in `seed`'s order.
    num_examples, examples_seed = examples
    every = seqio.get_dataset(
      mixture_or_task_name,
      task_feature_lengths=dict(task_feature_lengths),
      dataset_split=split,
      shuffle=False,
      num_epochs=1,
      feature_converter=feature_converter(mixture_or_task_name),
      use_cached=False,
    )
    picked = subsample(every, num_examples, examples_seed, f"{mixture_or_task_name}'s {split}")
    dataset = picked.shuffle(num_examples, seed=seed, reshuffle_each_iteration=True).repeat()
  if by_source:
    # Each process's own part of the source, batched to its share of the global batch.
    dataset = dataset.batch(stop - start, drop_remainder=True)
  else:
    if group_by_length is None:
      dataset = dataset.batch(batch_size, drop_remainder=True)
    else:
      dataset = group_by_length_windows(dataset, batch_size, group_by_length, seed)
    if (start, stop) != (0, batch_size) and buckets is None:
      dataset = dataset.map(lambda batch: {k: v[start:stop] for k, v in batch.items()})
  if start_position:
    dataset = dataset.skip(start_position)
  dataset = dataset.prefetch(tf.data.AUTOTUNE)
  shapes: set[tuple[int, int]] = set()
  for batch in dataset.as_numpy_iterator():
    batch = {k: np.asarray(v) for k, v in batch.items()}
    if buckets is not None:
      # Cut the whole global batch, then this process's rows: every process agrees.
      batch = buckets_lib.trim(batch, *buckets)
      shape = (
        batch["encoder_input_tokens"].shape[1],
        batch.get("decoder_target_tokens", batch.get("label_ids")).shape[1],
      )
      if shape not in shapes:
        shapes.add(shape)
        logging.info(
          "training batch shape %d: inputs %d, targets %d (at most %d)",
          len(shapes),
          *shape,
          len(buckets[0]) * len(buckets[1]),
        )
      batch = {k: v[start:stop] for k, v in batch.items()}
    yield batch


def pad_batch(
  batch: Mapping[str, np.ndarray], batch_size: int
) -> tuple[dict[str, np.ndarray], int]:
  """Pads a short final batch with zero rows so every call has one compiled shape."""
  rows = len(next(iter(batch.values())))
  if rows == batch_size:
    return dict(batch), rows
  padded = {}
  for key, value in batch.items():
    pad = np.zeros((batch_size - rows,) + value.shape[1:], value.dtype)
    padded[key] = np.concatenate([value, pad], axis=0)
  return padded, rows
