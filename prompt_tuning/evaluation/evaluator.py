"""The one evaluation path: `seqio.Evaluator`, handed model functions that batch its
cached datasets through the jitted model (docs/design.md, "Evaluation").

seqio owns everything after the model: decoding tokens to text, the task's
postprocessor, the metric functions. The model comes in only through a predict_fn /
score_fn, built here from a jitted model function (`on_mesh`) run over fixed-size
batches (`batches`), or through outputs computed before (`cached_outputs`, how the
prompt ensemble scores each prompt's share of one decode). The periodic evaluation
during training, `prompt-tuning eval` and the ensemble all go through `SeqioEvaluation`.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Iterator, Mapping, Sequence

import gin
import jax
from absl import logging
import numpy as np
import seqio
import tensorflow as tf

from prompt_tuning import models
from prompt_tuning.training import data as data_lib
from prompt_tuning.training import buckets as buckets_lib
from prompt_tuning.training import logging_utils, partitioning

# What the model reads of a batch; `prompt_ids` only exists when a prompt table picks
# each row's prompt (ensembles, serving).
MODEL_FEATURES = (
  "encoder_input_tokens",
  "decoder_input_tokens",
  "decoder_target_tokens",
  "decoder_loss_weights",
  "label_ids",
  "prompt_ids",
)

# How many decoded examples of each task an evaluation shows in TensorBoard by default.
SUMMARY_EXAMPLES = 3
# Longer inputs are cut in the text summary (a TensorBoard text card is not a reader).
_SUMMARY_INPUT_CHARS = 400

# (example index, model output) per example: what seqio's model functions return.
Outputs = list[tuple[int, Any]]
# `run(params, batch) -> host array [batch, ...]`.
ModelFn = Callable[[Any, Mapping[str, np.ndarray]], np.ndarray]


def model_batch(features: Mapping[str, Any], batch_size: int) -> tuple[dict[str, np.ndarray], int]:
  """The model's features of up to `batch_size` rows, padded with zero rows to
  `batch_size` so that every call has one compiled shape; and how many rows are real."""
  batch = {k: np.asarray(features[k]) for k in MODEL_FEATURES if k in features}
  return data_lib.pad_batch(batch, batch_size)


def batches(
  dataset: tf.data.Dataset,
  batch_size: int,
  encoder_buckets: Sequence[int] | None = None,
  decoder_buckets: Sequence[int] | None = None,
) -> Iterator[tuple[list[int], dict[str, np.ndarray], int]]:
  """(example indices, padded batch, real rows) over one of seqio's enumerated datasets.

  With `encoder_buckets` the examples are grouped by the bucket of their input length
  (in order within a bucket, buckets shortest first) and each batch is cut to its bucket
  (training/buckets.py); `decoder_buckets` cuts the decoder features the same way, for
  scoring (decoding keeps the target length: it is the decode budget). The indices say
  which example each output belongs to, which is all seqio needs to restore its order.
  """
  if encoder_buckets is None:
    for indices, features in dataset.batch(batch_size).as_numpy_iterator():
      batch, rows = model_batch(features, batch_size)
      yield np.asarray(indices)[:rows].tolist(), batch, rows
    return
  examples = list(dataset.as_numpy_iterator())
  if not examples:
    return
  lengths = buckets_lib.real_lengths(np.stack([f["encoder_input_tokens"] for _, f in examples]))
  for members in buckets_lib.group(lengths, encoder_buckets).values():
    for start in range(0, len(members), batch_size):
      chunk = [examples[i] for i in members[start : start + batch_size]]
      features = {k: np.stack([f[k] for _, f in chunk]) for k in chunk[0][1]}
      batch, rows = model_batch(features, batch_size)
      batch = buckets_lib.trim(batch, encoder_buckets, decoder_buckets)
      yield [int(index) for index, _ in chunk], batch, rows


def on_mesh(fn: Callable[..., Any], partitioner: partitioning.Partitioner | None = None) -> ModelFn:
  """`fn(params, batch)` jitted once, returning host arrays.

  With a partitioner the call runs on its mesh: the parameters stay sharded as they are,
  a batch that every process holds whole is split over "data" (replicated when its rows
  do not divide), the activations follow the logical axis rules, and the outputs come
  back whole in every process (gathered when they span several), so every process must
  make the same calls. Without one it runs wherever the parameters are.
  """
  jitted = jax.jit(fn)
  if partitioner is None:
    return lambda params, batch: np.asarray(jitted(params, batch))

  def run(params: Any, batch: Mapping[str, np.ndarray]) -> np.ndarray:
    with partitioner.activate():  # Tracing must see the mesh and the rules.
      return partitioning.fetch(jitted(params, partitioner.shard_replicated_batch(batch)))

  return run


def seqio_model_fn(
  run: ModelFn,
  params: Any,
  batch_size: int,
  encoder_buckets: Sequence[int] | None = None,
  decoder_buckets: Sequence[int] | None = None,
) -> Callable[..., Outputs]:
  """A seqio predict_fn / score_fn: `run` over the dataset in batches of `batch_size`,
  cut to length buckets when given (see `batches`)."""

  def model_fn(dataset: tf.data.Dataset, model_feature_shapes: Any = None) -> Outputs:
    del model_feature_shapes
    outputs: Outputs = []
    for indices, batch, rows in batches(dataset, batch_size, encoder_buckets, decoder_buckets):
      outputs.extend(zip(indices, run(params, batch)[:rows].tolist()))
    return outputs

  return model_fn


def cached_outputs(outputs: Outputs) -> Callable[..., Outputs]:
  """A seqio predict_fn returning outputs computed before, for the one task evaluated."""

  def model_fn(dataset: tf.data.Dataset, model_feature_shapes: Any = None) -> Outputs:
    del dataset, model_feature_shapes
    return list(outputs)

  return model_fn


def plain_number(value: Any) -> float | Any:
  """seqio's metric values (seqio/clu objects holding `.value`) as floats, for logs,
  tables and JSON; anything that is not a number is kept as it is."""
  value = getattr(value, "value", value)
  try:
    return float(value)
  except (TypeError, ValueError):
    return value


class _PredictionLog(seqio.Logger):
  """Keeps, per task, the postprocessed predictions seqio's metrics were computed on:
  seqio's own decoding and postprocessing, so an ensemble votes on what was scored."""

  def __init__(self, output_dir: str):
    super().__init__(output_dir)
    self.predictions: dict[str, list[Any]] = {}

  def __call__(
    self,
    task_name: str,
    step: int | None,
    metrics: Mapping[str, Any],
    dataset: tf.data.Dataset | None,
    inferences: Mapping[str, Any] | None,
    targets: Any,
  ) -> None:
    del step, metrics, dataset, targets
    self.predictions[task_name] = list((inferences or {}).get("prediction", []))


def _text(value: Any) -> str:
  return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _decoded(example: Mapping[str, Any], feature: str, vocabulary: Any) -> str | None:
  """An example's feature as text: `FEATURE_pretokenized` where the task's preprocessors
  keep it, else its tokens decoded; None if the example has neither."""
  if f"{feature}_pretokenized" in example:
    return _text(example[f"{feature}_pretokenized"])
  if feature in example:
    return vocabulary.decode([int(t) for t in np.asarray(example[feature]).tolist()])
  return None


def first_examples(
  task_name: str, dataset: tf.data.Dataset, count: int
) -> list[tuple[str, str | None]]:
  """(input, target) text of the first `count` examples of a task's evaluation dataset,
  the inputs cut to a few hundred characters."""
  features = seqio.get_mixture_or_task(task_name).output_features
  rows = []
  for example in dataset.take(count).as_numpy_iterator():
    text = _decoded(example, "inputs", features["inputs"].vocabulary) or ""
    if len(text) > _SUMMARY_INPUT_CHARS:
      text = text[:_SUMMARY_INPUT_CHARS] + " ..."
    target_vocabulary = features["targets"].vocabulary if "targets" in features else None
    rows.append((text, _decoded(example, "targets", target_vocabulary)))
  return rows


def example_lines(examples: list[tuple[str, str | None]], outputs: list[Any]) -> list[str]:
  """ "input -> prediction (target)" per example (no parenthesis without a target): what
  TensorBoard shows of an evaluation's decodes."""
  lines = []
  for (text, target), output in zip(examples, outputs):
    lines.append(f"{text} -> {_text(output)}" + (f" ({target})" if target is not None else ""))
  return lines


class _ExampleSummaries(seqio.Logger):
  """seqio's logger hook, writing each evaluation's first decoded examples of every task
  (and any text metric a task computes) as TensorBoard text summaries with clu's writer,
  into the directory of the training scalars, so TensorBoard shows them side by side.

  Tags: `eval/TASK/examples` and `eval/TASK/METRIC`, the scalars' `eval/TASK/METRIC`
  naming. Only process 0 is given one (see `SeqioEvaluation`)."""

  def __init__(self, output_dir: str, max_examples: int = SUMMARY_EXAMPLES):
    super().__init__(output_dir)
    self.max_examples = max_examples
    self._writer: Any = None

  def __call__(
    self,
    task_name: str,
    step: int | None,
    metrics: Mapping[str, Any],
    dataset: tf.data.Dataset | None,
    inferences: Mapping[str, Any] | None,
    targets: Any,
  ) -> None:
    texts = {
      f"eval/{task_name}/{name}": value.textdata
      for name, value in metrics.items()
      if isinstance(value, seqio.metrics.Text)
    }
    del targets  # Postprocessed (a label's index); the dataset has the target's text.
    inferences = inferences or {}
    # The decoded text before the task's postprocessor where seqio keeps it; else the
    # postprocessed prediction; rank-classification tasks have only scores.
    outputs = inferences.get("output") or inferences.get("prediction") or inferences.get("score")
    if self.max_examples and outputs and dataset is not None:
      examples = first_examples(task_name, dataset, self.max_examples)
      lines = example_lines(examples, list(outputs))
      # Markdown: a blank line between examples keeps them on separate lines.
      texts[f"eval/{task_name}/examples"] = "\n\n".join(lines)
    if not texts:
      return
    if self._writer is None:
      self._writer = logging_utils.summary_writer(self.output_dir)
    self._writer.write_texts(0 if step is None else int(step), texts)
    self._writer.flush()


class SeqioEvaluation:
  """`seqio.Evaluator` over a task's or mixture's examples, read and converted once:
  each `run` takes model functions and returns {task: {metric: plain number}}."""

  def __init__(
    self,
    mixture_or_task_name: str,
    task_feature_lengths: Mapping[str, int],
    split: str = "validation",
    num_examples: int | None = None,
    *,
    summary_dir: str | None = None,
    summary_examples: int = SUMMARY_EXAMPLES,
  ):
    if isinstance(summary_examples, bool) or not isinstance(summary_examples, int):
      raise ValueError(f"summary_examples must be an integer >= 0, got {summary_examples!r}")
    if summary_examples < 0:
      raise ValueError(f"summary_examples must be an integer >= 0, got {summary_examples}")
    loggers: tuple[Any, ...] = (_PredictionLog,)
    # Process 0 alone writes TensorBoard files; every process evaluates the same way.
    if summary_dir and logging_utils.is_leader():
      loggers += (functools.partial(_ExampleSummaries, max_examples=summary_examples),)
    # seqio insists on a log directory for any logger; the prediction log writes nothing.
    self.evaluator = seqio.Evaluator(
      mixture_or_task_name,
      data_lib.feature_converter(mixture_or_task_name),
      eval_split=split,
      sequence_length=dict(task_feature_lengths),
      num_examples=num_examples,
      use_memory_cache=True,
      async_compute_metrics=False,
      logger_cls=loggers,
      log_dir=summary_dir or os.devnull,
    )
    # Without any task to evaluate seqio stops before making its loggers.
    self._log = self.evaluator.loggers[0] if self.evaluator.eval_tasks else None

  @property
  def datasets(self) -> Mapping[str, tf.data.Dataset]:
    """{task: enumerated model features}, the datasets the model functions receive."""
    return self.evaluator.cached_model_datasets if self._log is not None else {}

  @property
  def predictions(self) -> dict[str, list[Any]]:
    """{task: postprocessed predictions} of the last run, in the datasets' order."""
    return dict(self._log.predictions) if self._log is not None else {}

  def run(
    self,
    *,
    predict_fn: Callable[..., Outputs] | None = None,
    score_fn: Callable[..., Outputs] | None = None,
    step: int | None = None,
  ) -> dict[str, dict[str, Any]]:
    metrics, _ = self.evaluator.evaluate(
      compute_metrics=True, step=step, predict_fn=predict_fn, score_fn=score_fn
    )
    return {
      task: {name: plain_number(value) for name, value in task_metrics.items()}
      for task, task_metrics in (metrics.result() or {}).items()
    }


class Evaluation:
  """A task's or mixture's metrics for given parameters.

  `predict_fn(params, batch) -> tokens [batch, length]` and `score_fn(params, batch) ->
  [batch]` are the model's functions, jitted once here (on the partitioner's mesh when
  one is given), so evaluating every `eval_period` steps compiles once per length bucket
  (`length_buckets`, see `build_evaluation`), at most len(buckets) shapes. With a
  `summary_dir`, process 0 writes each evaluation's first `summary_examples` decoded
  examples of every task there as TensorBoard text.
  """

  def __init__(
    self,
    mixture_or_task_name: str,
    task_feature_lengths: Mapping[str, int],
    batch_size: int,
    predict_fn: Callable[..., Any],
    score_fn: Callable[..., Any],
    *,
    split: str = "validation",
    num_examples: int | None = None,
    partitioner: partitioning.Partitioner | None = None,
    summary_dir: str | None = None,
    summary_examples: int = SUMMARY_EXAMPLES,
    length_buckets: str | Sequence[int] | None = buckets_lib.AUTO,
  ):
    self.batch_size = batch_size
    self.encoder_buckets = buckets_lib.resolve(length_buckets, task_feature_lengths["inputs"])
    self.decoder_buckets = buckets_lib.resolve(length_buckets, task_feature_lengths["targets"])
    self.seqio = SeqioEvaluation(
      mixture_or_task_name,
      task_feature_lengths,
      split,
      num_examples,
      summary_dir=summary_dir,
      summary_examples=summary_examples,
    )
    self._predict = self._counting("predict", on_mesh(predict_fn, partitioner))
    self._score = self._counting("score", on_mesh(score_fn, partitioner))
    # (function, encoder length, decoder length) of every batch shape run so far: each is
    # one compilation, bounded by the buckets.
    self.shapes: set[tuple[str, int, int]] = set()

  def _counting(self, name: str, run: ModelFn) -> ModelFn:
    def counted(params: Any, batch: Mapping[str, np.ndarray]) -> np.ndarray:
      # A head task's batch has labels instead of decoder targets.
      targets = batch.get("decoder_target_tokens", batch.get("label_ids"))
      shape = (name, batch["encoder_input_tokens"].shape[1], targets.shape[1])
      if shape not in self.shapes:
        self.shapes.add(shape)
        logging.info("evaluation: compiling %s for inputs %d, targets %d", *shape)
      return run(params, batch)

    return counted

  @property
  def predictions(self) -> dict[str, list[Any]]:
    """{task: postprocessed predictions} of the last `evaluate`."""
    return self.seqio.predictions

  def evaluate(self, params: Any, step: int | None = None) -> dict[str, dict[str, Any]]:
    """{task: {metric: value}} for every task with metrics and the split."""
    # Decoding keeps the target length (the decode budget); scoring cuts both sides.
    predict = seqio_model_fn(self._predict, params, self.batch_size, self.encoder_buckets)
    score = seqio_model_fn(
      self._score, params, self.batch_size, self.encoder_buckets, self.decoder_buckets
    )
    return self.seqio.run(predict_fn=predict, score_fn=score, step=step)


@gin.configurable(denylist=["model", "partitioner"])
def build_evaluation(
  model: models.EncoderDecoderModel,
  mixture_or_task_name: str,
  task_feature_lengths: Mapping[str, int],
  batch_size: int,
  *,
  split: str = "validation",
  num_examples: int | None = None,
  partitioner: partitioning.Partitioner | None = None,
  summary_dir: str | None = None,
  summary_examples: int = SUMMARY_EXAMPLES,
  length_buckets: str | Sequence[int] | None = buckets_lib.AUTO,
) -> Evaluation:
  """The model's evaluation on a task or mixture: what `trainer.train` runs every
  `eval_period` steps (its `evaluation_factory`) and `prompt-tuning eval` runs once.
  With a partitioner the model functions run on its mesh; every process reads the same
  examples and gets the same metrics.

  summary_dir: where process 0 writes the decoded examples as TensorBoard text, e.g.
    `MODEL_DIR/train` beside the training and evaluation scalars (docs/training.md);
    None writes none.
  length_buckets: "auto" (default: powers of two from 64 up to each feature length), a
    list of lengths, or None for every batch at the full feature lengths
    (training/buckets.py); the metrics are the same either way.
  """
  return Evaluation(
    mixture_or_task_name,
    task_feature_lengths,
    batch_size,
    model.predict_batch,
    model.score_batch,
    split=split,
    num_examples=num_examples,
    partitioner=partitioner,
    summary_dir=summary_dir,
    summary_examples=summary_examples,
    length_buckets=length_buckets,
  )
