"""Text preprocessors: raw TFDS examples -> {"inputs": str, "targets": str, ids...}.

They reproduce T5's text-to-text formats for SuperGLUE (so prompts and checkpoints
trained elsewhere on `super_glue_*_v102` see the same strings), plus the prompt-tuning
paper's "taskless" variant that drops the leading dataset name. Besides "inputs" and
"targets" each output keeps the ids that evaluation needs (question groups for MultiRC,
query ids and all answers for ReCoRD, pair ids for AX-g), which tokenisation passes
through untouched.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import seqio
import tensorflow as tf

UNKNOWN_LABEL = "<unk>"  # Target text of unlabelled (test split) examples, as in T5.

# The functions below use no Python control flow on tensors, so autograph has nothing to
# convert; skipping it makes building each task's pipeline noticeably faster.
_plain_tf = tf.autograph.experimental.do_not_convert


def _label_text(label: tf.Tensor, label_names: Sequence[str]) -> tf.Tensor:
  """Label index -> its name; -1 (hidden test label) -> "<unk>"."""
  names = tf.constant(list(label_names))
  label = tf.cast(label, tf.int32)
  return tf.where(label < 0, tf.constant(UNKNOWN_LABEL), tf.gather(names, tf.maximum(label, 0)))


@seqio.map_over_dataset
@_plain_tf
def glue_text(
  x: Mapping[str, tf.Tensor],
  benchmark_name: str,
  label_names: Sequence[str],
  feature_names: Sequence[str],
) -> dict[str, tf.Tensor]:
  """T5's GLUE format: "<benchmark> key1: value1 key2: value2 ..." -> label name.

  `feature_names` fixes the order of the fields; T5 uses alphabetical order unless a
  task names its own, and the task table in super_glue.py spells out the result.
  """
  parts = [tf.constant(benchmark_name)]
  for key in feature_names:
    parts += [tf.constant(f"{key}:"), x[key]]
  return {
    "inputs": tf.strings.join(parts, separator=" "),
    "targets": _label_text(x["label"], label_names),
    "idx": x["idx"],
  }


@seqio.map_over_dataset
@_plain_tf
def multirc_text(x: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  """MultiRC in T5's GLUE format, with the paragraph's HTML removed.

  One example per (question, answer option); the ids stay so that the per-question
  exact match can regroup the options of a question.
  """
  inputs = tf.strings.join(
    ["multirc question:", x["question"], "answer:", x["answer"], "paragraph:", x["paragraph"]],
    separator=" ",
  )
  inputs = tf.strings.regex_replace(inputs, "<br>", " ")
  inputs = tf.strings.regex_replace(inputs, "</?b>", "")
  return {
    "inputs": inputs,
    "targets": _label_text(x["label"], ("False", "True")),
    "idx/paragraph": x["idx"]["paragraph"],
    "idx/question": x["idx"]["question"],
    "idx/answer": x["idx"]["answer"],
  }


def record_text(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """ReCoRD: "record query: Q entities: e1, e2 passage: P", one example per answer.

  Each correct entity becomes its own training target; every copy keeps the full
  answer list so evaluation can score a query against all its answers (and count it
  once, see metrics.record). A query without answers (test split) yields one "<unk>".
  """

  @_plain_tf
  def format_query(x: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    # The passage marks CNN/Daily Mail bullet points with "\n@highlight\n"; turn each
    # into a sentence break, without doubling an existing final punctuation mark.
    passage = tf.strings.regex_replace(x["passage"], r"([.?!\"'])\n@highlight\n", r"\1 ")
    passage = tf.strings.regex_replace(passage, r"\n@highlight\n", ". ")
    inputs = tf.strings.join(
      [
        "record query:",
        x["query"],
        "entities:",
        tf.strings.reduce_join(x["entities"], separator=", "),
        "passage:",
        passage,
      ],
      separator=" ",
    )
    answers = x["answers"]
    targets = tf.cond(tf.size(answers) > 0, lambda: answers, lambda: tf.constant([UNKNOWN_LABEL]))
    copies = tf.size(targets)
    return {
      "inputs": tf.fill([copies], inputs),
      "targets": targets,
      "answers": tf.repeat(answers[tf.newaxis], copies, axis=0),
      "idx/passage": tf.fill([copies], x["idx"]["passage"]),
      "idx/query": tf.fill([copies], x["idx"]["query"]),
    }

  return dataset.flat_map(_plain_tf(lambda x: tf.data.Dataset.from_tensor_slices(format_query(x))))


@_plain_tf
def _mark_pronoun(text: tf.Tensor, pronoun: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
  """Surrounds the pronoun at word `index` of `text` with asterisks: "if *he* could".

  WSC's word index is off in a couple of examples (it points at a neighbouring word, or
  the pronoun carries punctuation such as `him,"`), so the occurrence of the pronoun
  nearest to `index` is marked, keeping trailing punctuation outside the asterisks. If
  the pronoun does not occur, the word at `index` is marked as it is.
  """
  words = tf.strings.split(text, sep=" ")
  num_words = tf.size(words, out_type=tf.int64)
  index = tf.cast(index, tf.int64)
  literal = tf.strings.join([r"\Q", pronoun, r"\E"])
  is_pronoun = tf.strings.regex_full_match(words, tf.strings.join([literal, r"[^\pL\pN]*"]))
  positions = tf.where(is_pronoun)[:, 0]
  found = tf.size(positions) > 0

  def mark() -> tf.Tensor:
    position = tf.cond(
      found,
      lambda: tf.gather(positions, tf.argmin(tf.abs(positions - index))),
      lambda: tf.clip_by_value(index, 0, num_words - 1),
    )
    span = tf.cond(
      found, lambda: tf.strings.join(["^(", literal, ")"]), lambda: tf.constant("^(.*)$")
    )
    marked = tf.strings.regex_replace(words[position], span, r"*\1*", replace_global=False)
    updated = tf.tensor_scatter_nd_update(words, [[position]], [marked])
    return tf.strings.reduce_join(updated, separator=" ")

  return tf.cond(num_words > 0, mark, lambda: text)


# Two WSC texts whose pronoun T5 does not locate by its word index (the pronoun carries a
# quote and comma in one, the index points at "use" in the other). T5 hard-codes their
# blanked form, "X" standing for the pronoun; it is reproduced here character for
# character (the first loses its trailing space and gains one before the comma).
WSC_SPECIAL_TEXTS: dict[str, str] = {
  (
    "The boy continued to whip the pony , and eventually the pony threw him over. John "
    'laughed out quite loud. "Good for him," he said. '
  ): (
    "The boy continued to whip the pony , and eventually the pony threw him over. John "
    'laughed out quite loud. "Good for X ," he said.'
  ),
  (
    "When they had eventually calmed down a bit , and had gotten home, Mr. Farley put the "
    "magic pebble in an iron safe . Some day they might want to use it , but really for "
    "now, what more could they wish for?"
  ): (
    "When they had eventually calmed down a bit , and had gotten home, Mr. Farley put the "
    "magic pebble in an iron safe . Some day they might want to use X , but really for "
    "now, what more could they wish for?"
  ),
}


@_plain_tf
def wsc_marked_text(text: tf.Tensor, pronoun: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
  """WSC's text with its pronoun in asterisks, as T5's simple WSC writes it.

  The two texts T5 special-cases get T5's fixed form with the pronoun in place of its
  "X"; every other text is marked by `_mark_pronoun`.
  """
  marked = _mark_pronoun(text, pronoun, index)
  starred = tf.strings.join([" *", pronoun, "* "])
  for original, blanked in WSC_SPECIAL_TEXTS.items():
    special = tf.strings.regex_replace(tf.constant(blanked), " X ", starred)
    marked = tf.where(tf.equal(text, original), special, marked)
  return marked


def wsc_simple(dataset: tf.data.Dataset, correct_referent_only: bool) -> tf.data.Dataset:
  """T5's "simple" WSC: mark the pronoun, generate the noun phrase it refers to.

  "wsc: Mitchell asked Tom if *he* could lend some money." -> "Tom". The target is
  always the candidate referent, so only examples whose candidate is correct (label 1)
  teach the right answer: training uses `correct_referent_only=True` (259 of 554
  examples), evaluation keeps all and checks whether the generated referent matches
  the candidate (postprocessors.wsc_simple).
  """
  if correct_referent_only:
    dataset = dataset.filter(_plain_tf(lambda x: tf.equal(x["label"], 1)))

  @_plain_tf
  def format_example(x: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    marked = wsc_marked_text(x["text"], x["span2_text"], x["span2_index"])
    return {
      "inputs": tf.strings.join(["wsc:", marked], separator=" "),
      "targets": x["span1_text"],
      "label": x["label"],
      "idx": x["idx"],
    }

  return dataset.map(format_example, num_parallel_calls=tf.data.AUTOTUNE)


@seqio.map_over_dataset
@_plain_tf
def remove_first_text_token(
  x: Mapping[str, tf.Tensor], key: str = "inputs"
) -> dict[str, tf.Tensor]:
  """Drops the first space-separated word of `key` (the dataset name): the "taskless" format.

  The paper trains prompts without T5's task prefix, so the prompt alone tells the
  frozen model which task it is solving.
  """
  x = dict(x)
  x[key] = tf.strings.regex_replace(x[key], r"^[^ ]* ", "", replace_global=False)
  return x
