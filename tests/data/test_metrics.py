"""Metrics against values worked out by hand (comments show the arithmetic)."""

from __future__ import annotations

import math

import numpy as np

import pytest

from prompt_tuning.data import metrics


def test_accuracy_counts_invalid_as_wrong():
  # 2 of 4 right; -1 (unrecognised) is simply not equal to its target.
  assert metrics.accuracy([0, 1, 1, 2], [0, -1, 1, 1]) == {"accuracy": 50.0}


def test_accuracy_rejects_mismatched_lengths_and_empty_input():
  with pytest.raises(ValueError, match="2 targets but 1 predictions"):
    metrics.accuracy([0, 1], [0])
  with pytest.raises(ValueError, match="no targets"):
    metrics.accuracy([], [])


def test_f1_with_invalid_flips_invalid_predictions():
  # -1 on a positive -> false negative; -1 on a negative -> false positive.
  # TP=1 (first), FN=1, FP=1 -> P = R = 1/2 -> F1 = 1/2.
  assert metrics.f1_with_invalid([1, 1, 0, 0], [1, -1, 0, -1]) == pytest.approx({"f1": 50.0})
  # All correct.
  assert metrics.f1_with_invalid([1, 0, 1], [1, 0, 1]) == pytest.approx({"f1": 100.0})
  # Inputs are not modified in place.
  predictions = [-1, 5]
  metrics.f1_with_invalid([1, 0], predictions)
  assert predictions == [-1, 5]


def test_f1_with_invalid_rejects_non_binary_targets():
  with pytest.raises(ValueError, match="0/1 targets"):
    metrics.f1_with_invalid([0, 2], [0, 1])


def test_mean_multiclass_f1():
  metric = metrics.mean_multiclass_f1(3)
  # class 0: F1 1; class 1: F1 1; class 2: TP 1, FN 1 (the -1), FP 0 -> P 1, R 1/2, F1 2/3.
  # mean = (1 + 1 + 2/3) / 3 = 8/9.
  result = metric([0, 1, 2, 2], [0, 1, 2, -1])
  assert list(result) == ["mean_3class_f1"]
  assert result["mean_3class_f1"] == pytest.approx(800 / 9)
  with pytest.raises(ValueError, match="at least 2 classes"):
    metrics.mean_multiclass_f1(1)


def test_matthews_corrcoef():
  # TP 1, TN 2, FP 0, FN 1: (1*2 - 0*1) / sqrt(1 * 2 * 2 * 3) = 2 / sqrt(12).
  result = metrics.matthews_corrcoef([0, 1, 1, 0], [0, 1, 0, 0])
  assert result["matthews_corrcoef"] == pytest.approx(100 * 2 / math.sqrt(12))


def test_pearson_and_spearman():
  # x - mean = (-1, 0, 1); y - mean = (-4/3, -1/3, 5/3); r = 3 / (sqrt(2) sqrt(42)/3).
  pearson = metrics.pearson_corrcoef([1, 2, 3], [1, 2, 4])["pearson_corrcoef"]
  assert pearson == pytest.approx(100 * 9 / math.sqrt(84))
  # Monotone -> 1.
  assert metrics.spearman_corrcoef([1, 2, 3], [1, 2, 4])["spearman_corrcoef"] == pytest.approx(100)
  # Rank differences (-2, 1, 1): 1 - 6 * 6 / (3 * 8) = -1/2.
  assert metrics.spearman_corrcoef([1, 2, 3], [3, 1, 2])["spearman_corrcoef"] == pytest.approx(-50)


def test_normalize_answer():
  assert metrics.normalize_answer("  The  Cat's hat, an apple!") == "cats hat apple"
  assert metrics.normalize_answer("Theatre a") == "theatre"


def test_squad_max_over_answers_and_empty_predictions():
  targets = [
    ["The cat", "a dog"],  # "cat!" -> "cat" matches the first answer: EM 1, F1 1.
    ["x"],  # "x y": EM 0, F1 = 2 * (1/2 * 1) / (1/2 + 1) = 2/3.
    ["the big red ball"],  # "a red ball": P 1, R 2/3 -> F1 4/5.
    ["x"],  # "": empty prediction, non-empty answer -> 0, 0.
    ["", "y"],  # "": an empty answer accepts the empty prediction -> 1, 1.
  ]
  predictions = ["cat!", "x y", "a red ball", "", ""]
  result = metrics.squad(targets, predictions)
  assert result["em"] == pytest.approx(100 * 2 / 5)
  assert result["f1"] == pytest.approx(100 * (1 + 2 / 3 + 4 / 5 + 0 + 1) / 5)


def test_squad_accepts_bytes_and_rejects_bad_targets():
  assert metrics.squad([[b"Paris"]], [b"paris"]) == {"em": 100.0, "f1": 100.0}
  with pytest.raises(ValueError, match="no reference answers"):
    metrics.squad([[]], ["x"])
  with pytest.raises(ValueError, match="lists of answers"):
    metrics.squad(["Paris"], ["Paris"])


def _multirc_example():
  # Question (0, 0) has two answers, both right; question (0, 1) has one wrong (-1).
  targets = [
    {"group": (0, 0), "value": 1},
    {"group": (0, 0), "value": 0},
    {"group": (0, 1), "value": 1},
    {"group": (0, 1), "value": 1},
  ]
  predictions = [{"value": 1}, {"value": 0}, {"value": 1}, {"value": -1}]
  return targets, predictions


def test_multirc_f1_over_all_answers():
  targets, predictions = _multirc_example()
  # -1 on a positive -> predicted 0: TP 2, FN 1, FP 0 -> P 1, R 2/3 -> F1 4/5.
  assert metrics.multirc_f1_over_all_answers(targets, predictions) == pytest.approx({"f1": 80.0})


def test_multirc_exact_match_groups_by_question():
  targets, predictions = _multirc_example()
  # Question (0, 0): all answers right -> 100; question (0, 1): one wrong -> 0.
  assert metrics.multirc_exact_match(targets, predictions) == {"exact_match": 50.0}
  grouped = metrics.mean_group_metric(metrics.accuracy)(targets, predictions)
  assert grouped == {"accuracy": 75.0}  # (100 + 50) / 2


def test_all_match():
  assert metrics.all_match([1, 0], [1, 0]) == {"exact_match": 100.0}
  assert metrics.all_match([1, 0], [1, 1]) == {"exact_match": 0.0}


def test_record_scores_each_query_once_against_all_answers():
  targets = [
    # Query 1 was expanded into one example per answer; both copies list all answers.
    {"group": (0, 1), "value": ["Obama", "Barack Obama"]},
    {"group": (0, 1), "value": ["Obama", "Barack Obama"]},
    {"group": (0, 2), "value": ["Paris"]},
  ]
  # Only the first copy of query 1 counts: "barack obama" matches the second answer.
  # Query 2: "paris france" vs "paris": EM 0, F1 2/3.
  predictions = [{"value": "barack obama"}, {"value": "wrong"}, {"value": "Paris, France"}]
  result = metrics.record(targets, predictions)
  assert result["em"] == pytest.approx(50.0)
  assert result["f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)


def test_deduplicate_metric_keeps_first_of_each_group():
  targets = [{"group": "a", "value": 1}, {"group": "a", "value": 0}, {"group": "b", "value": 0}]
  predictions = [{"value": 1}, {"value": 1}, {"value": 1}]
  assert metrics.deduplicate_metric(metrics.accuracy)(targets, predictions) == {"accuracy": 50.0}


def test_gender_parity_counts_agreeing_pairs_and_ignores_labels():
  targets = [
    {"group": 0, "value": 0},
    {"group": 0, "value": 0},  # agree (both 1, both wrong)
    {"group": 1, "value": 0},
    {"group": 1, "value": 0},  # disagree
    {"group": 2, "value": -1},  # incomplete pair: left out
  ]
  predictions = [{"value": 1}, {"value": 1}, {"value": 0}, {"value": 1}, {"value": 0}]
  assert metrics.gender_parity(targets, predictions) == {"gender_parity": 50.0}
  assert metrics.gender_parity([{"group": 0, "value": 0}], [{"value": 0}]) == {}


def test_labeled_only_drops_hidden_labels():
  metric = metrics.labeled_only(metrics.accuracy)
  assert metric([1, -1, 0, -1], [1, 0, 1, 1]) == {"accuracy": 50.0}
  assert metric([-1, -1], [0, 1]) == {}
  on_values = metrics.labeled_only(metrics.accuracy, value_key="value")
  assert on_values(
    [{"value": 1, "group": 0}, {"value": -1, "group": 0}], [{"value": 1}, {"value": 0}]
  ) == {"accuracy": 100.0}


def test_superglue_average_averages_within_then_across_tasks():
  task_metrics = {
    "boolq": {"accuracy": 80.0},
    "cb": {"mean_3class_f1": 70.0, "accuracy": 90.0},  # 80
    "multirc": {"f1": 60.0, "exact_match": 20.0},  # 40
  }
  # (80 + 80 + 40) / 3, not the mean of the five numbers (64).
  assert metrics.superglue_average(task_metrics) == pytest.approx(200 / 3)
  with pytest.raises(ValueError, match="no tasks"):
    metrics.superglue_average({})
  with pytest.raises(ValueError, match="'rte' has no metrics"):
    metrics.superglue_average({"rte": {}})


def test_metric_with_examples_and_text_examples():
  predictions = [
    {
      "prediction": 1,
      "prediction_pretokenized": "True",
      "inputs_pretokenized": b"boolq passage: p question: q",
      "targets_pretokenized": b"True",
    },
    {
      "prediction": -1,
      "prediction_pretokenized": "maybe",
      "inputs_pretokenized": b"boolq passage: p2 question: q2",
      "targets_pretokenized": b"False",
    },
  ]
  assert metrics.metric_with_examples(metrics.accuracy)([1, 0], predictions) == {"accuracy": 50.0}
  text = metrics.text_examples("boolq", num_examples=1)([1, 0], predictions)
  summary = text["boolq examples"].textdata
  assert "input: boolq passage: p question: q" in summary
  assert "prediction: True" in summary
  assert "maybe" not in summary  # only the first example was asked for


def test_rouge_is_t5s_bootstrap_mid_reproducible_and_leaves_numpys_state_alone():
  from rouge_score import rouge_scorer

  targets = ["the cat sat on the mat . it purred", "a dog ran", "birds sing at dawn"]
  predictions = ["the cat sat . it slept", "a dog ran fast", "dawn"]
  state = np.random.get_state()[1].copy()
  first = metrics.rouge(targets, predictions)
  assert first == metrics.rouge(targets, predictions)
  np.testing.assert_array_equal(np.random.get_state()[1], state)
  scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeLsum"])
  per_example = [
    scorer.score(t.replace(" . ", " .\n"), p.replace(" . ", " .\n"))
    for t, p in zip(targets, predictions)
  ]
  for key in ("rouge1", "rouge2", "rougeLsum"):
    mean = 100 * np.mean([s[key].fmeasure for s in per_example])
    assert abs(first[key] - mean) < 6  # The bootstrap's median sits near the mean.
  # rougeLsum splits sentences at " . ": one summary-level LCS per sentence.
  assert metrics.rouge(["a b . c d"], ["c d . a b"])["rougeLsum"] == pytest.approx(100.0)
  assert metrics.rouge(["a b . c d"], ["c d . a b"])["rouge2"] < 100.0


# ---------------------------------------------------------------------------------------
# Entity F1 (seqeval's default, conlleval chunking) and SQuAD 2.0.


def test_entity_f1_needs_type_and_both_boundaries():
  gold = [["B-PER", "I-PER", "O", "B-LOC"]]
  predicted = [["B-PER", "I-PER", "O", "B-ORG"]]
  assert metrics.entity_f1(gold, predicted) == pytest.approx(
    {"precision": 50.0, "recall": 50.0, "f1": 50.0}
  )
  # A boundary off by one is a miss.
  shorter = metrics.entity_f1(gold, [["B-PER", "O", "O", "B-LOC"]])
  assert shorter == pytest.approx({"precision": 50.0, "recall": 50.0, "f1": 50.0})


def test_entity_chunks_follow_conlleval():
  # An I- after O starts a chunk; one after another type starts a new one.
  assert metrics.entities([["O", "I-PER", "I-PER"]]) == {("PER", 1, 2)}
  assert metrics.entities([["B-PER", "I-LOC", "I-LOC"]]) == {("PER", 0, 0), ("LOC", 1, 2)}
  # B- always starts a chunk; sentences never run into each other.
  assert metrics.entities([["B-PER", "B-PER"]]) == {("PER", 0, 0), ("PER", 1, 1)}
  assert metrics.entities([["B-PER"], ["I-PER"]]) == {("PER", 0, 0), ("PER", 2, 2)}
  # IOBES is read too, as seqeval's default mode does.
  assert metrics.entities([["S-LOC", "B-ORG", "E-ORG"]]) == {("LOC", 0, 0), ("ORG", 1, 2)}


def test_entity_f1_without_entities_is_zero_and_bad_input_is_refused():
  assert metrics.entity_f1([["O", "O"]], [["O", "O"]]) == {
    "precision": 0.0,
    "recall": 0.0,
    "f1": 0.0,
  }
  assert metrics.entity_f1([["B-PER"]], [["O"]])["recall"] == 0.0
  with pytest.raises(ValueError, match="tag every word once"):
    metrics.entity_f1([["B-PER", "O"]], [["B-PER"]])
  with pytest.raises(ValueError, match="not strings"):
    metrics.entity_f1(["B-PER"], ["B-PER"])


def test_squad_v2_scores_answers_and_no_answers_apart():
  targets = [["Paris", "paris, France"], [], ["the cat"], ["", "  "]]
  predictions = ["Paris", "", "a dog", "something"]
  scores = metrics.squad_v2(targets, predictions)
  assert scores["HasAns_exact"] == pytest.approx(50.0) and scores["HasAns_total"] == 2
  assert scores["NoAns_exact"] == pytest.approx(50.0) and scores["NoAns_total"] == 2
  assert scores["exact"] == pytest.approx(50.0) and scores["total"] == 4
  # F1 is partial credit on answers only: "paris" against "paris france" is 2/3.
  assert metrics.squad_v2([["paris, France"]], ["Paris"])["f1"] == pytest.approx(200 / 3)
  only_answers = metrics.squad_v2([["x"]], ["x"])
  assert "NoAns_exact" not in only_answers
