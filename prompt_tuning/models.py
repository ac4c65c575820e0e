"""The model layer (T5X's `EncoderDecoderModel`): loss, rank-classification scores and
decoding on top of a `Transformer`, whatever prompt module it carries.

A plain class rather than a flax module, so that the trainer and evaluator can hold one
and call its pure functions under `jax.jit`.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Callable, Mapping, Protocol, Sequence

import gin
import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning import decoding
from prompt_tuning.prompts.multi_prompt import MultiPrompt
from prompt_tuning.t5 import Encoded, Transformer

Array = jax.Array
Batch = Mapping[str, Array]
Params = Mapping[str, Any]

# Loss normalisation choices, named as in T5X.
NUM_REAL_TARGET_TOKENS = "NUM_REAL_TARGET_TOKENS"
NUM_TOTAL_TARGET_TOKENS = "NUM_TOTAL_TARGET_TOKENS"
AVERAGE_PER_SEQUENCE = "AVERAGE_PER_SEQUENCE"

# Batch features that are per-example inputs of the input prompt, not of the network:
# `prompt_ids` [batch] picks each row's prompt of a table (prompts.MultiPrompt).
PROMPT_FEATURES = ("prompt_ids",)


class Penalty(Protocol):
  """A loss term on the parameters alone, logged under its `name`."""

  name: str

  def __call__(self, params: Params) -> Array: ...


def cross_entropy_with_z_loss(
  logits: Array, targets: Array, z_loss: float, label_smoothing: float = 0.0
) -> tuple[Array, Array]:
  """Per-token cross-entropy plus T5X's auxiliary z-loss `z_loss * log(Z)^2`.

  The z-loss keeps the softmax normaliser near 1, which T5 relies on in bfloat16.
  Label smoothing subtracts the entropy of the smoothed target so the minimum stays 0.
  Returns (total per-token loss, z-loss part), both [batch, length] float32.
  """
  vocab = logits.shape[-1]
  confidence = 1.0 - label_smoothing
  low = label_smoothing / (vocab - 1)
  soft_targets = jax.nn.one_hot(targets, vocab) * (confidence - low) + low
  log_z = jax.nn.logsumexp(logits, axis=-1)
  log_probs = logits - log_z[..., None]
  loss = -jnp.sum(soft_targets * log_probs, axis=-1)
  if label_smoothing > 0:
    normaliser = -(confidence * np.log(confidence) + (vocab - 1) * low * np.log(low + 1e-20))
    loss = loss - normaliser
  z_term = z_loss * jnp.square(log_z)
  return loss + z_term, z_term


def prompt_inputs_of(batch: Batch) -> dict[str, Array] | None:
  """The batch's per-example prompt inputs (features in `PROMPT_FEATURES`), or None.

  They go to the input prompt alone, as one mapping; a batch without them works with
  any input prompt, and one batch can mix rows of several tasks or ensemble members
  (prompts.MultiPrompt).
  """
  found = {name: batch[name] for name in PROMPT_FEATURES if name in batch}
  return found or None


def encoder_inputs(
  batch: Batch, task_index_sentinel: int | None = None
) -> tuple[Array, dict[str, Array] | None]:
  """(encoder tokens, prompt inputs) of a batch.

  With `task_index_sentinel` (the upstream's task-index format, 32099 for T5's
  vocabulary: the first input token is `<extra_id_k>` = sentinel - k for task k) the
  first token is removed and becomes each row's `prompt_ids`; an all-padding row
  (a padded batch's filler) gets task 0.
  """
  tokens, prompt_inputs = batch["encoder_input_tokens"], prompt_inputs_of(batch)
  if task_index_sentinel is None:
    return tokens, prompt_inputs
  if prompt_inputs and "prompt_ids" in prompt_inputs:
    raise ValueError(
      "the batch has prompt_ids and the model reads task indices from the first input "
      "token (task_index_sentinel); use one of the two"
    )
  first = tokens[:, 0]
  task_ids = jnp.where(first > 0, task_index_sentinel - first, 0).astype(jnp.int32)
  return tokens[:, 1:], {**(prompt_inputs or {}), "prompt_ids": task_ids}


def normalise(total: Array, weights: Array, factor: float | str | None) -> Array:
  """A summed loss divided as `factor` (T5X's loss_normalizing_factor) says."""
  if factor is None:
    return total
  if factor == NUM_REAL_TARGET_TOKENS:
    return total / jnp.maximum(jnp.sum(weights), 1.0)
  if factor == NUM_TOTAL_TARGET_TOKENS:
    return total / weights.size
  if factor == AVERAGE_PER_SEQUENCE:
    return total / weights.shape[0]
  if isinstance(factor, (int, float)):
    return total / factor
  raise ValueError(
    f"unknown loss_normalizing_factor {factor!r}; use None, a number, "
    f"{NUM_REAL_TARGET_TOKENS}, {NUM_TOTAL_TARGET_TOKENS} or "
    f"{AVERAGE_PER_SEQUENCE}"
  )


def penalty_terms(penalties: Sequence[Penalty], params: Params) -> tuple[Array, dict[str, Array]]:
  """The sum of the penalties on the parameters themselves (e.g. wayward prompts'
  distance to a discrete prompt) and each by its name.

  They depend on no batch, so the train step adds them once per step, outside the
  microbatch loop (training/train_step.py); a model's `loss_fn` is the data term alone.
  """
  terms = {penalty.name: penalty(params) for penalty in penalties}
  return sum(terms.values(), jnp.zeros((), jnp.float32)), terms


@gin.configurable(module="models")
class EncoderDecoderModel:
  """Loss / score / predict for a T5 encoder-decoder (with or without a prompt)."""

  def __init__(
    self,
    module: Transformer,
    *,
    z_loss: float = 1e-4,
    label_smoothing: float = 0.0,
    loss_normalizing_factor: float | str | None = None,
    decode_fn: Callable[..., tuple[Array, Array]] = decoding.temperature_sample,
    decode_kwargs: Mapping[str, Any] | None = None,
    eos_id: int = 1,
    penalties: Sequence[Penalty] = (),
    task_index_sentinel: int | None = None,
  ):
    self.module = module
    self.task_index_sentinel = task_index_sentinel
    self.penalties = tuple(penalties)
    self.z_loss = z_loss
    self.label_smoothing = label_smoothing
    self.loss_normalizing_factor = loss_normalizing_factor
    self.decode_fn = decode_fn
    # Greedy by default: the usual choice for classification targets.
    self.decode_kwargs = dict(decode_kwargs if decode_kwargs is not None else {"temperature": 0.0})
    self.eos_id = eos_id

  def with_module(self, module: Transformer) -> "EncoderDecoderModel":
    """The same loss and decoding settings around another network (e.g. the backbone
    with a prompt table instead of one prompt); `self` is left unchanged."""
    other = copy.copy(self)
    other.decode_kwargs = dict(self.decode_kwargs)
    other.module = module
    return other

  @staticmethod
  def prompt_inputs(batch: Batch) -> dict[str, Array] | None:
    return prompt_inputs_of(batch)

  def encoder_inputs(self, batch: Batch) -> tuple[Array, dict[str, Array] | None]:
    """(encoder tokens, prompt inputs) of a batch (`encoder_inputs`)."""
    return encoder_inputs(batch, self.task_index_sentinel)

  # ---------------------------------------------------------------- forward and loss
  def compute_logits(self, params: Params, batch: Batch, dropout_rng: Array | None = None) -> Array:
    rngs = {"dropout": dropout_rng} if dropout_rng is not None else None
    tokens, prompt_inputs = self.encoder_inputs(batch)
    return self.module.apply(
      {"params": params},
      tokens,
      batch["decoder_input_tokens"],
      batch["decoder_target_tokens"],
      enable_dropout=dropout_rng is not None,
      rngs=rngs,
      prompt_inputs=prompt_inputs,
    )

  def _loss_weights(self, batch: Batch) -> Array:
    weights = batch.get("decoder_loss_weights")
    if weights is None:
      weights = batch["decoder_target_tokens"] > 0
    return jnp.asarray(weights, jnp.float32)

  def _normalise(self, total: Array, weights: Array) -> Array:
    return normalise(total, weights, self.loss_normalizing_factor)

  def loss_fn(
    self, params: Params, batch: Batch, dropout_rng: Array | None = None
  ) -> tuple[Array, dict[str, Array]]:
    """Summed (by default) token cross-entropy + z-loss, and per-batch metrics."""
    logits = self.compute_logits(params, batch, dropout_rng)
    targets = batch["decoder_target_tokens"]
    weights = self._loss_weights(batch)
    token_loss, token_z = cross_entropy_with_z_loss(
      logits, targets, self.z_loss, self.label_smoothing
    )
    loss = self._normalise(jnp.sum(token_loss * weights), weights)
    z_loss = self._normalise(jnp.sum(token_z * weights), weights)
    num_tokens = jnp.sum(weights)
    correct = jnp.sum((jnp.argmax(logits, -1) == targets) * weights)
    metrics = {
      "loss": loss,
      "z_loss": z_loss,
      "cross_ent_loss": loss - z_loss,
      "accuracy": correct / jnp.maximum(num_tokens, 1.0),
      "num_tokens": num_tokens,
    }
    return loss, metrics

  def penalty_fn(self, params: Params) -> tuple[Array, dict[str, Array]]:
    """The sum of the penalties on the parameters (`penalty_terms`) and each by name."""
    return penalty_terms(self.penalties, params)

  # ---------------------------------------------------------------- scoring
  def score_batch(self, params: Params, batch: Batch) -> Array:
    """Sum of target-token log-likelihoods per example, for rank classification."""
    logits = self.compute_logits(params, batch)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    targets = batch["decoder_target_tokens"]
    token_scores = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    return jnp.sum(token_scores * self._loss_weights(batch), axis=-1)

  # ---------------------------------------------------------------- decoding
  def init_cache(self, params: Params, encoded: Encoded, max_decode_length: int) -> Any:
    """Runs one full-length decode call that creates the key/value caches; the
    cross-attention cache keeps the encoder mask, so decoding steps need neither."""
    batch = encoded.sequence.shape[0]
    _, variables = self.module.apply(
      {"params": params},
      encoded.sequence,
      encoded.mask,
      jnp.zeros((batch, max_decode_length), jnp.int32),
      decode=True,
      max_decode_length=max_decode_length,
      mutable=["cache"],
      method=self.module.decode,
    )
    return variables["cache"]

  def predict_batch_with_aux(
    self,
    params: Params,
    batch: Batch,
    rng: Array | None = None,
    num_decodes: int | None = None,
    return_all_decodes: bool = False,
    **decode_overrides: Any,
  ) -> tuple[Array, dict[str, Array]]:
    """Decodes targets of the batch's target length; returns (tokens, {"scores": ...}).

    Tokens are [batch, length] (best decode) or [batch, num_decodes, length]. Only the
    encoder sees the prompt inputs: each row's decoder attends to that row's own
    encoding, so the cached steps need no prompt.
    """
    encoder_tokens, prompt_inputs = self.encoder_inputs(batch)
    length = batch["decoder_target_tokens"].shape[1]
    encoded = self.module.apply(
      {"params": params}, encoder_tokens, method=self.module.encode, prompt_inputs=prompt_inputs
    )
    cache = self.init_cache(params, encoded, length)

    def tokens_to_logits(token_ids: Array, step_cache: Any) -> tuple[Array, Any]:
      logits, mutated = self.module.apply(
        {"params": params, "cache": step_cache},
        None,
        None,
        token_ids,
        decode=True,
        max_decode_length=length,
        mutable=["cache"],
        method=self.module.decode,
      )
      return logits[:, 0, :], mutated["cache"]

    kwargs = {**self.decode_kwargs, **decode_overrides}
    if num_decodes is not None:
      kwargs["num_decodes"] = num_decodes
    if self.decode_fn is decoding.temperature_sample or "decode_rng" in kwargs:
      kwargs.setdefault("decode_rng", rng if rng is not None else jax.random.PRNGKey(0))
    inputs = jnp.zeros((encoder_tokens.shape[0], length), jnp.int32)
    sequences, scores = self.decode_fn(inputs, cache, tokens_to_logits, self.eos_id, **kwargs)
    if return_all_decodes:
      return sequences, {"scores": scores}
    return sequences[:, 0], {"scores": scores[:, 0]}

  def predict_batch(
    self, params: Params, batch: Batch, rng: Array | None = None, **kwargs: Any
  ) -> Array:
    return self.predict_batch_with_aux(params, batch, rng, **kwargs)[0]


def with_prompt_table(
  model: EncoderDecoderModel, params_without_prompt: Params, table: np.ndarray
) -> tuple[EncoderDecoderModel, dict[str, Any]]:
  """(model, params) where the model's input prompt is a MultiPrompt holding `table`.

  `table` is [num_prompts, length, d_model] (see `prompts.multi_prompt.load_prompt_files`);
  the parameters are the frozen ones plus `encoder/prompt/prompt` = table. Loss and
  decoding settings are the model's own; `model` itself is unchanged.
  """
  table = np.asarray(table, np.float32)
  if table.ndim != 3:
    raise ValueError(
      f"a prompt table is [num_prompts, length, d_model]; got shape {tuple(table.shape)}"
    )
  num_prompts, length, width = table.shape
  embed = params_without_prompt["token_embedder"]["embedding"].shape[-1]
  if width != embed:
    raise ValueError(
      f"prompts have width {width} but the model's d_model is {embed}; "
      "use prompts trained for this model"
    )
  factory = functools.partial(MultiPrompt, num_prompts=num_prompts, length=length)
  table_model = model.with_module(model.module.clone(input_prompt=factory))
  params = dict(params_without_prompt)
  params["encoder"] = {**params["encoder"], "prompt": {"prompt": table}}
  return table_model, params
