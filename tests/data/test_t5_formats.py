"""Golden strings: each registered task's text stage against T5's exact output.

Every expected string below is written by hand from what the original T5 library's
preprocessors produce for the example (`glue`, `stsb`, `record`, `wsc_simple`, `squad`,
and the AX-b rekey of `super_glue_axb_v102`), not computed by this project's code, so a
format cannot drift without a failing test. The raw examples carry every field of the
TFDS feature spec (including those T5 ignores, such as WiC's word offsets), and each is
run through the registered task's own preprocessors up to tokenisation.
"""

from __future__ import annotations

import string
from typing import Any, Mapping

import pytest
import seqio
import tensorflow as tf

from prompt_tuning.data import glue
from prompt_tuning.data import metrics
from prompt_tuning.data import mrqa
from prompt_tuning.data import preprocessors
from prompt_tuning.data import super_glue  # noqa: F401  (registers the SuperGLUE tasks)


def _text_stage(task_name: str, *raw: Mapping[str, Any]) -> list[dict[str, Any]]:
  """The task's preprocessors up to tokenisation, on the given raw TFDS examples."""
  task = seqio.get_mixture_or_task(task_name)
  ds = tf.data.Dataset.from_tensors(dict(raw[0]))
  for example in raw[1:]:
    ds = ds.concatenate(tf.data.Dataset.from_tensors(dict(example)))
  for step in task.preprocessors:
    if step is seqio.preprocessors.tokenize:
      break
    ds = step(ds)
  return [_as_python(ex) for ex in ds.as_numpy_iterator()]


def _as_python(value: Any) -> Any:
  if isinstance(value, dict):
    return {k: _as_python(v) for k, v in value.items()}
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if hasattr(value, "tolist"):
    return _as_python(value.tolist())
  if isinstance(value, list):
    return [_as_python(v) for v in value]
  return value


def _pairs(task_name: str, *raw: Mapping[str, Any]) -> list[tuple[str, str]]:
  return [(ex["inputs"], ex["targets"]) for ex in _text_stage(task_name, *raw)]


def _label(value: int) -> tf.Tensor:
  return tf.constant(value, tf.int64)


def _idx(value: int) -> tf.Tensor:
  return tf.constant(value, tf.int32)


# ---------------------------------------------------------------------------------------
# SuperGLUE.


def test_boolq_reads_passage_then_question_and_names_the_label():
  raw = {
    "question": "is france the same timezone as the uk",
    "passage": "At the Liberation of France in the summer of 1944, France kept GMT+2.",
    "idx": _idx(3),
    "label": _label(0),
  }
  assert _pairs("super_glue_boolq_v102", raw) == [
    (
      "boolq passage: At the Liberation of France in the summer of 1944, France kept GMT+2. "
      "question: is france the same timezone as the uk",
      "False",
    )
  ]
  assert _pairs("taskless_super_glue_boolq_v102", raw)[0][0].startswith("passage: At the")


def test_cb_reads_hypothesis_then_premise_with_three_labels():
  raw = {
    "premise": "It was a complex language. Not written down but handed down.",
    "hypothesis": "the language was peeled down",
    "idx": _idx(0),
    "label": _label(1),
  }
  assert _pairs("super_glue_cb_v102", raw) == [
    (
      "cb hypothesis: the language was peeled down premise: It was a complex language. "
      "Not written down but handed down.",
      "contradiction",
    )
  ]


def test_copa_reads_choices_premise_and_question_in_sorted_order():
  raw = {
    "premise": "My body cast a shadow over the grass.",
    "choice1": "The sun was rising.",
    "choice2": "The grass was cut.",
    "question": "cause",
    "idx": _idx(0),
    "label": _label(0),
  }
  assert _pairs("super_glue_copa_v102", raw) == [
    (
      "copa choice1: The sun was rising. choice2: The grass was cut. premise: My body cast "
      "a shadow over the grass. question: cause",
      "choice1",
    )
  ]


def test_multirc_reads_question_answer_paragraph_without_html():
  raw = {
    "paragraph": "<b>Sent 1: </b>The man arrived.<br><b>Sent 2: </b>He left.",
    "question": "Who left?",
    "answer": "The man",
    "idx": {"paragraph": _idx(0), "question": _idx(1), "answer": _idx(2)},
    "label": _label(1),
  }
  (example,) = _text_stage("super_glue_multirc_v102", raw)
  # T5 joins first, then turns <br> into a space and drops <b> and </b>.
  assert example["inputs"] == (
    "multirc question: Who left? answer: The man paragraph: Sent 1: The man arrived. "
    "Sent 2: He left."
  )
  assert example["targets"] == "True"
  assert (example["idx/paragraph"], example["idx/question"], example["idx/answer"]) == (0, 1, 2)


def test_record_writes_one_example_per_answer_and_sentences_for_highlights():
  raw = {
    "passage": "Obama met Merkel.\n@highlight\nObama visits Berlin\n@highlight\nTalks end",
    "query": "@placeholder met Merkel in Berlin",
    "entities": tf.constant(["Obama", "Merkel", "Berlin"]),
    "answers": tf.constant(["Obama", "Barack Obama"]),
    "idx": {"passage": _idx(4), "query": _idx(5)},
  }
  inputs = (
    "record query: @placeholder met Merkel in Berlin entities: Obama, Merkel, Berlin "
    "passage: Obama met Merkel. Obama visits Berlin. Talks end"
  )
  examples = _text_stage("super_glue_record_v102", raw)
  assert [(ex["inputs"], ex["targets"]) for ex in examples] == [
    (inputs, "Obama"),
    (inputs, "Barack Obama"),
  ]
  assert all(ex["answers"] == ["Obama", "Barack Obama"] for ex in examples)
  unanswered = dict(raw, answers=tf.constant([], tf.string))
  assert _pairs("super_glue_record_v102", unanswered) == [(inputs, "<unk>")]


def test_rte_reads_hypothesis_then_premise():
  raw = {
    "premise": "No Weapons of Mass Destruction Found in Iraq Yet.",
    "hypothesis": "Weapons of Mass Destruction Found in Iraq.",
    "idx": _idx(0),
    "label": _label(1),
  }
  assert _pairs("super_glue_rte_v102", raw) == [
    (
      "rte hypothesis: Weapons of Mass Destruction Found in Iraq. premise: No Weapons of "
      "Mass Destruction Found in Iraq Yet.",
      "not_entailment",
    )
  ]
  assert _pairs("taskless_super_glue_rte_v102", raw)[0][0].startswith("hypothesis: Weapons")


def test_wic_reads_sentences_then_word_and_ignores_the_offsets():
  raw = {
    "word": "place",
    "sentence1": "Do you want to come over to my place later?",
    "sentence2": "A political system with no place for the less prominent groups.",
    "start1": tf.constant(31, tf.int32),
    "start2": tf.constant(27, tf.int32),
    "end1": tf.constant(36, tf.int32),
    "end2": tf.constant(32, tf.int32),
    "idx": _idx(0),
    "label": _label(0),
  }
  assert _pairs("super_glue_wic_v102", raw) == [
    (
      "wic sentence1: Do you want to come over to my place later? sentence2: A political "
      "system with no place for the less prominent groups. word: place",
      "False",
    )
  ]


def test_axb_is_posed_exactly_as_rte():
  raw = {
    "sentence1": "The cat sat on the mat.",
    "sentence2": "The cat did not sit on the mat.",
    "idx": _idx(0),
    "label": _label(1),
  }
  assert _pairs("super_glue_axb_v102", raw) == [
    (
      "rte hypothesis: The cat did not sit on the mat. premise: The cat sat on the mat.",
      "not_entailment",
    )
  ]
  hidden = dict(raw, label=_label(-1))
  assert _pairs("taskless_super_glue_axb_v102", hidden) == [
    ("hypothesis: The cat did not sit on the mat. premise: The cat sat on the mat.", "<unk>")
  ]
  # The same pair as an RTE example reads character for character the same.
  as_rte = {
    "premise": raw["sentence1"],
    "hypothesis": raw["sentence2"],
    "idx": _idx(0),
    "label": _label(1),
  }
  assert _pairs("super_glue_rte_v102", as_rte) == _pairs("super_glue_axb_v102", raw)


def test_axg_is_posed_as_rte():
  raw = {
    "premise": "The nurse said she was late.",
    "hypothesis": "The nurse was late.",
    "idx": _idx(7),
    "label": _label(0),
  }
  (example,) = _text_stage("super_glue_axg_v102", raw)
  assert (example["inputs"], example["targets"], example["idx"]) == (
    "rte hypothesis: The nurse was late. premise: The nurse said she was late.",
    "entailment",
    7,
  )


def _wsc(text: str, span1: str, span2: str, span2_index: int, label: int) -> dict[str, Any]:
  return {
    "text": text,
    "span1_text": span1,
    "span1_index": tf.constant(0, tf.int32),
    "span2_text": span2,
    "span2_index": tf.constant(span2_index, tf.int32),
    "idx": _idx(0),
    "label": _label(label),
  }


def test_wsc_simple_stars_the_pronoun_and_targets_the_candidate():
  plain = _wsc("Mitchell asked Tom if he could lend some money.", "Tom", "he", 4, 1)
  assert _pairs("super_glue_wsc_v102_simple_eval", plain) == [
    ("wsc: Mitchell asked Tom if *he* could lend some money.", "Tom")
  ]
  wrong = dict(plain, span1_text="Mitchell", label=_label(0))
  assert _pairs("super_glue_wsc_v102_simple_train", plain, wrong) == [
    ("wsc: Mitchell asked Tom if *he* could lend some money.", "Tom")
  ]


def test_wsc_simple_reproduces_t5s_two_hard_coded_texts():
  pony = _wsc(
    "The boy continued to whip the pony , and eventually the pony threw him over. John "
    'laughed out quite loud. "Good for him," he said. ',
    "John",
    "him",
    21,
    1,
  )
  pebble = _wsc(
    "When they had eventually calmed down a bit , and had gotten home, Mr. Farley put the "
    "magic pebble in an iron safe . Some day they might want to use it , but really for "
    "now, what more could they wish for?",
    "the magic pebble",
    "it",
    28,
    1,
  )
  assert _pairs("super_glue_wsc_v102_simple_eval", pony, pebble) == [
    (
      "wsc: The boy continued to whip the pony , and eventually the pony threw him over. "
      'John laughed out quite loud. "Good for *him* ," he said.',
      "John",
    ),
    (
      "wsc: When they had eventually calmed down a bit , and had gotten home, Mr. Farley "
      "put the magic pebble in an iron safe . Some day they might want to use *it* , but "
      "really for now, what more could they wish for?",
      "the magic pebble",
    ),
  ]
  assert set(preprocessors.WSC_SPECIAL_TEXTS) == {pony["text"], pebble["text"]}


# ---------------------------------------------------------------------------------------
# SQuAD / MRQA.


def _squad(question: str, context: str, answers: list[str]) -> dict[str, Any]:
  return {
    "id": "q0",
    "title": "t",
    "question": question,
    "context": context,
    "answers": {"text": tf.constant(answers), "answer_start": tf.zeros([len(answers)], tf.int32)},
  }


def test_squad_pads_ascii_punctuation_in_question_context_and_answers():
  raw = _squad(
    "Which NFL team represented the AFC at Super Bowl 50?",
    "The American Football Conference (AFC) champion Denver Broncos won.",
    ["Denver Broncos", "the Broncos."],
  )
  (example,) = _text_stage(mrqa.SQUAD_TASK, raw)
  # T5 pads every mark and collapses spaces but strips nothing: a final mark leaves a
  # trailing space, in the context and in an answer alike.
  assert example["inputs"] == (
    "question: Which NFL team represented the AFC at Super Bowl 50 ? context: The American "
    "Football Conference ( AFC ) champion Denver Broncos won . "
  )
  assert example["targets"] == "Denver Broncos"
  assert example["answers"] == ["Denver Broncos", "the Broncos . "]
  assert example["question"] == "Which NFL team represented the AFC at Super Bowl 50 ? "


def test_squad_leaves_non_ascii_punctuation_alone():
  raw = _squad(
    "What did “Smith_Jones” pay—€5 or £3°…?", "The 1990–91 season (its 25th) ended.", ["1990–91"]
  )
  (example,) = _text_stage(mrqa.SQUAD_TASK, raw)
  assert example["inputs"] == (
    "question: What did “Smith _ Jones” pay—€5 or £3°… ? context: The 1990–91 season "
    "( its 25th ) ended . "
  )
  assert example["targets"] == "1990–91"


def test_squad_scores_an_en_dash_answer_as_t5_does():
  raw = _squad("Which season?", "The 1990–91 season ended.", ["1990–91"])
  (example,) = _text_stage(mrqa.SQUAD_TASK, raw)
  task = seqio.get_mixture_or_task(mrqa.SQUAD_TASK)
  target = task.postprocess_fn(example["targets"], example=example, is_target=True)
  prediction = task.postprocess_fn("1990–91", example=example, is_target=False)
  assert metrics.squad([target], [prediction]) == {"em": 100.0, "f1": 100.0}


def test_mrqa_uses_squads_format():
  raw = {
    "qid": "m0",
    "subset": "x",
    "question": "Who won?",
    "context": "Ann (the chef) won.",
    "answers": tf.constant(["Ann", "Ann (the chef)"]),
  }
  (example,) = _text_stage(mrqa.mrqa_task_name("drop"), raw)
  assert example["inputs"] == "question: Who won ? context: Ann ( the chef ) won . "
  assert (example["targets"], example["answers"]) == ("Ann", ["Ann", "Ann ( the chef ) "])


def test_padding_pads_exactly_pythons_string_punctuation():
  characters = [chr(c) for c in range(0x20, 0x2100)] + ["€", "\u3002", "\uff01"]
  padded = mrqa.pad_punctuation(tf.constant([f"a{c}b" for c in characters])).numpy()
  marks = {c for c, text in zip(characters, padded) if text.decode() == f"a {c} b"}
  assert marks == set(string.punctuation)


# ---------------------------------------------------------------------------------------
# GLUE.


def _glue_raw(label: Any, **texts: str) -> dict[str, Any]:
  raw: dict[str, Any] = dict(texts)
  raw["label"] = tf.constant(label, tf.float32 if isinstance(label, float) else tf.int64)
  raw["idx"] = _idx(0)
  return raw


GLUE_GOLDEN = [
  (
    "cola",
    _glue_raw(1, sentence="The book was read."),
    "cola sentence: The book was read.",
    "acceptable",
  ),
  ("sst2", _glue_raw(0, sentence="a dull film"), "sst2 sentence: a dull film", "negative"),
  (
    "mrpc",
    _glue_raw(1, sentence1="He ran.", sentence2="He jogged."),
    "mrpc sentence1: He ran. sentence2: He jogged.",
    "equivalent",
  ),
  (
    "qqp",
    _glue_raw(0, question1="Why?", question2="How?"),
    "qqp question1: Why? question2: How?",
    "not_duplicate",
  ),
  (
    "stsb",
    _glue_raw(3.84, sentence1="A dog.", sentence2="A cat."),
    "stsb sentence1: A dog. sentence2: A cat.",
    "3.8",
  ),
  (
    "stsb",
    _glue_raw(4.91, sentence1="A.", sentence2="B."),
    "stsb sentence1: A. sentence2: B.",
    "5.0",
  ),
  (
    "mnli",
    _glue_raw(1, premise="It rained.", hypothesis="It was wet."),
    "mnli hypothesis: It was wet. premise: It rained.",
    "neutral",
  ),
  (
    "mnli_matched",
    _glue_raw(2, premise="P.", hypothesis="H."),
    "mnli hypothesis: H. premise: P.",
    "contradiction",
  ),
  (
    "mnli_mismatched",
    _glue_raw(0, premise="P.", hypothesis="H."),
    "mnli hypothesis: H. premise: P.",
    "entailment",
  ),
  (
    "qnli",
    _glue_raw(1, question="Who?", sentence="Nobody."),
    "qnli question: Who? sentence: Nobody.",
    "not_entailment",
  ),
  (
    "rte",
    _glue_raw(0, sentence1="S1.", sentence2="S2."),
    "rte sentence1: S1. sentence2: S2.",
    "entailment",
  ),
  (
    "wnli",
    _glue_raw(1, sentence1="S1.", sentence2="S2."),
    "wnli sentence1: S1. sentence2: S2.",
    "entailment",
  ),
  ("ax", _glue_raw(-1, premise="P.", hypothesis="H."), "mnli hypothesis: H. premise: P.", "<unk>"),
]


@pytest.mark.parametrize(
  "config, raw, inputs, targets", GLUE_GOLDEN, ids=[f"{g[0]}-{g[3]}" for g in GLUE_GOLDEN]
)
def test_glue_task_matches_t5s_format(config, raw, inputs, targets):
  assert _pairs(f"glue_{config}_v002", raw) == [(inputs, targets)]
  taskless_inputs = inputs.split(" ", 1)[1]
  assert _pairs(f"taskless_glue_{config}_v002", raw) == [(taskless_inputs, targets)]


def test_every_glue_config_has_a_golden_example():
  assert {g[0] for g in GLUE_GOLDEN} == set(glue.CONFIGS)
