"""Prefix-Tuning's generation tasks over mocked TFDS data: the paper's linearisations,
every reference of one table scored together, WebNLG's seen / unseen split, XSum's
format, and a tiny model decoding through the evaluator into the metrics."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from prompt_tuning import models
from prompt_tuning.data import generation
from prompt_tuning.evaluation import evaluator
from prompt_tuning.prompts import Prompt
from prompt_tuning.t5 import T5Config, Transformer

LENGTHS = {"inputs": 64, "targets": 24}


def _table(headers, contents, rows=None):
  rows = list(range(len(headers))) if rows is None else rows
  return {"column_header": headers, "row_number": np.asarray(rows, np.int16), "content": contents}


def _triples(triples, first_row=0, gap=1):
  headers, contents, rows = [], [], []
  for i, triple in enumerate(triples):
    headers += ["subject", "predicate", "object"]
    contents += list(triple)
    rows += [first_row + gap * i] * 3
  return _table(headers, contents, rows)


E2E_TABLE = _table(["name", "eatType", "food"], ["The Eagle", "coffee shop", "French"], [1, 1, 1])
E2E_OTHER = _table(["name", "area"], ["Zizzi", "riverside"], [1, 1])
RAW = {
  "e2e_cleaned": [
    {"input_text": {"table": E2E_TABLE}, "target_text": "The Eagle is a French coffee shop."},
    {"input_text": {"table": E2E_TABLE}, "target_text": "There is a coffee shop called The Eagle."},
    {"input_text": {"table": E2E_OTHER}, "target_text": "Zizzi is by the riverside."},
  ],
  "web_nlg": [
    {
      "input_text": {
        # WebNLG skips empty triples, so row numbers can have gaps.
        "table": _triples(
          [("Aarhus_Airport", "cityServed", "Aarhus"), ("Aarhus", "country", "Denmark")], gap=2
        ),
        "context": "Airport",
      },
      "target_text": "Aarhus Airport serves Aarhus in Denmark.",
    },
    {
      "input_text": {
        "table": _triples([("John_Doe", "occupation", "Painter")]),
        "context": "Artist",
      },
      "target_text": "John Doe is a painter.",
    },
  ],
  "dart": [
    {
      "input_text": {"table": _triples([("Mars", "orbits", "Sun")], first_row=0)},
      "target_text": "Mars orbits the Sun.",
    },
    {
      "input_text": {"table": _triples([("Mars", "orbits", "Sun")], first_row=0)},
      "target_text": "The Sun is orbited by Mars.",
    },
  ],
  "xsum": [
    {"document": "A long article about the weather.", "summary": "It rained."},
    {"document": "Another article about sport.", "summary": "A team won."},
  ],
}


def _as_dataset(self, split, **kwargs):
  del split, kwargs
  examples = RAW[self.name]
  return tf.data.Dataset.from_generator(
    lambda: iter(examples), output_signature=self.info.features.get_tensor_spec()
  )


@pytest.fixture(scope="module", autouse=True)
def registered(test_vocabulary):
  names = generation.register(test_vocabulary)
  yield names
  generation.register()


@pytest.fixture()
def mock_tfds(monkeypatch):
  # Mocked TFDS has no split sizes, which seqio reads to decide on in-memory caching.
  monkeypatch.setattr(seqio.TfdsDataSource, "num_input_examples", lambda self, split: None)
  with tfds.testing.mock_data(as_dataset_fn=_as_dataset):
    yield


def _examples(name: str, split: str = "validation") -> list[dict]:
  task = seqio.TaskRegistry.get(name)
  ds = task.get_dataset(LENGTHS, split=split, shuffle=False, num_epochs=1, use_cached=False)
  return list(ds.as_numpy_iterator())


def _texts(example: dict) -> tuple[str, str]:
  return example["inputs_pretokenized"].decode(), example["targets_pretokenized"].decode()


def test_the_four_tasks_are_registered_under_the_issue_names(registered):
  assert registered == ["e2e_nlg", "web_nlg_en", "dart", "xsum"]
  splits = seqio.TaskRegistry.get("web_nlg_en").splits
  assert set(splits) == {"train", "validation", "test_all", "test_unseen"}


def test_e2e_meaning_representations_are_linearised_as_the_paper_does(mock_tfds):
  texts = [_texts(ex) for ex in _examples("e2e_nlg")]
  assert texts[0] == (
    "name : The Eagle | eatType : coffee shop | food : French",
    "The Eagle is a French coffee shop.",
  )
  assert texts[2][0] == "name : Zizzi | area : riverside"


def test_triples_are_linearised_per_row_even_with_gaps_in_row_numbers(mock_tfds):
  web = _examples("web_nlg_en")
  assert _texts(web[0])[0] == "Aarhus_Airport : cityServed : Aarhus | Aarhus : country : Denmark"
  assert web[0]["category"] == b"Airport"
  assert _texts(_examples("dart")[0]) == ("Mars : orbits : Sun", "Mars orbits the Sun.")


def test_xsum_asks_to_summarize_the_document(mock_tfds):
  assert _texts(_examples("xsum")[0]) == (
    "summarize: A long article about the weather.",
    "It rained.",
  )


def _postprocessed(name: str, predictions: list[str]) -> tuple[list, list]:
  task = seqio.TaskRegistry.get(name)
  examples = _examples(name)
  targets = [
    task.postprocess_fn(ex["targets_pretokenized"], example=ex, is_target=True) for ex in examples
  ]
  outputs = [
    task.postprocess_fn(p, example=ex, is_target=False) for p, ex in zip(predictions, examples)
  ]
  return targets, outputs


def test_each_table_is_scored_once_against_all_its_references(mock_tfds):
  # Predicting the second reference for the first table: a perfect match with one of its
  # references, so BLEU is 100 (it would not be against the first reference alone).
  targets, outputs = _postprocessed(
    "e2e_nlg",
    [
      "There is a coffee shop called The Eagle.",
      "There is a coffee shop called The Eagle.",
      "Zizzi is by the riverside.",
    ],
  )
  grouped = generation.gm.group_references(targets, outputs)
  assert [len(refs) for _, refs, _ in grouped] == [2, 1]
  scores = generation.E2E_METRIC(targets, outputs)
  assert set(scores) == {"bleu", "nist", "rouge_l", "cider"}
  assert scores["bleu"] == pytest.approx(100.0)
  assert scores["rouge_l"] == pytest.approx(100.0)


def test_web_nlg_reports_seen_and_unseen_categories_apart(mock_tfds):
  targets, _ = _postprocessed("web_nlg_en", ["x", "x"])
  outputs = ["Aarhus Airport serves Aarhus in Denmark.", "Something else entirely here."]
  scores = generation.WEB_NLG_METRIC(targets, outputs)
  assert scores["bleu_seen"] == pytest.approx(100.0)
  assert scores["bleu_unseen"] < 10.0
  assert scores["ter_seen"] == pytest.approx(0.0)
  assert scores["bleu_seen"] > scores["bleu"] > scores["bleu_unseen"]
  # The validation split has seen categories only: no empty "unseen" score.
  only_seen = generation.WEB_NLG_METRIC(targets[:1], outputs[:1])
  assert "bleu_unseen" not in only_seen and only_seen["bleu"] == only_seen["bleu_seen"]


def test_dart_groups_its_two_references(mock_tfds):
  targets, outputs = _postprocessed("dart", ["The Sun is orbited by Mars."] * 2)
  scores = generation.DART_METRIC(targets, outputs)
  assert scores["bleu"] == pytest.approx(100.0) and scores["ter"] == pytest.approx(0.0)


def test_xsum_scores_stemmed_rouge_against_its_one_summary(mock_tfds):
  task = seqio.TaskRegistry.get("xsum")
  scores = task.metric_fns[0](["It rained.", "A team won."], ["It rained.", "The teams won."])
  # The second: "team"/"teams" stem alike, so unigrams {the, team, won} vs {a, team, won}.
  assert scores["rouge1"] == pytest.approx(100.0 * (1 + 2 / 3) / 2)
  assert set(scores) == {"rouge1", "rouge2", "rougeL"}


EXPECTED_KEYS = {
  "e2e_nlg": {"bleu", "nist", "rouge_l", "cider"},
  "web_nlg_en": {"bleu", "chrf", "ter", "bleu_seen", "bleu_unseen"},
  "dart": {"bleu", "chrf", "ter"},
  "xsum": {"rouge1", "rouge2", "rougeL"},
}


@pytest.fixture(scope="module")
def tiny_model(test_vocabulary):
  config = T5Config.from_size("tiny", vocab_size=test_vocabulary.vocab_size)
  model = models.EncoderDecoderModel(
    Transformer(config, input_prompt=functools.partial(Prompt, length=2))
  )
  tokens = np.ones((1, 4), np.int32)
  params = model.module.init(jax.random.PRNGKey(0), tokens, tokens, tokens)["params"]
  return model, jax.tree.map(np.asarray, params)


@pytest.mark.parametrize("name", sorted(EXPECTED_KEYS))
def test_a_tiny_model_decodes_every_task_through_the_evaluator(mock_tfds, tiny_model, name):
  """preprocess -> features -> decode -> postprocess -> (multi-reference) metric."""
  model, params = tiny_model
  evaluation = evaluator.Evaluation(name, LENGTHS, 2, model.predict_batch, model.score_batch)
  results = evaluation.evaluate(params)[name]
  assert EXPECTED_KEYS[name] <= set(results)
  assert all(np.isfinite(results[k]) for k in EXPECTED_KEYS[name])
  assert len(evaluation.predictions[name]) == len(RAW[_TFDS_NAMES[name]])


_TFDS_NAMES = {"e2e_nlg": "e2e_cleaned", "web_nlg_en": "web_nlg", "dart": "dart", "xsum": "xsum"}
