"""Multi-task serving (`prompt-tuning infer` with runs/prompt_serve.gin): one frozen
model, one prompt per task, batches that mix the tasks' rows; each task's predictions
must be exactly those of the task run alone with its own prompt. Process 1 of a
multi-host job (patched `jax.process_index`) decodes the same batches and writes
nothing."""

from __future__ import annotations

import functools
import json
import os

import gin
import jax
import numpy as np
import pytest
import seqio

from prompt_tuning import cli, models
from prompt_tuning.data import demo
from prompt_tuning.evaluation import evaluator, run_eval
from prompt_tuning.prompts import Prompt, initializers
from prompt_tuning.t5 import T5Config, Transformer, init_params

CFG = T5Config.from_size("tiny", vocab_size=demo.demo_vocab_size())
MIXTURE = "test_serving_sentiment_pair"
TASKS = (demo.SENTIMENT_TASK, demo.SENTIMENT_RANK_TASK)
LENGTHS = {"inputs": 24, "targets": 4}
PROMPT_LENGTH, BATCH, EXAMPLES = 3, 4, 5


pytestmark = pytest.mark.usefixtures("clean_gin")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """A mixture of two demo tasks, a tiny random base checkpoint and a prompt per task."""
  from prompt_tuning import convert

  seqio.MixtureRegistry.remove(MIXTURE)
  seqio.MixtureRegistry.add(MIXTURE, [(name, 1.0) for name in TASKS])
  folder = tmp_path_factory.mktemp("serving")
  base = str(folder / "base")
  convert.save_params_orbax(init_params(CFG, jax.random.PRNGKey(3)), base)
  rng = np.random.RandomState(5)
  prompts = {}
  for name in TASKS:
    prompts[name] = str(folder / f"{name}.npy")
    np.save(prompts[name], rng.uniform(-3, 3, (PROMPT_LENGTH, CFG.emb_dim)).astype(np.float32))
  yield base, prompts
  seqio.MixtureRegistry.remove(MIXTURE)


def _records(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_mixed_batches_give_each_task_its_own_prompts_outputs(setup, tmp_path, capsys, monkeypatch):
  base, prompts = setup
  seen_ids = []
  real = evaluator.on_mesh
  served_predict = []

  def recording(fn, partitioner=None):
    predict = real(fn, partitioner)

    def run(params, batch):
      ids = batch.get("prompt_ids")
      seen_ids.append(None if ids is None else np.asarray(ids))
      return predict(params, batch)

    served_predict.append(run)
    return run

  monkeypatch.setattr(evaluator, "on_mesh", recording)
  served_dir = str(tmp_path / "served")
  bindings = {
    "network.t5_config.size": "'tiny'",
    "network.t5_config.vocab_size": str(CFG.vocab_size),
    "MIXTURE_OR_TASK_NAME": repr(MIXTURE),
    "INITIAL_CHECKPOINT_PATH": repr(base),
    "TASK_PROMPTS": repr(prompts),
    "OUTPUT_DIR": repr(served_dir),
    "BATCH_SIZE": str(BATCH),
    "TASK_FEATURE_LENGTHS": repr(LENGTHS),
    "run_eval.infer.num_examples": str(EXAMPLES),
  }
  code = cli.main(
    [
      "infer",
      "--gin_file=prompt_tuning/configs/models/t5_1_1_small_prompt.gin",
      "--gin_file=prompt_tuning/configs/runs/prompt_serve.gin",
    ]
    + [f"--gin.{name}={value}" for name, value in bindings.items()]
  )
  assert code == 0, capsys.readouterr().err
  # Rows alternate between the tasks: every batch holds both prompts.
  assert len(seen_ids) == -(-2 * EXAMPLES // BATCH)
  assert all(set(ids[:2].tolist()) == {0, 1} for ids in seen_ids)
  assert "wrote" in capsys.readouterr().out
  names = [f"{name}-validation.jsonl" for name in TASKS]
  assert sorted(os.listdir(served_dir)) == sorted(names)  # No temporary file is left.

  # As process 1, with the CLI's configuration and the compiled decode reused: the
  # same calls, the same paths returned, nothing printed or written.
  calls = len(seen_ids)
  with monkeypatch.context() as patch:
    patch.setattr(jax, "process_index", lambda *args, **kwargs: 1)
    patch.setattr(evaluator, "on_mesh", lambda fn, partitioner=None: served_predict[0])
    elsewhere = str(tmp_path / "process_1")
    paths = run_eval.infer(output_dir=elsewhere)
  assert paths == [os.path.join(elsewhere, name) for name in names]
  assert capsys.readouterr().out == "" and not os.path.exists(elsewhere)
  assert len(seen_ids) == 2 * calls
  for ids, again in zip(seen_ids[:calls], seen_ids[calls:]):
    np.testing.assert_array_equal(ids, again)

  served_calls = len(seen_ids)
  gin.clear_config()  # The direct calls below must not see the CLI's bindings.
  for index, name in enumerate(TASKS):
    alone_dir = str(tmp_path / f"alone_{index}")
    prompt = functools.partial(
      Prompt, length=PROMPT_LENGTH, init=initializers.from_file(prompts[name])
    )
    alone_model = models.EncoderDecoderModel(Transformer(CFG, input_prompt=prompt))
    run_eval.infer(
      model=alone_model,
      mixture_or_task_name=name,
      task_feature_lengths=LENGTHS,
      batch_size=BATCH,
      output_dir=alone_dir,
      initial_checkpoint_path=base,
      num_examples=EXAMPLES,
    )
    served = _records(os.path.join(served_dir, f"{name}-validation.jsonl"))
    alone = _records(os.path.join(alone_dir, f"{name}-validation.jsonl"))
    assert len(served) == EXAMPLES and served == alone
  # Alone, a task's batches carry no prompt ids: every row uses the model's one prompt.
  assert len(seen_ids) > served_calls
  assert all(ids is None for ids in seen_ids[served_calls:])


def test_task_prompts_must_name_tasks_of_the_mixture(setup, caplog):
  _, prompts = setup
  tasks = run_eval.tasks_with_split(MIXTURE, "validation")
  with pytest.raises(ValueError, match="not a task of"):
    run_eval.serving_table(MIXTURE, tasks, {**prompts, "no_such_task": "x.npy"})
  with pytest.raises(ValueError, match="must map task names"):
    run_eval.serving_table(MIXTURE, tasks, [prompts[TASKS[0]]])
  # A task of the mixture without a prompt is not served, and the log says so.
  served, files = run_eval.serving_table(MIXTURE, tasks, {TASKS[1]: prompts[TASKS[1]]})
  assert [t.name for t in served] == [TASKS[1]] and files == [prompts[TASKS[1]]]
  assert TASKS[0] in caplog.text


def test_output_files_appear_only_when_complete(tmp_path):
  path = str(tmp_path / "out" / "task-validation.jsonl")
  with pytest.raises(RuntimeError, match="decode failed"):
    with run_eval.replaced_when_done({"task": path}) as files:
      files["task"].write("half a file\n")
      assert not os.path.exists(path)  # Still under its temporary name.
      raise RuntimeError("decode failed")
  assert os.listdir(tmp_path / "out") == []  # Nothing left behind, no partial file.
  with run_eval.replaced_when_done({"task": path}) as files:
    files["task"].write("{}\n")
  assert os.listdir(tmp_path / "out") == ["task-validation.jsonl"]
  with open(path) as f:
    assert f.read() == "{}\n"
