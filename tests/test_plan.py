"""`prompt-tuning plan` on the tiny model over the test session's 8 fake CPU devices."""

from __future__ import annotations

import jax
import pytest

from prompt_tuning import plan

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

  assert plan.main(TINY + ["--device-memory", "1MiB"]) == 1
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


def test_plan_of_a_method_needs_a_prompt_length():
  with pytest.raises(ValueError, match="prompt length above 0"):
    plan.main(TINY[:-4] + ["--method", "prefix", "--prompt", "0"])
