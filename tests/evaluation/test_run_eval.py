"""`prompt-tuning eval` with several prompt files (runs/prompt_ensemble_eval.gin): one
decode of N·B rows per batch, the table on stdout and the JSON report, through the CLI
in this process on a tiny model. Standing in for process 1 of a multi-host job (patched
`jax.process_index`), eval computes the same results but prints and writes nothing."""

from __future__ import annotations

import json
import os

import gin
import jax
import numpy as np
import pytest

from prompt_tuning import cli
from prompt_tuning.data import demo
from prompt_tuning.evaluation import ensemble, evaluator, run_eval
from prompt_tuning.t5 import T5Config, init_params

CFG = T5Config.from_size("tiny", vocab_size=demo.demo_vocab_size())
NUM_PROMPTS, PROMPT_LENGTH, BATCH, EXAMPLES = 3, 3, 4, 6
MODEL_GIN = "--gin_file=prompt_tuning/configs/models/t5_1_1_small_prompt.gin"


pytestmark = pytest.mark.usefixtures("clean_gin")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """A tiny random base saved as an orbax checkpoint, and three prompt files."""
  from prompt_tuning import convert

  folder = tmp_path_factory.mktemp("ensemble")
  base = str(folder / "base")
  convert.save_params_orbax(init_params(CFG, jax.random.PRNGKey(7)), base)
  rng = np.random.RandomState(1)
  prompts = []
  for k in range(NUM_PROMPTS):
    prompts.append(str(folder / f"prompt_{k}.npy"))
    np.save(prompts[-1], rng.uniform(-3, 3, (PROMPT_LENGTH, CFG.emb_dim)).astype(np.float32))
  return base, prompts


def _eval_args(base, run_file, **bindings):
  values = {
    "network.t5_config.size": "'tiny'",
    "network.t5_config.vocab_size": str(CFG.vocab_size),
    "MIXTURE_OR_TASK_NAME": f"'{demo.SENTIMENT_TASK}'",
    "INITIAL_CHECKPOINT_PATH": repr(base),
    "BATCH_SIZE": str(BATCH),
    "TASK_FEATURE_LENGTHS": "{'inputs': 24, 'targets': 4}",
    "run_eval.evaluate.num_examples": str(EXAMPLES),
    **bindings,
  }
  return ["eval", MODEL_GIN, f"--gin_file=prompt_tuning/configs/runs/{run_file}"] + [
    f"--gin.{name}={value}" for name, value in values.items()
  ]


def _as_process_1(monkeypatch):
  monkeypatch.setattr(jax, "process_index", lambda *args, **kwargs: 1)


def _first_built(monkeypatch, owner, name):
  """Patches `owner.name` (a factory of jitted functions) to build once and hand the
  first result out again: a second run computes for real without compiling again."""
  real, built = getattr(owner, name), []

  def first(*args, **kwargs):
    if not built:
      built.append(real(*args, **kwargs))
    return built[0]

  monkeypatch.setattr(owner, name, first)


def _ensemble_run(base, prompts, tmp_path, capsys, patch):
  """The ensemble eval through the CLI, then as process 1; each prompt's accuracy."""
  calls = []
  real = evaluator.on_mesh

  def counting(fn, partitioner=None):
    predict = real(fn, partitioner)

    def run(params, batch):
      calls.append(np.asarray(batch["prompt_ids"]))
      return predict(params, batch)

    return run

  patch.setattr(evaluator, "on_mesh", counting)
  _first_built(patch, evaluator, "on_mesh")
  out_dir = str(tmp_path / "report")
  code = cli.main(
    _eval_args(
      base, "prompt_ensemble_eval.gin", PROMPT_FILES=repr(prompts), OUTPUT_DIR=repr(out_dir)
    )
  )
  out = capsys.readouterr().out
  assert code == 0
  # ceil(6 / 4) = 2 decodes of N·B rows, prompt k on rows [k·B, (k+1)·B).
  assert len(calls) == 2
  for ids in calls:
    np.testing.assert_array_equal(ids, np.repeat(np.arange(NUM_PROMPTS), BATCH))

  path = os.path.join(out_dir, "prompt_ensemble-validation.json")
  with open(path) as f:
    report = json.load(f)
  assert report["prompt_files"] == prompts and report["split"] == "validation"
  summary = report["tasks"][demo.SENTIMENT_TASK]
  accuracies = [m["accuracy"] for m in summary["prompts"]]
  assert len(accuracies) == NUM_PROMPTS
  assert summary["mean"]["accuracy"] == pytest.approx(np.mean(accuracies))
  assert summary["best"]["accuracy"] == max(accuracies)
  assert [len(p) for p in summary["predictions"]] == [EXAMPLES] * NUM_PROMPTS
  assert summary["majority_vote_predictions"] == ensemble.majority_vote(summary["predictions"])
  # The printed table carries the same numbers.
  lines = out.splitlines()
  assert lines[:NUM_PROMPTS] == [f"prompt {k}: {p}" for k, p in enumerate(prompts)]
  row = {line.split("  ")[1]: line.split()[-1] for line in lines if line.startswith("  ")}
  assert row["prompt 1"] == f"{accuracies[1]:.2f}"
  assert row["majority vote"] == f"{summary['majority_vote']['accuracy']:.2f}"
  assert f"wrote {path}" in out
  assert os.listdir(out_dir) == [os.path.basename(path)]  # No temporary file is left.

  # Process 1 of a job takes part in every decode, returns the same summary, and
  # neither prints nor writes (the gin configuration is still the CLI's).
  with patch.context() as process_1:
    _as_process_1(process_1)
    elsewhere = str(tmp_path / "process_1")
    results = run_eval.evaluate(output_dir=elsewhere)
  assert capsys.readouterr().out == "" and not os.path.exists(elsewhere)
  assert len(calls) == 4
  assert json.loads(json.dumps(results, default=run_eval.json_value)) == report["tasks"]
  return accuracies


def test_eval_with_several_prompt_files_decodes_all_prompts_in_one_call(
  files, tmp_path, capsys, monkeypatch
):
  base, prompts = files
  with monkeypatch.context() as patch:  # The ensemble's decode, built once.
    accuracies = _ensemble_run(base, prompts, tmp_path, capsys, patch)

  # Prompt 1's numbers are what `prompt-tuning eval` with that prompt alone reports.
  gin.clear_config()
  _first_built(monkeypatch, evaluator, "build_evaluation")
  model_dir = str(tmp_path / "alone")
  args = _eval_args(
    base,
    "prompt_eval.gin",
    PROMPT_LENGTH=str(PROMPT_LENGTH),
    PROMPT_FILE=repr(prompts[1]),
    MODEL_DIR=repr(model_dir),
  )
  code = cli.main(args)
  alone = capsys.readouterr().out
  assert code == 0
  assert f"{demo.SENTIMENT_TASK}\taccuracy\t{accuracies[1]}" in alone.splitlines()
  assert os.path.exists(os.path.join(model_dir, "metrics.jsonl"))
  with monkeypatch.context() as patch:
    _as_process_1(patch)
    elsewhere = str(tmp_path / "alone_process_1")
    metrics = run_eval.evaluate(model_dir=elsewhere)
  assert capsys.readouterr().out == "" and not os.path.exists(elsewhere)
  assert metrics[demo.SENTIMENT_TASK]["accuracy"] == accuracies[1]


def test_missing_or_malformed_prompt_files_are_one_line_errors(files, tmp_path, capsys):
  base, prompts = files
  code = cli.main(_eval_args(base, "prompt_ensemble_eval.gin", OUTPUT_DIR=repr(str(tmp_path))))
  err = capsys.readouterr().err
  assert code == 2 and len(err.strip().splitlines()) == 1
  assert "required gin macro(s) not set: PROMPT_FILES" in err

  gin.clear_config()
  code = cli.main(
    _eval_args(
      base,
      "prompt_ensemble_eval.gin",
      PROMPT_FILES=repr(prompts[0]),
      OUTPUT_DIR=repr(str(tmp_path)),
    )
  )
  err = capsys.readouterr().err
  assert code == 1 and "PROMPT_FILES must be a list of .npy paths" in err

  gin.clear_config()
  code = cli.main(
    _eval_args(
      base,
      "prompt_ensemble_eval.gin",
      PROMPT_FILES=repr([prompts[0], str(tmp_path / "nope.npy")]),
      OUTPUT_DIR=repr(str(tmp_path)),
    )
  )
  err = capsys.readouterr().err
  assert code == 1 and "nope.npy does not exist" in err
  assert not os.listdir(tmp_path)  # Nothing written before the inputs are checked.
