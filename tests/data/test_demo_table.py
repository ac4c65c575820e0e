"""The generated table-to-text set: reproducible, in E2E's linearisation (the same text
generation.py writes for a TFDS table), sentences that state every attribute, and two
references per validation table, grouped by the task's postprocessor."""

from __future__ import annotations

import pytest
import seqio
import tensorflow as tf

from prompt_tuning.data import demo_table, generation


def test_examples_are_the_same_on_every_call_and_differ_between_splits():
  assert demo_table.examples("train") == demo_table.examples("train")
  assert len(demo_table.examples("train")) == demo_table.SPLIT_SIZES["train"]
  validation = demo_table.examples("validation")
  assert len(validation) == 2 * demo_table.SPLIT_SIZES["validation"]
  assert validation[0]["inputs"] == validation[1]["inputs"]
  assert validation[0]["targets"] != validation[1]["targets"]


def test_the_linearisation_is_the_one_the_e2e_task_writes():
  table = {"name": "Blue Door", "eatType": "pub", "food": "Italian", "area": "riverside"}
  tfds_table = {
    "column_header": tf.constant(list(table)),
    "content": tf.constant(list(table.values())),
  }
  expected = generation.linearize_attributes(tfds_table).numpy().decode()
  assert demo_table.linearize(table) == expected
  assert expected == "name : Blue Door | eatType : pub | food : Italian | area : riverside"


def test_each_sentence_states_every_attribute_of_its_table():
  table = {
    "name": "Green Olive",
    "eatType": "restaurant",
    "food": "Indian",
    "area": "city centre",
    "priceRange": "expensive",
    "familyFriendly": "no",
  }
  first, second = demo_table.describe(table, 0), demo_table.describe(table, 1)
  assert first == (
    "Green Olive is an expensive Indian restaurant in the city centre area. "
    "It is not family friendly."
  )
  assert second == (
    "There is an expensive Indian restaurant called Green Olive near the city centre. "
    "Children are not welcome."
  )


def test_validation_scores_each_table_against_both_references():
  task = seqio.get_mixture_or_task(demo_table.TABLE_TASK)
  ds = task.get_dataset({"inputs": 96, "targets": 48}, split="validation", shuffle=False)
  examples = list(ds.take(4).as_numpy_iterator())
  targets = [
    task.postprocess_fn(ex["targets_pretokenized"], example=ex, is_target=True) for ex in examples
  ]
  # Predicting each table's second reference matches one of its two references exactly.
  predictions = [examples[1]["targets_pretokenized"].decode()] * 2
  predictions += [examples[3]["targets_pretokenized"].decode()] * 2
  scores = task.metric_fns[0](targets, predictions)
  assert scores["bleu"] == pytest.approx(100.0) and scores["rouge_l"] == pytest.approx(100.0)
