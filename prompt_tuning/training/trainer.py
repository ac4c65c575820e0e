"""The training loop: data, jitted step, checkpoints, evaluation, logs, NaN guard.

Same code for prompt tuning (trainable `.*prompt.*`), model tuning and LM adaptation
(trainable `.*`). A run is resumable: starting it again with the same MODEL_DIR
continues from the newest good checkpoint, and (same seed, same data order, dropout
keyed by step) ends with the same parameters, bit for bit, as an uninterrupted run
(docs/design.md, "Training loop").

Everything runs on one device mesh (`partitioning.Partitioner`): the frozen backbone is
split T5X-style over the "model" axis, the trainable parameters and their optimiser
state follow the same logical axis rules (the prompt is replicated), each process feeds
its own rows of the global batch, and the step is jitted with those shardings. One
device is the 1x1 case of the same code. Checkpoints restore onto whatever mesh the
resumed run uses.

Evaluation lives a layer above training, so `train` takes it as a factory
(`evaluation_factory`); the command line passes `prompt_tuning.evaluation`'s.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
from typing import Any, Callable, Iterator, Mapping, NamedTuple

import gin
import jax
import optax
from absl import logging

from prompt_tuning import errors, models, tree
from prompt_tuning.convert import runs
from prompt_tuning.t5 import network
from prompt_tuning.training import checkpoints as checkpoints_lib
from prompt_tuning.training import data as data_lib
from prompt_tuning.training import fingerprint
from prompt_tuning.training import initialization
from prompt_tuning.training import logging_utils
from prompt_tuning.training import optimizers
from prompt_tuning.training import partitioning
from prompt_tuning.training import settings
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
  return "; ".join(
    f"{task}: " + ", ".join(f"{k}={v:.2f}" for k, v in values.items() if isinstance(v, float))
    for task, values in metrics.items()
  )


def _flat_logical_axes(module: network.Transformer) -> dict[str, Any]:
  return tree.flatten(
    network.logical_axes(
      module.config,
      module.input_prompt,
      getattr(module, "layer_prefix", None),
      getattr(module, "head_factory", None),
    )
  )


def parameter_shardings(
  partitioner: partitioning.Partitioner,
  module: network.Transformer,
  params: Any,
  *,
  axes: Mapping[str, Any] | None = None,
) -> Any:
  """NamedShardings for `params` (all of `module`'s parameters or a subset, e.g. the
  frozen half), from the logical axis names the module gives each parameter (`axes`:
  those names, flattened, when already at hand)."""
  axes = _flat_logical_axes(module) if axes is None else axes
  names = tree.flatten(params)
  unknown = sorted(set(names) - set(axes))
  if unknown:
    raise ValueError(f"parameters not in the model: {', '.join(unknown[:5])}")
  return partitioner.param_shardings(tree.unflatten({name: axes[name] for name in names}), params)


def place_params(
  partitioner: partitioning.Partitioner, module: network.Transformer, params: Any
) -> Any:
  """`params` (host or device arrays) laid out over the partitioner's mesh."""
  return partitioner.place(params, parameter_shardings(partitioner, module, params))


@dataclasses.dataclass
class PlacedRun:
  """A run laid out on the mesh: the frozen parameters and the train state with their
  shardings, the base fingerprint its checkpoints carry, and how far the data has been
  read. `state` is None until `resume_or_initialise`; `state_target` is its abstract
  (shapes, dtypes, shardings) to restore a checkpoint into."""

  partitioner: partitioning.Partitioner
  frozen: Any
  frozen_shardings: Any
  state_target: TrainState
  state_shardings: TrainState
  base_fingerprint: str
  state: TrainState | None = None
  data_position: int = 0

  @property
  def params(self) -> Any:
    return trainable_lib.merge(self.state.trainable, self.frozen)


def place_run(
  module: network.Transformer,
  partitioner: partitioning.Partitioner,
  optimizer: optax.GradientTransformation,
  rng: jax.Array,
  initial_checkpoint_path: str | None,
  trainable_regex: str,
  fresh_regex: str,
  frozen_dtype: str | None,
) -> tuple[PlacedRun, Any]:
  """The parameters read (or initialised), split, fingerprinted, the frozen half placed;
  returns the run and the host copy of the initial trainable parameters."""
  logging.info(
    "mesh: %d (data) x %d (model) devices over %d process(es)",
    partitioner.data_size,
    partitioner.model_size,
    jax.process_count(),
  )
  params = initialization.initial_params(module, rng, initial_checkpoint_path, fresh_regex)
  trainable, frozen = trainable_lib.split(params, trainable_regex)
  del params
  # Before placement: the host copies hash the same in every process and on any mesh.
  base_fingerprint = fingerprint.fingerprint_params(frozen) if frozen else ""
  if frozen_dtype:
    frozen = trainable_lib.cast(frozen, frozen_dtype)
  logging.info(
    "trainable parameters: %s (%d values); frozen: %d values",
    ", ".join(tree.names(trainable)),
    tree.count(trainable),
    tree.count(frozen),
  )
  axes = _flat_logical_axes(module)
  frozen_shardings = parameter_shardings(partitioner, module, frozen, axes=axes)
  trainable_shardings = parameter_shardings(partitioner, module, trainable, axes=axes)
  state_shardings = partitioner.train_state_shardings(optimizer, trainable, trainable_shardings)
  state_target = jax.tree.map(
    lambda shape, sharding: jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=sharding),
    jax.eval_shape(functools.partial(TrainState.create, optimizer=optimizer), trainable),
    state_shardings,
  )
  run = PlacedRun(
    partitioner=partitioner,
    frozen=partitioner.place(frozen, frozen_shardings),
    frozen_shardings=frozen_shardings,
    state_target=state_target,
    state_shardings=state_shardings,
    base_fingerprint=base_fingerprint,
  )
  return run, trainable


def resume_or_initialise(
  run: PlacedRun,
  trainable: Any,
  optimizer: optax.GradientTransformation,
  manager: checkpoints_lib.CheckpointManager,
  initial_checkpoint_path: str | None,
) -> None:
  """Sets `run.state` (and `run.data_position`) from the newest readable checkpoint in
  the manager's MODEL_DIR, refusing one trained on another frozen base; with no
  checkpoint, from `trainable` and a fresh optimiser state."""
  partitioner = run.partitioner
  if manager.latest_step() is None:
    # Made by a jitted function, the state owns its buffers: donating it to the train
    # step cannot delete an array that something else still holds.
    create = functools.partial(TrainState.create, optimizer=optimizer)
    trainable_shardings = run.state_shardings.trainable
    run.state = partitioner.partition(
      create, in_shardings=(trainable_shardings,), out_shardings=run.state_shardings
    )(partitioner.place(trainable, trainable_shardings))
    return
  # Read straight into this run's shardings, whatever mesh wrote the checkpoint.
  restored = manager.restore(run.state_target)
  if (restored.metadata or {}).get("base_fingerprint", "") != run.base_fingerprint:
    raise BaseCheckpointMismatchError(
      f"{manager.model_dir} holds a run trained on a different frozen model than "
      f"{initial_checkpoint_path!r}; use a new MODEL_DIR or the original checkpoint"
    )
  # A no-op when orbax placed the arrays as asked; jit refuses any other layout.
  run.state = partitioner.place(restored.state, run.state_shardings)
  run.data_position = restored.data_position or 0
  if logging_utils.is_leader():
    print(
      f"resumed from {manager.model_dir} at step {_host_int(run.state.step)} "
      f"({run.data_position} batches consumed)",
      file=sys.stderr,
      flush=True,
    )


class _Schedule(NamedTuple):
  """When the loop stops and what each step does: `end_step` is where this process stops
  (before `train_steps` in a time-sliced job), the periods say when a step logs, saves and
  evaluates."""

  train_steps: int
  end_step: int
  log_period: int
  checkpoint_period: int
  eval_period: int | None


@dataclasses.dataclass
class _Loop:
  """The steps from the run's current one to `end_step`: what a step writes (metrics,
  progress, checkpoints, evaluations) and when."""

  run: PlacedRun
  manager: checkpoints_lib.CheckpointManager
  evaluation: Any | None
  save_frozen: bool
  learning_rate: float | Callable[[int], float]
  schedule: _Schedule
  metadata: dict[str, Any]
  log: logging_utils.MetricsLog
  last_eval: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
  losses: list[tuple[int, float]] = dataclasses.field(default_factory=list)
  saving: int | None = None  # The step of a checkpoint write not yet known to be done.

  def save(self) -> None:
    # Orbax writes in the background; until a wait returns, this step may be incomplete.
    self.saving = _host_int(self.run.state.step)
    self.manager.save(
      self.run.state,
      frozen=self.run.frozen if self.save_frozen else None,
      data_position=self.run.data_position,
      metadata=self.metadata,
    )

  def _divergence(self, step: int, loss: float) -> str:
    """The NaN guard's message: the value it saw, and what is on disk to go back to."""
    if math.isfinite(loss):
      seen = f"the updated parameters became non-finite at step {step} (loss {loss:.6g})"
    else:
      seen = f"loss became {loss} at step {step}"
    latest = self.manager.latest_step()
    if latest is None:
      kept = f"no checkpoint was saved in {self.manager.model_dir} yet"
    else:
      kept = f"the last good checkpoint, checkpoint_{latest}, is kept in {self.manager.model_dir}"
    return f"{seen}; {kept}. Lower the learning rate or check the data, then rerun."

  def evaluate(self, step: int) -> None:
    self.last_eval = self.evaluation.evaluate(self.run.params, step)
    self.log.write(step, "eval", logging_utils.flatten_metrics(self.last_eval))
    if logging_utils.is_leader():
      print(f"eval at step {step}: {_eval_summary(self.last_eval)}", file=sys.stderr, flush=True)

  def after_step(
    self, step: int, metrics: Mapping[str, Any], progress: logging_utils.Progress
  ) -> None:
    """The NaN guard, then the step's logs, checkpoint and evaluation."""
    loss = float(metrics["loss"])
    if not bool(metrics["finite"]):
      raise NonFiniteLossError(self._divergence(step, loss))
    self.losses.append((step, loss))
    # The summed loss follows each batch's token count; per token it is comparable.
    loss_per_token = loss / max(float(metrics["num_tokens"]), 1.0)
    if step % self.schedule.log_period == 0 or step == self.schedule.end_step:
      values = {k: float(v) for k, v in metrics.items() if k != "finite"}
      values["loss_per_token"] = loss_per_token
      values["learning_rate"] = float(
        self.learning_rate(step) if callable(self.learning_rate) else self.learning_rate
      )
      self.log.write(step, "train", values)
    progress.update(step, loss_per_token)
    if step % self.schedule.checkpoint_period == 0 or step == self.schedule.train_steps:
      self.save()
    if self.evaluation is not None and (
      step % self.schedule.eval_period == 0 or step == self.schedule.train_steps
    ):
      self.evaluate(step)

  def run_steps(
    self, step_fn: Callable[..., Any], batches: Iterator[dict[str, Any]], dropout_rng: jax.Array
  ) -> None:
    start_step = _host_int(self.run.state.step)
    progress = logging_utils.Progress(
      self.schedule.train_steps,
      start_step,
      self.schedule.log_period,
      enabled=logging_utils.is_leader(),
    )
    done = start_step
    interrupted = False
    try:
      for step in range(start_step + 1, self.schedule.end_step + 1):
        batch = self.run.partitioner.shard_batch(next(batches))
        self.run.state, metrics = step_fn(self.run.state, self.run.frozen, batch, dropout_rng)
        self.run.data_position += 1
        done = step  # Computed; a Ctrl-C while it logs or saves reports this step.
        self.after_step(step, partitioning.fetch(metrics), progress)
      if self.schedule.end_step < self.schedule.train_steps and (
        _host_int(self.run.state.step) % self.schedule.checkpoint_period
      ):
        self.save()  # A time-sliced run leaves a checkpoint where it stopped.
    except KeyboardInterrupt:
      # Ctrl-C: let a checkpoint being written finish (orbax renames a step only when it
      # is complete), then say where the run stopped and what a rerun resumes from.
      interrupted = True
      self.finish_saving(done, again=True)
      try:
        latest = self.manager.latest_step()  # Reads the newest checkpoints back.
      except KeyboardInterrupt:
        raise self._interrupted_saving(done, again=True) from None
      raise errors.TrainingInterrupted(done, latest, self.manager.model_dir) from None
    finally:
      progress.close()
      self.log.close()
      if not interrupted:  # Interrupted, the wait above happened (or was cut short).
        self.finish_saving(done, again=False)

  def finish_saving(self, step: int, *, again: bool) -> None:
    """Waits for the pending checkpoint write. A Ctrl-C during the wait (`again`: the
    second one, after the Ctrl-C that stopped the loop) raises SaveInterrupted, which says
    what is true then, instead of the bare KeyboardInterrupt's "before training
    started"."""
    try:
      self.manager.wait()
    except KeyboardInterrupt:
      raise self._interrupted_saving(step, again=again) from None
    self.saving = None

  def _interrupted_saving(self, step: int, *, again: bool) -> SaveInterrupted:
    model_dir = self.manager.model_dir
    finished = _finished_steps(model_dir, self.saving)
    return SaveInterrupted(step, self.saving, finished, model_dir, again=again)


def _finished_steps(model_dir: str, pending: int | None) -> list[int]:
  """The steps whose checkpoint directory has its final name, other than `pending`: orbax
  writes a step under a temporary name and renames it when complete. Listed without
  waiting for or reading anything, since whoever asks has pressed Ctrl-C twice."""
  try:
    return [step for step in runs.steps(model_dir) if step != pending]
  except OSError:
    return []


class SaveInterrupted(errors.TrainingInterrupted):
  """Ctrl-C while a checkpoint write was being finished (a second one, after the Ctrl-C
  that stopped the loop, or one during the run's last write): `saving` is the step being
  written, which may be incomplete, `finished` the steps complete on disk before it.

  A rerun never takes the incomplete step as complete: orbax renames a step directory
  only once it is whole, removes its temporaries when the next run starts, and the
  trainer resumes only from a checkpoint that reads back cleanly."""

  def __init__(
    self, step: int, saving: int | None, finished: list[int], model_dir: str, *, again: bool
  ) -> None:
    super().__init__(step, finished[-1] if finished else None, model_dir)
    self.saving = saving
    self.again = again

  def __str__(self) -> str:
    what = "interrupted again" if self.again else "interrupted"
    if self.saving is None:
      # The write had finished; the Ctrl-C came while the checkpoints were read back.
      return super().__str__().replace("interrupted", what, 1)
    pending = f"checkpoint_{self.saving}"
    if self.checkpoint_step is None:
      resume = (
        f"no checkpoint was complete before it in {self.model_dir}, so it starts from "
        f"step 0 (or from {pending} if its write had finished)"
      )
    else:
      resume = (
        f"it continues from the last complete checkpoint, checkpoint_{self.checkpoint_step} "
        f"in {self.model_dir} (or from {pending} if its write had finished)"
      )
    return (
      f"{what} at step {self.step} while {pending} was being saved; {pending} may be "
      "incomplete and is never taken as a complete checkpoint; rerun the same command to "
      f"resume ({resume})"
    )


def validate_settings(
  *,
  train_steps: Any,
  task_feature_lengths: Any,
  batch_size: Any,
  model_dir: Any,
  checkpoint_period: Any,
  eval_period: Any,
  log_period: Any,
  keep_checkpoints: Any,
  num_microbatches: Any,
  stop_after_steps: Any,
  eval_batch_size: Any = None,
  num_eval_examples: Any = None,
) -> None:
  """Refuses settings that cannot train before anything is loaded or compiled: a run of
  0 steps would exit 0 having trained nothing, a period of 0 divides by zero at step 1,
  an input length of 0 trains on empty inputs. The checks are `settings`', which
  `eval` and `infer` use too."""
  settings.positive("TRAIN_STEPS", train_steps)
  settings.positive("BATCH_SIZE", batch_size)
  settings.positive("CHECKPOINT_PERIOD", checkpoint_period)
  settings.positive("EVAL_PERIOD", eval_period, optional=True)
  settings.positive("trainer.train.log_period", log_period)
  settings.positive("trainer.train.keep_checkpoints", keep_checkpoints, optional=True)
  settings.positive("trainer.train.num_microbatches", num_microbatches)
  settings.positive("trainer.train.stop_after_steps", stop_after_steps, optional=True)
  settings.positive("trainer.train.eval_batch_size", eval_batch_size, optional=True)
  settings.positive("trainer.train.num_eval_examples", num_eval_examples, optional=True)
  settings.feature_lengths(task_feature_lengths)
  # Created now: the run fills it anyway, and a failed write probe is found at once.
  settings.writable_directory("MODEL_DIR", model_dir, create=True)


def _fresh_regex(trainable_regex: str, fresh_regex: str | None) -> str:
  """The assignment map's default: what trains starts fresh, except in model tuning
  (`.*`), where everything comes from the checkpoint."""
  if fresh_regex is not None:
    return fresh_regex
  return trainable_regex if trainable_regex != ".*" else "(?!)"


@gin.configurable
@checkpoints_lib.holding_model_dir_lock
def train(
  *,
  model: models.EncoderDecoderModel = gin.REQUIRED,
  mixture_or_task_name: str = gin.REQUIRED,
  task_feature_lengths: Mapping[str, int] = gin.REQUIRED,
  train_steps: int = gin.REQUIRED,
  batch_size: int = gin.REQUIRED,
  model_dir: str = gin.REQUIRED,
  initial_checkpoint_path: str | None = None,
  trainable_regex: str = trainable_lib.DEFAULT_TRAINABLE,
  fresh_regex: str | None = None,
  optimizer_factory: Callable[..., optax.GradientTransformation] = (optimizers.adafactor),
  learning_rate: float | Callable[[int], float] = 0.3,
  seed: int = 0,
  eval_period: int | None = 1000,
  checkpoint_period: int = 1000,
  keep_checkpoints: int | None = 3,
  save_full_checkpoints: bool = False,
  eval_mixture_or_task_name: str | None = None,
  eval_batch_size: int | None = None,
  eval_split: str = "validation",
  num_eval_examples: int | None = None,
  evaluate_at_start: bool = False,
  frozen_dtype: str | None = None,
  num_microbatches: int = 1,
  log_period: int = 50,
  stop_after_steps: int | None = None,
  partitioner: partitioning.Partitioner | None = None,
  evaluation_factory: Callable[..., Any] | None = None,
) -> TrainResult:
  """Trains `model` on a seqio task/mixture and writes everything under `model_dir`.

  `fresh_regex` (the assignment map) names the parameters initialised fresh instead of
  read from `initial_checkpoint_path`; it defaults to `trainable_regex`, except for
  model tuning (`.*`) where everything comes from the checkpoint when one is given.
  `stop_after_steps` ends this process early (for tests and time-sliced jobs); the
  schedule still targets `train_steps`. `partitioner` lays out the mesh (default: every
  device splits the batch; see `partitioning.Partitioner.for_batch`); `batch_size` is
  global, each of the job's processes reads `batch_size / process_count` rows.
  `evaluation_factory(model, mixture_or_task_name, task_feature_lengths, batch_size, *,
  split, num_examples, partitioner, summary_dir)` builds an object whose `evaluate(params, step)`
  returns {task: {metric: value}}; every `eval_period` steps it runs. Without a factory
  (None) no evaluation runs, whatever `eval_period` says.
  """
  validate_settings(
    train_steps=train_steps,
    task_feature_lengths=task_feature_lengths,
    batch_size=batch_size,
    model_dir=model_dir,
    checkpoint_period=checkpoint_period,
    eval_period=eval_period,
    log_period=log_period,
    keep_checkpoints=keep_checkpoints,
    num_microbatches=num_microbatches,
    stop_after_steps=stop_after_steps,
    eval_batch_size=eval_batch_size,
    num_eval_examples=num_eval_examples,
  )
  initialization.check_task_vocabularies(mixture_or_task_name, model.module.config.vocab_size)
  initialization.check_head_task(mixture_or_task_name, model.module)
  base = initial_checkpoint_path
  optimizer = optimizer_factory(learning_rate=learning_rate)
  partitioner = (partitioner or partitioning.Partitioner()).for_batch(batch_size, num_microbatches)
  init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(seed))
  fresh = _fresh_regex(trainable_regex, fresh_regex)
  if fresh_regex is None:
    fresh = trainable_lib.with_head(fresh, model.module)
  trainable_regex = trainable_lib.with_head(trainable_regex, model.module)
  run, trainable = place_run(
    model.module, partitioner, optimizer, init_rng, base, trainable_regex, fresh, frozen_dtype
  )
  # When everything trains (model tuning, LM adaptation) the state already holds the
  # whole model; a separate frozen item exists only when something is frozen.
  save_frozen = save_full_checkpoints and bool(jax.tree.leaves(run.frozen))
  manager = checkpoints_lib.CheckpointManager(
    model_dir, keep=keep_checkpoints, save_full=save_frozen
  )
  resume_or_initialise(run, trainable, optimizer, manager, base)
  del trainable
  start_step = _host_int(run.state.step)
  end_step = train_steps if stop_after_steps is None else start_step + stop_after_steps
  evaluation = None
  if eval_period and evaluation_factory is not None:
    eval_task, eval_rows = eval_mixture_or_task_name or mixture_or_task_name, eval_batch_size
    evaluation = evaluation_factory(
      model,
      eval_task,
      task_feature_lengths,
      eval_rows or batch_size,
      split=eval_split,
      num_examples=num_eval_examples,
      partitioner=partitioner,
      summary_dir=os.path.join(model_dir, "train"),
    )
  loop = _Loop(
    run,
    manager,
    evaluation,
    save_frozen,
    learning_rate,
    _Schedule(train_steps, min(train_steps, end_step), log_period, checkpoint_period, eval_period),
    metadata=dict(
      base_checkpoint=base or "",
      base_fingerprint=run.base_fingerprint,
      trainable_regex=trainable_regex,
      mixture_or_task_name=mixture_or_task_name,
      seed=seed,
      train_steps=train_steps,
    ),
    log=logging_utils.MetricsLog(model_dir, enabled=logging_utils.is_leader()),
  )
  if evaluation is not None and evaluate_at_start and start_step == 0:
    loop.evaluate(0)
  train_step = make_train_step(model, optimizer, num_microbatches)
  step_fn = partitioner.partition_train_step(train_step, run.state_shardings, run.frozen_shardings)
  batches = data_lib.train_batches(
    mixture_or_task_name,
    task_feature_lengths,
    batch_size,
    seed,
    start_position=run.data_position,
    rows=partitioner.process_rows(batch_size),
  )
  loop.run_steps(step_fn, batches, partitioner.place(dropout_rng, partitioner.replicated))
  manager.close()
  return TrainResult(
    step=_host_int(run.state.step),
    params=run.params,
    trainable=run.state.trainable,
    last_eval=loop.last_eval,
    losses=loop.losses,
  )
