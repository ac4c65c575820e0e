"""`prompt-tuning plan` on the tiny model over the test session's 8 fake CPU devices, and
the paper's XXL setting on 32 in a process of its own."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import gin
import jax
import pytest

from prompt_tuning import errors, launch, plan
from tests.cli_testing import run_cli

TINY = [
  "--size",
  "tiny",
  "--mesh",
  "2x4",
  "--batch",
  "8",
  "--inputs",
  "16",
  "--targets",
  "4",
  "--prompt",
  "4",
  "--dropout",
  "0",
]


@pytest.fixture(scope="module", autouse=True)
def started_backend():
  # Start jax first, so plan.main cannot change this process's device count.
  if len(jax.devices("cpu")) < 8:
    pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8")


@pytest.mark.parametrize(
  "text, expected",
  [
    ("16GiB", 16 * 2**30),
    ("80G", 80 * 2**30),
    ("16GB", 16 * 10**9),
    ("1.5 MiB", 3 * 2**19),
    ("4096", 4096),
  ],
)
def test_parse_bytes(text, expected):
  assert plan.parse_bytes(text) == expected


def test_parse_errors_are_clear():
  with pytest.raises(ValueError, match="memory size"):
    plan.parse_bytes("16 lots")
  with pytest.raises(ValueError, match="DATAxMODEL"):
    plan.parse_mesh("4by8")
  assert plan.parse_mesh("4x8") == (4, 8)


def test_plan_prints_the_table_and_says_whether_it_fits(capsys):
  assert plan.main(TINY + ["--device-memory", "16GiB"]) == 0
  out = capsys.readouterr().out
  for row in (
    "frozen parameters",
    "trainable parameters",
    "optimiser state",
    "batch",
    "activations/temporaries",
    "total",
  ):
    assert row in out
  assert out.strip().splitlines()[-1].startswith("fits: yes (")
  assert out.strip().endswith("GiB of 16.00 GiB per device)")

  assert plan.main(TINY + ["--device-memory", "1MiB", "--no-propose"]) == 1
  out = capsys.readouterr().out
  assert out.strip().splitlines()[-1].startswith("fits: no (")


def test_plan_accounts_for_every_argument_byte():
  """Our per-device shard sizes must add up to what XLA reports for the inputs."""
  config = plan.T5Config.from_size("tiny", dtype="bfloat16")
  result = plan.plan_train_step(
    config,
    (2, 4),
    batch_size=8,
    input_length=16,
    target_length=4,
    prompt_length=4,
    frozen_dtype="bfloat16",
  )
  # jit leaves out inputs the step never reads: here the rng key (uint32[2], unused
  # without dropout) and the float32 (1,) placeholders of the prompt's unfactored moments.
  assert result.inputs - result.xla_arguments == 8 + 2 * 4
  # The prompt (4 x 32 float32) is replicated, the vocabulary-wide weights split 4 ways.
  assert result.trainable == 4 * 32 * 4
  embedding_and_logits = 2 * config.vocab_size * config.emb_dim * 2  # bfloat16
  assert embedding_and_logits // 4 <= result.frozen < embedding_and_logits // 2
  assert result.temporaries > 0
  assert result.total >= result.xla_arguments + result.temporaries


def test_plan_rejects_shapes_that_do_not_split():
  with pytest.raises(ValueError, match="data shards"):
    plan.main(["--size", "tiny", "--mesh", "2x4", "--batch", "5"])
  with pytest.raises(ValueError, match="microbatches"):
    plan.main(TINY + ["--microbatches", "8"])


def test_plan_needs_enough_devices_once_jax_has_started():
  with pytest.raises(RuntimeError, match="already started with 8 CPU devices"):
    plan.main(["--size", "tiny", "--mesh", "4x4", "--batch", "8"])


@pytest.mark.parametrize("method", ["prefix", "p_tuning_v2"])
def test_plan_of_a_layer_method_counts_its_own_parameters(capsys, method):
  assert plan.main(TINY + ["--method", method]) == 0
  out = capsys.readouterr().out
  config = plan.T5Config.from_size("tiny")
  expected = plan.family.trainable_count(config, method, 4)
  assert expected > 4 * config.emb_dim  # More than an input prompt of the same length.
  assert f"method {method}, prompt length 4" in out
  assert f"trainable '.*prompt.*': {expected:,} values" in out


@pytest.mark.parametrize(
  "head, labels, outputs", [("sequence", 3, 3), ("token", 9, 9), ("span", 2, 2)]
)
def test_plan_with_a_head_counts_the_head_beside_the_prompt(capsys, head, labels, outputs):
  assert plan.main(TINY + ["--head", head, "--labels", str(labels)]) == 0
  out = capsys.readouterr().out
  width = plan.T5Config.from_size("tiny").emb_dim
  expected = 4 * width + width * outputs + outputs  # The prompt, the kernel, the bias.
  assert f"{head} head" in out
  assert f"trainable '.*prompt.*' and the head: {expected:,} values" in out


def test_plan_of_a_method_needs_a_prompt_length():
  with pytest.raises(ValueError, match="prompt length above 0"):
    plan.main(TINY[:-4] + ["--method", "prefix", "--prompt", "0"])


def test_bad_options_are_configuration_errors_with_exit_code_2():
  result = run_cli(["plan", *TINY, "--device-memory", "16 lots"])
  assert result.returncode == 2, result.stderr
  assert "cannot read memory size '16 lots'; write e.g. 16GiB" in result.stderr
  with pytest.raises(errors.ConfigurationError, match="--dropout must be in"):
    plan.main(TINY + ["--dropout", "1.5"])


# The search, on settings the test chooses: pure bookkeeping, nothing compiled.
BASE = plan.Setting("float32", "none", 1, (2, 4))


def test_levers_come_cheapest_first_each_alone_and_with_the_cheaper_ones():
  steps = plan.lever_steps(BASE, batch_size=8)
  assert [step.lever for step in steps] == [
    "bfloat16 frozen weights",
    "remat dots",
    "remat full",
    "2 microbatches",
    "4 microbatches",  # 8 microbatches of 1 would not split over 2 data shards.
    "mesh 1x8",
  ]
  bf16 = plan.Setting("bfloat16", "none", 1, (2, 4))
  assert steps[0] == plan.Step("bfloat16 frozen weights", bf16, bf16)
  assert steps[1].alone == plan.Setting("float32", "dots", 1, (2, 4))
  assert steps[1].cumulative == plan.Setting("bfloat16", "dots", 1, (2, 4))
  assert steps[2].cumulative == plan.Setting("bfloat16", "full", 1, (2, 4))
  assert steps[4].alone == plan.Setting("float32", "none", 4, (2, 4))
  assert steps[4].cumulative == plan.Setting("bfloat16", "full", 4, (2, 4))
  assert steps[5].alone == plan.Setting("float32", "none", 1, (1, 8))
  assert steps[5].cumulative == plan.Setting("bfloat16", "full", 4, (1, 8))


def test_levers_already_in_use_are_not_tried_again():
  steps = plan.lever_steps(plan.Setting("bfloat16", "full", 2, (4, 2)), batch_size=16)
  assert [step.lever for step in steps] == ["4 microbatches", "mesh 2x4", "mesh 1x8"]
  # Every factor of the data axis widens the model axis; the microbatches still split.
  assert steps[-1].cumulative == plan.Setting("bfloat16", "full", 4, (1, 8))


def _fake_search(totals: dict[plan.Setting, int], device_memory: int):
  compiled = []

  def estimate(setting):
    compiled.append(setting)
    return _plan_of_total(totals[setting])

  return plan.search_levers(BASE, 8, device_memory, estimate), compiled


def _plan_of_total(total: int) -> plan.Plan:
  """A Plan whose `total` is `total` (all of it temporaries)."""
  return plan.Plan(0, 0, 0, 0, 0, total, 0, 0, 0, 0, 0, 0.0)


def test_a_lever_alone_is_compiled_only_when_it_fits_with_the_cheaper_ones():
  steps = plan.lever_steps(BASE, batch_size=8)
  totals = {step.cumulative: 100 - 10 * i for i, step in enumerate(steps)}
  totals.update({step.alone: 200 for step in steps[1:]})
  totals[steps[2].alone] = 75  # remat full alone fits in 75.
  search, compiled = _fake_search(totals, device_memory=80)
  assert compiled == [s.cumulative for s in steps[:3]] + [steps[2].alone]
  assert search.proposal == steps[2].alone
  # Alone it does not fit: the cumulative setting is the proposal.
  totals[steps[2].alone] = 81
  search, _ = _fake_search(totals, device_memory=80)
  assert search.proposal == steps[2].cumulative
  # Nothing fits: no proposal; the closest is the smallest compiled.
  search, compiled = _fake_search(totals, device_memory=10)
  assert search.proposal is None
  assert compiled == [s.cumulative for s in steps]
  assert search.closest[0] == steps[-1].cumulative


# The search on the tiny model, through the real estimator.
def _tiny_total(setting: plan.Setting) -> int:
  config = plan.T5Config.from_size(
    "tiny", dtype="bfloat16", remat_policy=setting.remat, dropout_rate=0.0
  )
  return plan.plan_train_step(
    config,
    setting.mesh,
    8,
    16,
    4,
    4,
    frozen_dtype=setting.frozen_dtype,
    num_microbatches=setting.microbatches,
  ).total


def _proposal(out: str) -> tuple[list[str], list[str]]:
  """The proposed `plan` arguments and `train` gin flags that `out` prints."""
  command = re.search(r"^  plan it: +prompt-tuning plan (.*)$", out, re.M)
  bindings = re.search(r"^  train with these gin bindings: (.*)$", out, re.M)
  assert command and bindings, out
  return shlex.split(command.group(1)), shlex.split(bindings.group(1))


def test_a_setting_that_fits_proposes_nothing(capsys):
  assert plan.main(TINY + ["--device-memory", "1GiB"]) == 0
  out = capsys.readouterr().out
  assert "fits: yes" in out
  assert "searching" not in out and "proposal" not in out


def test_bfloat16_weights_that_suffice_are_proposed_without_remat(capsys):
  bf16 = plan.Setting("bfloat16", "none", 1, (2, 4))
  needed = _tiny_total(bf16)
  assert needed < _tiny_total(BASE)
  assert plan.main(TINY + ["--device-memory", str(needed)]) == 1  # As given, it does not fit.
  out = capsys.readouterr().out
  search = out[out.index("searching the memory levers") :]
  assert "proposal: bfloat16 frozen weights fits" in search
  assert "remat" not in search and "microbatches" not in search
  args, bindings = _proposal(out)
  assert args[args.index("--frozen-dtype") + 1] == "bfloat16"
  assert "--remat" not in args
  assert "--gin.trainer.train.frozen_dtype='bfloat16'" in bindings


@pytest.mark.usefixtures("clean_gin")
def test_the_proposal_replanned_fits_and_its_gin_bindings_set_what_was_planned(capsys):
  # Room for bfloat16 weights with remat dots, not for bfloat16 weights alone.
  device_memory = _tiny_total(plan.Setting("bfloat16", "dots", 1, (2, 4)))
  assert _tiny_total(plan.Setting("bfloat16", "none", 1, (2, 4))) > device_memory
  assert plan.main(TINY + ["--device-memory", str(device_memory)]) == 1
  out = capsys.readouterr().out
  args, bindings = _proposal(out)
  proposed = re.search(r"^proposal: (.*) fits \((.*) of", out, re.M)
  assert proposed.group(1) in ("remat dots", "bfloat16 frozen weights + remat dots"), out

  assert plan.main(args) == 0
  replanned = capsys.readouterr().out
  total = re.search(r"^  total +([\d,]+) +(.+)$", replanned, re.M)
  assert int(total.group(1).replace(",", "")) <= device_memory
  assert total.group(2).strip() == proposed.group(2)

  files = [
    "--gin_file=prompt_tuning/configs/models/t5_1_1_small_prompt.gin",
    "--gin_file=prompt_tuning/configs/runs/prompt_finetune.gin",
  ]
  files, gin_bindings, paths, rest = launch.split_gin_args(files + bindings)
  assert not rest
  launch.parse_gin(files, gin_bindings, paths)
  assert launch.macro_value("MESH_SHAPE") == (2, 4)
  assert launch.macro_value("BATCH_SIZE") == 8
  assert launch.macro_value("TASK_FEATURE_LENGTHS") == {"inputs": 16, "targets": 4}
  assert launch.macro_value("PROMPT_LENGTH") == 4
  assert launch.macro_value("ACTIVATION_DTYPE") == "bfloat16"
  assert launch.macro_value("DROPOUT_RATE") == 0.0
  assert gin.query_parameter("network.t5_config.remat_policy") == "dots"
  frozen = "bfloat16" if proposed.group(1).startswith("bfloat16") else None
  assert ("--frozen-dtype" in args) == (frozen is not None)
  if frozen:
    assert gin.query_parameter("trainer.train.frozen_dtype") == frozen


def test_when_nothing_fits_plan_says_the_closest_and_by_how_much():
  result = run_cli(["plan", *TINY, "--device-memory", "1MiB"])
  assert result.returncode == 1, result.stderr
  tried = re.findall(r"^  (.+): ([\d.]+ [KMG]iB), does not fit$", result.stdout, re.M)
  assert [setting for setting, _ in tried] == [
    "bfloat16 frozen weights",
    "bfloat16 frozen weights + remat dots",
    "bfloat16 frozen weights + remat full",
    "bfloat16 frozen weights + remat full + 2 microbatches",
    "bfloat16 frozen weights + remat full + 4 microbatches",
    "bfloat16 frozen weights + remat full + 4 microbatches + mesh 1x8",
  ]
  closest = re.search(
    r"^nothing fits: the closest is (.+) at (.+), (.+) \((\d+)%\) over the 1.00 MiB per device; "
    r"use more devices or devices with more memory$",
    result.stdout,
    re.M,
  )
  assert closest, result.stdout
  sizes = {setting: plan.parse_bytes(size) for setting, size in tried}
  assert closest.group(1) == min(sizes, key=sizes.get)
  assert closest.group(2) == dict(tried)[closest.group(1)]
  over = plan.parse_bytes(closest.group(3))
  assert over == pytest.approx(sizes[closest.group(1)] - 2**20, abs=2**14)  # Rounding.
  assert int(closest.group(4)) == round(100 * over / 2**20)
  assert "proposal" not in result.stdout


XXL = [
  "plan",
  "--size",
  "xxl",
  "--mesh",
  "4x8",
  "--batch",
  "32",
  "--inputs",
  "512",
  "--targets",
  "8",
  "--prompt",
  "100",
  "--device-memory",
  "16GiB",
]


def test_the_papers_xxl_setting_on_16_gib_devices_gets_a_setting_that_fits_and_its_commands():
  """The issue's check, in a process of its own (32 fake devices): without remat the step
  needs 34 GiB; the proposal fits and names its `plan` and `train` flags. Four XXL
  compiles: about 6 minutes of one CPU core."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=32")
  result = subprocess.run(
    [sys.executable, "-m", "prompt_tuning", *XXL], capture_output=True, text=True, env=env
  )
  assert result.returncode == 1, result.stderr  # As given, it does not fit.
  out = result.stdout
  assert re.search(r"^fits: no \(3\d\.\d\d GiB of 16.00 GiB per device\)$", out, re.M), out
  proposed = re.search(r"^proposal: (.*) fits \(([\d.]+) GiB of 16.00 GiB per device\)$", out, re.M)
  assert proposed and float(proposed.group(2)) <= 16, out
  assert "remat" in proposed.group(1), out  # bfloat16 weights alone are not enough.
  search = out[out.index("searching the memory levers") :].splitlines()
  assert search[1].startswith("  bfloat16 frozen weights: ") and search[1].endswith("not fit")
  args, bindings = _proposal(out)
  assert args[:14] == XXL[1:]
  remat = args[args.index("--remat") + 1]
  assert f"--gin.network.t5_config.remat_policy='{remat}'" in bindings
  assert "--gin.MESH_SHAPE=(4, 8)" in bindings or "--gin.MESH_SHAPE=(2, 16)" in bindings
