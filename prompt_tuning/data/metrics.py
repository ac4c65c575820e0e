"""Evaluation metrics for the SuperGLUE / GLUE / QA tasks, on T5's 0-100 scale.

Every metric is a plain function `fn(targets, predictions) -> dict[str, float]` so that
seqio can call it directly; metric *factories* (`mean_multiclass_f1`, `mean_group_metric`,
...) return such functions. Postprocessors turn an unrecognised generation into -1; every
metric here treats -1 (or any value outside the label set) as a wrong answer rather than
failing, because a half-trained prompt routinely produces text that is no label at all.
"""

from __future__ import annotations

import collections
import re
import string
from typing import Any, Callable, Hashable, Mapping, Sequence

import numpy as np
import scipy.stats
import sklearn.metrics

MetricFn = Callable[[Sequence[Any], Sequence[Any]], dict[str, float]]

INVALID = -1  # What postprocessors return for a generation that is no known label.


def _check_lengths(targets: Sequence[Any], predictions: Sequence[Any]) -> None:
  if len(targets) != len(predictions):
    raise ValueError(
      f"Got {len(targets)} targets but {len(predictions)} predictions; "
      "pass one prediction per target."
    )
  if not targets:
    raise ValueError("Got no targets; a metric over zero examples is undefined.")


def accuracy(targets: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
  """Percentage of predictions equal to their target."""
  _check_lengths(targets, predictions)
  correct = sum(t == p for t, p in zip(targets, predictions))
  return {"accuracy": 100.0 * correct / len(targets)}


def _replace_invalid_binary(targets: np.ndarray, predictions: np.ndarray) -> np.ndarray:
  """Turns every prediction that is not 0/1 into the class opposite to its target."""
  predictions = predictions.copy()
  invalid = (predictions != 0) & (predictions != 1)
  predictions[invalid] = 1 - targets[invalid]
  return predictions


def f1_with_invalid(targets: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
  """Binary F1 of class 1, where a prediction other than 0/1 counts as wrong.

  Mapping an invalid prediction to the opposite class (rather than dropping it) keeps
  the number of scored examples fixed, so a model cannot gain by emitting garbage.
  """
  _check_lengths(targets, predictions)
  targets_arr = np.asarray(targets, dtype=np.int64)
  if not np.isin(targets_arr, (0, 1)).all():
    raise ValueError(f"f1_with_invalid needs 0/1 targets, got {sorted(set(targets_arr))}.")
  predictions_arr = _replace_invalid_binary(targets_arr, np.asarray(predictions, np.int64))
  f1 = sklearn.metrics.f1_score(targets_arr, predictions_arr, zero_division=0.0)
  return {"f1": 100.0 * float(f1)}


def mean_multiclass_f1(num_classes: int) -> MetricFn:
  """Macro-averaged F1 over classes 0..num_classes-1 (CommitmentBank uses 3).

  Predictions outside 0..num_classes-1 belong to no class, so they are a false negative
  for their target's class and a false positive for none: wrong, without inventing a
  class for them.
  """
  if num_classes < 2:
    raise ValueError(f"mean_multiclass_f1 needs at least 2 classes, got {num_classes}.")
  key = f"mean_{num_classes}class_f1"

  def metric(targets: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
    _check_lengths(targets, predictions)
    f1 = sklearn.metrics.f1_score(
      np.asarray(targets, np.int64),
      np.asarray(predictions, np.int64),
      labels=list(range(num_classes)),
      average="macro",
      zero_division=0.0,
    )
    return {key: 100.0 * float(f1)}

  metric.__name__ = key
  return metric


def matthews_corrcoef(targets: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
  """Matthews correlation (CoLA, SuperGLUE's AX-b), times 100."""
  _check_lengths(targets, predictions)
  mcc = sklearn.metrics.matthews_corrcoef(np.asarray(targets), np.asarray(predictions))
  return {"matthews_corrcoef": 100.0 * float(mcc)}


def pearson_corrcoef(targets: Sequence[float], predictions: Sequence[float]) -> dict[str, float]:
  """Pearson correlation (STS-B), times 100."""
  _check_lengths(targets, predictions)
  r = scipy.stats.pearsonr(np.asarray(targets, np.float64), np.asarray(predictions, np.float64))
  return {"pearson_corrcoef": 100.0 * float(r[0])}


def spearman_corrcoef(targets: Sequence[float], predictions: Sequence[float]) -> dict[str, float]:
  """Spearman rank correlation (STS-B), times 100."""
  _check_lengths(targets, predictions)
  r = scipy.stats.spearmanr(np.asarray(targets, np.float64), np.asarray(predictions, np.float64))
  return {"spearman_corrcoef": 100.0 * float(r[0])}


# ---------------------------------------------------------------------------------------
# SQuAD-style extractive QA (SQuAD, MRQA, ReCoRD).

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
  """The official SQuAD normalisation: lowercase, drop punctuation and articles, squash spaces."""
  text = text.lower()
  text = "".join(ch for ch in text if ch not in _PUNCTUATION)
  text = _ARTICLES.sub(" ", text)
  return " ".join(text.split())


def _token_f1(prediction: str, answer: str) -> float:
  """Bag-of-tokens F1 of two normalised strings; two empty strings agree perfectly."""
  pred_tokens = prediction.split()
  answer_tokens = answer.split()
  if not pred_tokens or not answer_tokens:
    return float(pred_tokens == answer_tokens)
  common = collections.Counter(pred_tokens) & collections.Counter(answer_tokens)
  overlap = sum(common.values())
  if overlap == 0:
    return 0.0
  precision = overlap / len(pred_tokens)
  recall = overlap / len(answer_tokens)
  return 2 * precision * recall / (precision + recall)


def squad(targets: Sequence[Sequence[str]], predictions: Sequence[str]) -> dict[str, float]:
  """Exact match and token F1, each the max over an example's reference answers."""
  _check_lengths(targets, predictions)
  em_total = 0.0
  f1_total = 0.0
  for i, (answers, prediction) in enumerate(zip(targets, predictions)):
    if isinstance(answers, (str, bytes)):
      raise ValueError(
        f"squad targets must be lists of answers; example {i} is a single "
        "string. Wrap it in a list."
      )
    if len(answers) == 0:
      raise ValueError(f"Example {i} has no reference answers; squad needs at least one.")
    pred = normalize_answer(_as_text(prediction))
    normalized = [normalize_answer(_as_text(a)) for a in answers]
    em_total += max(float(pred == a) for a in normalized)
    f1_total += max(_token_f1(pred, a) for a in normalized)
  n = len(targets)
  return {"em": 100.0 * em_total / n, "f1": 100.0 * f1_total / n}


def squad_v2(targets: Sequence[Sequence[str]], predictions: Sequence[str]) -> dict[str, float]:
  """SQuAD 2.0's official exact match and F1, overall and split into questions with an
  answer (`HasAns_*`) and without (`NoAns_*`, where only an empty prediction is right).

  As the official script: answers that normalise to nothing are dropped, a question left
  without answers has the one answer "", and each score is the max over the answers.
  Without no-answer probabilities the script's threshold changes nothing, so there is
  none here. Scores x 100; `*_total` are counts, present only for a non-empty split."""
  _check_lengths(targets, predictions)
  exact: dict[str, list[float]] = {"HasAns": [], "NoAns": []}
  f1: dict[str, list[float]] = {"HasAns": [], "NoAns": []}
  for i, (answers, prediction) in enumerate(zip(targets, predictions)):
    if isinstance(answers, (str, bytes)):
      raise ValueError(
        f"squad_v2 targets must be lists of answers (empty: no answer); example {i} is a "
        "single string. Wrap it in a list."
      )
    gold = [normalize_answer(_as_text(a)) for a in answers]
    gold = [a for a in gold if a] or [""]
    split = "HasAns" if gold != [""] else "NoAns"
    pred = normalize_answer(_as_text(prediction))
    exact[split].append(max(float(pred == a) for a in gold))
    f1[split].append(max(_token_f1(pred, a) for a in gold))
  every_exact = exact["HasAns"] + exact["NoAns"]
  every_f1 = f1["HasAns"] + f1["NoAns"]
  result = {
    "exact": 100.0 * sum(every_exact) / len(every_exact),
    "f1": 100.0 * sum(every_f1) / len(every_f1),
    "total": float(len(every_exact)),
  }
  for split in ("HasAns", "NoAns"):
    if exact[split]:
      result[f"{split}_exact"] = 100.0 * sum(exact[split]) / len(exact[split])
      result[f"{split}_f1"] = 100.0 * sum(f1[split]) / len(f1[split])
      result[f"{split}_total"] = float(len(exact[split]))
  return result


# ---------------------------------------------------------------------------------------
# Entity-level F1 of tag sequences (NER), as seqeval's default (conlleval) mode.


def _tag_parts(tag: str) -> tuple[str, str]:
  """`B-PER` -> ("B", "PER"); `O` -> ("O", "_"), seqeval's split of a prefix-style tag."""
  return tag[:1], tag[1:].split("-", maxsplit=1)[-1] or "_"


def _chunk_ends(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
  if prev_tag in ("E", "S"):
    return True
  if prev_tag == "B" and tag in ("B", "S", "O"):
    return True
  if prev_tag == "I" and tag in ("B", "S", "O"):
    return True
  return prev_tag not in ("O", ".") and prev_type != type_


def _chunk_starts(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
  if tag in ("B", "S"):
    return True
  if tag in ("E", "I") and prev_tag in ("E", "S", "O"):
    return True
  return tag not in ("O", ".") and prev_type != type_


def entities(sequences: Sequence[Sequence[str]]) -> set[tuple[str, int, int]]:
  """(type, first, last) of every chunk, positions in the sentences joined by an "O":
  conlleval's chunking, which seqeval's default mode reproduces. An I- after O or after
  another type starts a chunk; the type must stay the same for a chunk to continue."""
  tags = [str(tag) for sequence in sequences for tag in [*sequence, "O"]]
  found = set()
  prev_tag, prev_type, begin = "O", "", 0
  for i, chunk in enumerate([*tags, "O"]):
    tag, type_ = _tag_parts(chunk)
    if _chunk_ends(prev_tag, tag, prev_type, type_):
      found.add((prev_type, begin, i - 1))
    if _chunk_starts(prev_tag, tag, prev_type, type_):
      begin = i
    prev_tag, prev_type = tag, type_
  return found


def entity_f1(
  targets: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]]
) -> dict[str, float]:
  """Micro-averaged entity precision, recall and F1 x 100 over lists of tag sequences,
  with seqeval's default (conlleval) definition of an entity (`entities`): a predicted
  entity counts when its type and both boundaries equal a gold one. No predicted (or
  gold) entities gives 0 rather than a division by zero, as seqeval does."""
  _check_lengths(targets, predictions)
  for i, (target, prediction) in enumerate(zip(targets, predictions)):
    if isinstance(target, str) or isinstance(prediction, str):
      raise ValueError(f"example {i}: entity_f1 takes sequences of tags, not strings")
    if len(target) != len(prediction):
      raise ValueError(
        f"example {i} has {len(target)} gold tags but {len(prediction)} predicted; tag "
        "every word once (the first sub-token's label)"
      )
  gold, predicted = entities(targets), entities(predictions)
  correct = len(gold & predicted)
  precision = correct / len(predicted) if predicted else 0.0
  recall = correct / len(gold) if gold else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {"precision": 100.0 * precision, "recall": 100.0 * recall, "f1": 100.0 * f1}


def _as_text(value: str | bytes) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else value


ROUGE_KEYS = ("rouge1", "rouge2", "rougeLsum")
# The bootstrap's seed: the T5 library draws from numpy's global state unseeded, so its
# "mid" varies a little from run to run; a fixed seed makes a score reproducible.
ROUGE_BOOTSTRAP_SEED = 0


def rouge(
  targets: Sequence[str], predictions: Sequence[str], score_keys: Sequence[str] = ROUGE_KEYS
) -> dict[str, float]:
  """ROUGE F-measures x 100 as the T5 library computes them: `rouge_score` without
  stemming, " . " turned into a sentence break for rougeLsum, and the median ("mid") of
  its bootstrap over examples (1,000 resamples). The one difference: the bootstrap is
  seeded (`ROUGE_BOOTSTRAP_SEED`, numpy's global state restored after)."""
  from rouge_score import rouge_scorer, scoring

  _check_lengths(targets, predictions)
  scorer = rouge_scorer.RougeScorer(list(score_keys))
  aggregator = scoring.BootstrapAggregator()

  def sentences(text: str | bytes) -> str:
    return _as_text(text).replace(" . ", " .\n")

  for target, prediction in zip(targets, predictions):
    aggregator.add_scores(scorer.score(target=sentences(target), prediction=sentences(prediction)))
  state = np.random.get_state()
  np.random.seed(ROUGE_BOOTSTRAP_SEED)
  try:
    result = aggregator.aggregate()
  finally:
    np.random.set_state(state)
  return {key: 100.0 * result[key].mid.fmeasure for key in score_keys}


# ---------------------------------------------------------------------------------------
# Metrics over grouped examples (MultiRC, ReCoRD, AX-g). Targets and predictions are
# dicts: targets carry the group id (which the model's output cannot know) and the value.


def deduplicate_metric(
  metric_fn: MetricFn, group_key: str = "group", value_key: str = "value"
) -> MetricFn:
  """Scores only the first example of each group.

  ReCoRD repeats a query once per correct answer (one training target each); at
  evaluation every copy carries all answers, so scoring one copy per query counts
  each query once.
  """

  def metric(
    targets: Sequence[Mapping[str, Any]], predictions: Sequence[Mapping[str, Any]]
  ) -> dict[str, float]:
    _check_lengths(targets, predictions)
    seen: set[Hashable] = set()
    kept_targets, kept_predictions = [], []
    for target, prediction in zip(targets, predictions):
      group = target[group_key]
      if group in seen:
        continue
      seen.add(group)
      kept_targets.append(target[value_key])
      kept_predictions.append(prediction[value_key])
    return metric_fn(kept_targets, kept_predictions)

  return metric


def mean_group_metric(
  metric_fn: MetricFn, group_key: str = "group", value_key: str = "value"
) -> MetricFn:
  """Applies `metric_fn` to each group separately and averages the scores over groups.

  Only meaningful over whole groups: evaluating a subsample that cuts groups in half
  changes the score.
  """

  def metric(
    targets: Sequence[Mapping[str, Any]], predictions: Sequence[Mapping[str, Any]]
  ) -> dict[str, float]:
    _check_lengths(targets, predictions)
    groups: dict[Hashable, tuple[list[Any], list[Any]]] = collections.defaultdict(lambda: ([], []))
    for target, prediction in zip(targets, predictions):
      group_targets, group_predictions = groups[target[group_key]]
      group_targets.append(target[value_key])
      group_predictions.append(prediction[value_key])
    scores: dict[str, list[float]] = collections.defaultdict(list)
    for group_targets, group_predictions in groups.values():
      for name, value in metric_fn(group_targets, group_predictions).items():
        scores[name].append(value)
    return {name: float(np.mean(values)) for name, values in scores.items()}

  return metric


def all_match(targets: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
  """100 if every prediction equals its target, else 0 (MultiRC's per-question EM)."""
  _check_lengths(targets, predictions)
  return {"exact_match": 100.0 * float(all(t == p for t, p in zip(targets, predictions)))}


def multirc_f1_over_all_answers(
  targets: Sequence[Mapping[str, Any]], predictions: Sequence[Mapping[str, Any]]
) -> dict[str, float]:
  """MultiRC's F1a: binary F1 over every answer option, regardless of its question."""
  return f1_with_invalid([t["value"] for t in targets], [p["value"] for p in predictions])


multirc_exact_match = mean_group_metric(all_match)


def record(
  targets: Sequence[Mapping[str, Any]], predictions: Sequence[Mapping[str, Any]]
) -> dict[str, float]:
  """ReCoRD: SQuAD EM/F1 against all answers of each query, counting each query once.

  Targets are {"group": query id, "value": [answers]}, predictions {"value": text}.
  """
  return deduplicate_metric(squad)(targets, predictions)


def gender_parity(
  targets: Sequence[Mapping[str, Any]],
  predictions: Sequence[Mapping[str, Any]],
  group_key: str = "group",
  value_key: str = "value",
) -> dict[str, float]:
  """AX-g's gender parity: % of minimal pairs whose two predictions agree.

  In AX-g the examples with idx 2k and 2k+1 differ only in the gender of a pronoun, so
  targets carry `group = idx // 2` (the dataset's file order is not the idx order).
  Labels play no part: a model is parity-consistent if its answer does not depend on the
  gender. Groups that are not complete pairs (a subsampled evaluation) are left out;
  with none left it reports nothing, like `labeled_only`, rather than stop an evaluation.
  """
  _check_lengths(targets, predictions)
  pairs: dict[Hashable, list[Any]] = collections.defaultdict(list)
  for target, prediction in zip(targets, predictions):
    pairs[target[group_key]].append(prediction[value_key])
  complete = [values for values in pairs.values() if len(values) == 2]
  if not complete:
    return {}
  agree = sum(values[0] == values[1] for values in complete)
  return {"gender_parity": 100.0 * agree / len(complete)}


def labeled_only(
  metric_fn: MetricFn, unlabeled: Any = INVALID, value_key: str | None = None
) -> MetricFn:
  """Runs `metric_fn` on the examples whose target is not `unlabeled`.

  The public AX-b/AX-g test sets hide their labels (-1). Scoring them as if -1 were a
  label gives a meaningless 0, so such examples are dropped and, if none remain, the
  metric reports nothing rather than a wrong number.
  """

  def metric(targets: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
    _check_lengths(targets, predictions)
    kept = [
      (t, p)
      for t, p in zip(targets, predictions)
      if (t[value_key] if value_key else t) != unlabeled
    ]
    if not kept:
      return {}
    if value_key:
      return metric_fn([t[value_key] for t, _ in kept], [p[value_key] for _, p in kept])
    return metric_fn([t for t, _ in kept], [p for _, p in kept])

  return metric


def superglue_average(task_metrics: Mapping[str, Mapping[str, float]]) -> float:
  """The SuperGLUE score: average each task's metrics, then average over tasks.

  For the leaderboard's score pass the eight tasks (BoolQ, CB, COPA, MultiRC, ReCoRD,
  RTE, WiC, WSC); the diagnostics AX-b/AX-g are reported separately.
  E.g. CB contributes (F1 + accuracy) / 2 and MultiRC (F1a + EM) / 2.
  """
  if not task_metrics:
    raise ValueError("superglue_average got no tasks; pass {task: {metric: value}}.")
  task_scores = []
  for task, scores in task_metrics.items():
    if not scores:
      raise ValueError(f"Task '{task}' has no metrics; drop it or add its scores.")
    task_scores.append(float(np.mean([float(v) for v in scores.values()])))
  return float(np.mean(task_scores))


# ---------------------------------------------------------------------------------------
# Error-analysis variants: predictions are dicts holding the label plus the texts.

PREDICTION = "prediction"
PREDICTION_TEXT = "prediction_pretokenized"
INPUT_TEXT = "inputs_pretokenized"
TARGET_TEXT = "targets_pretokenized"


def metric_with_examples(metric_fn: MetricFn, prediction_key: str = PREDICTION) -> MetricFn:
  """Lets an ordinary metric score predictions that were wrapped with their texts."""

  def metric(targets: Sequence[Any], predictions: Sequence[Mapping[str, Any]]):
    return metric_fn(targets, [p[prediction_key] for p in predictions])

  metric.__name__ = getattr(metric_fn, "__name__", "metric") + "_with_examples"
  return metric


def text_examples(task_name: str, num_examples: int = 8) -> Callable[..., dict[str, Any]]:
  """A metric that reports the first `num_examples` (input, target, prediction) texts.

  seqio writes `seqio.metrics.Text` values to TensorBoard as text summaries, which is
  where one reads what a prompt actually makes the model generate.
  """
  if num_examples < 1:
    raise ValueError(f"text_examples needs num_examples >= 1, got {num_examples}.")

  def metric(targets: Sequence[Any], predictions: Sequence[Mapping[str, Any]]):
    del targets  # The texts are in the predictions.
    import seqio  # Imported lazily: the numeric metrics above need no TensorFlow.

    blocks = []
    for p in predictions[:num_examples]:
      blocks.append(
        "\n\n".join(
          [
            f"input: {_as_text(p.get(INPUT_TEXT) or b'')}",
            f"target: {_as_text(p.get(TARGET_TEXT) or b'')}",
            f"prediction: {_as_text(p.get(PREDICTION_TEXT) or b'')}",
          ]
        )
      )
    return {f"{task_name} examples": seqio.metrics.Text(textdata="\n\n---\n\n".join(blocks))}

  return metric
