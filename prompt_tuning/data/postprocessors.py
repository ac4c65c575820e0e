"""Postprocessors: generated text (or a target) -> the value a metric compares.

seqio calls `postprocess_fn(text, example=..., is_target=...)` once for each target
and once for each prediction. Predictions are free text from a model that may not have
learned the label set yet, so anything unrecognised becomes `metrics.INVALID` (-1),
which every metric counts as wrong; a postprocessor never raises on a prediction.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from prompt_tuning.data import metrics

Postprocessor = Callable[..., Any]


def as_text(value: Any) -> str:
  """bytes / numpy bytes / str -> str (seqio hands over raw example fields as bytes)."""
  if isinstance(value, bytes):
    return value.decode("utf-8")
  return str(value)


def _require_example(example: Mapping[str, Any] | None, what: str) -> Mapping[str, Any]:
  if example is None:
    raise ValueError(
      f"The {what} postprocessor needs the preprocessed example to read "
      "its ids; call it as seqio does, with example=..."
    )
  return example


def label_to_class_id(text: Any, label_classes: Sequence[str]) -> int:
  """Index of `text` in `label_classes` (surrounding space ignored), else -1."""
  text = as_text(text).strip()
  return list(label_classes).index(text) if text in label_classes else metrics.INVALID


def string_label(label_classes: Sequence[str]) -> Postprocessor:
  """Postprocessor for single-label classification (BoolQ, CB, COPA, RTE, WiC, AX-b)."""
  label_classes = tuple(label_classes)

  def postprocess(
    text: Any, example: Mapping[str, Any] | None = None, is_target: bool = False
  ) -> int:
    del example, is_target  # Targets and predictions are both label names.
    return label_to_class_id(text, label_classes)

  return postprocess


def multirc(
  text: Any, example: Mapping[str, Any] | None = None, is_target: bool = False
) -> dict[str, Any]:
  """{"value": 0/1/-1}, plus the question id on targets for the per-question exact match.

  The group is (paragraph, question) so it is unique whether or not question ids restart
  per paragraph.
  """
  result: dict[str, Any] = {"value": label_to_class_id(text, ("False", "True"))}
  if is_target:
    example = _require_example(example, "multirc")
    result["group"] = (int(example["idx/paragraph"]), int(example["idx/question"]))
  return result


def record(
  text: Any, example: Mapping[str, Any] | None = None, is_target: bool = False
) -> dict[str, Any]:
  """Prediction -> {"value": text}; target -> every answer of its query plus the query id."""
  if not is_target:
    return {"value": as_text(text)}
  example = _require_example(example, "record")
  return {
    "value": [as_text(a) for a in example["answers"]],
    "group": (int(example["idx/passage"]), int(example["idx/query"])),
  }


def axg(label_classes: Sequence[str]) -> Postprocessor:
  """AX-g labels, with the minimal-pair id `idx // 2` on targets for gender parity."""
  label_classes = tuple(label_classes)

  def postprocess(
    text: Any, example: Mapping[str, Any] | None = None, is_target: bool = False
  ) -> dict[str, Any]:
    result: dict[str, Any] = {"value": label_to_class_id(text, label_classes)}
    if is_target:
      example = _require_example(example, "axg")
      result["group"] = int(example["idx"]) // 2
    return result

  return postprocess


_DETERMINERS = frozenset(
  {
    "a",
    "an",
    "few",
    "her",
    "his",
    "each",
    "every",
    "many",
    "much",
    "my",
    "our",
    "some",
    "that",
    "the",
    "their",
    "these",
    "this",
    "those",
    "which",
    "whose",
    "your",
  }
)


def _referent_words(text: str) -> list[str]:
  """Lowercased words without determiners: "The fuzzy bunny" -> ["fuzzy", "bunny"]."""
  return [w for w in text.strip().lower().split(" ") if w and w not in _DETERMINERS]


def wsc_simple(text: Any, example: Mapping[str, Any] | None = None, is_target: bool = False) -> int:
  """WSC: 1 if the generated referent is the candidate noun phrase, else 0.

  The target is the example's label (is the candidate the pronoun's referent?), so a
  model that names some other noun phrase for a wrong candidate is right. Following T5,
  determiners and case are ignored, either phrase may contain the other ("bunny" vs
  "fuzzy bunny"), but a possessive never matches a non-possessive ("Bob" vs "Bob's
  hat"). An empty generation is -1, so it cannot pass for a correct "no".
  """
  example = _require_example(example, "wsc_simple")
  if is_target:
    return int(example["label"])
  prediction = _referent_words(as_text(text))
  if not prediction:
    return metrics.INVALID
  referent = _referent_words(as_text(example["targets_pretokenized"]))
  if any("'" in w for w in prediction) != any("'" in w for w in referent):
    return 0
  prediction_set, referent_set = set(prediction), set(referent)
  return int(prediction_set <= referent_set or referent_set <= prediction_set)


def with_examples(postprocess_fn: Postprocessor) -> Postprocessor:
  """Wraps a postprocessor so predictions also carry their input, target and raw text.

  Used by the `*_examples` tasks: metrics.metric_with_examples unwraps the value for
  the ordinary metrics, and metrics.text_examples shows the texts in TensorBoard.
  Targets are left as they are.
  """

  def postprocess(
    text: Any, example: Mapping[str, Any] | None = None, is_target: bool = False
  ) -> Any:
    value = postprocess_fn(text, example=example, is_target=is_target)
    if is_target:
      return value
    example = example or {}
    return {
      metrics.PREDICTION: value,
      metrics.PREDICTION_TEXT: as_text(text),
      metrics.INPUT_TEXT: as_text(example.get(metrics.INPUT_TEXT, b"")),
      metrics.TARGET_TEXT: as_text(example.get(metrics.TARGET_TEXT, b"")),
    }

  return postprocess
