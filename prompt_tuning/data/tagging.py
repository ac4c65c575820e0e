"""Sequence-labelling (NER) tasks for the token head: one label per word, on its first
word piece (P-Tuning v2's NER setting; docs/heads.md).

Tasks (TFDS; the tags are the datasets' own BIO tags, in their ClassLabel order):

  conll2003_ner         `conll2003:1.0.0` (train / dev / test: train, validation, test)
  conll2002_es_ner      `conll2002/es:1.0.0`
  conll2002_nl_ner      `conll2002/nl:1.0.0`
  wikiann_{lang}_ner    `wikiann/{lang}:1.0.0`, for the languages of gin's
                        `WIKIANN_LANGUAGES` (`tagging.register.wikiann_languages`,
                        default English)

Inputs are the words joined by spaces; each word is cut into word pieces on its own
(`tag_words`), so every word starts a piece and gets exactly one labelled position.
The words that do not fit the input length (with its EOS) are dropped, whole, from the
end; the metric then scores the words that were read, both in the references and the
predictions. Metric: entity-level micro precision / recall / F1 with seqeval's default
(conlleval) chunking (`metrics.entity_f1`).
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import gin
import seqio
import tensorflow as tf

from prompt_tuning.data import labels as labels_lib
from prompt_tuning.data import metrics
from prompt_tuning.data import sources
from prompt_tuning.data import vocab as vocab_lib

CONLL_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
WIKIANN_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
SPLITS = ("train", "validation", "test")
EOS_ID = 1


def word_pieces(words: tf.Tensor, vocabulary: seqio.Vocabulary) -> tf.RaggedTensor:
  """Each word's word pieces [words, (pieces)]; a word that makes none (an empty or
  unknown-only string) gets the vocabulary's unknown id, so it keeps its position."""
  pieces = tf.cast(vocabulary.encode_tf(words), tf.int32)
  if not isinstance(pieces, tf.RaggedTensor):
    pieces = tf.RaggedTensor.from_tensor(pieces)
  unknown = tf.fill([tf.shape(words)[0], 1], tf.constant(vocabulary.unk_id or 2, tf.int32))
  padded = tf.concat([pieces, tf.RaggedTensor.from_tensor(unknown)], axis=1)
  keep = tf.maximum(pieces.row_lengths(), 1)
  return tf.ragged.boolean_mask(padded, tf.ragged.range(padded.row_lengths()) < keep[:, None])


def tag_words(
  dataset: tf.data.Dataset,
  sequence_length: Mapping[str, int] | None,
  output_features: Mapping[str, seqio.Feature],
  words_key: str = "tokens",
  tags_key: str = "ner",
) -> tf.data.Dataset:
  """{words, tags} -> inputs (word pieces + EOS), targets (tag id + 1 on each word's
  first piece, 0 on the others and on EOS), `inputs_pretokenized` (the words joined by
  spaces) and `targets_pretokenized` (the kept words' tags), all the same length."""
  vocabulary = output_features["inputs"].vocabulary
  max_length = None if not sequence_length else sequence_length.get("inputs")

  def convert(example: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    words = example[words_key]
    tags = tf.cast(example[tags_key], tf.int32)
    pieces = word_pieces(words, vocabulary)
    lengths = tf.cast(pieces.row_lengths(), tf.int32)
    kept = tf.shape(words)[0]
    if max_length:
      # Whole words only, leaving room for EOS.
      kept = tf.reduce_sum(tf.cast(tf.cumsum(lengths) <= max_length - 1, tf.int32))
    pieces, lengths, tags, words = pieces[:kept], lengths[:kept], tags[:kept], words[:kept]
    first = tf.ragged.range(lengths).flat_values == 0
    label_ids = tf.where(first, tf.repeat(tags + 1, lengths), 0)
    return {
      **{k: v for k, v in example.items() if k not in (words_key, tags_key)},
      "inputs": tf.concat([pieces.flat_values, [EOS_ID]], 0),
      "targets": tf.concat([label_ids, [0]], 0),
      "inputs_pretokenized": tf.strings.reduce_join(words, separator=" "),
      "targets_pretokenized": tf.strings.reduce_join(
        tf.gather(tf.constant(output_features["targets"].vocabulary.labels), tags), separator=" "
      ),
    }

  return dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE)


def tags(text: Any, example: Mapping[str, Any] | None = None, is_target: bool = False) -> list[str]:
  """A decoded tag string ("B-PER I-PER O") as a list of tags, for `metrics.entity_f1`."""
  del example, is_target
  if isinstance(text, bytes):
    text = text.decode("utf-8")
  return str(text).split()


def ner_task(
  name: str,
  source: seqio.DataSource,
  tag_names: Sequence[str],
  vocabulary: seqio.Vocabulary,
  tags_key: str = "ner",
) -> str:
  """Registers a tagging task over any source with `tokens` and `tags_key` features
  (a TFDS NER set, the demo's generated data, a user's own); returns its name."""
  seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
    name,
    source=source,
    # Cut to the run's input length, hence after the cache point.
    preprocessors=[
      seqio.CacheDatasetPlaceholder(),
      functools.partial(tag_words, tags_key=tags_key),
    ],
    postprocess_fn=tags,
    metric_fns=[metrics.entity_f1],
    output_features=labels_lib.head_output_features(
      vocabulary, labels_lib.LabelVocabulary(tag_names, per_token=True)
    ),
  )
  return name


def _tfds(name: str) -> seqio.DataSource:
  return sources.TfdsSource(tfds_name=name, splits=list(SPLITS))


@gin.configurable(module="tagging")
def register(
  vocabulary: seqio.Vocabulary | None = None, wikiann_languages: Sequence[str] = ("en",)
) -> list[str]:
  """(Re)registers the NER tasks with `vocabulary`; returns their names."""
  vocabulary = vocabulary or vocab_lib.get_vocabulary()
  names = [
    ner_task("conll2003_ner", _tfds("conll2003:1.0.0"), CONLL_TAGS, vocabulary),
    ner_task("conll2002_es_ner", _tfds("conll2002/es:1.0.0"), CONLL_TAGS, vocabulary),
    ner_task("conll2002_nl_ner", _tfds("conll2002/nl:1.0.0"), CONLL_TAGS, vocabulary),
  ]
  for language in wikiann_languages:
    source = _tfds(f"wikiann/{language}:1.0.0")
    names.append(ner_task(f"wikiann_{language}_ner", source, WIKIANN_TAGS, vocabulary, "tags"))
  return names


register()
