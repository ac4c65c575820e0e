"""QA domain-shift tasks over mocked TFDS data: format, splits, mixtures and SQuAD scoring."""

from __future__ import annotations

import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from prompt_tuning.data import mrqa

LENGTHS = {"inputs": 64, "targets": 16}


def _fake_as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **kwargs):
  """Two QA examples whose question names the dataset and the TFDS split it came from."""
  del decoders, read_config, shuffle_files, kwargs
  subset = "squad" if self.name == "squad" else self.builder_config.name
  origin = f"{subset} {split}"
  questions = [f"who wrote the book ({origin})?", f"when was it written ({origin})?"]
  contexts = ["The book was written by Jane Austen in 1813."] * 2
  answers = [["Jane Austen", "Austen"], ["1813"]]
  if self.name == "squad":
    return tf.data.Dataset.from_tensor_slices(
      {
        "id": ["s0", "s1"],
        "title": ["t", "t"],
        "question": questions,
        "context": contexts,
        "answers": {
          "text": tf.ragged.constant(answers),
          "answer_start": tf.ragged.constant([[24, 29], [39]]),
        },
      }
    )
  return tf.data.Dataset.from_tensor_slices(
    {
      "qid": ["m0", "m1"],
      "subset": ["x", "x"],
      "question": questions,
      "context": contexts,
      "answers": tf.ragged.constant(answers),
    }
  )


@pytest.fixture(scope="module", autouse=True)
def registered(test_vocabulary):
  return mrqa.register(test_vocabulary)


@pytest.fixture()
def mock_tfds():
  with tfds.testing.mock_data(as_dataset_fn=_fake_as_dataset):
    yield


def _examples(name: str, split: str) -> list[dict]:
  task = seqio.TaskRegistry.get(name)
  ds = task.get_dataset(LENGTHS, split=split, shuffle=False, num_epochs=1, try_in_mem_cache=False)
  return list(ds.as_numpy_iterator())


def _evaluate(name: str, examples: list[dict], predictions: list[str]) -> dict[str, float]:
  """What seqio's evaluator does: postprocess targets and predictions, run the metrics."""
  task = seqio.TaskRegistry.get(name)
  vocabulary = task.output_features["targets"].vocabulary
  tokens = [vocabulary.encode(p) + [vocabulary.eos_id] for p in predictions]
  width = max(len(t) for t in tokens)
  outputs = np.array([t + [0] * (width - len(t)) for t in tokens], np.int32)
  results = {}
  for metric in task.metric_objs:
    instance = metric.from_model_output(examples, outputs, task.output_features)
    results.update(instance.actual_compute(examples, task.output_features)[0])
  return results


def test_subsets_are_all_of_tfds_mrqa():
  configs = set(tfds.builder_cls("mrqa").builder_configs)
  assert set(mrqa.IN_DOMAIN) | set(mrqa.OUT_OF_DOMAIN) == configs
  assert not set(mrqa.IN_DOMAIN) & set(mrqa.OUT_OF_DOMAIN)


def test_squad_end_to_end(mock_tfds):
  examples = _examples(mrqa.SQUAD_TASK, "validation")
  assert [e["inputs_pretokenized"].decode() for e in examples] == [
    "question: who wrote the book ( squad validation ) ? context: The book was written by "
    "Jane Austen in 1813 . ",
    "question: when was it written ( squad validation ) ? context: The book was written by "
    "Jane Austen in 1813 . ",
  ]
  assert [e["targets_pretokenized"].decode() for e in examples] == ["Jane Austen", "1813"]

  converted = seqio.EncDecFeatureConverter(pack=False)(
    seqio.TaskRegistry.get(mrqa.SQUAD_TASK).get_dataset(
      LENGTHS, split="validation", shuffle=False, num_epochs=1, try_in_mem_cache=False
    ),
    LENGTHS,
  )
  batch = next(converted.as_numpy_iterator())
  assert batch["encoder_input_tokens"].shape == (LENGTHS["inputs"],)
  assert batch["decoder_target_tokens"].shape == (LENGTHS["targets"],)

  # The second reference answer counts as fully correct: scoring uses all answers.
  assert _evaluate(mrqa.SQUAD_TASK, examples, ["Austen", "1813"]) == {"em": 100.0, "f1": 100.0}
  wrong = _evaluate(mrqa.SQUAD_TASK, examples, ["Jane", "in 1900"])
  assert wrong["em"] == 0.0
  assert wrong["f1"] == pytest.approx(100 * (2 / 3) / 2)  # "Jane" vs "Jane Austen": F1 2/3.


@pytest.mark.parametrize("subset", mrqa.OUT_OF_DOMAIN)
def test_out_of_domain_sets_read_tfds_test_as_validation(mock_tfds, subset):
  name = mrqa.mrqa_task_name(subset)
  task = seqio.TaskRegistry.get(name)
  assert set(task.splits) == {"validation"}
  examples = _examples(name, "validation")
  padded = subset.replace("_", " _ ")  # T5 pads "_" like any ASCII punctuation mark.
  assert all(f"( {padded} test )" in e["inputs_pretokenized"].decode() for e in examples)
  assert list(examples[0]["answers"]) == [b"Jane Austen", b"Austen"]
  assert _evaluate(name, examples, ["Jane Austen", "1813"]) == {"em": 100.0, "f1": 100.0}


def test_in_domain_sets_keep_their_splits(mock_tfds):
  for subset in mrqa.IN_DOMAIN:
    assert set(seqio.TaskRegistry.get(mrqa.mrqa_task_name(subset)).splits) == {
      "train",
      "validation",
    }
  examples = _examples(mrqa.mrqa_task_name("news_qa"), "train")
  assert "( news _ qa train )" in examples[0]["inputs_pretokenized"].decode()


def test_mixtures_train_on_squad_only_and_evaluate_out_of_domain(mock_tfds):
  mixture = seqio.MixtureRegistry.get(mrqa.ALL_OOD_MIXTURE)
  rates = {t.name: mixture.get_rate(t) for t in mixture.tasks}
  assert rates == {
    mrqa.SQUAD_TASK: 1.0,
    **{mrqa.mrqa_task_name(s): 0.0 for s in mrqa.OUT_OF_DOMAIN},
  }
  evaluated = [t.name for t in mixture.tasks if "validation" in t.splits and t.metric_objs]
  assert len(evaluated) == 7

  train = mixture.get_dataset(
    LENGTHS,
    split="train",
    shuffle=False,
    num_epochs=1,
    copy_pretokenized=True,
    try_in_mem_cache=False,
  )
  inputs = [e["inputs_pretokenized"].decode() for e in train.as_numpy_iterator()]
  assert len(inputs) == 2 and all("( squad train )" in text for text in inputs)

  for subset in mrqa.OUT_OF_DOMAIN:
    single = seqio.MixtureRegistry.get(mrqa.mixture_name(subset))
    assert {t.name: single.get_rate(t) for t in single.tasks} == {
      mrqa.SQUAD_TASK: 1.0,
      mrqa.mrqa_task_name(subset): 0.0,
    }


def test_postprocessor_without_example_uses_the_target_text():
  assert mrqa.qa_postprocessor("Jane Austen", is_target=True) == ["Jane Austen"]
  assert mrqa.qa_postprocessor(b"Austen") == "Austen"
