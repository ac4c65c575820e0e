"""The checkpoint tools: inspect, convert, extract, diff (exit codes and output)."""

from __future__ import annotations

import json
import os

import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath

from prompt_tuning import tree
from prompt_tuning.convert import commands, load_params, save_params_orbax, write_t5x_checkpoint
from prompt_tuning.convert.validation import size_name
from prompt_tuning.t5 import T5Config
from tests.convert import t5x_by_hand
from tests.convert.conftest import assert_trees_equal, random_params


@pytest.fixture(scope="module")
def t5x_path(tmp_path_factory, tiny_params):
  return write_t5x_checkpoint(tiny_params, str(tmp_path_factory.mktemp("c") / "t5x"))


def test_inspect(t5x_path, capsys):
  assert commands.inspect_checkpoint(t5x_path) == 0
  out = capsys.readouterr().out
  assert "format: t5x" in out
  assert "encoder/layers_1/mlp/wi_1/kernel" in out and "[32, 64]" in out
  assert "parameters: 52 arrays, 2,105,984 values" in out
  assert "model: 'tiny'" in out


def test_convert_chain_preserves_values(tmp_path, t5x_path, tiny_params, capsys):
  hf_dir, orbax_dir, back = (str(tmp_path / n) for n in ("hf", "orbax", "back"))
  assert commands.convert(t5x_path, "t5x", hf_dir, "hf") == 0
  assert os.path.isfile(os.path.join(hf_dir, "config.json"))
  assert commands.convert(hf_dir, "hf", orbax_dir, "orbax", size="tiny") == 0
  assert commands.convert(orbax_dir, "orbax", back, "hf") == 0
  assert "'tiny' model from t5x" in capsys.readouterr().out
  assert commands.diff_checkpoints(t5x_path, back) == 0
  assert "52 of 52 shared parameters identical" in capsys.readouterr().out
  assert_trees_equal(tiny_params, load_params(orbax_dir))


def test_convert_rejects_wrong_size_and_format(tmp_path, t5x_path, capsys):
  assert commands.convert(t5x_path, "t5x", str(tmp_path / "x"), "orbax", size="small") == 1
  err = capsys.readouterr().err
  assert err.startswith("error: checkpoint") and "looks like 'tiny'" in err
  assert commands.convert(t5x_path, "hf", str(tmp_path / "y"), "orbax") == 1
  assert "is a 't5x' checkpoint, not 'hf'" in capsys.readouterr().err
  assert commands.convert(t5x_path, "t5x", str(tmp_path / "z"), "t5x") == 1


def test_extract_variable(tmp_path, t5x_path, tiny_params, capsys):
  out = str(tmp_path / "emb.npy")
  assert commands.extract_variable(t5x_path, "token_embedder/embedding", out) == 0
  np.testing.assert_array_equal(np.load(out), tiny_params["token_embedder"]["embedding"])
  assert commands.extract_variable(t5x_path, "kernel", out) == 1
  assert "must match exactly one parameter" in capsys.readouterr().err


def test_diff_reports_changes_and_extras(tmp_path, t5x_path, tiny_params, capsys):
  flat = tree.flatten(tiny_params)
  flat = dict(flat)
  flat["encoder/layers_0/mlp/wo/kernel"] = flat["encoder/layers_0/mlp/wo/kernel"] + 0.25
  flat["encoder/prompt/prompt"] = np.zeros((4, 32), np.float32)
  other = save_params_orbax(tree.unflatten(flat), str(tmp_path / "tuned"))
  assert commands.diff_checkpoints(t5x_path, other) == 1
  out = capsys.readouterr().out
  assert "differs: encoder/layers_0/mlp/wo/kernel max |a-b| = 0.25" in out
  assert "only in b: encoder/prompt/prompt [4, 32]" in out
  assert "51 of 52 shared parameters identical" in out


def test_missing_path_is_a_one_line_error(tmp_path, capsys):
  assert commands.inspect_checkpoint(str(tmp_path / "nope")) == 1
  err = capsys.readouterr().err
  assert err.startswith("error: ") and "does not exist" in err and err.count("\n") == 1


def test_diff_across_dtypes(tmp_path, t5x_path, tiny_params, capsys):
  import ml_dtypes

  rounded = {
    n: np.asarray(a).astype(ml_dtypes.bfloat16) for n, a in tree.flatten(tiny_params).items()
  }
  other = save_params_orbax(tree.unflatten(rounded), str(tmp_path / "bf16"))
  assert commands.diff_checkpoints(t5x_path, other) == 1
  out = capsys.readouterr().out
  assert "0 of 52 shared parameters identical; 52 differ" in out


# --- any shape ---------------------------------------------------------------------------

# No named size has these: odd d_model, 3 heads of 5, 3 encoder / 1 decoder layers, a
# 96-piece vocabulary and a 16-bucket position table.
CUSTOM = T5Config(
  vocab_size=96,
  emb_dim=24,
  num_heads=3,
  head_dim=5,
  num_encoder_layers=3,
  num_decoder_layers=1,
  mlp_dim=40,
  relative_attention_num_buckets=16,
)


@pytest.fixture(scope="module")
def custom_t5x(tmp_path_factory):
  params = random_params(CUSTOM, seed=3)
  path = str(tmp_path_factory.mktemp("custom") / "t5x")
  t5x_by_hand.write_checkpoint(path, params, rows_per_chunk=40)
  return path, params


def _hf_config(directory: str) -> dict:
  with open(os.path.join(directory, "config.json")) as f:
    return json.load(f)


def test_a_t5x_checkpoint_of_no_named_size_converts_with_its_shape_read_from_the_arrays(
  tmp_path, custom_t5x, capsys
):
  path, params = custom_t5x
  assert size_name(CUSTOM) is None
  dst = str(tmp_path / "hf")
  assert commands.convert_main([path, dst, "--to", "hf"]) == 0
  out = capsys.readouterr().out
  assert "a model of an unnamed size (d_model=24, heads=3x5, layers=3/1, d_ff=40, vocab=96)" in out
  assert (
    "relative attention: 16 buckets (read from the position table), max distance 128 "
    "(T5 1.1's default; this format does not record it, so pass "
    "--relative_attention_max_distance if the checkpoint used another)"
  ) in out
  config = _hf_config(dst)
  assert (config["d_model"], config["d_kv"], config["d_ff"], config["num_heads"]) == (24, 5, 40, 3)
  assert (config["num_layers"], config["num_decoder_layers"], config["vocab_size"]) == (3, 1, 96)
  assert config["relative_attention_num_buckets"] == 16
  assert config["relative_attention_max_distance"] == 128
  assert commands.diff_checkpoints(path, dst) == 0
  assert "47 of 47 shared parameters identical" in capsys.readouterr().out


def test_the_max_distance_flag_reaches_the_hugging_face_config_and_is_said(
  tmp_path, custom_t5x, capsys
):
  path, _ = custom_t5x
  dst = str(tmp_path / "hf")
  args = [path, dst, "--to", "hf", "--relative_attention_max_distance", "64"]
  assert commands.convert_main(args) == 0
  assert "max distance 64 (from --relative_attention_max_distance)" in capsys.readouterr().out
  assert _hf_config(dst)["relative_attention_max_distance"] == 64
  # The Hugging Face directory records it, so converting on keeps it without the flag...
  again = str(tmp_path / "again")
  assert commands.convert_main([dst, again, "--to", "hf"]) == 0
  assert "max distance 64 (from the checkpoint's config.json)" in capsys.readouterr().out
  assert _hf_config(again)["relative_attention_max_distance"] == 64
  # ...and a flag contradicting it is refused.
  code = commands.convert_main(
    [dst, str(tmp_path / "no"), "--to", "hf", "--relative_attention_max_distance", "128"]
  )
  err = capsys.readouterr().err
  assert code == 1 and err.count("\n") == 1
  assert "--relative_attention_max_distance 128 disagrees" in err
  assert "its config.json records 64" in err


def test_an_orbax_tree_of_no_named_size_converts_and_its_max_distance_is_noted(
  tmp_path, custom_t5x, capsys
):
  path, params = custom_t5x
  orbax_dir, hf_dir = str(tmp_path / "orbax"), str(tmp_path / "hf")
  args = [path, orbax_dir, "--to", "orbax", "--relative_attention_max_distance", "256"]
  assert commands.convert_main(args) == 0
  out = capsys.readouterr().out
  assert "network.t5_config.relative_attention_max_distance = 256" in out
  args = [orbax_dir, hf_dir, "--from", "orbax", "--to", "hf"]
  assert commands.convert_main(args + ["--relative_attention_max_distance", "256"]) == 0
  assert "of a model of an unnamed size (d_model=24" in capsys.readouterr().out
  assert _hf_config(hf_dir)["relative_attention_max_distance"] == 256
  assert_trees_equal(params, load_params(hf_dir))


@pytest.mark.parametrize(
  "flag, value, found",
  [
    ("--num_heads", "4", "has 3 heads (rows)"),
    ("--relative_attention_num_buckets", "32", "has 16 buckets (columns)"),
  ],
)
def test_heads_or_buckets_flags_that_contradict_the_position_table_are_refused(
  tmp_path, custom_t5x, capsys, flag, value, found
):
  path, _ = custom_t5x
  assert commands.convert_main([path, str(tmp_path / "x"), "--to", "hf", flag, value]) == 1
  err = capsys.readouterr().err
  assert err.startswith(f"error: {flag} {value} disagrees") and found in err
  assert err.count("\n") == 1 and not os.path.exists(tmp_path / "x")


def test_heads_and_buckets_flags_that_agree_with_the_checkpoint_convert(
  tmp_path, custom_t5x, capsys
):
  path, _ = custom_t5x
  args = ["--num_heads", "3", "--relative_attention_num_buckets", "16"]
  assert commands.convert_main([path, str(tmp_path / "ok"), "--to", "orbax", *args]) == 0
  assert "16 buckets" in capsys.readouterr().out


def test_a_tree_without_a_position_table_asks_for_a_size(tmp_path, custom_t5x, capsys):
  _, params = custom_t5x
  flat = {n: a for n, a in tree.flatten(params).items() if "relpos_bias" not in n}
  path = save_params_orbax(tree.unflatten(flat), str(tmp_path / "norel"))
  assert commands.convert_main([path, str(tmp_path / "x"), "--to", "hf"]) == 1
  err = capsys.readouterr().err
  assert "has no relative position table" in err and "pass --size" in err
  assert err.count("\n") == 1


def test_convert_main_rejects_a_non_positive_flag_and_keeps_the_old_flags(tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_:
    commands.convert_main(["a", "b", "--to", "hf", "--relative_attention_max_distance", "0"])
  assert exit_.value.code == 2
  assert "expected an integer >= 1, got '0'" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    commands.convert_main(["--help"])
  usage = capsys.readouterr().out
  assert usage.startswith("usage: prompt-tuning convert")
  for flag in ("--from", "--to", "--size", "--num_heads", "--relative_attention_num_buckets"):
    assert flag in usage


def test_shape_flags_refuse_values_below_one():
  with pytest.raises(ValueError, match="--num_heads must be an integer >= 1, got 0"):
    commands.ShapeFlags(num_heads=0)


def test_a_t5x_orbax_train_state_of_no_named_size_converts(tmp_path, custom_t5x, capsys):
  _, params = custom_t5x
  manager = ocp.CheckpointManager(
    epath.Path(tmp_path / "model"),
    item_names=("state",),
    options=ocp.CheckpointManagerOptions(step_prefix="checkpoint"),
  )
  state = {"target": params, "state": {"step": np.asarray(7, np.int32)}}
  manager.save(7, args=ocp.args.Composite(state=ocp.args.PyTreeSave(state)))
  manager.wait_until_finished()
  manager.close()
  dst = str(tmp_path / "hf")
  assert commands.convert_main([str(tmp_path / "model" / "checkpoint_7"), dst, "--to", "hf"]) == 0
  out = capsys.readouterr().out
  assert "from t5x_orbax" in out and "unnamed size (d_model=24, heads=3x5" in out
  assert "16 buckets (read from the position table), max distance 128" in out
  assert_trees_equal(params, load_params(dst))
