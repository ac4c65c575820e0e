"""Listing registered tasks by pattern and printing preprocessed examples."""

from __future__ import annotations

import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from prompt_tuning.data import c4
from prompt_tuning.data import glue
from prompt_tuning.data import listing
from prompt_tuning.data import mrqa
from prompt_tuning.data import spans


@pytest.fixture(scope="module", autouse=True)
def registered(test_vocabulary):
  # The MRQA span tasks too (data/spans.py): every run of the CLI registers them, so the
  # patterns below must find them whatever other test modules registered first.
  return (
    glue.register(test_vocabulary)
    + mrqa.register(test_vocabulary)
    + spans.register(test_vocabulary)
    + c4.register(test_vocabulary)
  )


def _fake_glue(self, split, decoders=None, read_config=None, shuffle_files=False, **kwargs):
  del decoders, read_config, shuffle_files, kwargs
  assert self.name == "glue"
  return tf.data.Dataset.from_tensor_slices(
    {
      "sentence1": [f"the fox {split} {i}" for i in range(5)],
      "sentence2": [f"a dog {i}" for i in range(5)],
      "label": tf.constant([1, 0, 1, 0, 1], tf.int64),
      "idx": tf.range(5, dtype=tf.int32),
    }
  )


def test_list_tasks_finds_registered_names(registered):
  everything = listing.list_tasks()
  assert set(registered) <= set(everything) and everything == sorted(everything)
  assert listing.list_tasks(None) == everything


def test_patterns_glob_regex_and_forced_regex():
  assert listing.list_tasks("squad_to_*") == sorted(
    [mrqa.mixture_name(s) for s in mrqa.OUT_OF_DOMAIN] + [mrqa.ALL_OOD_MIXTURE]
  )
  assert listing.list_tasks("glue_*_from_*_v002") == [
    "glue_mrpc_from_qqp_v002",
    "glue_mrpc_from_qqp_zeroshot_v002",
    "glue_qqp_from_mrpc_v002",
    "glue_qqp_from_mrpc_zeroshot_v002",
  ]
  assert listing.list_tasks("^c4_") == ["c4_prefix_lm", "c4_span_corruption"]
  assert listing.list_tasks("drop") == ["mrqa_drop_span", "mrqa_drop_v100", "squad_to_drop"]
  assert listing.list_tasks("re:^mrqa_(race|drop)_v100$") == ["mrqa_drop_v100", "mrqa_race_v100"]
  assert listing.list_tasks("no_task_is_called_this") == []
  with pytest.raises(ValueError, match="not a valid regular expression"):
    listing.list_tasks("re:(unclosed")


def test_show_task_prints_preprocessed_examples():
  with tfds.testing.mock_data(as_dataset_fn=_fake_glue):
    text = listing.show_task("glue_mrpc_v002", split="validation", num_examples=2)
  assert text.splitlines()[0] == "glue_mrpc_v002 (validation)"
  assert "--- example 1 ---" in text and "--- example 2 ---" in text
  assert "--- example 3 ---" not in text
  assert "mrpc sentence1: the fox validation 0 sentence2: a dog 0" in text
  assert "targets (" in text and "): equivalent" in text


def test_show_task_for_mixtures_and_token_only_tasks():
  with tfds.testing.mock_data(as_dataset_fn=_fake_glue):
    text = listing.show_task("glue_qqp_from_mrpc_zeroshot_v002", split="train", num_examples=1)
  assert "mrpc sentence1: the fox train 0" in text  # Training comes from the source, MRPC.

  def fake_c4(self, split, **kwargs):
    del self, split, kwargs
    return tf.data.Dataset.from_tensor_slices({"text": ["The quick brown fox jumps."]})

  with tfds.testing.mock_data(as_dataset_fn=fake_c4):
    text = listing.show_task("c4_prefix_lm", num_examples=1)
  assert "inputs (" in text and "tokens, decoded): The" in text


def test_show_task_rejects_bad_requests():
  with pytest.raises(ValueError, match="No task or mixture named 'glue_mrpc'"):
    listing.show_task("glue_mrpc")
  with pytest.raises(ValueError, match="has no split 'train'"):
    listing.show_task("mrqa_drop_v100", split="train")
  with pytest.raises(ValueError, match="num_examples must be at least 1"):
    listing.show_task("glue_mrpc_v002", num_examples=0)
