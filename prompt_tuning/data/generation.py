"""Prefix-Tuning's generation tasks (Li & Liang 2021): table-to-text and summarisation.

  e2e_nlg      TFDS `e2e_cleaned`: the meaning representation linearised as the paper
               does, `name : The Eagle | eatType : coffee shop | ...` -> the reference.
  web_nlg_en   TFDS `web_nlg`: the triples, `subject : predicate : object | ...` -> the
               reference. Evaluated on `validation`, `test_all` and `test_unseen`, each
               score also split into categories seen in training and unseen ones.
  dart         TFDS `dart`: the triples linearised as WebNLG's -> the reference.
  xsum         TFDS `xsum`: `summarize: {document}` -> the one-sentence summary.

The table-to-text sets hold one example per (input, reference) pair. Training sees every
pair; evaluation scores each input once against all of its references (the grouping is
by the linearised input: `generation_metrics.multi_reference`), as the E2E, WebNLG and
DART evaluations do. Metrics as the paper reports them (generation_metrics): E2E BLEU,
NIST, ROUGE-L and CIDEr; WebNLG and DART BLEU and TER (plus chrF); XSum ROUGE-1/2/L with
stemming. METEOR cannot be computed offline (generation_metrics explains why).

Inputs and targets are texts as they are (no lowercasing, no task prefix on the tables:
the linearisation is the whole input, as in the paper's code).
"""

from __future__ import annotations

from typing import Any, Mapping

import seqio
import tensorflow as tf

from prompt_tuning.data import generation_metrics as gm
from prompt_tuning.data import glue, sources
from prompt_tuning.data import vocab as vocab_lib
from prompt_tuning.data.postprocessors import as_text

E2E_TFDS = "e2e_cleaned:0.1.0"
WEB_NLG_TFDS = "web_nlg:0.1.0"
DART_TFDS = "dart:0.1.0"
XSUM_TFDS = "xsum:1.1.0"

# WebNLG 2017: the ten DBpedia categories of its training data; the test set adds five
# (Artist, Athlete, CelestialBody, MeanOfTransportation, Politician), its "unseen" part.
WEB_NLG_SEEN_CATEGORIES = frozenset(
  {
    "Airport",
    "Astronaut",
    "Building",
    "City",
    "ComicsCharacter",
    "Food",
    "Monument",
    "SportsTeam",
    "University",
    "WrittenWork",
  }
)

_plain_tf = tf.autograph.experimental.do_not_convert


def linearize_attributes(table: Mapping[str, tf.Tensor]) -> tf.Tensor:
  """E2E's meaning representation: `header : content` per attribute, joined by " | "."""
  pairs = tf.strings.join([table["column_header"], table["content"]], separator=" : ")
  return tf.strings.reduce_join(pairs, separator=" | ")


def linearize_triples(table: Mapping[str, tf.Tensor]) -> tf.Tensor:
  """WebNLG / DART triples: each row's cells (subject, predicate, object, in the table's
  order) joined by " : ", the rows by " | ". Rows are told apart by `row_number`, which
  need not start at 0 or be contiguous."""
  _, row = tf.unique(tf.cast(table["row_number"], tf.int32))
  rows = tf.RaggedTensor.from_value_rowids(table["content"], tf.cast(row, tf.int64))
  return tf.strings.reduce_join(
    tf.strings.reduce_join(rows, axis=1, separator=" : "), separator=" | "
  )


def table_text(dataset: tf.data.Dataset, linearize: Any, with_category: bool) -> tf.data.Dataset:
  """{inputs: the linearised table, targets: the reference[, category]}."""

  def convert(x: Mapping[str, Any]) -> dict[str, tf.Tensor]:
    out = {"inputs": linearize(x["input_text"]["table"]), "targets": x["target_text"]}
    if with_category:
      out["category"] = x["input_text"]["context"]
    return out

  return dataset.map(_plain_tf(convert), num_parallel_calls=tf.data.AUTOTUNE)


def xsum_text(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """`summarize: {document}` -> the summary."""

  def convert(x: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    return {
      "inputs": tf.strings.join(["summarize:", x["document"]], separator=" "),
      "targets": x["summary"],
    }

  return dataset.map(_plain_tf(convert), num_parallel_calls=tf.data.AUTOTUNE)


def reference_with_input(
  text: Any, example: Mapping[str, Any] | None = None, is_target: bool = False
) -> Any:
  """Targets -> {"group": the input, "value": the reference, "category"}; predictions
  stay text. The group lets the metric collect every reference of one table."""
  if not is_target:
    return as_text(text)
  if example is None:
    raise ValueError(
      "the table-to-text postprocessor needs the preprocessed example to group references "
      "by input; call it as seqio does, with example=..."
    )
  return {
    "group": as_text(example["inputs_pretokenized"]),
    "value": as_text(text),
    "category": as_text(example.get("category", b"")),
  }


E2E_METRIC = gm.multi_reference(gm.bleu, gm.nist, gm.rouge_l_coco, gm.cider)
WEB_NLG_METRIC = gm.multi_reference(
  gm.bleu, gm.chrf, gm.ter, seen_categories=WEB_NLG_SEEN_CATEGORIES
)
DART_METRIC = gm.multi_reference(gm.bleu, gm.chrf, gm.ter)
XSUM_METRIC = gm.single_reference(gm.rouge_stemmed)


def _add_task(
  name: str, source: seqio.DataSource, text_step: Any, features, postprocess_fn, metric
):
  seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
    name,
    source=source,
    preprocessors=[
      text_step,
      seqio.preprocessors.tokenize,
      seqio.CacheDatasetPlaceholder(),
      seqio.preprocessors.append_eos_after_trim,
    ],
    output_features=features,
    postprocess_fn=postprocess_fn,
    metric_fns=[metric],
  )


def register(vocabulary: seqio.Vocabulary | None = None) -> list[str]:
  """(Re)registers the four generation tasks with `vocabulary`."""
  vocabulary = vocabulary if vocabulary is not None else vocab_lib.get_vocabulary()
  features = glue.output_features(vocabulary)

  def table(linearize: Any, with_category: bool = False) -> Any:
    return lambda ds: table_text(ds, linearize, with_category)

  _add_task(
    "e2e_nlg",
    sources.TfdsSource(E2E_TFDS, splits=("train", "validation", "test")),
    table(linearize_attributes),
    features,
    reference_with_input,
    E2E_METRIC,
  )
  _add_task(
    "web_nlg_en",
    sources.TfdsSource(WEB_NLG_TFDS, splits=("train", "validation", "test_all", "test_unseen")),
    table(linearize_triples, with_category=True),
    features,
    reference_with_input,
    WEB_NLG_METRIC,
  )
  _add_task(
    "dart",
    sources.TfdsSource(DART_TFDS, splits=("train", "validation", "test")),
    table(linearize_triples),
    features,
    reference_with_input,
    DART_METRIC,
  )
  _add_task(
    "xsum",
    sources.TfdsSource(XSUM_TFDS, splits=("train", "validation", "test")),
    xsum_text,
    features,
    None,
    XSUM_METRIC,
  )
  return ["e2e_nlg", "web_nlg_en", "dart", "xsum"]


register()
