"""The training loop: data, jitted step, checkpoints, evaluation, logs, NaN guard.

Same code for prompt tuning (trainable `.*prompt.*`), model tuning and LM adaptation
(trainable `.*`). A run is resumable: starting it again with the same MODEL_DIR
continues from the newest good checkpoint, and (same seed, same data order, dropout
keyed by step) ends with the same parameters, bit for bit, as an uninterrupted run.

Everything runs on one device mesh (`partitioning.Partitioner`): the frozen backbone is
split T5X-style over the "model" axis, the trainable parameters and their optimiser
state follow the same logical axis rules (the prompt is replicated), each process feeds
its own rows of the global batch, and the step is jitted with those shardings. One
device is the 1x1 case of the same code. Checkpoints restore onto whatever mesh the
resumed run uses.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from typing import Any, Callable, Mapping

import gin
import jax
import optax
from absl import logging

from prompt_tuning import models
from prompt_tuning.t5 import network
from prompt_tuning.training import checkpoints as checkpoints_lib
from prompt_tuning.training import data as data_lib
from prompt_tuning.training import evaluation as evaluation_lib
from prompt_tuning.training import initialization
from prompt_tuning.training import logging_utils
from prompt_tuning.training import optimizers
from prompt_tuning.training import partitioning
from prompt_tuning.training import trainable as trainable_lib
from prompt_tuning.training.train_step import TrainState, make_train_step


class NonFiniteLossError(RuntimeError):
  """Training diverged; the checkpoints on disk are the last good ones."""


class BaseCheckpointMismatchError(ValueError):
  """MODEL_DIR holds a run that was trained on another frozen model."""


@dataclasses.dataclass
class TrainResult:
  step: int
  params: Any
  trainable: Any
  last_eval: dict[str, dict[str, Any]]
  losses: list[tuple[int, float]]


def _host_int(value: Any) -> int:
  """A replicated scalar as a Python int, also when it spans several processes."""
  return int(partitioning.fetch(value))


def _eval_summary(metrics: Mapping[str, Mapping[str, Any]]) -> str:
  return "; ".join(f"{task}: " + ", ".join(f"{k}={v:.2f}" for k, v in values.items()
                                           if isinstance(v, float))
                   for task, values in metrics.items())


def _flat_logical_axes(module: network.Transformer) -> dict[str, Any]:
  return trainable_lib.flatten(network.logical_axes(
      module.config, module.input_prompt, getattr(module, "layer_prefix", None)))


def parameter_shardings(partitioner: partitioning.Partitioner, module: network.Transformer,
                        params: Any, *, axes: Mapping[str, Any] | None = None) -> Any:
  """NamedShardings for `params` (all of `module`'s parameters or a subset, e.g. the
  frozen half), from the logical axis names the module gives each parameter (`axes`:
  those names, flattened, when already at hand)."""
  axes = _flat_logical_axes(module) if axes is None else axes
  names = trainable_lib.flatten(params)
  unknown = sorted(set(names) - set(axes))
  if unknown:
    raise ValueError(f"parameters not in the model: {', '.join(unknown[:5])}")
  return partitioner.param_shardings(
      trainable_lib.unflatten({name: axes[name] for name in names}), params)


def place_params(partitioner: partitioning.Partitioner, module: network.Transformer,
                 params: Any) -> Any:
  """`params` (host or device arrays) laid out over the partitioner's mesh."""
  return partitioner.place(params, parameter_shardings(partitioner, module, params))


class PartitionedEvaluation(evaluation_lib.Evaluation):
  """Evaluation whose model functions run on the partitioner's mesh: parameters stay
  sharded as they are, each batch is split over "data" (every process reads the same
  evaluation examples), and the activations follow the logical axis rules."""

  def __init__(self, partitioner: partitioning.Partitioner, *args: Any, **kwargs: Any):
    super().__init__(*args, batch_transform=partitioner.shard_replicated_batch, **kwargs)
    self.partitioner = partitioner
    # Outputs come back as host arrays in every process, also when they span several.
    predict, score = self._predict, self._score
    self._predict = lambda params, batch: partitioning.fetch(predict(params, batch))
    self._score = lambda params, batch: partitioning.fetch(score(params, batch))

  def evaluate(self, params: Any, step: int | None = None) -> dict[str, dict[str, Any]]:
    with self.partitioner.activate():  # Tracing must see the mesh and the rules.
      return super().evaluate(params, step)


@gin.configurable(denylist=["model", "partitioner"])
def build_evaluation(model: models.EncoderDecoderModel, mixture_or_task_name: str,
                     task_feature_lengths: Mapping[str, int], batch_size: int,
                     split: str = "validation", num_examples: int | None = None,
                     partitioner: partitioning.Partitioner | None = None
                     ) -> evaluation_lib.Evaluation:
  """Without a partitioner the model functions run wherever the parameters are."""
  args = (mixture_or_task_name, task_feature_lengths, batch_size, model.predict_batch,
          model.score_batch)
  if partitioner is None:
    return evaluation_lib.Evaluation(*args, split=split, num_examples=num_examples)
  return PartitionedEvaluation(partitioner, *args, split=split, num_examples=num_examples)


@gin.configurable
def train(*, model: models.EncoderDecoderModel = gin.REQUIRED,
          mixture_or_task_name: str = gin.REQUIRED,
          task_feature_lengths: Mapping[str, int] = gin.REQUIRED,
          train_steps: int = gin.REQUIRED, batch_size: int = gin.REQUIRED,
          model_dir: str = gin.REQUIRED, initial_checkpoint_path: str | None = None,
          trainable_regex: str = trainable_lib.DEFAULT_TRAINABLE,
          fresh_regex: str | None = None,
          optimizer_factory: Callable[..., optax.GradientTransformation] = (
              optimizers.adafactor),
          learning_rate: float | Callable[[int], float] = 0.3,
          seed: int = 0, eval_period: int | None = 1000, checkpoint_period: int = 1000,
          keep_checkpoints: int | None = 3, save_full_checkpoints: bool = False,
          eval_mixture_or_task_name: str | None = None, eval_batch_size: int | None = None,
          eval_split: str = "validation", num_eval_examples: int | None = None,
          evaluate_at_start: bool = False, frozen_dtype: str | None = None,
          num_microbatches: int = 1, log_period: int = 50,
          stop_after_steps: int | None = None,
          partitioner: partitioning.Partitioner | None = None) -> TrainResult:
  """Trains `model` on a seqio task/mixture and writes everything under `model_dir`.

  `fresh_regex` (the assignment map) names the parameters initialised fresh instead of
  read from `initial_checkpoint_path`; it defaults to `trainable_regex`, except for
  model tuning (`.*`) where everything comes from the checkpoint when one is given.
  `stop_after_steps` ends this process early (for tests and time-sliced jobs); the
  schedule still targets `train_steps`. `partitioner` lays out the mesh (default: every
  device splits the batch; see `partitioning.Partitioner.for_batch`); `batch_size` is
  global, each of the job's processes reads `batch_size / process_count` rows.
  """
  os.makedirs(model_dir, exist_ok=True)
  leader = logging_utils.is_leader()
  module = model.module
  optimizer = optimizer_factory(learning_rate=learning_rate)
  partitioner = (partitioner or partitioning.Partitioner()).for_batch(batch_size,
                                                                      num_microbatches)
  logging.info("mesh: %d (data) x %d (model) devices over %d process(es)",
               partitioner.data_size, partitioner.model_size, jax.process_count())
  if fresh_regex is None:
    fresh_regex = trainable_regex if trainable_regex != ".*" else "(?!)"
  init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(seed))

  params = initialization.initial_params(module, init_rng, initial_checkpoint_path,
                                         fresh_regex)
  trainable, frozen = trainable_lib.split(params, trainable_regex)
  del params
  # Before placement: the host copies hash the same in every process and on any mesh.
  base_fingerprint = checkpoints_lib.fingerprint_params(frozen) if frozen else ""
  if frozen_dtype:
    frozen = trainable_lib.cast(frozen, frozen_dtype)
  logging.info("trainable parameters: %s (%d values); frozen: %d values",
               ", ".join(trainable_lib.parameter_names(trainable)),
               trainable_lib.count(trainable), trainable_lib.count(frozen))
  axes = _flat_logical_axes(module)
  frozen_shardings = parameter_shardings(partitioner, module, frozen, axes=axes)
  trainable_shardings = parameter_shardings(partitioner, module, trainable, axes=axes)
  state_shardings = partitioner.train_state_shardings(optimizer, trainable,
                                                      trainable_shardings)
  frozen = partitioner.place(frozen, frozen_shardings)
  create_state = functools.partial(TrainState.create, optimizer=optimizer)
  state_target = jax.tree.map(
      lambda shape, sharding: jax.ShapeDtypeStruct(shape.shape, shape.dtype,
                                                   sharding=sharding),
      jax.eval_shape(create_state, trainable), state_shardings)

  # When everything trains (model tuning, LM adaptation) the state already holds the
  # whole model; a separate frozen item exists only when something is frozen.
  save_frozen = save_full_checkpoints and bool(jax.tree.leaves(frozen))
  manager = checkpoints_lib.CheckpointManager(model_dir, keep=keep_checkpoints,
                                              save_full=save_frozen)
  data_position = 0
  if manager.latest_step() is not None:
    # Read straight into this run's shardings, whatever mesh wrote the checkpoint.
    restored = manager.restore(state_target)
    stored_fingerprint = (restored.metadata or {}).get("base_fingerprint", "")
    if stored_fingerprint != base_fingerprint:
      raise BaseCheckpointMismatchError(
          f"{model_dir} holds a run trained on a different frozen model than "
          f"{initial_checkpoint_path!r}; use a new MODEL_DIR or the original checkpoint")
    # A no-op when orbax placed the arrays as asked; jit refuses any other layout.
    state = partitioner.place(restored.state, state_shardings)
    data_position = restored.data_position or 0
    if leader:
      print(f"resumed from {model_dir} at step {_host_int(state.step)} ({data_position} "
            "batches consumed)", file=sys.stderr, flush=True)
  else:
    # Made by a jitted function, the state owns its buffers: donating it to the train
    # step cannot delete an array that something else still holds.
    state = partitioner.partition(create_state, in_shardings=(trainable_shardings,),
                                  out_shardings=state_shardings)(
                                      partitioner.place(trainable, trainable_shardings))
  del trainable
  start_step = _host_int(state.step)
  metadata = {"base_checkpoint": initial_checkpoint_path or "",
              "base_fingerprint": base_fingerprint, "trainable_regex": trainable_regex,
              "mixture_or_task_name": mixture_or_task_name, "seed": seed,
              "train_steps": train_steps}

  step_fn = partitioner.partition_train_step(
      make_train_step(model, optimizer, num_microbatches), state_shardings,
      frozen_shardings)
  dropout_rng = partitioner.place(dropout_rng, partitioner.replicated)
  evaluation = None
  if eval_period:
    evaluation = build_evaluation(
        model, eval_mixture_or_task_name or mixture_or_task_name, task_feature_lengths,
        eval_batch_size or batch_size, split=eval_split, num_examples=num_eval_examples,
        partitioner=partitioner)
  log = logging_utils.MetricsLog(model_dir, enabled=leader)
  last_eval: dict[str, dict[str, Any]] = {}

  def run_eval(step: int) -> None:
    nonlocal last_eval
    last_eval = evaluation.evaluate(trainable_lib.merge(state.trainable, frozen), step)
    log.write(step, "eval", evaluation_lib.flatten_metrics(last_eval))
    if leader:
      print(f"eval at step {step}: {_eval_summary(last_eval)}", file=sys.stderr,
            flush=True)

  def save() -> None:
    manager.save(state, frozen=frozen if save_frozen else None,
                 data_position=data_position, metadata=metadata)

  if evaluation is not None and evaluate_at_start and start_step == 0:
    run_eval(0)
  batches = data_lib.train_batches(mixture_or_task_name, task_feature_lengths, batch_size,
                                   seed, start_position=data_position)
  progress = logging_utils.Progress(train_steps, start_step, log_period)
  losses: list[tuple[int, float]] = []
  end_step = train_steps if stop_after_steps is None else min(train_steps,
                                                              start_step + stop_after_steps)
  try:
    for step in range(start_step + 1, end_step + 1):
      batch = partitioner.shard_batch(next(batches))
      state, metrics = step_fn(state, frozen, batch, dropout_rng)
      data_position += 1
      metrics = partitioning.fetch(metrics)
      loss = float(metrics["loss"])
      if not bool(metrics["finite"]):
        raise NonFiniteLossError(
            f"loss became {loss} (or the updated parameters non-finite) at step {step}; "
            f"the last good checkpoint is kept in {model_dir}. Lower the learning rate or "
            "check the data, then rerun.")
      losses.append((step, loss))
      if step % log_period == 0 or step == end_step:
        values = {k: float(v) for k, v in metrics.items() if k != "finite"}
        values["learning_rate"] = float(
            learning_rate(step) if callable(learning_rate) else learning_rate)
        log.write(step, "train", values)
      if leader:
        progress.update(step, {"loss": loss})
      if step % checkpoint_period == 0 or step == train_steps:
        save()
      if evaluation is not None and (step % eval_period == 0 or step == train_steps):
        run_eval(step)
    if end_step < train_steps and _host_int(state.step) % checkpoint_period:
      save()  # A time-sliced run leaves a checkpoint where it stopped.
  finally:
    progress.close()
    manager.wait()
    log.close()
  manager.close()
  return TrainResult(step=_host_int(state.step),
                     params=trainable_lib.merge(state.trainable, frozen),
                     trainable=state.trainable, last_eval=last_eval, losses=losses)
