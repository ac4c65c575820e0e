"""scripts/sweep.py: grid parsing, and a 2x2 grid of tiny prompt-tuning runs end to end
(offline, bundled demo task) that must produce one CSV row per point and a PNG plot."""

from __future__ import annotations

import csv
import importlib.util
import math
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load_sweep():
  spec = importlib.util.spec_from_file_location(
    "sweep_script", os.path.join(REPO, "scripts", "sweep.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


sweep = _load_sweep()


def test_grid_values_split_only_at_top_level_commas():
  grid = sweep.parse_grid(
    [
      "PROMPT_LENGTH=1, 5,20",
      "PROMPT_INIT=@initializers.uniform(),@initializers.class_labels(labels=['a', 'b'])",
      "TASK_FEATURE_LENGTHS={'inputs': 24, 'targets': 4},{'inputs': 8, 'targets': 2}",
    ]
  )
  assert grid == [
    ("PROMPT_LENGTH", ["1", "5", "20"]),
    ("PROMPT_INIT", ["@initializers.uniform()", "@initializers.class_labels(labels=['a', 'b'])"]),
    ("TASK_FEATURE_LENGTHS", ["{'inputs': 24, 'targets': 4}", "{'inputs': 8, 'targets': 2}"]),
  ]
  points = sweep.grid_points(grid)
  assert len(points) == 12
  assert points[1] == {
    "PROMPT_LENGTH": "1",
    "PROMPT_INIT": grid[1][1][0],
    "TASK_FEATURE_LENGTHS": grid[2][1][1],
  }
  assert (
    sweep.run_name(
      {
        "PROMPT_LENGTH": "5",
        "PROMPT_INIT": "@initializers.uniform()",
        "gin_file": "prompt_tuning/configs/prompts/from_class_labels.gin",
      }
    )
    == "PROMPT_LENGTH-5__PROMPT_INIT-uniform__init-from_class_labels"
  )


@pytest.mark.parametrize(
  "spec, message",
  [
    ("PROMPT_LENGTH", "write KEY=VALUE1,VALUE2"),
    ("PROMPT_LENGTH=1,,5", "empty value"),
    ("PROMPT_INIT=@initializers.uniform(", "unbalanced"),
  ],
)
def test_bad_grid_specs_are_clear_errors(spec, message):
  with pytest.raises(ValueError, match=message):
    sweep.parse_grid([spec])


def test_size_shortcut_binds_size_and_its_checkpoint():
  files, bindings = sweep.point_config(
    {"SIZE": "base", "PROMPT_LENGTH": "20"},
    ["m.gin"],
    ["SEED=1"],
    {"base": "/ckpt/base"},
    "/out/run",
  )
  assert files == ["m.gin"]
  assert bindings == [
    "SEED=1",
    "network.t5_config.size='base'",
    "INITIAL_CHECKPOINT_PATH='/ckpt/base'",
    "PROMPT_LENGTH=20",
    "MODEL_DIR='/out/run'",
  ]
  with pytest.raises(ValueError, match="no --checkpoint for size 'xl'"):
    sweep.point_config({"SIZE": "xl"}, [], [], {"base": "/ckpt/base"}, "/out/run")


def test_best_score_is_the_maximum_over_eval_rows(tmp_path):
  rows = [
    '{"step": 2, "kind": "train", "loss": 3.0}',
    '{"step": 2, "kind": "eval", "t/accuracy": 40.0}',
    '{"step": 4, "kind": "eval", "t/accuracy": 70.0}',
    '{"step": 6, "kind": "eval", "t/accuracy": 55.0}',
  ]
  (tmp_path / "metrics.jsonl").write_text("\n".join(rows) + "\n")
  assert sweep.best_score(str(tmp_path), "t/accuracy") == (70.0, 4, 55.0)
  best, step, final = sweep.best_score(str(tmp_path), "t/f1")
  assert math.isnan(best) and step is None and math.isnan(final)


def test_missing_metric_and_unknown_series_are_errors(tmp_path, capsys):
  code = sweep.main(["--out", str(tmp_path), "--gin_file=x.gin"])
  assert code == 2 and "give --metric" in capsys.readouterr().err
  with pytest.raises(ValueError, match="--series NOPE is not a grid key"):
    sweep.run_sweep(
      str(tmp_path),
      ["x.gin"],
      [],
      [],
      [("PROMPT_LENGTH", ["1"])],
      "m",
      {},
      "trainable",
      ["NOPE"],
      True,
    )


def test_tiny_demo_sweep_runs_a_2x2_grid_end_to_end(tmp_path):
  out = tmp_path / "sweep"
  cache_env_before = os.environ.get("JAX_COMPILATION_CACHE_DIR")
  code = sweep.main(
    [
      "--tiny-demo",
      "--steps",
      "2",
      "--in-process",
      "--out",
      str(out),
      "--grid",
      "PROMPT_LENGTH=1,3",
      "--grid",
      "PROMPT_INIT=@initializers.uniform(),@initializers.sampled_vocab()",
      "--gin.trainer.train.num_eval_examples=8",
    ]
  )
  assert code == 0
  with open(out / "results.csv") as f:
    rows = list(csv.DictReader(f))
  assert [(r["PROMPT_LENGTH"], r["PROMPT_INIT"]) for r in rows] == [
    ("1", "@initializers.uniform()"),
    ("1", "@initializers.sampled_vocab()"),
    ("3", "@initializers.uniform()"),
    ("3", "@initializers.sampled_vocab()"),
  ]
  for row in rows:
    assert row["status"] == "ok"
    assert row["model_size"] == "tiny"
    assert int(row["trainable_params"]) == int(row["PROMPT_LENGTH"]) * 32  # P x d_model.
    assert int(row["model_params"]) == int(rows[0]["model_params"]) > 100_000
    assert 0.0 <= float(row["best_score"]) <= 100.0
    assert row["best_step"] == "2"
    assert os.path.isfile(os.path.join(row["model_dir"], "metrics.jsonl"))
    assert os.path.dirname(row["model_dir"]) == str(out)
  assert len({r["model_dir"] for r in rows}) == 4
  assert len(os.listdir(out / "jax_cache")) > 0  # Compiled once, reused by same shapes.
  assert os.environ.get("JAX_COMPILATION_CACHE_DIR") == cache_env_before  # Restored.
  png = out / "scores_vs_trainable_params.png"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_against_model_size_draws_one_line_per_prompt_length(tmp_path):
  rows = [
    {
      "status": "ok",
      "PROMPT_LENGTH": p,
      "SIZE": size,
      "model_params": params,
      "trainable_params": int(p) * width,
      "best_score": score,
    }
    for p in ("5", "100")
    for size, params, width, score in (("small", 7.7e7, 512, 60.0), ("base", 2.5e8, 768, 70.0))
  ]
  rows.append({**rows[0], "status": "exit 1", "best_score": float("nan")})
  series = sweep.default_series(["SIZE", "PROMPT_LENGTH"], "model")
  assert series == ["PROMPT_LENGTH"]
  path = str(tmp_path / "fig.png")
  sweep.plot(rows, "model", series, "rte/accuracy", path)
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_low_data_runs_plot_against_the_number_of_training_examples(tmp_path, capsys):
  rows = [
    {"status": "ok", "TRAIN_EXAMPLES": n, "TRAIN_EXAMPLES_SEED": seed, "best_score": score}
    for n, score in (("50", 20.0), ("500", 40.0))
    for seed in ("0", "1")
  ]
  grid_keys = ["TRAIN_EXAMPLES", "TRAIN_EXAMPLES_SEED"]
  series = sweep.default_series(grid_keys, "TRAIN_EXAMPLES")
  assert series == ["TRAIN_EXAMPLES_SEED"]
  path = str(tmp_path / "low_data.png")
  sweep.plot(rows, "TRAIN_EXAMPLES", series, "e2e_nlg/bleu", path)
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  base = ["--tiny-demo", "--out", str(tmp_path / "sweep"), "--dry-run"]
  grid = ["--grid", "TRAIN_EXAMPLES=50,100", "--grid", "TRAIN_EXAMPLES_SEED=0,1"]
  assert sweep.main([*base, *grid, "--x", "TRAIN_EXAMPLES"]) == 0
  printed = capsys.readouterr().out.splitlines()
  commands = [line for line in printed if line.startswith("prompt-tuning")]
  assert len(commands) == 4 and "--gin.TRAIN_EXAMPLES=100" in commands[-1]
  assert sweep.main([*base, "--grid", "TRAIN_EXAMPLES=50,None", "--x", "TRAIN_EXAMPLES"]) == 2
  assert "needs numeric values" in capsys.readouterr().err
  assert sweep.main([*base, *grid, "--x", "STEPS"]) == 2
  assert "numeric grid key" in capsys.readouterr().err


def test_dry_run_checks_every_point_and_trains_nothing(tmp_path, capsys):
  out = tmp_path / "never_created"
  base = [
    "--out",
    str(out),
    "--metric",
    "taskless_super_glue_rte_v102/accuracy",
    "--gin_file=prompt_tuning/configs/models/t5_1_1_small_prompt.gin",
    "--gin_file=prompt_tuning/configs/runs/prompt_finetune.gin",
    "--gin.MIXTURE_OR_TASK_NAME='taskless_super_glue_rte_v102'",
    "--grid",
    "SIZE=small,xxl",
    "--checkpoint",
    "small=/ckpt/s",
    "--checkpoint",
    "xxl=/ckpt/x",
    "--grid",
    "PROMPT_LENGTH=1,100",
    "--dry-run",
  ]
  assert sweep.main(base) == 0
  commands = [
    line for line in capsys.readouterr().out.splitlines() if line.startswith("prompt-tuning train")
  ]
  assert len(commands) == 4
  assert "--gin.network.t5_config.size='xxl'" in commands[-1]
  assert "--gin.INITIAL_CHECKPOINT_PATH='/ckpt/x'" in commands[-1]
  assert "--gin.PROMPT_LENGTH=100" in commands[-1]
  assert not out.exists()
  # A point that `prompt-tuning train` would refuse fails the whole dry run.
  assert sweep.main(base + ["--grid", "gin_file=prompt_tuning/configs/prompts/nope.gin"]) == 2
  assert "nope.gin" in capsys.readouterr().err
  unset = [a for a in base if not a.startswith("--gin.MIXTURE")]
  assert sweep.main(unset) == 2
  assert "MIXTURE_OR_TASK_NAME" in capsys.readouterr().err


def test_grid_file_axes_become_gin_text_and_expand_the_environment(tmp_path, monkeypatch):
  path = tmp_path / "grid.toml"
  path.write_text(
    '# A figure.\nx = "model"\nseries = ["PROMPT_LENGTH"]\n'
    '[grid]\nSIZE = ["small", "base"]\nPROMPT_LENGTH = [1, 100]\n'
    'REPARAMETERIZE = [true, false]\n'
    'INITIAL_CHECKPOINT_PATH = ["\'$RUNS/lm/checkpoint_10\'"]\n'
    '[checkpoints]\nsmall = "$RUNS/small"\n'
  )
  monkeypatch.setenv("RUNS", "/r")
  grid_file = sweep.load_grid_file(str(path))
  assert grid_file.grid == [
    ("SIZE", ["small", "base"]),
    ("PROMPT_LENGTH", ["1", "100"]),
    ("REPARAMETERIZE", ["True", "False"]),
    ("INITIAL_CHECKPOINT_PATH", ["'/r/lm/checkpoint_10'"]),
  ]
  assert grid_file.checkpoints == {"small": "/r/small"}
  assert (grid_file.x, grid_file.series, grid_file.metric) == ("model", ["PROMPT_LENGTH"], None)
  monkeypatch.delenv("RUNS")
  with pytest.raises(ValueError, match=r"\$RUNS is not set"):
    sweep.load_grid_file(str(path))


@pytest.mark.parametrize(
  "text, message",
  [
    ("[grid]\nSIZE = []\n", "non-empty list"),
    ("[grid]\nSIZE = [[1]]\n", "non-empty strings"),
    ('metric = "m"\n', r"needs a \[grid\] table"),
    ("[grid]\nSEED = [0]\n[grids]\nX = [1]\n", "unknown key.*grids"),
    ("[grid\n", "grid.toml"),
  ],
)
def test_bad_grid_files_are_clear_errors(tmp_path, text, message):
  path = tmp_path / "grid.toml"
  path.write_text(text)
  with pytest.raises(ValueError, match=message):
    sweep.load_grid_file(str(path))


def test_command_line_axes_replace_a_grid_files_axis_in_place():
  grid_file = sweep.GridFile([("SIZE", ["small", "base", "xxl"]), ("SEED", ["0", "1"])], {})
  merged = sweep.merge_grids([grid_file], [("SIZE", ["small"]), ("PROMPT_LENGTH", ["5"])])
  assert merged == [("SIZE", ["small"]), ("SEED", ["0", "1"]), ("PROMPT_LENGTH", ["5"])]
  with pytest.raises(ValueError, match="'SEED' is in two grid files"):
    sweep.merge_grids([grid_file, sweep.GridFile([("SEED", ["2"])], {})], [])


def test_command_line_options_win_over_the_grid_files(tmp_path):
  path = tmp_path / "grid.toml"
  path.write_text(
    'metric = "a/accuracy"\nx = "model"\nseries = ["SEED"]\n'
    '[grid]\nSIZE = ["small"]\nSEED = [0, 1]\n[checkpoints]\nsmall = "/s"\n'
  )
  args = sweep._parser().parse_args(["--out", "o", "--grid", str(path)])
  options = sweep.sweep_options(args)
  assert (options.metric, options.x, options.series) == ("a/accuracy", "model", ["SEED"])
  assert options.checkpoints == {"small": "/s"}
  args = sweep._parser().parse_args(
    [
      "--out",
      "o",
      "--grid",
      str(path),
      "--metric",
      "b/f1",
      "--x",
      "trainable",
      "--series",
      "SIZE",
      "--checkpoint",
      "small=/t",
      "--grid",
      "SEED=7",
    ]
  )
  options = sweep.sweep_options(args)
  assert (options.metric, options.x, options.series) == ("b/f1", "trainable", ["SIZE"])
  assert options.checkpoints == {"small": "/t"}
  assert options.grid == [("SIZE", ["small"]), ("SEED", ["7"])]


def test_tiny_demo_grid_is_read_from_configs():
  options = sweep.sweep_options(sweep._parser().parse_args(["--out", "o", "--tiny-demo"]))
  assert options.grid == [
    ("PROMPT_LENGTH", ["1", "5"]),
    ("PROMPT_INIT", ["@initializers.uniform()", "@initializers.sampled_vocab()"]),
  ]
  assert options.metric == "demo_sentiment/accuracy"
