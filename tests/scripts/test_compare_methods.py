"""scripts/compare_methods.py and the gin files it drives: every method of the prompt
family wires through `prompt-tuning`'s gin files, and a tiny offline comparison of the
four methods writes its table, CSV, plot and exports."""

from __future__ import annotations

import csv
import importlib.util
import os

import gin
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load_script():
  spec = importlib.util.spec_from_file_location(
    "compare_methods_script", os.path.join(REPO, "scripts", "compare_methods.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


compare = _load_script()


@pytest.mark.parametrize(
  "method, trainable_prefix",
  [
    ("prompt", "encoder/prompt/prompt"),
    ("prefix", "encoder/layer_prompt/mlp/"),
    ("p_tuning", "encoder/prompt/lstm_0_forward/"),
    ("p_tuning_mlp", "encoder/prompt/mlp_hidden/"),
    ("p_tuning_v2", "encoder/layer_prompt/prompt"),
    ("p_tuning_v2_mlp", "encoder/layer_prompt/mlp/"),
  ],
)
def test_gin_files_wire_each_method_with_the_run_files_trainable_regex(
  clean_gin, method, trainable_prefix
):
  from prompt_tuning import launch, tree
  from prompt_tuning.prompts import family
  from prompt_tuning.t5 import network
  from prompt_tuning.training import trainable

  method_file, bindings = family.gin_config(method)
  files = ["prompt_tuning/configs/models/t5_1_1_small_prompt.gin"]
  files += [method_file] if method_file else []
  files.append("prompt_tuning/configs/runs/prompt_finetune.gin")
  launch.parse_gin(
    files,
    [
      "network.t5_config.size = 'tiny'",
      "PROMPT_LENGTH = 2",
      *[f"{k} = {v}" for k, v in bindings.items()],
    ],
    [],
  )
  module = network.transformer()
  regex = gin.query_parameter("trainer.train.trainable_regex")
  train, frozen = trainable.split(
    network.abstract_params(module.config, module.input_prompt, module.layer_prefix), regex
  )
  names = tree.names(train)
  assert any(name.startswith(trainable_prefix) for name in names), names
  assert not any("layers_" in name for name in names)
  assert "token_embedder/embedding" in tree.names(frozen)


def test_layer_prompt_eval_run_needs_only_the_layer_prompt_dir(clean_gin):
  from prompt_tuning import cli
  from prompt_tuning.t5 import network

  cli.parse_gin(
    [
      "prompt_tuning/configs/models/t5_1_1_small_prompt.gin",
      "prompt_tuning/configs/prompts/prefix_tuning.gin",
      "prompt_tuning/configs/runs/layer_prompt_eval.gin",
    ],
    [
      "network.t5_config.size = 'tiny'",
      "MIXTURE_OR_TASK_NAME = 'demo_sentiment'",
      "INITIAL_CHECKPOINT_PATH = '/base'",
      "LAYER_PROMPT_DIR = '/export'",
    ],
    [],
  )
  gin.finalize()  # No PROMPT_FILE is required: the layer prompts replace the input prompt.
  hook = network.transformer().layer_prefix(config=network.t5_config(), stack="encoder")
  assert hook.reparameterize is False and hook.init_dir == "/export"


def test_the_scripts_methods_are_the_registrys_training_methods():
  from prompt_tuning.prompts import family

  assert compare.METHODS == family.TRAINING_METHODS
  assert set(compare.DEFAULT_LEARNING_RATES) == set(family.TRAINING_METHODS)
  assert set(compare.DEFAULT_METHODS) <= set(family.TRAINING_METHODS)
  with pytest.raises(SystemExit):
    compare.main(["--out", "/nonexistent", "--methods", "prefix_folded"])


def test_the_table_lines_up_one_method_per_row():
  row = {
    "method": "p_tuning_v2",
    "trainable_params": 12800,
    "percent_of_model": 0.5,
    "served_params": 12800,
    "best_accuracy": 75.0,
    "best_step": 300,
    "final_accuracy": 70.0,
    "final_loss": 0.25,
    "learning_rate": 0.03,
    "seconds": 12.0,
  }
  lines = compare.format_table([row, {**row, "method": "prompt", "trainable_params": 256}])
  header, first, second = lines.splitlines()
  assert header.split()[:3] == ["method", "trainable", "%"]
  assert first.split() == [
    "p_tuning_v2",
    "12,800",
    "0.50%",
    "12,800",
    "75.0",
    "300",
    "70.0",
    "0.25",
    "0.03",
    "12",
  ]
  assert second.startswith("prompt ") and len(first) == len(second) == len(header)


def test_bad_learning_rate_override_is_a_clear_error():
  with pytest.raises(ValueError, match="write METHOD=RATE"):
    compare._learning_rates(["adapter=0.1"])
  assert compare._learning_rates(["prefix=0.05"])["prefix"] == 0.05


def test_tiny_comparison_trains_every_method_and_writes_table_csv_plot(tmp_path, capsys):
  out = tmp_path / "compare"
  code = compare.main(
    [
      "--out",
      str(out),
      "--steps",
      "1",
      "--lm-steps",
      "0",
      "--batch-size",
      "2",
      "--eval-examples",
      "4",
      "--prompt-length",
      "2",
    ]
  )
  assert code == 0
  with open(out / "results.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["method"] for r in rows] == ["prompt", "prefix", "p_tuning", "p_tuning_v2"]
  by_method = {r["method"]: r for r in rows}
  emb = 128  # The demo model's d_model.
  assert int(by_method["prompt"]["trainable_params"]) == 2 * emb
  # P-Tuning serves a plain prompt; prefixes fold to [layers, P, heads * head_dim] x 2 x 2.
  assert int(by_method["p_tuning"]["served_params"]) == 2 * emb
  assert int(by_method["prefix"]["served_params"]) == 2 * 2 * 2 * 2 * 128
  assert int(by_method["p_tuning_v2"]["trainable_params"]) == 2 * 2 * 2 * emb
  for row in rows:
    assert 0.0 <= float(row["best_accuracy"]) <= 100.0
    assert float(row["final_accuracy"]) <= float(row["best_accuracy"])
    assert os.path.isdir(os.path.join(row["model_dir"], "checkpoint_1"))
  assert sorted(os.listdir(out / "prefix" / "export")) == [
    "decoder.layer_prompt.key.npy",
    "decoder.layer_prompt.value.npy",
    "encoder.layer_prompt.key.npy",
    "encoder.layer_prompt.value.npy",
  ]
  assert os.listdir(out / "p_tuning" / "export") == ["encoder.prompt.prompt.npy"]
  assert (out / "score_vs_trainable.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  table = capsys.readouterr().out
  for method in ("prompt", "prefix", "p_tuning", "p_tuning_v2"):
    assert f"\n{method} " in table

  # `prompt-tuning export-prompt` on the run's trainable-only checkpoint writes the same
  # folded prefixes, given the run's model and prompt gin files.
  from prompt_tuning import cli

  gin.clear_config()
  cli_out = tmp_path / "cli_export"
  code = cli.main(
    [
      "export-prompt",
      str(out / "prefix"),
      str(cli_out),
      "--gin_file=prompt_tuning/configs/models/t5_1_1_small_prompt.gin",
      "--gin_file=prompt_tuning/configs/prompts/prefix_tuning.gin",
      "--gin.PROMPT_LENGTH=2",
      *[f"--gin.{k}={v}" for k, v in compare.model_bindings().items()],
    ]
  )
  gin.clear_config()
  assert code == 0
  for name in os.listdir(out / "prefix" / "export"):
    np.testing.assert_allclose(
      np.load(cli_out / name), np.load(out / "prefix" / "export" / name), atol=1e-6
    )
  assert cli.main(["export-prompt", str(out / "prefix"), str(cli_out)]) == 2
  assert "needs the run's model and prompt --gin_file" in capsys.readouterr().err


def test_info_counts_every_method_from_shapes(capsys):
  from prompt_tuning import info
  from prompt_tuning.t5 import T5Config

  config = T5Config.from_size("tiny")
  p, d, layers, kv, mlp = 100, 32, 2, 4 * 8, 512
  rows = {r["method"]: r for r in info.method_table(config, p)}
  assert rows["prompt"]["trainable"] == p * d
  folded_prefix = 2 * 2 * layers * p * kv  # Two stacks, keys and values.
  assert rows["prefix_folded"]["trainable"] == folded_prefix
  per_stack_mlp = p * d + d * mlp + mlp + mlp * layers * 2 * kv + layers * 2 * kv
  assert rows["prefix"]["trainable"] == 2 * per_stack_mlp
  assert rows["prefix"]["served"] == folded_prefix
  assert rows["p_tuning"]["served"] == rows["p_tuning_mlp"]["served"] == p * d
  assert rows["p_tuning_mlp"]["trainable"] == p * d + 2 * (d * d + d)
  assert rows["p_tuning_v2"]["trainable"] == 2 * layers * p * d
  assert rows["prompt"]["percent"] == pytest.approx(100 * p * d / rows["prompt"]["frozen"])
  assert info.main(["--size", "tiny", "--compare-methods"]) == 0
  printed = capsys.readouterr().out
  assert "prefix_folded" in printed and f"{folded_prefix:,}" in printed
  assert info.main(["--size", "tiny", "--prompt-length", "100", "--method", "p_tuning_v2"]) == 0
  assert "p_tuning_v2, P=100: 12,800 trainable parameters" in capsys.readouterr().out


def test_the_wayward_run_gets_a_discrete_prompt_of_exactly_prompt_length_pieces():
  from prompt_tuning.data import demo as demo_data

  vocabulary = demo_data.get_demo_vocabulary()
  for length in (2, 20):
    assert len(vocabulary.encode(compare.discrete_prompt(length))) == length
  with pytest.raises(ValueError, match="shorter --prompt-length"):
    compare.discrete_prompt(10_000)
