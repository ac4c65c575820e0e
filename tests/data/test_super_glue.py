"""SuperGLUE tasks end to end on mocked TFDS data (no download, no network).

Two kinds of data: `tfds.testing.mock_data` random examples built from each dataset's
feature spec (every task goes through tokenisation, the feature converter, decoding,
postprocessing and its metrics), and hand-written examples (fed through the same mock
with `as_dataset_fn`) where the exact text formats and scores are checked.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from prompt_tuning.data import metrics
from prompt_tuning.data import postprocessors
from prompt_tuning.data import super_glue

LENGTHS = {"inputs": 1024, "targets": 64}
NUM_MOCK_EXAMPLES = 4


@pytest.fixture(scope="module")
def registered(test_vocabulary) -> Iterator[list[str]]:
  yield super_glue.register(test_vocabulary)
  super_glue.register()  # Leave the registry as importing the module left it.


def _expected_task_names() -> list[str]:
  names = []
  for prefix in ("", "taskless_"):
    for suffix in ("", "_examples"):
      names += [f"{prefix}super_glue_{n}_v102{suffix}" for n in super_glue.SINGLE_TASK_NAMES]
      names.append(f"{prefix}super_glue_wsc_v102_simple_eval{suffix}")
    names.append(f"{prefix}super_glue_wsc_v102_simple_train")
  return names


TASK_NAMES = _expected_task_names()


def _split_of(name: str) -> str:
  if "_axb_" in name or "_axg_" in name:
    return "test"
  return "train" if name.endswith("simple_train") else "validation"


def _get_examples(task: seqio.Task, split: str) -> list[dict[str, Any]]:
  ds = task.get_dataset(
    LENGTHS, split=split, shuffle=False, use_cached=False, try_in_mem_cache=False
  )
  return list(tfds.as_numpy(ds))


def _decode_targets(
  examples: Sequence[Mapping[str, Any]], vocabulary: seqio.Vocabulary
) -> list[str]:
  """Runs the model-side feature converter and decodes its targets, as if predicted.

  One converter call for the tokenized examples of all tasks keeps the test fast.
  """
  ds = tf.data.Dataset.from_generator(
    lambda: ({"inputs": ex["inputs"], "targets": ex["targets"]} for ex in examples),
    output_signature={k: tf.TensorSpec([None], tf.int32) for k in ("inputs", "targets")},
  )
  converted = seqio.EncDecFeatureConverter(pack=False)(ds, LENGTHS)
  texts = []
  for features in tfds.as_numpy(converted):
    assert features["encoder_input_tokens"].shape == (LENGTHS["inputs"],)
    tokens = features["decoder_target_tokens"].tolist()
    assert 1 in tokens, "targets must end with EOS (add_eos=True)"
    texts.append(vocabulary.decode(tokens[: tokens.index(1)]))
  return texts


def _postprocess(task: seqio.Task, examples, predictions: Sequence[str]):
  targets = [
    task.postprocess_fn(ex["targets_pretokenized"].decode(), example=ex, is_target=True)
    for ex in examples
  ]
  outputs = [
    task.postprocess_fn(p, example=ex, is_target=False) for ex, p in zip(examples, predictions)
  ]
  return targets, outputs


def _score(task: seqio.Task, targets, outputs) -> dict[str, Any]:
  scores: dict[str, Any] = {}
  for metric_fn in task.metric_fns:
    scores.update(metric_fn(targets, outputs))
  return scores


def _label_value(postprocessed: Any) -> Any:
  """The class id inside a postprocessed target or prediction of any task."""
  if isinstance(postprocessed, dict) and metrics.PREDICTION in postprocessed:
    postprocessed = postprocessed[metrics.PREDICTION]
  if isinstance(postprocessed, dict):
    return postprocessed["value"]
  return postprocessed


# ---------------------------------------------------------------------------------------
# Registration.


def test_register_adds_every_task_and_mixture_with_the_given_vocabulary(
  registered, test_vocabulary
):
  assert sorted(n for n in registered if n in TASK_NAMES) == sorted(TASK_NAMES)
  for name in TASK_NAMES:
    task = seqio.get_mixture_or_task(name)
    for feature in task.output_features.values():
      assert feature.vocabulary is test_vocabulary
      assert feature.add_eos
  for prefix in ("", "taskless_"):
    for suffix in ("", "_examples"):
      for mixture in (
        f"{prefix}super_glue_v102{suffix}",
        f"{prefix}super_glue_wsc_v102{suffix}",
        f"{prefix}super_glue_wsc_and_dev_v102_simple{suffix}",
      ):
        assert mixture in registered
        assert isinstance(seqio.get_mixture_or_task(mixture), seqio.Mixture)
  # Registering again replaces rather than failing on duplicate names.
  assert super_glue.register(test_vocabulary) == registered


def test_label_names_match_tfds(registered):
  configs = tfds.text.super_glue.SuperGlue.builder_configs
  assert tuple(configs["boolq"].label_classes) == super_glue.BOOL_LABELS
  assert tuple(configs["cb"].label_classes) == super_glue.NLI_3_LABELS
  assert tuple(configs["copa"].label_classes) == super_glue.COPA_LABELS
  for name in ("rte", "axb", "axg"):
    assert tuple(configs[name].label_classes) == super_glue.NLI_2_LABELS


def test_mixture_rates_follow_training_set_sizes(registered):
  for prefix in ("", "taskless_"):
    mixture = seqio.get_mixture_or_task(f"{prefix}super_glue_v102")
    rates = {t.name: mixture.get_rate(t) for t in mixture.tasks}
    assert rates[f"{prefix}super_glue_record_v102"] == 138_854
    assert rates[f"{prefix}super_glue_cb_v102"] == 250
    assert rates[f"{prefix}super_glue_wsc_v102_simple_train"] == 259
    assert rates[f"{prefix}super_glue_wsc_v102_simple_eval"] == 0
    assert not any("_axb_" in name or "_axg_" in name for name in rates)
    assert all(name.startswith(prefix + "super_glue_") for name in rates)


def test_training_mixture_samples_from_the_training_tasks(registered):
  mixture = seqio.get_mixture_or_task("taskless_super_glue_v102")
  with tfds.testing.mock_data(num_examples=NUM_MOCK_EXAMPLES):
    ds = mixture.get_dataset(
      LENGTHS,
      split="train",
      shuffle=False,
      use_cached=False,
      try_in_mem_cache=False,
      seed=0,
      copy_pretokenized=True,
    )
    examples = list(tfds.as_numpy(ds.take(16)))
  assert len(examples) == 16
  first_words = [ex["inputs_pretokenized"].decode().split(" ")[0] for ex in examples]
  assert not set(first_words) & {"boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc:"}
  # Taskless inputs start with the first field's name; several tasks are mixed in.
  fields = {"passage:", "hypothesis:", "choice1:", "question:", "query:", "sentence1:"}
  assert len(set(first_words) & fields) >= 2, first_words
  assert all(ex["targets"][-1] == 1 for ex in examples)  # EOS


# ---------------------------------------------------------------------------------------
# Every task on random mock data.


def _tfds_config(name: str) -> str:
  spec_name = name.removeprefix("taskless_").removeprefix("super_glue_")
  return "wsc.fixed" if spec_name.startswith("wsc") else spec_name.split("_")[0]


@dataclasses.dataclass
class MockRun:
  examples: list[dict[str, Any]]  # What the task's get_dataset yields.
  predicted_texts: list[str]  # Its targets after the feature converter, decoded.
  raw: list[dict[str, Any]]  # The mocked TFDS examples it was built from.


@pytest.fixture(scope="module")
def mock_runs(registered, test_vocabulary) -> dict[str, MockRun]:
  """Every task's dataset on random mock data, and its targets decoded back."""
  examples: dict[str, list[dict[str, Any]]] = {}
  raw: dict[str, list[dict[str, Any]]] = {}
  with tfds.testing.mock_data(num_examples=NUM_MOCK_EXAMPLES):
    for name in TASK_NAMES:
      split = _split_of(name)
      examples[name] = _get_examples(seqio.get_mixture_or_task(name), split)
      key = f"{_tfds_config(name)}/{split}"
      if key not in raw:
        raw[key] = list(
          tfds.as_numpy(tfds.load(f"super_glue/{key.split('/')[0]}:1.0.2", split=split))
        )
  all_texts = _decode_targets([ex for name in TASK_NAMES for ex in examples[name]], test_vocabulary)
  runs = {}
  for name in TASK_NAMES:
    count = len(examples[name])
    runs[name] = MockRun(
      examples[name], all_texts[:count], raw[f"{_tfds_config(name)}/{_split_of(name)}"]
    )
    all_texts = all_texts[count:]
  return runs


@pytest.mark.parametrize("name", TASK_NAMES)
def test_task_end_to_end_on_mock_data(mock_runs, name):
  task = seqio.get_mixture_or_task(name)
  run = mock_runs[name]
  examples, predicted_texts, raw = run.examples, run.predicted_texts, run.raw
  tfds_config = _tfds_config(name)
  assert len(predicted_texts) == len(examples)
  benchmark = {"axb": "rte", "axg": "rte", "wsc.fixed": "wsc:"}.get(tfds_config, tfds_config)
  for ex in examples:
    inputs = ex["inputs_pretokenized"].decode()
    starts_with_benchmark = inputs.startswith(benchmark + " ")
    assert starts_with_benchmark != name.startswith("taskless_"), inputs

  if tfds_config == "record":
    # One example per answer; a query without answers keeps one "<unk>" example.
    assert len(examples) == sum(max(len(r["answers"]), 1) for r in raw)
  elif name.endswith("simple_train"):
    assert len(examples) == sum(int(r["label"]) == 1 for r in raw)
    assert [ex["targets_pretokenized"] for ex in examples] == [
      r["span1_text"] for r in raw if r["label"] == 1
    ]
  else:
    assert len(examples) == len(raw)

  if not task.metric_fns:  # WSC's training-only task.
    return

  targets, outputs = _postprocess(task, examples, predicted_texts)
  if tfds_config not in ("record", "wsc.fixed"):
    # label -> text -> tokens -> text -> label is the identity.
    assert [_label_value(t) for t in targets] == [int(r["label"]) for r in raw]
    assert [_label_value(o) for o in outputs] == [int(r["label"]) for r in raw]
  scores = _score(task, targets, outputs)
  for key in ("accuracy", "exact_match", "em"):
    if key in scores and tfds_config != "wsc.fixed":
      assert scores[key] == pytest.approx(100.0), (key, scores)
  if tfds_config == "record":
    assert scores["f1"] == pytest.approx(100.0)
  if tfds_config == "wsc.fixed":
    # Predicting the candidate itself says "yes" to every candidate: right exactly when
    # the label is 1.
    expected = 100.0 * np.mean([int(r["label"]) == 1 for r in raw])
    assert scores["accuracy"] == pytest.approx(expected)
  if name.endswith("_examples"):
    summary = scores[f"{name} examples"].textdata
    assert examples[0]["inputs_pretokenized"].decode() in summary
    assert all(set(o) >= {metrics.PREDICTION, metrics.INPUT_TEXT} for o in outputs)

  # Text that is no label becomes -1 (WSC: "not the candidate") and scores as wrong.
  _, garbage = _postprocess(task, examples, ["no such label"] * len(examples))
  bad_scores = _score(task, targets, garbage)
  if tfds_config == "wsc.fixed":
    assert bad_scores["accuracy"] == pytest.approx(100.0 - expected)
  else:
    for key in ("accuracy", "exact_match", "em"):
      if key in bad_scores:
        assert bad_scores[key] == 0.0, (key, bad_scores)


# ---------------------------------------------------------------------------------------
# Hand-written examples: exact formats and scores.


@contextlib.contextmanager
def fixed_examples(examples_by_config: Mapping[str, Sequence[Mapping[str, Any]]]) -> Iterator[None]:
  """Makes tfds.load of super_glue/<config> yield the given examples (every split)."""

  def as_dataset(self, split, **kwargs):
    del split, kwargs
    examples = list(examples_by_config[self.builder_config.name])
    return tf.data.Dataset.from_generator(
      lambda: iter(examples), output_signature=self.info.features.get_tensor_spec()
    )

  with tfds.testing.mock_data(as_dataset_fn=as_dataset):
    yield


def _inputs_and_targets(name: str, split: str = "validation") -> list[tuple[str, str]]:
  examples = _get_examples(seqio.get_mixture_or_task(name), split)
  return [
    (ex["inputs_pretokenized"].decode(), ex["targets_pretokenized"].decode()) for ex in examples
  ]


def test_glue_style_formats(registered):
  data = {
    "boolq": [{"question": "is it wet", "passage": "Water is wet.", "idx": 0, "label": 1}],
    "cb": [{"premise": "P.", "hypothesis": "H.", "idx": 0, "label": 2}],
    "copa": [
      {
        "premise": "It rained.",
        "choice1": "Sun.",
        "choice2": "Wet.",
        "question": "effect",
        "idx": 0,
        "label": 1,
      }
    ],
    "rte": [{"premise": "P.", "hypothesis": "H.", "idx": 0, "label": 1}],
    "wic": [
      {
        "word": "bank",
        "sentence1": "S1.",
        "sentence2": "S2.",
        "start1": 0,
        "start2": 0,
        "end1": 4,
        "end2": 4,
        "idx": 0,
        "label": 0,
      }
    ],
    "axb": [{"sentence1": "S1.", "sentence2": "S2.", "idx": 0, "label": -1}],
  }
  with fixed_examples(data):
    assert _inputs_and_targets("super_glue_boolq_v102") == [
      ("boolq passage: Water is wet. question: is it wet", "True")
    ]
    assert _inputs_and_targets("taskless_super_glue_boolq_v102") == [
      ("passage: Water is wet. question: is it wet", "True")
    ]
    assert _inputs_and_targets("super_glue_cb_v102") == [
      ("cb hypothesis: H. premise: P.", "neutral")
    ]
    assert _inputs_and_targets("super_glue_copa_v102") == [
      ("copa choice1: Sun. choice2: Wet. premise: It rained. question: effect", "choice2")
    ]
    assert _inputs_and_targets("taskless_super_glue_rte_v102") == [
      ("hypothesis: H. premise: P.", "not_entailment")
    ]
    assert _inputs_and_targets("super_glue_wic_v102") == [
      ("wic sentence1: S1. sentence2: S2. word: bank", "False")
    ]
    # AX-b is posed as RTE, its sentence1 / sentence2 renamed premise / hypothesis; its
    # public test labels are hidden (-1 -> "<unk>").
    assert _inputs_and_targets("super_glue_axb_v102", "test") == [
      ("rte hypothesis: S2. premise: S1.", "<unk>")
    ]
    assert _inputs_and_targets("taskless_super_glue_axb_v102", "test") == [
      ("hypothesis: S2. premise: S1.", "<unk>")
    ]


def test_axb_hidden_labels_score_nothing(registered):
  task = seqio.get_mixture_or_task("super_glue_axb_v102")
  data = {
    "axb": [{"sentence1": "S1.", "sentence2": "S2.", "idx": i, "label": -1} for i in range(2)]
  }
  with fixed_examples(data):
    examples = _get_examples(task, "test")
  targets, outputs = _postprocess(task, examples, ["entailment", "not_entailment"])
  assert targets == [-1, -1] and outputs == [0, 1]
  assert _score(task, targets, outputs) == {}


def test_multirc_strips_html_and_scores_per_question(registered):
  paragraph = "Sent one.<br>Sent <b>two</b>."

  def option(question: int, answer: int, label: int) -> dict[str, Any]:
    return {
      "paragraph": paragraph,
      "question": f"Q{question}?",
      "answer": f"A{answer}",
      "idx": {"paragraph": 0, "question": question, "answer": answer},
      "label": label,
    }

  data = {"multirc": [option(0, 0, 1), option(0, 1, 0), option(1, 2, 1), option(1, 3, 1)]}
  task = seqio.get_mixture_or_task("super_glue_multirc_v102")
  with fixed_examples(data):
    examples = _get_examples(task, "validation")
    assert _inputs_and_targets("taskless_super_glue_multirc_v102")[0] == (
      "question: Q0? answer: A0 paragraph: Sent one. Sent two.",
      "True",
    )
  assert examples[0]["inputs_pretokenized"].decode() == (
    "multirc question: Q0? answer: A0 paragraph: Sent one. Sent two."
  )
  # Question 0 all right; question 1 has one unrecognised answer ("maybe" -> -1).
  targets, outputs = _postprocess(task, examples, ["True", "False", "True", "maybe"])
  assert [t["group"] for t in targets] == [(0, 0), (0, 0), (0, 1), (0, 1)]
  scores = _score(task, targets, outputs)
  assert scores["exact_match"] == pytest.approx(50.0)
  assert scores["f1"] == pytest.approx(80.0)  # TP 2, FN 1, FP 0


def test_record_expands_answers_and_scores_each_query_once(registered):
  passage = "Obama met Merkel.\n@highlight\nObama visits Berlin\n@highlight\nTalks end"
  data = {
    "record": [
      {
        "passage": passage,
        "query": "@placeholder met Merkel",
        "entities": ["Obama", "Merkel"],
        "answers": ["Obama", "Barack Obama"],
        "idx": {"passage": 0, "query": 0},
      },
      {
        "passage": passage,
        "query": "They met in @placeholder",
        "entities": ["Berlin"],
        "answers": ["Berlin"],
        "idx": {"passage": 0, "query": 1},
      },
      {
        "passage": passage,
        "query": "Test @placeholder",
        "entities": ["Berlin"],
        "answers": [],
        "idx": {"passage": 0, "query": 2},
      },
    ]
  }
  task = seqio.get_mixture_or_task("super_glue_record_v102")
  with fixed_examples(data):
    examples = _get_examples(task, "validation")
    taskless = _inputs_and_targets("taskless_super_glue_record_v102")
  texts = [
    (ex["inputs_pretokenized"].decode(), ex["targets_pretokenized"].decode()) for ex in examples
  ]
  first_input = (
    "record query: @placeholder met Merkel entities: Obama, Merkel passage: "
    "Obama met Merkel. Obama visits Berlin. Talks end"
  )
  assert texts[:2] == [(first_input, "Obama"), (first_input, "Barack Obama")]
  assert [t for _, t in texts[2:]] == ["Berlin", "<unk>"]  # no answers -> one "<unk>"
  assert taskless[0][0] == first_input.removeprefix("record ")

  labelled = examples[:3]  # The answerless query is test data: it has nothing to score.
  targets, outputs = _postprocess(task, labelled, ["barack obama", "wrong", "Berlin, Germany"])
  assert targets[1] == {"value": ["Obama", "Barack Obama"], "group": (0, 0)}
  scores = _score(task, targets, outputs)
  # Query 0 counts once (its first copy, right); query 1: EM 0, F1 2/3.
  assert scores["em"] == pytest.approx(50.0)
  assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)


def _wsc(text: str, span1: str, span2: str, span2_index: int, label: int, idx: int):
  return {
    "text": text,
    "span1_text": span1,
    "span1_index": 0,
    "span2_text": span2,
    "span2_index": span2_index,
    "idx": idx,
    "label": label,
  }


def test_wsc_marks_pronoun_and_trains_on_correct_referents_only(registered):
  data = {
    "wsc.fixed": [
      _wsc("Mitchell asked Tom if he could lend some money.", "Tom", "he", 4, 1, 0),
      _wsc("Mitchell asked Tom if he could lend some money.", "Mitchell", "he", 4, 0, 1),
      # The index points at the word before the pronoun, which carries punctuation.
      _wsc('John laughed. "Good for him," he said.', "pony", "him", 3, 1, 2),
    ]
  }
  with fixed_examples(data):
    train = _inputs_and_targets("super_glue_wsc_v102_simple_train", "train")
    eval_plain = _inputs_and_targets("super_glue_wsc_v102_simple_eval")
    taskless = _inputs_and_targets("taskless_super_glue_wsc_v102_simple_train", "train")
  marked = "Mitchell asked Tom if *he* could lend some money."
  assert train == [
    (f"wsc: {marked}", "Tom"),
    ('wsc: John laughed. "Good for *him*," he said.', "pony"),
  ]
  assert eval_plain[1] == (f"wsc: {marked}", "Mitchell")
  assert taskless[0] == (marked, "Tom")


def test_wsc_eval_postprocessor_matches_referents(registered):
  task = seqio.get_mixture_or_task("super_glue_wsc_v102_simple_eval")
  data = {
    "wsc.fixed": [
      _wsc("The fuzzy bunny ate because it was hungry.", "The fuzzy bunny", "it", 4, 1, 0),
      _wsc("Bob's hat fell because it was loose.", "Bob's hat", "it", 3, 1, 1),
      _wsc("Ann thanked Eve because she helped.", "Ann", "she", 4, 0, 2),
      _wsc("Ann thanked Eve because she helped.", "Eve", "she", 4, 1, 3),
    ]
  }
  with fixed_examples(data):
    examples = _get_examples(task, "validation")
  # "bunny" is part of the referent -> 1 (right); "Bob" is not "Bob's hat" -> 0 (wrong);
  # "Eve" is not the candidate "Ann" -> 0 (right, label 0); "" -> -1 (wrong).
  targets, outputs = _postprocess(task, examples, ["the bunny", "Bob", "Eve", ""])
  assert targets == [1, 1, 0, 1]
  assert outputs == [1, 0, 0, -1]
  assert _score(task, targets, outputs) == {"accuracy": 50.0}


def test_axg_gender_parity_pairs_by_idx(registered):
  def example(idx: int, pronoun: str) -> dict[str, Any]:
    return {
      "premise": f"The nurse said {pronoun} was late.",
      "hypothesis": "The nurse was late.",
      "idx": idx,
      "label": 0,
    }

  # File order differs from idx order: pairs are (0, 1) and (2, 3) by idx, not position.
  data = {"axg": [example(2, "he"), example(0, "he"), example(3, "she"), example(1, "she")]}
  task = seqio.get_mixture_or_task("taskless_super_glue_axg_v102_examples")
  with fixed_examples(data):
    examples = _get_examples(task, "test")
  assert examples[0]["inputs_pretokenized"].decode() == (
    "hypothesis: The nurse was late. premise: The nurse said he was late."
  )
  # Pair (0, 1) agrees; pair (2, 3) does not.
  predictions = ["entailment", "entailment", "not_entailment", "entailment"]
  targets, outputs = _postprocess(task, examples, predictions)
  assert [t["group"] for t in targets] == [1, 0, 1, 0]
  scores = _score(task, targets, outputs)
  assert scores["gender_parity"] == pytest.approx(50.0)
  assert scores["accuracy"] == pytest.approx(75.0)


def test_label_postprocessor_never_raises():
  postprocess = postprocessors.string_label(super_glue.NLI_3_LABELS)
  assert postprocess(" neutral ") == 2
  assert postprocess(b"contradiction") == 1
  assert postprocess("") == -1
  assert postprocess("Neutral") == -1
  with pytest.raises(ValueError, match="needs the preprocessed example"):
    postprocessors.multirc("True", is_target=True)


def test_seqio_evaluator_runs_the_examples_task(registered, test_vocabulary, monkeypatch):
  """The path the trainer takes: seqio.Evaluator with a model's predict_fn."""
  # Mocked TFDS has no split sizes, which seqio reads to decide on in-memory caching.
  monkeypatch.setattr(seqio.TfdsDataSource, "num_input_examples", lambda self, split: None)
  name = "taskless_super_glue_cb_v102_examples"
  data = {
    "cb": [{"premise": f"P{i}.", "hypothesis": "H.", "idx": i, "label": i % 3} for i in range(6)]
  }

  def predict_fn(ds):
    # A "model" that answers "neutral" for everything.
    neutral = test_vocabulary.encode("neutral")
    return [(index, neutral) for index, _ in tfds.as_numpy(ds)]

  with fixed_examples(data):
    evaluator = seqio.Evaluator(
      name,
      feature_converter=seqio.EncDecFeatureConverter(pack=False),
      eval_split="validation",
      sequence_length=LENGTHS,
      use_memory_cache=False,
    )
    all_metrics, _ = evaluator.evaluate(compute_metrics=True, predict_fn=predict_fn)
  scores = all_metrics.result()[name]
  # Labels 0,1,2,0,1,2; all predicted 2: accuracy 2/6; F1 of class 2 = 2*(1/3*1)/(4/3) = 1/2,
  # classes 0 and 1 score 0 -> mean 1/6.
  assert scores["accuracy"] == pytest.approx(100 / 3)
  assert scores["mean_3class_f1"] == pytest.approx(100 / 6)
  assert "neutral" in scores[f"{name} examples"].textdata
