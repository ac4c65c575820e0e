"""GLUE tasks and QQP <-> MRPC transfer over mocked TFDS data, from examples to metrics."""

from __future__ import annotations

import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from prompt_tuning.data import glue

LENGTHS = {"inputs": 48, "targets": 16}
_TEXT_KEYS = (
  "sentence",
  "sentence1",
  "sentence2",
  "question",
  "question1",
  "question2",
  "premise",
  "hypothesis",
)
# Per TFDS config: labels of the fake examples (-1 marks the unlabelled test splits).
_LABELS = {
  "stsb": [0.0, 2.13, 4.91],
  "mnli": [0, 1, 2],
  "mnli_matched": [0, 1, 2],
  "mnli_mismatched": [0, 1, 2],
  "ax": [-1, -1, -1],
}


def _fake_as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **kwargs):
  """Three examples with every GLUE text field; texts name their field and index."""
  del decoders, read_config, shuffle_files, kwargs
  config = self.builder_config.name
  labels = _LABELS.get(config, [0, 1, 1])
  if split.startswith("test") and config != "stsb":
    labels = [-1] * len(labels)
  features = {key: [f"the {key} {i}" for i in range(len(labels))] for key in _TEXT_KEYS}
  dtype = tf.float32 if config == "stsb" else tf.int64
  features["label"] = tf.constant(labels, dtype)
  features["idx"] = tf.range(len(labels), dtype=tf.int32)
  return tf.data.Dataset.from_tensor_slices(features)


@pytest.fixture(scope="module", autouse=True)
def registered(test_vocabulary):
  return glue.register(test_vocabulary)


@pytest.fixture()
def mock_tfds():
  with tfds.testing.mock_data(as_dataset_fn=_fake_as_dataset):
    yield


def _dataset(name: str, split: str) -> tf.data.Dataset:
  task = seqio.TaskRegistry.get(name)
  return task.get_dataset(LENGTHS, split=split, shuffle=False, num_epochs=1, try_in_mem_cache=False)


def _examples(name: str, split: str) -> list[dict]:
  return list(_dataset(name, split).as_numpy_iterator())


def _pipeline(name: str, split: str) -> tuple[list[dict], list[dict]]:
  """The preprocessed examples and what the unpacked feature converter makes of them."""
  ds = _dataset(name, split)
  converted = seqio.EncDecFeatureConverter(pack=False)(ds, LENGTHS)
  return list(ds.as_numpy_iterator()), list(converted.as_numpy_iterator())


def _evaluate(name: str, examples: list[dict], outputs: np.ndarray) -> dict[str, float]:
  """seqio's evaluator path: decode outputs, postprocess, run the task's metrics."""
  task = seqio.TaskRegistry.get(name)
  results = {}
  for metric in task.metric_objs:
    instance = metric.from_model_output(examples, outputs, task.output_features)
    results.update(instance.actual_compute(examples, task.output_features)[0])
  return results


def _encode(name: str, texts: list[str]) -> np.ndarray:
  vocabulary = seqio.TaskRegistry.get(name).output_features["targets"].vocabulary
  tokens = [vocabulary.encode(t) + [vocabulary.eos_id] for t in texts]
  width = max(len(t) for t in tokens)
  return np.array([t + [0] * (width - len(t)) for t in tokens], np.int32)


def test_configs_agree_with_tfds():
  tfds_configs = tfds.builder_cls("glue").builder_configs
  assert set(glue.CONFIGS) == set(tfds_configs)
  for name, config in glue.CONFIGS.items():
    assert config.text_keys == tuple(sorted(tfds_configs[name].text_features)), name
    expected = tfds_configs[name].label_classes
    assert config.label_classes == (tuple(expected) if expected else None), name


_EXPECTED_METRICS = {
  "cola": {"matthews_corrcoef"},
  "sst2": {"accuracy"},
  "mrpc": {"f1", "accuracy"},
  "qqp": {"f1", "accuracy"},
  "stsb": {"pearson_corrcoef", "spearman_corrcoef"},
  "mnli_matched": {"accuracy"},
  "mnli_mismatched": {"accuracy"},
  "qnli": {"accuracy"},
  "rte": {"accuracy"},
  "wnli": {"accuracy"},
}


@pytest.mark.parametrize("name", sorted(_EXPECTED_METRICS))
def test_task_end_to_end_with_perfect_predictions(mock_tfds, name):
  config = glue.CONFIGS[name]
  task_name = glue.task_name(name)
  examples, batches = _pipeline(task_name, "validation")
  first_input = examples[0]["inputs_pretokenized"].decode()
  expected = " ".join([config.benchmark] + [f"{k}: the {k} 0" for k in config.text_keys])
  assert first_input == expected
  assert len(batches) == len(examples)
  assert batches[0]["encoder_input_tokens"].shape == (LENGTHS["inputs"],)
  # A model that generates exactly the targets scores 100 on every metric.
  outputs = np.stack([b["decoder_target_tokens"] for b in batches])
  scores = _evaluate(task_name, examples, outputs)
  assert set(scores) == _EXPECTED_METRICS[name]
  assert all(v == pytest.approx(100.0) for v in scores.values()), scores


def test_targets_are_label_names_and_invalid_generations_count_wrong(mock_tfds):
  name = glue.task_name("rte")
  examples = _examples(name, "validation")
  assert [e["targets_pretokenized"].decode() for e in examples] == [
    "entailment",
    "not_entailment",
    "not_entailment",
  ]
  scores = _evaluate(name, examples, _encode(name, ["entailment", "banana", "entailment"]))
  assert scores == {"accuracy": pytest.approx(100 / 3)}


def test_mnli_format_and_splits(mock_tfds):
  mnli = seqio.TaskRegistry.get(glue.task_name("mnli"))
  assert "validation_matched" in mnli.splits and "validation" not in mnli.splits
  examples = _examples(glue.task_name("mnli_mismatched"), "validation")
  assert examples[2]["inputs_pretokenized"].decode() == (
    "mnli hypothesis: the hypothesis 2 premise: the premise 2"
  )
  assert examples[2]["targets_pretokenized"].decode() == "contradiction"
  mixture = seqio.MixtureRegistry.get(glue.mnli_mixture_name())
  assert {t.name: mixture.get_rate(t) for t in mixture.tasks} == {
    "glue_mnli_v002": 1.0,
    "glue_mnli_matched_v002": 0.0,
    "glue_mnli_mismatched_v002": 0.0,
  }
  taskless = seqio.MixtureRegistry.get(glue.mnli_mixture_name(taskless=True))
  assert all(t.name.startswith("taskless_") for t in taskless.tasks)


def test_stsb_rounds_to_fifths_and_parses_numbers(mock_tfds):
  name = glue.task_name("stsb")
  examples = _examples(name, "validation")
  assert [e["targets_pretokenized"].decode() for e in examples] == ["0.0", "2.2", "5.0"]
  assert glue.string_to_float("3.8") == 3.8
  assert glue.string_to_float("similar") == -1.0


def test_ax_is_test_only_and_unlabelled(mock_tfds):
  name = glue.task_name("ax")
  assert set(seqio.TaskRegistry.get(name).splits) == {"test"}
  examples = _examples(name, "test")
  assert examples[0]["inputs_pretokenized"].decode().startswith("mnli hypothesis: ")
  assert {e["targets_pretokenized"].decode() for e in examples} == {glue.UNLABELED_TARGET}


def test_taskless_tasks_drop_the_benchmark_word(mock_tfds):
  examples = _examples(glue.task_name("mrpc", taskless=True), "validation")
  assert examples[0]["inputs_pretokenized"].decode() == (
    "sentence1: the sentence1 0 sentence2: the sentence2 0"
  )


def test_mrpc_from_qqp_poses_mrpc_as_qqp_and_translates_labels(mock_tfds):
  name = glue.transfer_task_name("mrpc", "qqp")
  task = seqio.TaskRegistry.get(name)
  assert set(task.splits) == {"validation"}
  examples, batches = _pipeline(name, "validation")
  # MRPC's sentences under QQP's keys and benchmark word; MRPC labels as QQP's words.
  assert examples[0]["inputs_pretokenized"].decode() == (
    "qqp question1: the sentence1 0 question2: the sentence2 0"
  )
  assert [e["targets_pretokenized"].decode() for e in examples] == [
    "not_duplicate",
    "duplicate",
    "duplicate",
  ]
  # Perfect QQP-style generations score 100 on MRPC's metrics.
  outputs = np.stack([b["decoder_target_tokens"] for b in batches])
  assert _evaluate(name, examples, outputs) == {"f1": 100.0, "accuracy": 100.0}
  # Generations are scored as MRPC labels: "duplicate" means equivalent (1). MRPC's own
  # words are just as unambiguous; anything else is invalid and counts as wrong.
  assert task.postprocess_fn("duplicate", example=examples[0], is_target=False) == 1
  assert task.postprocess_fn("not_duplicate", example=examples[0], is_target=False) == 0
  assert task.postprocess_fn("equivalent", example=examples[0], is_target=False) == 1
  assert task.postprocess_fn("banana", example=examples[0], is_target=False) == -1
  scores = _evaluate(name, examples, _encode(name, ["duplicate", "duplicate", "banana"]))
  assert scores["accuracy"] == pytest.approx(100 / 3)
  assert scores["f1"] == pytest.approx(50.0)  # tp 1, fp 1, fn 1.


def test_qqp_from_mrpc_poses_qqp_as_mrpc(mock_tfds):
  name = glue.transfer_task_name("qqp", "mrpc", taskless=True)
  task = seqio.TaskRegistry.get(name)
  examples = _examples(name, "validation")
  assert examples[1]["inputs_pretokenized"].decode() == (
    "sentence1: the question1 1 sentence2: the question2 1"
  )
  assert examples[1]["targets_pretokenized"].decode() == "equivalent"
  assert task.postprocess_fn("equivalent", is_target=False) == 1
  assert task.postprocess_fn("not_equivalent", is_target=False) == 0
  outputs = _encode(name, ["not_equivalent", "equivalent", "not_equivalent"])
  assert _evaluate(name, examples, outputs) == {
    "f1": pytest.approx(200 / 3),
    "accuracy": pytest.approx(200 / 3),
  }


@pytest.mark.parametrize("taskless", [False, True])
def test_zeroshot_mixtures_train_on_source_and_evaluate_on_target(mock_tfds, taskless):
  for source, target in glue.LABEL_TRANSLATIONS:
    mixture = seqio.MixtureRegistry.get(glue.zeroshot_mixture_name(target, source, taskless))
    assert {t.name: mixture.get_rate(t) for t in mixture.tasks} == {
      glue.task_name(source, taskless): 1.0,
      glue.transfer_task_name(target, source, taskless): 0.0,
    }
  mixture = seqio.MixtureRegistry.get(glue.zeroshot_mixture_name("mrpc", "qqp", taskless))
  train = mixture.get_dataset(
    LENGTHS,
    split="train",
    shuffle=False,
    num_epochs=1,
    copy_pretokenized=True,
    try_in_mem_cache=False,
  )
  inputs = [e["inputs_pretokenized"].decode() for e in train.as_numpy_iterator()]
  assert len(inputs) == 3 and all("question1: the question1" in text for text in inputs)
