"""The train state and the jitted step that updates only the trainable parameters."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import optax

from prompt_tuning.training import trainable as trainable_lib

Array = jax.Array
Metrics = dict[str, Array]


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training; the frozen parameters are kept outside."""

  step: Array
  trainable: Any
  opt_state: Any

  @classmethod
  def create(cls, trainable: Any, optimizer: optax.GradientTransformation) -> "TrainState":
    return cls(
      step=jnp.zeros((), jnp.int32), trainable=trainable, opt_state=optimizer.init(trainable)
    )


def strided_microbatches(batch: Mapping[str, Array], num_microbatches: int) -> dict[str, Array]:
  """The batch as [num_microbatches, rows / num_microbatches, ...] per feature.

  Microbatch k takes rows k, k + n, k + 2n, ...: every device's contiguous block of a
  data-sharded batch holds an equal part of each microbatch, so the split moves no rows
  between devices (contiguous microbatches make XLA gather and permute them).
  """
  size = next(iter(batch.values())).shape[0]
  if size % num_microbatches:
    raise ValueError(f"batch size {size} is not divisible by num_microbatches {num_microbatches}")
  rows = size // num_microbatches
  return jax.tree.map(
    lambda x: x.reshape((rows, num_microbatches) + x.shape[1:]).swapaxes(0, 1), dict(batch)
  )


def _accumulated(
  loss_and_grads: Callable[..., tuple[tuple[Array, Metrics], Any]],
  trainable: Any,
  frozen: Any,
  batch: Mapping[str, Array],
  dropout_rng: Array,
  num_microbatches: int,
) -> tuple[tuple[Array, Metrics], Any]:
  """`loss_and_grads` summed over strided microbatches (a scan: one microbatch's
  activations live at a time); microbatch k's dropout key is `fold_in(dropout_rng, k)`."""
  micro = strided_microbatches(batch, num_microbatches)

  def body(carry, inputs):
    index, microbatch = inputs
    (loss, metrics), grads = loss_and_grads(
      trainable, frozen, microbatch, jax.random.fold_in(dropout_rng, index)
    )
    total_grads, total_loss, total_metrics = carry
    return (
      jax.tree.map(jnp.add, total_grads, grads),
      total_loss + loss,
      jax.tree.map(jnp.add, total_metrics, metrics),
    ), None

  first = jax.tree.map(lambda x: x[0], micro)
  metrics_shape = jax.eval_shape(lambda: loss_and_grads(trainable, frozen, first, dropout_rng))
  init = (
    jax.tree.map(jnp.zeros_like, trainable),
    jnp.zeros((), jnp.float32),
    jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metrics_shape[0][1]),
  )
  (grads, loss, metrics), _ = jax.lax.scan(body, init, (jnp.arange(num_microbatches), micro))
  # Token accuracy is a ratio: average it rather than summing it over pieces.
  metrics = dict(metrics, accuracy=metrics["accuracy"] / num_microbatches)
  return (loss, metrics), grads


def make_train_step(
  model: Any, optimizer: optax.GradientTransformation, num_microbatches: int = 1
) -> Callable[[TrainState, Any, Mapping[str, Array], Array], tuple[TrainState, Metrics]]:
  """Builds `step(state, frozen, batch, rng) -> (state, metrics)`.

  Gradients are taken with respect to `state.trainable` only; `frozen` is an ordinary
  input. Dropout randomness is `fold_in(rng, step)`, so a resumed run draws the same
  masks as an uninterrupted one. With `num_microbatches > 1` the batch is split into
  that many strided pieces and gradients summed over them (the loss is a sum, so this
  equals the full-batch gradient up to float rounding).
  """

  def loss_and_grads(
    trainable: Any, frozen: Any, batch: Mapping[str, Array], dropout_rng: Array
  ) -> tuple[tuple[Array, Metrics], Any]:
    def loss_fn(trainable_params: Any) -> tuple[Array, Metrics]:
      params = trainable_lib.merge(trainable_params, frozen)
      return model.loss_fn(params, batch, dropout_rng)

    return jax.value_and_grad(loss_fn, has_aux=True)(trainable)

  def accumulate(
    trainable: Any, frozen: Any, batch: Mapping[str, Array], dropout_rng: Array
  ) -> tuple[tuple[Array, Metrics], Any]:
    if num_microbatches == 1:
      return loss_and_grads(trainable, frozen, batch, dropout_rng)
    return _accumulated(loss_and_grads, trainable, frozen, batch, dropout_rng, num_microbatches)

  def train_step(
    state: TrainState, frozen: Any, batch: Mapping[str, Array], rng: Array
  ) -> tuple[TrainState, Metrics]:
    dropout_rng = jax.random.fold_in(rng, state.step)
    (loss, metrics), grads = accumulate(state.trainable, frozen, batch, dropout_rng)
    if getattr(model, "penalties", ()):
      # Penalties on the parameters count once per step, however many microbatches.
      (penalty, terms), penalty_grads = jax.value_and_grad(
        lambda t: model.penalty_fn(trainable_lib.merge(t, frozen)), has_aux=True
      )(state.trainable)
      grads = jax.tree.map(jnp.add, grads, penalty_grads)
      loss = loss + penalty
      metrics = dict(metrics, **terms)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.trainable)
    new_trainable = optax.apply_updates(state.trainable, updates)
    # One flag for the NaN guard: the loss and every updated parameter are finite (RMS
    # norms can hide an overflowed prompt from the loss for a step or more).
    finite = jnp.isfinite(loss)
    for leaf in jax.tree.leaves(new_trainable):
      finite = jnp.logical_and(finite, jnp.all(jnp.isfinite(leaf)))
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads), finite=finite)
    new_state = state.replace(step=state.step + 1, trainable=new_trainable, opt_state=opt_state)
    return new_state, metrics

  return train_step
