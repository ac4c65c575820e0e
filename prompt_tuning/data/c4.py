"""Pre-training objectives over raw text: prefix LM (LM adaptation) and T5 span corruption.

The paper compares three frozen backbones: off-the-shelf T5 1.1 (span corruption), the same
with a sentinel in front of every target ("+ Sentinel"), and T5 1.1 after LM adaptation
with a prefix-LM objective. This module provides the data for all three.

Registered names:
  c4_prefix_lm         TFDS `c4/en` documents cut at a random token: inputs = the prefix,
                       targets = its continuation (the LM-adaptation objective).
  c4_span_corruption   T5's span corruption: 15% of the tokens, in spans of mean length 3,
                       are replaced in the inputs by <extra_id_0>, <extra_id_1>, ...; the
                       targets list each sentinel followed by the tokens it hides. Inputs of
                       length 512 pair with targets of length 114 (see
                       `span_corruption_lengths`).
Any TFDS text dataset gets the same pair of tasks with `register_text_tasks` (gin
configurable), named `{name}_prefix_lm` and `{name}_span_corruption`; `text_task` does the
same and returns one of the names, so a gin file can write
`MIXTURE_OR_TASK_NAME = @text_task()`.

The "+ Sentinel" setting is a switch over any registered task or mixture:
`add_sentinel_variant(name)` registers `{name}_sentinel`, whose tokenised targets start
with <extra_id_0> and whose postprocessor removes it before the task's own one runs;
`maybe_add_sentinel` is its gin switch.

Randomness (chunk positions, cut points, noise masks) comes from seqio's per-example map
seeds, so `get_dataset(seed=...)` reproduces the same examples.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable, Mapping, Sequence

import gin
import seqio
import tensorflow as tf

from prompt_tuning.data import sources
from prompt_tuning.data import vocab as vocab_lib

C4_NAME = "c4"
C4_TFDS_NAME = "c4/en:3.1.0"
DEFAULT_SPLITS = ("train", "validation")
PREFIX_LM = "prefix_lm"
SPAN_CORRUPTION = "span_corruption"
OBJECTIVES = (PREFIX_LM, SPAN_CORRUPTION)

NOISE_DENSITY = 0.15
MEAN_NOISE_SPAN_LENGTH = 3.0
# T5 reads at most this many tokens of one document before packing, and packs this many
# documents at a time before cutting the stream into inputs-sized segments.
MAX_DOCUMENT_TOKENS = 65536
DOCUMENTS_PER_PACK = 128
# The inputs length span corruption is sized for when no sequence length is given (e.g.
# when only looking at examples): T5's pre-training length.
DEFAULT_INPUTS_LENGTH = 512

SENTINEL_SUFFIX = "_sentinel"
FIRST_SENTINEL_TEXT = "<extra_id_0>"


# The map functions below branch only on Python values, so autograph has nothing to
# convert; skipping it makes building the pipelines faster.
_plain_tf = tf.autograph.experimental.do_not_convert


def task_name(name: str, objective: str) -> str:
  if objective not in OBJECTIVES:
    raise ValueError(f"Unknown objective '{objective}'; use one of {OBJECTIVES}.")
  return f"{name}_{objective}"


# ----------------------------------------------------------------------------------------
# Helpers over token sequences.


def _length_limit(sequence_length: Mapping[str, int] | None, key: str) -> int | None:
  """The room for tokens in `key` before seqio appends EOS, or None if unlimited."""
  if not sequence_length or sequence_length.get(key) is None:
    return None
  length = int(sequence_length[key])
  if length < 2:
    raise ValueError(
      f"sequence_length['{key}'] is {length}; it must be at least 2 (one token plus EOS)."
    )
  return length - 1


def _random_chunk(tokens: tf.Tensor, max_tokens: int, seed: tf.Tensor) -> tf.Tensor:
  """A uniformly placed window of at most `max_tokens` tokens."""
  slack = tf.maximum(tf.size(tokens) - max_tokens, 0)
  start = tf.random.stateless_uniform([], seed=seed, minval=0, maxval=slack + 1, dtype=tf.int32)
  return tokens[start : start + max_tokens]


def _stateless_shuffle(values: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  return tf.gather(values, tf.argsort(tf.random.stateless_uniform(tf.shape(values), seed)))


def _random_partition(num_items: tf.Tensor, num_parts: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Lengths of `num_parts` non-empty runs that together hold `num_items` items."""
  # Choose num_parts - 1 of the num_items - 1 gaps between items as run boundaries.
  is_boundary = _stateless_shuffle(tf.range(num_items - 1) < num_parts - 1, seed)
  run_ids = tf.cumsum(tf.concat([[0], tf.cast(is_boundary, tf.int32)], axis=0))
  return tf.math.bincount(run_ids, minlength=num_parts, maxlength=num_parts, dtype=tf.int32)


def _noise_counts(
  length: int, noise_density: float, mean_noise_span_length: float
) -> tuple[int, int]:
  """(noise tokens, noise spans) of a `length`-token sequence, as T5 rounds them."""
  num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
  num_spans = max(int(round(num_noise / mean_noise_span_length)), 1)
  return num_noise, num_spans


def random_spans_noise_mask(
  length: tf.Tensor, noise_density: float, mean_noise_span_length: float, seeds: Sequence[tf.Tensor]
) -> tf.Tensor:
  """Boolean mask with alternating clean / noise spans, starting with a clean one.

  round(length * noise_density) tokens are noise, split into round(noise /
  mean_noise_span_length) spans; span lengths are random compositions of those counts.
  """
  padded_length = tf.maximum(length, 2)  # A single token still gets one noise span.
  num_noise = tf.cast(tf.round(tf.cast(padded_length, tf.float32) * noise_density), tf.int32)
  num_noise = tf.clip_by_value(num_noise, 1, padded_length - 1)
  num_clean = padded_length - num_noise
  num_spans = tf.cast(tf.round(tf.cast(num_noise, tf.float32) / mean_noise_span_length), tf.int32)
  num_spans = tf.clip_by_value(num_spans, 1, num_clean)
  noise_lengths = _random_partition(num_noise, num_spans, seeds[0])
  clean_lengths = _random_partition(num_clean, num_spans, seeds[1])
  span_lengths = tf.reshape(tf.stack([clean_lengths, noise_lengths], axis=1), [-1])
  span_index = tf.repeat(tf.range(2 * num_spans), span_lengths)
  return tf.equal(span_index % 2, 1)[:length]


def first_sentinel_id(vocabulary: seqio.Vocabulary) -> int:
  """Id of <extra_id_0>: seqio puts the sentinels last, <extra_id_0> at the very end."""
  if getattr(vocabulary, "extra_ids", 0) < 1:
    raise ValueError(
      "The vocabulary has no extra ids (<extra_id_N>); build it with extra_ids=100 as T5 does."
    )
  return vocabulary.vocab_size - 1


def replace_spans_with_sentinels(
  tokens: tf.Tensor, mask: tf.Tensor, vocabulary: seqio.Vocabulary
) -> tf.Tensor:
  """Each run of masked tokens becomes one sentinel: <extra_id_0>, <extra_id_1>, ..."""
  previous = tf.concat([[False], mask[:-1]], axis=0)
  span_starts = tf.logical_and(mask, tf.logical_not(previous))
  span_rest = tf.logical_and(mask, previous)
  sentinels = first_sentinel_id(vocabulary) + 1 - tf.cumsum(tf.cast(span_starts, tokens.dtype))
  tokens = tf.where(span_starts, sentinels, tokens)
  return tf.boolean_mask(tokens, tf.logical_not(span_rest))


def span_corruption_lengths(
  inputs_length: int,
  noise_density: float = NOISE_DENSITY,
  mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH,
) -> tuple[int, int]:
  """(raw tokens per example, targets length) that fill `inputs_length` after corruption.

  Both lengths count EOS. T5's 512-token inputs take 568 raw tokens and give 114-token
  targets.
  """

  def corrupted_lengths(tokens_length: int) -> tuple[int, int]:
    num_noise, num_spans = _noise_counts(tokens_length, noise_density, mean_noise_span_length)
    return (tokens_length - num_noise + num_spans + 1, num_noise + num_spans + 1)

  if inputs_length < 3:
    raise ValueError(
      f"Span corruption needs an inputs length of at least 3, got {inputs_length}; raise "
      "TASK_FEATURE_LENGTHS['inputs']."
    )
  tokens_length = inputs_length - 1
  while corrupted_lengths(tokens_length + 1)[0] <= inputs_length:
    tokens_length += 1
  return tokens_length, corrupted_lengths(tokens_length)[1]


# ----------------------------------------------------------------------------------------
# Token preprocessors (after tokenisation; the document's tokens are in `targets`).


def prefix_lm(
  dataset: tf.data.Dataset,
  sequence_length: Mapping[str, int] | None,
  output_features: Mapping[str, seqio.Feature],
) -> tf.data.Dataset:
  """Cuts each document at a random token into (prefix, continuation).

  With both lengths known, a random window that fits both features is taken first and
  the cut is drawn so that neither side needs trimming; every cut leaves at least one
  token on each side. Documents of fewer than two tokens are dropped.
  """
  del output_features
  inputs_room = _length_limit(sequence_length, "inputs")
  targets_room = _length_limit(sequence_length, "targets")

  @seqio.map_over_dataset(num_seeds=2)
  @_plain_tf
  def cut(x, seeds):
    tokens = x["targets"]
    if inputs_room is not None and targets_room is not None:
      tokens = _random_chunk(tokens, inputs_room + targets_room, seeds[0])
    n = tf.size(tokens)
    low = 1 if targets_room is None else tf.maximum(1, n - targets_room)
    high = n - 1 if inputs_room is None else tf.minimum(n - 1, inputs_room)
    position = tf.random.stateless_uniform(
      [], seed=seeds[1], minval=low, maxval=high + 1, dtype=tf.int32
    )
    return {"inputs": tokens[:position], "targets": tokens[position:]}

  return cut(dataset.filter(_plain_tf(lambda x: tf.size(x["targets"]) >= 2)))


def _select_random_chunks(dataset: tf.data.Dataset, max_tokens: int) -> tf.data.Dataset:

  @seqio.map_over_dataset(num_seeds=1)
  @_plain_tf
  def chunk(x, seed):
    return {"targets": _random_chunk(x["targets"], max_tokens, seed)}

  return chunk(dataset)


def _pack_documents(dataset: tf.data.Dataset, documents: int) -> tf.data.Dataset:
  """Concatenates `documents` token sequences at a time into one stream."""
  dataset = dataset.padded_batch(documents, padded_shapes={"targets": [None]})

  @_plain_tf
  def flatten(x):
    tokens = tf.reshape(x["targets"], [-1])
    return {"targets": tf.boolean_mask(tokens, tf.not_equal(tokens, 0))}

  return dataset.map(flatten, num_parallel_calls=tf.data.AUTOTUNE)


def _split_into_segments(dataset: tf.data.Dataset, segment_length: int) -> tf.data.Dataset:
  """Cuts every token stream into consecutive segments of `segment_length` (last shorter)."""

  @_plain_tf
  def split(x):
    tokens = x["targets"]
    n = tf.size(tokens)
    full = tf.fill([n // segment_length], segment_length)
    rest = tf.reshape(n % segment_length, [1])[: tf.cast(n % segment_length > 0, tf.int32)]
    rows = tf.RaggedTensor.from_row_lengths(tokens, tf.concat([full, rest], axis=0))
    return tf.data.Dataset.from_tensor_slices({"targets": rows})

  return dataset.flat_map(split)


def span_corruption(
  dataset: tf.data.Dataset,
  sequence_length: Mapping[str, int] | None,
  output_features: Mapping[str, seqio.Feature],
  noise_density: float = NOISE_DENSITY,
  mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH,
) -> tf.data.Dataset:
  """T5's span corruption: pack documents, cut inputs-sized segments, mask spans.

  Packing makes every example full-length, as in T5's pre-training; a segment may
  therefore join the end of one document to the start of the next.
  """
  if not 0.0 < noise_density < 1.0:
    raise ValueError(f"noise_density must be in (0, 1), got {noise_density}.")
  if mean_noise_span_length < 1.0:
    raise ValueError(f"mean_noise_span_length must be >= 1, got {mean_noise_span_length}.")
  vocabulary = output_features["targets"].vocabulary
  inputs_length = (sequence_length or {}).get("inputs") or DEFAULT_INPUTS_LENGTH
  tokens_length, _ = span_corruption_lengths(inputs_length, noise_density, mean_noise_span_length)
  _, most_spans = _noise_counts(tokens_length, noise_density, mean_noise_span_length)
  if most_spans > vocabulary.extra_ids:
    raise ValueError(
      f"Inputs of {inputs_length} tokens need up to {most_spans} sentinels but "
      f"the vocabulary has {vocabulary.extra_ids} extra ids; shorten the "
      "inputs or add extra ids."
    )

  dataset = dataset.filter(_plain_tf(lambda x: tf.size(x["targets"]) > 0))
  dataset = _select_random_chunks(dataset, MAX_DOCUMENT_TOKENS)
  dataset = _pack_documents(dataset, DOCUMENTS_PER_PACK)
  dataset = _split_into_segments(dataset, tokens_length)

  @seqio.map_over_dataset(num_seeds=2)
  @_plain_tf
  def corrupt(x, seeds):
    tokens = x["targets"]
    noise = random_spans_noise_mask(tf.size(tokens), noise_density, mean_noise_span_length, seeds)
    return {
      "inputs": replace_spans_with_sentinels(tokens, noise, vocabulary),
      "targets": replace_spans_with_sentinels(tokens, tf.logical_not(noise), vocabulary),
    }

  return corrupt(dataset)


# ----------------------------------------------------------------------------------------
# Registration.


def output_features(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
  return {
    "inputs": seqio.Feature(vocabulary=vocabulary, add_eos=True, required=False),
    "targets": seqio.Feature(vocabulary=vocabulary, add_eos=True),
  }


def _default_name(tfds_name: str) -> str:
  return re.sub(r"[^0-9a-zA-Z]+", "_", tfds_name.split(":")[0]).strip("_").lower()


@gin.configurable
def register_text_tasks(
  tfds_name: str = C4_TFDS_NAME,
  text_key: str = "text",
  splits: Sequence[str] | Mapping[str, str] = DEFAULT_SPLITS,
  name: str | None = None,
  vocabulary: seqio.Vocabulary | None = None,
) -> list[str]:
  """Registers `{name}_prefix_lm` and `{name}_span_corruption` over a TFDS text dataset.

  Args:
    tfds_name: TFDS name with config and version, e.g. "wikipedia/20230601.en:1.0.0".
    text_key: the feature holding the document text.
    splits: seqio split names, or a mapping from them to TFDS split names / slices.
    name: prefix of the task names; by default the TFDS name without its version,
      non-alphanumerics as "_" ("wikipedia_20230601_en").
    vocabulary: defaults to `vocab.get_vocabulary()`.

  Returns:
    The two task names.
  """
  if not splits:
    raise ValueError(f"No splits given for '{tfds_name}'; pass e.g. ('train', 'validation').")
  vocabulary = vocabulary if vocabulary is not None else vocab_lib.get_vocabulary()
  name = name or _default_name(tfds_name)
  splits = dict(splits) if isinstance(splits, Mapping) else tuple(splits)
  common = [
    functools.partial(seqio.preprocessors.rekey, key_map={"targets": text_key}),
    seqio.preprocessors.tokenize,
    seqio.CacheDatasetPlaceholder(),
  ]
  names = []
  for objective, preprocessor in ((PREFIX_LM, prefix_lm), (SPAN_CORRUPTION, span_corruption)):
    full_name = task_name(name, objective)
    seqio.TaskRegistry.remove(full_name)
    seqio.TaskRegistry.add(
      full_name,
      source=sources.TfdsSource(tfds_name, splits=splits),
      preprocessors=common + [preprocessor, seqio.preprocessors.append_eos_after_trim],
      output_features=output_features(vocabulary),
      metric_fns=[],
    )
    names.append(full_name)
  return names


@gin.configurable
def text_task(
  objective: str = PREFIX_LM,
  tfds_name: str = C4_TFDS_NAME,
  text_key: str = "text",
  splits: Sequence[str] | Mapping[str, str] = DEFAULT_SPLITS,
  name: str | None = None,
) -> str:
  """Registers the text tasks of a TFDS dataset and returns the one for `objective`.

  For gin: `MIXTURE_OR_TASK_NAME = @text_task()` with `text_task.tfds_name = ...`.
  """
  wanted = task_name(name or _default_name(tfds_name), objective)
  register_text_tasks(tfds_name=tfds_name, text_key=text_key, splits=splits, name=name)
  return wanted


def register(vocabulary: seqio.Vocabulary | None = None) -> list[str]:
  """(Re)registers `c4_prefix_lm` and `c4_span_corruption` with `vocabulary`."""
  return register_text_tasks(C4_TFDS_NAME, "text", DEFAULT_SPLITS, C4_NAME, vocabulary)


# ----------------------------------------------------------------------------------------
# The "+ Sentinel" setting.


def add_sentinel_to_targets(
  dataset: tf.data.Dataset, output_features: Mapping[str, seqio.Feature]
) -> tf.data.Dataset:
  """Puts <extra_id_0> in front of every tokenised target.

  A span-corruption model always starts its output with a sentinel; giving it one turns
  downstream targets into the shape of text it was trained to produce.
  """
  sentinel = first_sentinel_id(output_features["targets"].vocabulary)

  @_plain_tf
  def prepend(x):
    targets = x["targets"]
    if not targets.dtype.is_integer:
      raise ValueError(
        "add_sentinel_to_targets needs tokenised targets; place it after "
        "seqio.preprocessors.tokenize."
      )
    return {**x, "targets": tf.concat([tf.constant([sentinel], targets.dtype), targets], 0)}

  return dataset.map(prepend, num_parallel_calls=tf.data.AUTOTUNE)


_LEADING_SENTINEL = re.compile(r"^\s*" + re.escape(FIRST_SENTINEL_TEXT) + r"\s*")


def strip_sentinel(
  output: Any,
  example: Mapping[str, Any] | None = None,
  is_target: bool = False,
  postprocess_fn: Callable[..., Any] | None = None,
) -> Any:
  """Removes a leading <extra_id_0>, then applies the task's own postprocessor."""
  text = output.decode("utf-8") if isinstance(output, bytes) else output
  if isinstance(text, str):
    text = _LEADING_SENTINEL.sub("", text, count=1)
  if postprocess_fn is None:
    return text
  return postprocess_fn(text, example=example, is_target=is_target)


def _is_eos_preprocessor(preprocessor: Any) -> bool:
  function = getattr(preprocessor, "func", preprocessor)
  return function in (seqio.preprocessors.append_eos, seqio.preprocessors.append_eos_after_trim)


def add_sentinel_variant(name: str) -> str:
  """Registers (or refreshes) `{name}_sentinel` for a task or mixture; returns its name.

  The sentinel preprocessor goes right before the task's EOS step (or last, if it has
  none), so trimming still respects the target length. A mixture gets the sentinel
  variant of each of its tasks, with the same rates.
  """
  if name.endswith(SENTINEL_SUFFIX):
    raise ValueError(f"'{name}' already is a sentinel variant; pass the original name.")
  variant_name = name + SENTINEL_SUFFIX
  if name in seqio.MixtureRegistry.names():
    mixture = seqio.MixtureRegistry.get(name)
    members = [(add_sentinel_variant(t.name), mixture.get_rate(t)) for t in mixture.tasks]
    seqio.MixtureRegistry.remove(variant_name)
    seqio.MixtureRegistry.add(variant_name, members)
    return variant_name
  if name not in seqio.TaskRegistry.names():
    raise ValueError(
      f"No task or mixture named '{name}' is registered; see `prompt-tuning tasks` for the names."
    )
  task = seqio.TaskRegistry.get(name)
  preprocessors = list(task.preprocessors)
  position = next(
    (i for i, p in enumerate(preprocessors) if _is_eos_preprocessor(p)), len(preprocessors)
  )
  preprocessors.insert(position, add_sentinel_to_targets)
  variant = task.replace(
    name=variant_name,
    preprocessors=preprocessors,
    postprocess_fn=functools.partial(strip_sentinel, postprocess_fn=task.postprocessor),
  )
  seqio.TaskRegistry.remove(variant_name)
  seqio.TaskRegistry.add_provider(variant_name, variant)
  return variant_name


@gin.configurable
def maybe_add_sentinel(name: str, add_sentinel: bool = False) -> str:
  """The gin switch for the "+ Sentinel" setting: the sentinel variant's name, or `name`."""
  return add_sentinel_variant(name) if add_sentinel else name


register()
