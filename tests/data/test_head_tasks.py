"""The linear-head tasks over mocked TFDS data: label vocabularies, NER word-piece
alignment, SQuAD spans through byte offsets, the `_cls` classification variants, and
each kind end to end (preprocess -> features -> tiny model -> postprocess -> metric)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from prompt_tuning import head_models
from prompt_tuning.data import classification, labels, spans, tagging
from prompt_tuning.evaluation import evaluator
from prompt_tuning.t5 import T5Config, Transformer, heads
from prompt_tuning.training import data as data_lib

ZEROS = {"pos": [0] * 5, "chunks": [0] * 5}
CONTEXT = "Zoë Berg works in Oslo. The café is near the river."
RAW = {
  "conll2003": [
    {"tokens": ["John", "lives", "in", "New", "York"], "ner": [1, 0, 0, 5, 6], **ZEROS},
    {"tokens": ["Acme", "Corp", "hired", "Anna", "."], "ner": [3, 4, 0, 1, 0], **ZEROS},
  ],
  "squad": [
    {
      "id": "a",
      "title": "t",
      "question": "Where does Zoë work?",
      "context": CONTEXT,
      "answers": {"text": ["Oslo"], "answer_start": [CONTEXT.index("Oslo")]},
      "is_impossible": False,
      "plausible_answers": {"text": [], "answer_start": []},
    },
    {
      "id": "b",
      "title": "t",
      "question": "What is near the river?",
      "context": CONTEXT,
      "answers": {"text": ["The café", "café"], "answer_start": [24, 28]},
      "is_impossible": False,
      "plausible_answers": {"text": [], "answer_start": []},
    },
    {
      "id": "c",
      "title": "t",
      "question": "Who owns the café?",
      "context": CONTEXT,
      "answers": {"text": [], "answer_start": []},
      "is_impossible": True,
      "plausible_answers": {"text": ["Zoë"], "answer_start": [0]},
    },
  ],
  "super_glue": [
    {"premise": "A man sleeps.", "hypothesis": "A man rests.", "label": 0, "idx": 0},
    {"premise": "A man sleeps.", "hypothesis": "A man runs.", "label": 1, "idx": 1},
  ],
}


def _as_dataset(self, split, **kwargs):
  del split, kwargs
  examples = RAW[self.name]
  if self.name == "squad" and "is_impossible" not in self.info.features:
    examples = [
      {k: v for k, v in ex.items() if k not in ("is_impossible", "plausible_answers")}
      for ex in examples
      if not ex["is_impossible"]
    ]
  return tf.data.Dataset.from_generator(
    lambda: iter(examples), output_signature=self.info.features.get_tensor_spec()
  )


@pytest.fixture(scope="module", autouse=True)
def registered(test_vocabulary):
  names = [
    *tagging.register(test_vocabulary),
    *spans.register(test_vocabulary),
    *classification.register(test_vocabulary),
  ]
  yield names
  tagging.register()
  spans.register()
  classification.register()


@pytest.fixture()
def mock_tfds(monkeypatch):
  monkeypatch.setattr(seqio.TfdsDataSource, "num_input_examples", lambda self, split: None)
  with tfds.testing.mock_data(as_dataset_fn=_as_dataset):
    yield


def _examples(name, lengths, split="validation"):
  task = seqio.TaskRegistry.get(name)
  ds = task.get_dataset(lengths, split=split, shuffle=False, num_epochs=1, use_cached=False)
  return list(ds.as_numpy_iterator())


# ------------------------------------------------------------------ vocabularies


def test_label_ids_start_at_one_and_zero_means_no_label():
  vocabulary = labels.LabelVocabulary(("O", "B-PER", "I-PER"), per_token=True)
  assert vocabulary.encode("B-PER I-PER O") == [2, 3, 1]
  assert vocabulary.decode([2, 0, 3, 0, 1]) == "B-PER I-PER O"
  encoded = vocabulary.encode_tf(tf.constant("I-PER <unk> O")).numpy().tolist()
  assert encoded == [3, 0, 1]  # An unknown name (a hidden test label) is no label.
  assert vocabulary.label_length(64) == 64
  assert labels.LabelVocabulary(("no", "yes")).label_length(64) == 1


def test_label_vocabularies_refuse_labels_they_could_not_read_back():
  with pytest.raises(ValueError, match="distinct"):
    labels.LabelVocabulary(("a", "a"))
  with pytest.raises(ValueError, match="without spaces"):
    labels.LabelVocabulary(("not entailment", "entailment"))


def test_positions_round_trip_as_start_end_text():
  vocabulary = labels.PositionVocabulary(100)
  assert vocabulary.decode([4, 9]) == "3 8"
  assert vocabulary.encode_tf(tf.constant("3 8")).numpy().tolist() == [4, 9]


# ------------------------------------------------------------------ NER


def test_each_word_is_labelled_on_its_first_word_piece_only(mock_tfds, test_vocabulary):
  example = _examples("conll2003_ner", {"inputs": 64, "targets": 64})[0]
  assert example["inputs_pretokenized"] == b"John lives in New York"
  pieces = [len(test_vocabulary.encode(word)) for word in ["John", "lives", "in", "New", "York"]]
  starts = np.cumsum([0] + pieces[:-1])
  expected = np.zeros(sum(pieces) + 1, np.int32)  # + EOS, unlabelled
  expected[starts] = np.array([1, 0, 0, 5, 6]) + 1
  np.testing.assert_array_equal(example["targets"], expected)
  assert example["inputs"][-1] == 1 and len(example["inputs"]) == len(expected)
  assert example["targets_pretokenized"] == b"B-PER O O B-LOC I-LOC"


def test_words_that_do_not_fit_are_dropped_whole(mock_tfds, test_vocabulary):
  first = len(test_vocabulary.encode("John")) + len(test_vocabulary.encode("lives"))
  example = _examples("conll2003_ner", {"inputs": first + 1, "targets": 8})[0]
  assert example["targets_pretokenized"] == b"B-PER O"
  assert len(example["inputs"]) == first + 1


def test_the_token_converter_gives_labels_the_inputs_length_whatever_targets_says(mock_tfds):
  converter = data_lib.feature_converter("conll2003_ner")
  task = seqio.TaskRegistry.get("conll2003_ner")
  ds = task.get_dataset({"inputs": 32, "targets": 8}, split="validation", shuffle=False)
  batch = next(converter(ds, {"inputs": 32, "targets": 8}).batch(2).as_numpy_iterator())
  assert batch["encoder_input_tokens"].shape == batch["label_ids"].shape == (2, 32)


def test_a_mixture_of_head_and_text_tasks_is_refused(registered):
  seqio.MixtureRegistry.remove("mixed_head_text")
  seqio.MixtureRegistry.add("mixed_head_text", [("conll2003_ner", 1.0), ("squad_v110_span", 1.0)])
  try:
    with pytest.raises(ValueError, match="different head kinds"):
      data_lib.feature_converter("mixed_head_text")
  finally:
    seqio.MixtureRegistry.remove("mixed_head_text")


# ------------------------------------------------------------------ spans


def test_an_answer_maps_to_word_pieces_and_back_to_its_text(mock_tfds):
  examples = _examples("squad_v200_span", {"inputs": 96, "targets": 2})
  task = seqio.TaskRegistry.get("squad_v200_span")
  vocabulary = task.output_features["targets"].vocabulary
  texts = [spans.span_text(vocabulary.decode(ex["targets"].tolist()), ex) for ex in examples]
  assert texts == ["Oslo", "The café", ""]  # The third is unanswerable: the null span.
  assert examples[2]["targets"].tolist() == [1, 1]
  references = [spans.span_text(None, ex, is_target=True) for ex in examples]
  assert references == [["Oslo"], ["The café", "café"], []]


def test_a_cut_off_answer_is_labelled_as_the_null_span(mock_tfds):
  full = _examples("squad_v110_span", {"inputs": 96, "targets": 2})[1]
  start = int(full["targets"][0]) - 1
  cut = _examples("squad_v110_span", {"inputs": start + 1, "targets": 2})[1]
  assert cut["targets"].tolist() == [1, 1] and len(cut["inputs"]) <= start + 1


def test_answer_positions_cover_the_answer_bytes():
  starts, limits = tf.constant([0, 3, 7, 10]), tf.constant([3, 7, 10, 14])
  first, last = spans.answer_positions(starts, limits, tf.constant(4), tf.constant(10))
  assert (int(first), int(last)) == (1, 2)
  none = spans.answer_positions(starts[:0], limits[:0], tf.constant(4), tf.constant(10))
  assert [int(x) for x in none] == [-1, -1]


# ------------------------------------------------------------------ classification


def test_cls_tasks_keep_t5s_inputs_with_the_label_as_one_integer(mock_tfds, test_vocabulary):
  example = _examples("super_glue_rte_v102_cls", {"inputs": 64, "targets": 1})[1]
  assert example["inputs_pretokenized"].startswith(b"rte hypothesis: A man runs.")
  assert example["targets"].tolist() == [2]  # not_entailment, label 1, id 2
  task = seqio.TaskRegistry.get("super_glue_rte_v102_cls")
  assert task.postprocess_fn("not_entailment", example=example, is_target=False) == 1


def test_every_issue_named_cls_task_is_registered(registered):
  for name in ("boolq", "cb", "copa", "rte", "wic", "axb", "axg"):
    assert f"super_glue_{name}_v102_cls" in registered
  for name in ("cola", "sst2", "mrpc", "qqp", "mnli", "qnli", "rte", "wnli"):
    assert f"glue_{name}_v002_cls" in registered
  assert "glue_stsb_v002_cls" not in registered


# ------------------------------------------------------------------ end to end

CFG = T5Config.from_size("tiny", vocab_size=512)
CASES = {
  "conll2003_ner": (
    head_models.TokenClassificationModel,
    functools.partial(heads.TokenHead, num_labels=9),
    {"inputs": 32, "targets": 32},
    {"precision", "recall", "f1"},
  ),
  "squad_v200_span": (
    head_models.SpanExtractionModel,
    heads.SpanHead,
    {"inputs": 64, "targets": 2},
    {"exact", "f1", "HasAns_exact", "NoAns_exact"},
  ),
  "super_glue_rte_v102_cls": (
    head_models.SequenceClassificationModel,
    functools.partial(heads.SequenceHead, num_labels=2),
    {"inputs": 64, "targets": 1},
    {"accuracy"},
  ),
}


@pytest.mark.parametrize("task", sorted(CASES))
def test_each_head_task_runs_end_to_end_through_the_evaluator(task, mock_tfds, random_params):
  model_class, head, lengths, expected = CASES[task]
  model = model_class(Transformer(CFG, head_factory=head))
  params = random_params(CFG, head=head)
  evaluation = evaluator.build_evaluation(model, task, lengths, batch_size=2)
  results = evaluation.evaluate(params)[task]
  assert expected <= set(results)
  assert all(0.0 <= results[name] <= 100.0 for name in expected)
  predictions = evaluation.predictions[task]
  assert len(predictions) == len(_examples(task, lengths))


def test_mrqa_examples_become_squad_fields_labelled_with_the_first_detected_answer(test_vocabulary):
  context = "The river Nile flows north."
  example = {
    "qid": "q1",
    "question": "Which river?",
    "context": context,
    "answers": tf.constant(["Nile", "the Nile"]),
    "detected_answers": {
      "text": tf.constant(["Nile"]),
      "char_spans": {
        "start": tf.ragged.constant([[context.index("Nile")]]),
        "end": tf.ragged.constant([[context.index("Nile") + 3]]),
      },
    },
  }
  none = {
    **example,
    "detected_answers": {**example["detected_answers"], "text": tf.constant([], tf.string)},
  }
  converted = list(spans.mrqa_as_squad(tf.data.Dataset.from_tensors(example)).as_numpy_iterator())
  assert len(converted) == 1
  assert converted[0]["answers"]["text"].tolist() == [b"Nile", b"Nile", b"the Nile"]
  assert converted[0]["answers"]["answer_start"].tolist() == [context.index("Nile")]
  assert not list(spans.mrqa_as_squad(tf.data.Dataset.from_tensors(none)).as_numpy_iterator())
  names = spans.register(test_vocabulary)
  assert {"mrqa_bio_asq_span", "mrqa_squad_span"} <= set(names)
  assert list(seqio.TaskRegistry.get("mrqa_bio_asq_span").splits) == ["validation"]
