"""Models with a linear head on the frozen encoder (P-Tuning v2's heads): loss, scores
and predictions with `models.EncoderDecoderModel`'s interface, so the trainer, the
evaluator, checkpoints, numpy export and partitioning treat them alike.

The network is the same `Transformer` with a head bound (`network.transformer.head`,
configs/heads/*.gin); these models call its `classify`, which runs the encoder (with any
prompt family's input prompt or layer prefixes) and the head, never the decoder or the
vocabulary projection. Batches come from `training.data.EncoderLabels`:
`encoder_input_tokens` and `label_ids`, whose id 0 means "no label" and id k + 1 is
label (or position) k (data/labels.py).

  SequenceClassificationModel  label_ids [batch, 1]; predicts [batch, 1] label ids.
  TokenClassificationModel     label_ids [batch, length], non-zero on each word's first
                               word piece; predicts a label id at those positions.
  SpanExtractionModel          label_ids [batch, 2] = (start, end) positions + 1, the
                               null span (no answer) at position 0; predicts the best
                               span, or the null span when it scores `null_threshold`
                               above it.

The loss is the cross-entropy summed over the labelled items, as the encoder-decoder's
is summed over target tokens (`loss_normalizing_factor` as in `models`); `num_tokens` in
the metrics counts the labelled items, so the trainer's loss-per-token log is the mean
cross-entropy, which P-Tuning v2 minimises. Adam and Adafactor updates do not depend on
that constant factor.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import gin
import jax
import jax.numpy as jnp
import optax

from prompt_tuning import models
from prompt_tuning.t5 import Transformer

Array = jax.Array
Batch = Mapping[str, Array]
Params = Mapping[str, Any]

# P-Tuning v2's (and BERT's) SQuAD decoding: answers of at most 30 word pieces.
MAX_ANSWER_LENGTH = 30
NULL_POSITION = 0


class _EncoderHeadModel:
  """What the three head models share: the head's forward pass, loss bookkeeping and
  the trainer-facing interface (`module`, `loss_fn`, `penalty_fn`, `with_module`)."""

  def __init__(
    self,
    module: Transformer,
    *,
    loss_normalizing_factor: float | str | None = None,
    penalties: Sequence[models.Penalty] = (),
    task_index_sentinel: int | None = None,
    prompt_reads_task_ids: bool = False,
  ):
    if getattr(module, "head_factory", None) is None:
      raise ValueError(
        f"{type(self).__name__} needs a network with a head; include a "
        "configs/heads/*.gin file after the model file (it binds network.transformer.head)"
      )
    self.module = module
    self.loss_normalizing_factor = loss_normalizing_factor
    self.penalties = tuple(penalties)
    self.task_index_sentinel = task_index_sentinel
    self.prompt_reads_task_ids = prompt_reads_task_ids

  @property
  def num_tasks(self) -> int:
    return int(getattr(self.module.head_factory(), "num_tasks", 1))

  def with_module(self, module: Transformer) -> "_EncoderHeadModel":
    other = copy.copy(self)
    other.module = module
    return other

  def penalty_fn(self, params: Params) -> tuple[Array, dict[str, Array]]:
    return models.penalty_terms(self.penalties, params)

  def head_logits(self, params: Params, batch: Batch, dropout_rng: Array | None = None) -> Array:
    """The head's logits. A multi-task head reads each row's task from `prompt_ids`
    (data/task_mixtures.py); the input prompt gets them too only with
    `prompt_reads_task_ids` (a per-task prompt, e.g. prompts.MultiTaskPrompt)."""
    tokens, prompt_inputs = models.encoder_inputs(batch, self.task_index_sentinel)
    task_ids = None
    if self.num_tasks > 1:
      if not prompt_inputs or "prompt_ids" not in prompt_inputs:
        raise ValueError(
          f"the head has {self.num_tasks} tasks but the batch says no row's task; train on "
          "a mixture registered with data.task_mixtures (its examples carry prompt_ids)"
        )
      task_ids = prompt_inputs["prompt_ids"]
      if not self.prompt_reads_task_ids:
        prompt_inputs = {k: v for k, v in prompt_inputs.items() if k != "prompt_ids"} or None
    rngs = {"dropout": dropout_rng} if dropout_rng is not None else None
    return self.module.apply(
      {"params": params},
      tokens,
      enable_dropout=dropout_rng is not None,
      prompt_inputs=prompt_inputs,
      task_ids=task_ids,
      rngs=rngs,
      method=self.module.classify,
    )

  def _metrics(
    self, item_loss: Array, weights: Array, correct: Array
  ) -> tuple[Array, dict[str, Array]]:
    loss = models.normalise(jnp.sum(item_loss * weights), weights, self.loss_normalizing_factor)
    count = jnp.sum(weights)
    return loss, {
      "loss": loss,
      "z_loss": jnp.zeros((), jnp.float32),
      "cross_ent_loss": loss,
      "accuracy": jnp.sum(correct * weights) / jnp.maximum(count, 1.0),
      "num_tokens": count,
    }

  @staticmethod
  def _labels(batch: Batch) -> Array:
    return jnp.asarray(batch["label_ids"], jnp.int32)

  def predict_batch_with_aux(
    self, params: Params, batch: Batch, rng: Array | None = None, **kwargs: Any
  ) -> tuple[Array, dict[str, Array]]:
    del rng, kwargs  # A head's prediction is deterministic.
    predictions, scores = self._predict(params, batch)
    return predictions, {"scores": scores}

  def predict_batch(
    self, params: Params, batch: Batch, rng: Array | None = None, **kwargs: Any
  ) -> Array:
    return self.predict_batch_with_aux(params, batch, rng, **kwargs)[0]


def _cross_entropy(logits: Array, classes: Array) -> Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(classes, 0))


@gin.configurable(module="head_models")
class SequenceClassificationModel(_EncoderHeadModel):
  """One label per example from the head on the pooled encoder state."""

  def loss_fn(
    self, params: Params, batch: Batch, dropout_rng: Array | None = None
  ) -> tuple[Array, dict[str, Array]]:
    logits = self.head_logits(params, batch, dropout_rng)
    labels = self._labels(batch)[:, 0]
    weights = (labels > 0).astype(jnp.float32)
    item_loss = _cross_entropy(logits, labels - 1)
    return self._metrics(item_loss, weights, jnp.argmax(logits, -1) == labels - 1)

  def score_batch(self, params: Params, batch: Batch) -> Array:
    """Log-probability of each example's gold label (0 where it has none)."""
    logits = self.head_logits(params, batch)
    labels = self._labels(batch)[:, 0]
    return jnp.where(labels > 0, -_cross_entropy(logits, labels - 1), 0.0)

  def _predict(self, params: Params, batch: Batch) -> tuple[Array, Array]:
    log_probs = jax.nn.log_softmax(self.head_logits(params, batch), axis=-1)
    best = jnp.argmax(log_probs, axis=-1)
    return (best + 1)[:, None].astype(jnp.int32), jnp.max(log_probs, axis=-1)


@gin.configurable(module="head_models")
class TokenClassificationModel(_EncoderHeadModel):
  """One label per word: the head on every position, counted where `label_ids` is
  non-zero (each word's first word piece; the later pieces and padding are ignored in
  the loss and the metric)."""

  def _positions(self, batch: Batch, length: int) -> Array:
    """The labels cut to the (possibly bucketed) input length; labels only sit on real
    input tokens, so nothing that counts is cut."""
    return self._labels(batch)[:, :length]

  def loss_fn(
    self, params: Params, batch: Batch, dropout_rng: Array | None = None
  ) -> tuple[Array, dict[str, Array]]:
    logits = self.head_logits(params, batch, dropout_rng)
    labels = self._positions(batch, logits.shape[1])
    weights = (labels > 0).astype(jnp.float32)
    item_loss = _cross_entropy(logits, labels - 1)
    return self._metrics(item_loss, weights, jnp.argmax(logits, -1) == labels - 1)

  def score_batch(self, params: Params, batch: Batch) -> Array:
    logits = self.head_logits(params, batch)
    labels = self._positions(batch, logits.shape[1])
    return jnp.sum(jnp.where(labels > 0, -_cross_entropy(logits, labels - 1), 0.0), axis=-1)

  def _predict(self, params: Params, batch: Batch) -> tuple[Array, Array]:
    """Label ids at the labelled (word-start) positions, 0 elsewhere, as long as
    `label_ids`: the same length for every bucket, so seqio can stack them."""
    log_probs = jax.nn.log_softmax(self.head_logits(params, batch), axis=-1)
    length = log_probs.shape[1]
    starts = self._positions(batch, length) > 0
    predicted = jnp.where(starts, jnp.argmax(log_probs, -1) + 1, 0).astype(jnp.int32)
    full = batch["label_ids"].shape[1]
    predicted = jnp.pad(predicted, ((0, 0), (0, full - length)))
    score = jnp.sum(jnp.where(starts, jnp.max(log_probs, -1), 0.0), axis=-1)
    return predicted, score


@gin.configurable(module="head_models")
class SpanExtractionModel(_EncoderHeadModel):
  """Start and end positions of an answer in the input, SQuAD-style.

  `max_answer_length` bounds the decoded span (in word pieces); `null_threshold` is
  SQuAD 2.0's no-answer rule: predict the null span (position 0, where unanswerable
  examples point) when its score start[0] + end[0] exceeds the best real span's by more
  than the threshold. None (the default, for SQuAD 1.1 and MRQA) never predicts it.
  """

  def __init__(
    self,
    module: Transformer,
    *,
    max_answer_length: int = MAX_ANSWER_LENGTH,
    null_threshold: float | None = None,
    **kwargs: Any,
  ):
    super().__init__(module, **kwargs)
    if max_answer_length < 1:
      raise ValueError(f"max_answer_length must be positive, got {max_answer_length}")
    self.max_answer_length = int(max_answer_length)
    self.null_threshold = null_threshold

  def _gold(
    self, params: Params, batch: Batch, dropout_rng: Array | None = None
  ) -> tuple[Array, Array, Array]:
    """(log-probabilities over positions [batch, length, 2], gold positions [batch, 2]
    (-1 where unlabelled), their log-probabilities [batch, 2])."""
    log_probs = jax.nn.log_softmax(self.head_logits(params, batch, dropout_rng), axis=1)
    labels = self._labels(batch) - 1
    gold = jnp.take_along_axis(log_probs, jnp.maximum(labels, 0)[:, None, :], axis=1)[:, 0]
    return log_probs, labels, gold

  def loss_fn(
    self, params: Params, batch: Batch, dropout_rng: Array | None = None
  ) -> tuple[Array, dict[str, Array]]:
    """The mean of the start and end cross-entropies per example (BERT's SQuAD loss)."""
    log_probs, labels, gold = self._gold(params, batch, dropout_rng)
    weights = (labels[:, 0] >= 0).astype(jnp.float32)
    item_loss = -jnp.mean(gold, axis=-1)
    correct = jnp.all(jnp.argmax(log_probs, axis=1) == labels, axis=-1)
    return self._metrics(item_loss, weights, correct)

  def score_batch(self, params: Params, batch: Batch) -> Array:
    _, labels, gold = self._gold(params, batch)
    return jnp.where(labels[:, 0] >= 0, jnp.sum(gold, axis=-1), 0.0)

  def _predict(self, params: Params, batch: Batch) -> tuple[Array, Array]:
    """(start + 1, end + 1) of the best span with start <= end < start + max length,
    both on real tokens other than the null position; or the null span (id 1, 1)."""
    logits = self.head_logits(params, batch)
    start, end = logits[..., 0], logits[..., 1]
    length = start.shape[1]
    real = batch["encoder_input_tokens"][:, :length] > 0
    positions = jnp.arange(length)
    allowed = (positions[:, None] <= positions[None, :]) & (
      positions[None, :] < positions[:, None] + self.max_answer_length
    )
    allowed = allowed & (positions[:, None] != NULL_POSITION)
    allowed = allowed[None] & real[:, :, None] & real[:, None, :]
    pair = jnp.where(allowed, start[:, :, None] + end[:, None, :], -jnp.inf)
    flat = jnp.argmax(pair.reshape(pair.shape[0], -1), axis=-1)
    best_start, best_end = flat // length, flat % length
    best = jnp.max(pair.reshape(pair.shape[0], -1), axis=-1)
    predicted = jnp.stack([best_start, best_end], axis=-1)
    if self.null_threshold is not None:
      null = start[:, NULL_POSITION] + end[:, NULL_POSITION]
      take_null = null - best > self.null_threshold
      predicted = jnp.where(take_null[:, None], NULL_POSITION, predicted)
      best = jnp.where(take_null, null, best)
    return (predicted + 1).astype(jnp.int32), best
