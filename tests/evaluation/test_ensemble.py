"""Prompt ensembling: N prompts in one forward pass, per-prompt metrics as if each prompt
ran alone through seqio's evaluator, and the majority vote; the same on a sharded mesh
as on one device."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from prompt_tuning import models
from prompt_tuning.data import demo, metrics
from prompt_tuning.evaluation import ensemble, evaluator
from prompt_tuning.prompts import Prompt
from prompt_tuning.t5 import T5Config, Transformer, init_params
from prompt_tuning.training import partitioning

CFG = T5Config.from_size("tiny", vocab_size=demo.demo_vocab_size())
LENGTHS = {"inputs": 24, "targets": 4}
NUM_PROMPTS, PROMPT_LENGTH, BATCH, EXAMPLES = 3, 3, 4, 6


def test_majority_vote_hand_made_case():
  predictions = [
    [1, 0, 1, 2, {"a": 1}],  # prompt 0
    [1, 1, 0, 1, {"a": 2}],  # prompt 1
    [0, 1, 2, 0, {"a": 2}],  # prompt 2
  ]
  # Column 0: 1 wins 2-1. Column 1: 1 wins 2-1. Columns 2 and 3: three-way ties go to
  # prompt 0. Column 4: unhashable values still count, {"a": 2} wins 2-1.
  assert ensemble.majority_vote(predictions) == [1, 1, 1, 2, {"a": 2}]
  assert ensemble.majority_vote([[0, 1], [1, 1]]) == [0, 1]  # 1-1 tie: prompt 0.
  with pytest.raises(ValueError, match="one prediction per example"):
    ensemble.majority_vote([[0, 1], [1]])
  with pytest.raises(ValueError, match="at least one prompt"):
    ensemble.majority_vote([])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  base = init_params(CFG, jax.random.PRNGKey(0))
  rng = np.random.RandomState(0)
  folder = tmp_path_factory.mktemp("prompts")
  paths = []
  for k in range(NUM_PROMPTS):
    paths.append(str(folder / f"prompt_{k}.npy"))
    np.save(paths[-1], rng.uniform(-3, 3, (PROMPT_LENGTH, CFG.emb_dim)).astype(np.float32))
  plain = models.EncoderDecoderModel(
    Transformer(CFG, input_prompt=functools.partial(Prompt, length=PROMPT_LENGTH))
  )
  return plain, base, paths


def _record_batch_specs(monkeypatch):
  """The PartitionSpec each ensemble batch is placed with, one per model call."""
  specs = []
  real = partitioning.Partitioner.shard_replicated_batch

  def recording(self, batch):
    placed = real(self, batch)
    specs.append(placed["encoder_input_tokens"].sharding.spec)
    return placed

  monkeypatch.setattr(partitioning.Partitioner, "shard_replicated_batch", recording)
  return specs


def _record_model_calls(monkeypatch):
  """(rows, tokens, prompt_ids or None) of every model call made through
  `evaluator.on_mesh`, the ensemble's and the single-prompt evaluation's alike."""
  calls = []
  real = evaluator.on_mesh

  def recording(fn, partitioner=None):
    run = real(fn, partitioner)

    def call(params, batch):
      out = run(params, batch)
      ids = batch.get("prompt_ids")
      calls.append(
        (
          batch["encoder_input_tokens"].shape[0],
          np.asarray(out),
          None if ids is None else np.asarray(ids),
        )
      )
      return out

    return call

  monkeypatch.setattr(evaluator, "on_mesh", recording)
  return calls


def test_one_forward_per_batch_and_metrics_match_separate_runs(setup, monkeypatch):
  """On a 2x4 mesh (N·B = 12 rows over 2 data shards, the backbone split over 4) against
  each prompt alone through seqio's evaluator on one device."""
  plain, base, paths = setup
  calls = _record_model_calls(monkeypatch)
  specs = _record_batch_specs(monkeypatch)
  results = ensemble.evaluate_ensemble(
    plain,
    base,
    paths,
    demo.SENTIMENT_TASK,
    LENGTHS,
    BATCH,
    num_examples=EXAMPLES,
    partitioner=partitioning.Partitioner(mesh_shape=(2, 4)),
  )
  summary = results[demo.SENTIMENT_TASK]
  # ceil(6 / 4) = 2 calls, each with N·B rows, prompt-major, split over "data".
  assert [rows for rows, _, _ in calls] == [NUM_PROMPTS * BATCH] * 2
  np.testing.assert_array_equal(calls[0][2], np.repeat(np.arange(NUM_PROMPTS), BATCH))
  assert specs == [PartitionSpec("data")] * 2
  ensemble_calls = list(calls)

  evaluation = evaluator.Evaluation(
    demo.SENTIMENT_TASK,
    LENGTHS,
    BATCH,
    plain.predict_batch,
    plain.score_batch,
    num_examples=EXAMPLES,
  )
  for k, path in enumerate(paths):
    params = {**base, "encoder": {**base["encoder"], "prompt": {"prompt": np.load(path)}}}
    start = len(calls)
    separate = evaluation.evaluate(params)[demo.SENTIMENT_TASK]
    assert summary["prompts"][k] == separate
    assert summary["predictions"][k] == evaluation.predictions[demo.SENTIMENT_TASK]
    # Same decoded tokens as the prompt alone: rows k·B.. of each ensemble call.
    alone = np.concatenate([out for _, out, _ in calls[start:]])
    together = np.concatenate([out[k * BATCH : (k + 1) * BATCH] for _, out, _ in ensemble_calls])
    np.testing.assert_array_equal(alone[:EXAMPLES], together[:EXAMPLES])

  accuracies = [m["accuracy"] for m in summary["prompts"]]
  assert summary["mean"]["accuracy"] == pytest.approx(np.mean(accuracies))
  assert summary["best"]["accuracy"] == max(accuracies)
  assert summary["best_prompt"]["accuracy"] == int(np.argmax(accuracies))
  voted = ensemble.majority_vote(summary["predictions"])
  assert summary["majority_vote_predictions"] == voted
  targets = [demo.DEMO_LABELS.index(label) for label in _validation_labels(EXAMPLES)]
  assert summary["majority_vote"] == metrics.accuracy(targets, voted)


def test_ensemble_on_8x1_mesh_matches_one_device(setup, monkeypatch):
  """Two prompts: N·B = 8 rows, one per data shard of the 8x1 mesh. The random model's
  postprocessed predictions are all invalid, so its decoded tokens are compared too."""
  plain, base, paths = setup
  tokens = {}
  real = evaluator.on_mesh

  def recording(fn, partitioner=None):
    predict, outputs = real(fn, partitioner), tokens.setdefault(partitioner.mesh.devices.shape, [])

    def run(params, batch):
      outputs.append(predict(params, batch))
      return outputs[-1]

    return run

  monkeypatch.setattr(evaluator, "on_mesh", recording)
  specs = _record_batch_specs(monkeypatch)
  sharded = ensemble.evaluate_ensemble(
    plain,
    base,
    paths[:2],
    demo.SENTIMENT_TASK,
    LENGTHS,
    BATCH,
    num_examples=EXAMPLES,
    partitioner=partitioning.Partitioner(mesh_shape=(8, 1)),
  )
  assert specs == [PartitionSpec("data")] * 2
  one_device = ensemble.evaluate_ensemble(
    plain,
    base,
    paths[:2],
    demo.SENTIMENT_TASK,
    LENGTHS,
    BATCH,
    num_examples=EXAMPLES,
    partitioner=partitioning.Partitioner(devices=jax.devices()[:1]),
  )
  assert sharded == one_device
  assert [len(p) for p in sharded[demo.SENTIMENT_TASK]["predictions"]] == [EXAMPLES] * 2
  on_mesh, alone = np.concatenate(tokens[(8, 1)]), np.concatenate(tokens[(1, 1)])
  np.testing.assert_array_equal(on_mesh, alone)
  assert (on_mesh[:BATCH] != on_mesh[BATCH : 2 * BATCH]).any()  # The prompts differ.


def _validation_labels(count):
  with open(demo.demo_data_path(demo.SENTIMENT_FILES["validation"])) as f:
    return [line.rstrip("\n").split("\t")[1] for line in f][:count]


def test_bad_inputs_are_clear_errors(setup, tmp_path):
  plain, base, paths = setup
  wide = str(tmp_path / "wide.npy")
  np.save(wide, np.zeros((PROMPT_LENGTH, CFG.emb_dim + 1), np.float32))
  with pytest.raises(ValueError, match="d_model"):
    ensemble.evaluate_ensemble(plain, base, [wide], demo.SENTIMENT_TASK, LENGTHS, BATCH)
  with pytest.raises(ValueError, match="score"):
    ensemble.evaluate_ensemble(
      plain, base, paths, demo.SENTIMENT_RANK_TASK, LENGTHS, BATCH, num_examples=2
    )


def test_metrics_vote_and_table_on_known_predictions(setup, monkeypatch):
  """The decoded outputs are replaced by label words: prompt 0 always wrong, prompt 1
  always "positive", prompt 2 always right, so every number is known in advance."""
  plain, base, paths = setup
  vocabulary = demo.get_demo_vocabulary()
  truth = [demo.DEMO_LABELS.index(label) for label in _validation_labels(EXAMPLES)]
  assert 0 < sum(truth) < EXAMPLES  # Both classes occur.

  def label_tokens(label_id):
    ids = vocabulary.encode(demo.DEMO_LABELS[label_id]) + [1]
    return ids + [0] * (LENGTHS["targets"] - len(ids))

  def rigged(fn, partitioner=None):
    del fn, partitioner
    seen = [0]

    def predict(params, batch):
      del params
      start, seen[0] = seen[0], seen[0] + BATCH
      rows = []
      for prompt_id, row in zip(
        batch["prompt_ids"], np.tile(np.arange(BATCH), NUM_PROMPTS) + start
      ):
        label = truth[row] if row < EXAMPLES else 0
        rows.append(label_tokens([1 - label, 1, label][prompt_id]))
      return np.array(rows, np.int32)

    return predict

  monkeypatch.setattr(evaluator, "on_mesh", rigged)
  results = ensemble.evaluate_ensemble(
    plain, base, paths, demo.SENTIMENT_TASK, LENGTHS, BATCH, num_examples=EXAMPLES
  )
  summary = results[demo.SENTIMENT_TASK]
  positive = 100.0 * sum(truth) / EXAMPLES
  assert [m["accuracy"] for m in summary["prompts"]] == [0.0, positive, 100.0]
  assert summary["mean"]["accuracy"] == pytest.approx((positive + 100.0) / 3)
  assert summary["best"] == {"accuracy": 100.0}
  assert summary["best_prompt"] == {"accuracy": 2}
  # Two of three prompts say "positive" on every example.
  assert summary["majority_vote_predictions"] == [1] * EXAMPLES
  assert summary["majority_vote"] == {"accuracy": positive}

  table = ensemble.format_table(results, paths).splitlines()
  assert table[:NUM_PROMPTS] == [f"prompt {k}: {path}" for k, path in enumerate(paths)]
  rows = {line.split("  ")[1].strip(): line.split()[-1] for line in table[NUM_PROMPTS + 2 :]}
  assert table[NUM_PROMPTS + 1].split() == [demo.SENTIMENT_TASK, "accuracy"]
  assert rows["prompt 0"] == "0.00" and rows["prompt 2"] == "100.00"
  assert rows["mean"] == f"{(positive + 100.0) / 3:.2f}"
  assert table[-2].split()[-2:] == ["100.00", "(#2)"]  # best, and which prompt.
  assert rows["majority vote"] == f"{positive:.2f}"


def test_the_table_keeps_its_layout_and_marks_missing_numbers():
  """The layout `prompt-tuning eval` has always printed: labels indented under the task,
  numbers right-aligned, the best prompt's index after its number, "-" for a metric the
  vote lacks."""
  summary = {
    "prompts": [{"accuracy": 50.0, "f1": 12.5}, {"accuracy": 100.0, "f1": 7.25}],
    "mean": {"accuracy": 75.0, "f1": 9.875},
    "best": {"accuracy": 100.0, "f1": 12.5},
    "best_prompt": {"accuracy": 1, "f1": 0},
    "majority_vote": {"accuracy": 50.0},
  }
  assert ensemble.format_table({"demo_sentiment": summary}, ["a.npy", "b.npy"]) == (
    "prompt 0: a.npy\n"
    "prompt 1: b.npy\n"
    "\n"
    "demo_sentiment        accuracy          f1\n"
    "  prompt 0               50.00       12.50\n"
    "  prompt 1              100.00        7.25\n"
    "  mean                   75.00        9.88\n"
    "  best             100.00 (#1)  12.50 (#0)\n"
    "  majority vote          50.00           -"
  )


def test_the_vote_names_the_winning_prompt():
  predictions = [[1, 0, 2], [0, 0, 1], [0, 1, 2]]
  # Column 0: 0 wins through prompt 1; column 1: 0 through prompt 0; column 2: 2, prompt 0.
  assert ensemble.vote(predictions) == [1, 0, 0]
  assert ensemble.majority_vote(predictions) == [0, 0, 2]
