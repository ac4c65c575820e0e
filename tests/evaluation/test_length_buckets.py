"""Evaluation and inference in length buckets give what fixed-length batches give: the
same decoded tokens, metrics and prediction files, and scores equal up to float
rounding, with one compiled shape per bucket used (docs/training.md, "Length buckets")."""

from __future__ import annotations

import functools
import json

import jax
import numpy as np
import pytest

from prompt_tuning import models
from prompt_tuning.data import demo
from prompt_tuning.evaluation import evaluator
from prompt_tuning.prompts import Prompt
from prompt_tuning.t5 import T5Config, Transformer, init_params
from tests.cli_testing import run_cli, tiny_job_args

CFG = T5Config.from_size("tiny", vocab_size=demo.demo_vocab_size())
LENGTHS = {"inputs": 96, "targets": 8}
BUCKETS = [16, 32, 64]
BATCH, EXAMPLES = 4, 24


@pytest.fixture(scope="module")
def setup():
  model = models.EncoderDecoderModel(
    Transformer(CFG, input_prompt=functools.partial(Prompt, length=3))
  )
  params = init_params(CFG, jax.random.PRNGKey(3))
  rng = np.random.RandomState(0)
  prompt = rng.uniform(-2, 2, (3, CFG.emb_dim)).astype(np.float32)
  params = {**params, "encoder": {**params["encoder"], "prompt": {"prompt": prompt}}}
  return model, params


def _evaluation(model, length_buckets):
  return evaluator.Evaluation(
    demo.SENTIMENT_TASK,
    LENGTHS,
    BATCH,
    model.predict_batch,
    model.score_batch,
    num_examples=EXAMPLES,
    length_buckets=length_buckets,
  )


def test_bucketed_evaluation_decodes_and_scores_as_fixed_padding_does(setup):
  model, params = setup
  fixed, bucketed = _evaluation(model, None), _evaluation(model, BUCKETS)
  assert fixed.evaluate(params) == bucketed.evaluate(params)
  assert fixed.predictions == bucketed.predictions
  assert fixed.shapes == {("predict", 96, 8)}
  # The demo's reviews span more than one bucket, and none reaches the full 96.
  used = {inputs for name, inputs, _ in bucketed.shapes}
  assert bucketed.encoder_buckets == (16, 32, 64, 96)
  assert len(used) > 1 and used <= set(BUCKETS)

  dataset = fixed.seqio.datasets[demo.SENTIMENT_TASK]
  score = evaluator.on_mesh(model.score_batch)
  whole = dict(evaluator.seqio_model_fn(score, params, BATCH)(dataset))
  cut = dict(evaluator.seqio_model_fn(score, params, BATCH, tuple(BUCKETS), (2, 4, 8))(dataset))
  assert sorted(whole) == sorted(cut) == list(range(EXAMPLES))
  np.testing.assert_allclose(
    [cut[i] for i in range(EXAMPLES)], [whole[i] for i in range(EXAMPLES)], rtol=1e-5, atol=1e-5
  )


def test_bucketed_inference_writes_the_same_prediction_files(tmp_path):
  outputs = {}
  for name, buckets in (("fixed", "None"), ("bucketed", repr(BUCKETS))):
    out = tmp_path / name
    result = run_cli(
      tiny_job_args(
        "infer",
        "prompt_infer.gin",
        PROMPT_FILE=repr(_prompt_file(tmp_path)),
        OUTPUT_DIR=repr(str(out)),
        TASK_FEATURE_LENGTHS="{'inputs': 96, 'targets': 4}",
        **{"run_eval.infer.num_examples": "12", "run_eval.infer.length_buckets": buckets},
      )
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outputs[name] = [json.loads(line) for line in open(out / "demo_sentiment-validation.jsonl")]
  assert len(outputs["fixed"]) == 12
  assert outputs["fixed"] == outputs["bucketed"]


def _prompt_file(tmp_path):
  path = tmp_path / "prompt.npy"
  if not path.exists():
    np.save(path, np.random.RandomState(1).uniform(-2, 2, (3, CFG.emb_dim)).astype(np.float32))
  return str(path)
