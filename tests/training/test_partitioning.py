"""Mesh, logical axis rules and sharded training on 8 fake CPU devices.

The equivalence tests train a few steps on each mesh and compare the prompt with a
one-device run: sharding must change where numbers live, not what they are.
"""

from __future__ import annotations

import functools

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from prompt_tuning import models
from prompt_tuning.prompts import Prompt
from prompt_tuning.t5 import T5Config, Transformer, abstract_params, logical_axes
from prompt_tuning.training import optimizers, partitioning, trainable
from prompt_tuning.training.train_step import TrainState, make_train_step
from tests.conftest import _draw_params as draw_params

# Eight heads so every "model"-sharded dimension divides over up to 8 devices.
CFG = T5Config.from_size(
  "tiny", vocab_size=128, num_heads=8, head_dim=4, num_encoder_layers=1, num_decoder_layers=1
)
PROMPT = functools.partial(Prompt, length=4)
STEPS = 3
# Skipping LLVM's optimisations makes these tiny programs compile ~3x faster.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


@pytest.fixture(scope="module", autouse=True)
def eight_devices():
  if jax.device_count() < 8:
    pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8")


def _params(config: T5Config) -> dict:
  return draw_params(config, PROMPT)


def _batch(seed: int, size: int = 8) -> dict[str, np.ndarray]:
  rng = np.random.RandomState(seed)
  enc = rng.randint(3, CFG.vocab_size, (size, 6)).astype(np.int32)
  enc[:, -1] = 0  # Some padding, so masks matter.
  label = np.where(enc[:, 0] < 64, 5, 6).astype(np.int32)
  tgt = np.stack([label, np.ones_like(label)], axis=1)
  dec = np.stack([np.zeros_like(label), label], axis=1)
  return {
    "encoder_input_tokens": enc,
    "decoder_input_tokens": dec,
    "decoder_target_tokens": tgt,
    "decoder_loss_weights": np.ones_like(tgt),
  }


def _train(
  mesh_shape: tuple[int, int] | None,
  *,
  remat: str = "none",
  microbatches: int = 1,
  frozen_dtype: str | None = None,
) -> np.ndarray:
  """The prompt after STEPS Adafactor steps, on one device (None) or a mesh."""
  config = CFG.replace(remat_policy=remat)
  model = models.EncoderDecoderModel(Transformer(config, input_prompt=PROMPT))
  optimizer = optimizers.adafactor(learning_rate=0.3)
  train, frozen = trainable.split(_params(config))
  if frozen_dtype:
    frozen = trainable.cast(frozen, frozen_dtype)
  state = TrainState.create(train, optimizer)
  step_fn = make_train_step(model, optimizer, microbatches)
  rng = jax.random.PRNGKey(0)
  if mesh_shape is None:
    step = jax.jit(step_fn, compiler_options=FAST_COMPILE)
    batches = [_batch(i) for i in range(STEPS)]
  else:
    partitioner = partitioning.Partitioner(mesh_shape=mesh_shape)
    train_axes, frozen_axes = trainable.split(logical_axes(config, PROMPT))
    train_sh = partitioner.param_shardings(train_axes, train)
    frozen_sh = partitioner.param_shardings(frozen_axes, frozen)
    state_sh = partitioner.train_state_shardings(optimizer, train, train_sh)
    state = jax.device_put(state, state_sh)
    frozen = jax.device_put(frozen, frozen_sh)
    step = partitioner.partition_train_step(
      step_fn, state_sh, frozen_sh, compiler_options=FAST_COMPILE
    )
    batches = [partitioner.shard_batch(_batch(i)) for i in range(STEPS)]
  for batch in batches:
    state, metrics = step(state, frozen, batch, rng)
  assert np.isfinite(float(metrics["loss"]))
  return np.asarray(state.trainable["encoder"]["prompt"]["prompt"])


@pytest.fixture(scope="module")
def reference_prompt() -> np.ndarray:
  return _train(None)


# ------------------------------------------------------------------------ rules
def test_standard_rules_map_logical_axes_as_t5x():
  rules = dict(partitioning.standard_logical_axis_rules())
  expected = {
    "batch": "data",
    "vocab": "model",
    "embed": None,
    "mlp": "model",
    "heads": "model",
    "kv": None,
    "joined_kv": "model",
    "length": None,
    "relpos_buckets": None,
    "prompt": None,
    "prompt_embed": None,
  }
  assert {name: rules[name] for name in expected} == expected
  p = partitioning.Partitioner(mesh_shape=(2, 4))
  assert p.mesh.shape == {"data": 2, "model": 4}
  assert p.mesh_axes(("batch", "length", "embed")) == P("data", None, None)
  assert p.mesh_axes(("batch", "length", "heads", "kv")) == P("data", None, "model", None)
  assert p.mesh_axes(("embed", "mlp")) == P(None, "model")
  assert p.batch_sharding.spec == P("data")
  assert p.replicated.is_fully_replicated


def test_additional_rules_take_precedence_and_are_gin_configurable():
  rules = partitioning.standard_logical_axis_rules([("embed", "model")])
  p = partitioning.Partitioner(mesh_shape=(2, 4), logical_axis_rules=rules)
  # `embed` claims "model" first, so the MLP dimension must stay unsharded.
  assert p.mesh_axes(("embed", "mlp")) == P("model", None)
  try:
    gin.parse_config("standard_logical_axis_rules.additional_rules = [('prompt', 'model')]")
    p = partitioning.Partitioner(mesh_shape=(2, 4))
    assert p.mesh_axes(("prompt", "embed")) == P("model", None)
  finally:
    gin.clear_config()


def test_param_shardings_of_the_tiny_model():
  p = partitioning.Partitioner(mesh_shape=(2, 4))
  tiny = T5Config.from_size("tiny", vocab_size=128)  # 4 heads
  abstract = abstract_params(tiny, PROMPT)
  shardings = p.param_shardings(logical_axes(tiny, PROMPT), abstract)
  assert shardings["encoder"]["prompt"]["prompt"].is_fully_replicated
  layer = shardings["encoder"]["layers_0"]
  assert layer["mlp"]["wi_0"]["kernel"].spec == P(None, "model")
  assert layer["mlp"]["wi_1"]["kernel"].spec == P(None, "model")
  assert layer["mlp"]["wo"]["kernel"].spec == P("model", None)
  assert layer["attention"]["query"]["kernel"].spec == P(None, "model")
  assert layer["attention"]["out"]["kernel"].spec == P("model", None)
  assert layer["pre_mlp_layer_norm"]["scale"].is_fully_replicated
  assert shardings["token_embedder"]["embedding"].spec == P("model", None)
  assert shardings["decoder"]["logits_dense"]["kernel"].spec == P(None, "model")
  assert shardings["encoder"]["relpos_bias"]["rel_embedding"].spec == P("model", None)
  # Four heads do not divide over eight model shards: that dimension is replicated.
  wide = partitioning.Partitioner(mesh_shape=(1, 8))
  wide_shardings = wide.param_shardings(logical_axes(tiny, PROMPT), abstract)
  assert wide_shardings["encoder"]["relpos_bias"]["rel_embedding"].is_fully_replicated
  assert wide_shardings["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"].spec == P(None, "model")


@pytest.mark.parametrize(
  "kwargs, message",
  [
    ({"mesh_shape": (3, 2)}, "needs 6 devices but 8"),
    ({"mesh_shape": (4, 4)}, "needs 16 devices"),
    ({"mesh_shape": (8,)}, "two positive sizes"),
    ({"num_partitions": 3}, "divisor of the device count 8"),
    ({"num_partitions": 0}, "divisor"),
    ({"num_partitions": 2, "mesh_shape": (4, 2)}, "not both"),
  ],
)
def test_bad_mesh_shapes_are_clear_errors(kwargs, message):
  with pytest.raises(ValueError, match=message):
    partitioning.Partitioner(**kwargs)


def test_num_partitions_sets_the_model_axis():
  p = partitioning.Partitioner(num_partitions=2)
  assert (p.data_size, p.model_size) == (4, 2)
  assert partitioning.Partitioner().mesh.shape == {"data": 8, "model": 1}


def test_opt_state_follows_the_parameter_shardings():
  """A factored Adafactor row/column statistic keeps the matching axis of its kernel."""
  p = partitioning.Partitioner(mesh_shape=(2, 4))
  regex = r"encoder/layers_0/mlp/wi_0/kernel|.*prompt.*"
  train_abs, _ = trainable.split(abstract_params(CFG, PROMPT), regex)
  train_axes, _ = trainable.split(logical_axes(CFG, PROMPT), regex)
  train_sh = p.param_shardings(train_axes, train_abs)
  # Factor even this small [32, 64] kernel.
  optimizer = optimizers.adafactor(min_dim_size_to_factor=16)
  state_sh = p.opt_state_shardings(optimizer, train_abs, train_sh)
  factored = state_sh[0]
  kernel = lambda tree: tree["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]
  prompt = lambda tree: tree["encoder"]["prompt"]["prompt"]
  assert kernel(train_sh).spec == P(None, "model")
  assert kernel(factored.v_row).spec == P(None)  # statistic over rows: [32]
  assert kernel(factored.v_col).spec == P("model")  # over columns: [64]
  assert kernel(factored.v).is_fully_replicated  # (1,) placeholder
  assert prompt(factored.v).spec == prompt(train_sh).spec
  assert factored.count.is_fully_replicated
  shapes = jax.eval_shape(optimizer.init, train_abs)
  assert kernel(shapes[0].v_row).shape == (32,)
  assert kernel(shapes[0].v_col).shape == (64,)
  # Every leaf got a sharding of the right rank.
  for shape, sharding in zip(jax.tree.leaves(shapes), jax.tree.leaves(state_sh)):
    assert len(sharding.spec) <= len(shape.shape)


def test_shard_batch_builds_global_arrays_split_over_data():
  p = partitioning.Partitioner(mesh_shape=(2, 4))
  local = _batch(0)
  global_batch = p.shard_batch(local)
  tokens = global_batch["encoder_input_tokens"]
  assert tokens.shape == (8, 6)
  assert tokens.sharding.spec == P("data")
  assert tokens.addressable_shards[0].data.shape == (4, 6)
  np.testing.assert_array_equal(np.asarray(tokens), local["encoder_input_tokens"])
  with pytest.raises(ValueError, match="2 data shards"):
    p.shard_batch({"encoder_input_tokens": np.zeros((7, 6), np.int32)})


def test_shard_replicated_batch_splits_rows_when_they_divide():
  p = partitioning.Partitioner(mesh_shape=(2, 4))
  split = p.shard_replicated_batch(_batch(0, size=4))["encoder_input_tokens"]
  assert split.sharding.spec == P("data")
  np.testing.assert_array_equal(np.asarray(split), _batch(0, size=4)["encoder_input_tokens"])
  odd = p.shard_replicated_batch(_batch(0, size=3))["encoder_input_tokens"]
  assert odd.sharding.is_fully_replicated and odd.shape == (3, 6)


def test_place_lays_out_host_and_device_arrays_and_fetch_reads_them_back():
  p = partitioning.Partitioner(mesh_shape=(2, 4))
  tree = {"host": np.arange(32.0).reshape(4, 8), "device": jnp.ones((8,), jnp.bfloat16)}
  shardings = {"host": p.sharding(("embed", "mlp")), "device": p.replicated}
  placed = p.place(tree, shardings)
  assert placed["host"].sharding.spec == P(None, "model")
  assert placed["host"].addressable_shards[0].data.shape == (4, 2)
  assert placed["device"].sharding.is_fully_replicated
  assert placed["device"].dtype == jnp.bfloat16
  host = partitioning.fetch(placed)
  assert isinstance(host["host"], np.ndarray)
  np.testing.assert_array_equal(host["host"], tree["host"])


def test_for_batch_keeps_a_fitting_mesh_and_shrinks_only_a_derived_one(monkeypatch):
  p = partitioning.Partitioner(num_partitions=2)  # 4 x 2, data size from the devices
  assert p.for_batch(8) is p
  assert p.for_batch(16, num_microbatches=2) is p
  small = p.for_batch(6)  # 6 rows split over 2 of the 4 data shards
  assert (small.data_size, small.model_size) == (2, 2)
  assert small.mesh.devices.size == 4 and small.rules == p.rules
  with pytest.raises(ValueError, match="microbatches"):
    p.for_batch(8, num_microbatches=3)
  explicit = partitioning.Partitioner(mesh_shape=(4, 2))
  with pytest.raises(ValueError, match="BATCH_SIZE 6 does not split over the mesh's 4 data"):
    explicit.for_batch(6)
  with pytest.raises(ValueError, match="microbatches of 2 examples .* do not split"):
    explicit.for_batch(8, num_microbatches=4)
  # Every process of a multi-process job must own part of the mesh: no shrinking.
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  with pytest.raises(ValueError, match="does not split over the mesh's 4 data shards"):
    p.for_batch(6)


def test_microbatches_move_no_rows_between_data_shards():
  """Strided microbatches of a data-sharded batch stay on their devices: the compiled
  step has the gradient all-reduces and no gather, permute or all-to-all."""
  p = partitioning.Partitioner(mesh_shape=(8, 1))
  model = models.EncoderDecoderModel(Transformer(CFG, input_prompt=PROMPT))
  optimizer = optimizers.adafactor()
  train_abs, frozen_abs = trainable.split(abstract_params(CFG, PROMPT))
  train_axes, frozen_axes = trainable.split(logical_axes(CFG, PROMPT))
  state_sh = p.train_state_shardings(optimizer, train_abs, p.param_shardings(train_axes, train_abs))
  state_abs = jax.eval_shape(lambda t: TrainState.create(t, optimizer), train_abs)
  batch = {k: jax.ShapeDtypeStruct((32,) + v.shape[1:], v.dtype) for k, v in _batch(0).items()}
  step = p.partition_train_step(
    make_train_step(model, optimizer, num_microbatches=4),
    state_sh,
    p.param_shardings(frozen_axes, frozen_abs),
    compiler_options=FAST_COMPILE,
  )
  text = (
    step.lower(state_abs, frozen_abs, batch, jax.ShapeDtypeStruct((2,), jnp.uint32))
    .compile()
    .as_text()
  )
  assert "all-reduce" in text
  for collective in ("all-gather", "collective-permute", "all-to-all"):
    assert collective not in text


def test_partitioner_compiler_options_reach_every_program():
  p = partitioning.Partitioner(
    mesh_shape=(2, 4), compiler_options={"xla_backend_optimization_level": 0}
  )
  fn = p.partition(lambda x: x * 2, in_shardings=(p.replicated,), out_shardings=p.replicated)
  np.testing.assert_array_equal(np.asarray(fn(np.arange(4.0))), np.arange(4.0) * 2)
  bad = partitioning.Partitioner(mesh_shape=(2, 4), compiler_options={"xla_no_such_option": 1})
  with pytest.raises(Exception, match="xla_no_such_option"):
    bad.partition(lambda x: x, in_shardings=(bad.replicated,), out_shardings=bad.replicated)(
      np.arange(4.0)
    )


def test_activation_constraints_take_effect_inside_the_partitioned_step():
  p = partitioning.Partitioner(mesh_shape=(2, 4))
  model = models.EncoderDecoderModel(Transformer(CFG, input_prompt=PROMPT))
  optimizer = optimizers.adafactor()
  train_abs, frozen_abs = trainable.split(abstract_params(CFG, PROMPT))
  train_axes, frozen_axes = trainable.split(logical_axes(CFG, PROMPT))
  train_sh = p.param_shardings(train_axes, train_abs)
  state_sh = p.train_state_shardings(optimizer, train_abs, train_sh)
  state_abs = jax.eval_shape(lambda t: TrainState.create(t, optimizer), train_abs)
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in _batch(0).items()}
  rng = jax.ShapeDtypeStruct((2,), jnp.uint32)
  step_fn = make_train_step(model, optimizer)
  partitioned = p.partition_train_step(
    step_fn, state_sh, p.param_shardings(frozen_axes, frozen_abs)
  )
  text = partitioned.lower(state_abs, frozen_abs, batch, rng).as_text()
  assert text.count("sharding_constraint") >= 4 * (CFG.num_encoder_layers + CFG.num_decoder_layers)
  # Without the partitioner's context the same constraints are no-ops.
  plain = jax.jit(step_fn).lower(state_abs, frozen_abs, batch, rng).as_text()
  assert "sharding_constraint" not in plain


# ------------------------------------------------------------------------ training
@pytest.mark.parametrize("mesh_shape", [(8, 1), (2, 4), (1, 8)])
def test_training_on_a_mesh_matches_one_device(reference_prompt, mesh_shape):
  prompt = _train(mesh_shape)
  assert not np.allclose(prompt, _params(CFG)["encoder"]["prompt"]["prompt"])
  np.testing.assert_allclose(prompt, reference_prompt, atol=1e-5, rtol=0)


@pytest.mark.parametrize("lever", [{"remat": "full"}, {"remat": "dots"}, {"microbatches": 4}])
def test_memory_levers_do_not_change_the_prompt(reference_prompt, lever):
  np.testing.assert_allclose(_train((2, 4), **lever), reference_prompt, atol=1e-5, rtol=0)


def test_bfloat16_frozen_parameters_stay_close(reference_prompt):
  prompt = _train((2, 4), frozen_dtype="bfloat16")
  start = _params(CFG)["encoder"]["prompt"]["prompt"]
  moved = np.abs(reference_prompt - start).max()
  # Rounding the frozen weights perturbs the gradients slightly, not the trajectory.
  assert np.abs(prompt - reference_prompt).max() < 0.05 * moved


# ------------------------------------------------------------------------ multi-host
def test_initialize_distributed_is_a_no_op_for_one_process(monkeypatch):
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    monkeypatch.delenv(name, raising=False)
  assert partitioning.initialize_distributed() is False
  assert partitioning.initialize_distributed(num_processes=1) is False
  assert calls == []


def test_initialize_distributed_reads_flags_or_environment(monkeypatch):
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
  monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
  monkeypatch.setenv("JAX_PROCESS_ID", "2")
  assert partitioning.initialize_distributed() is True
  assert partitioning.initialize_distributed(process_id=3) is True
  assert calls == [
    {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 2},
    {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3},
  ]
  monkeypatch.delenv("JAX_PROCESS_ID")
  with pytest.raises(ValueError, match="together"):
    partitioning.initialize_distributed()
  with pytest.raises(ValueError, match="outside"):
    partitioning.initialize_distributed(process_id=4)


def test_cli_multi_process_flags_reach_initialize(monkeypatch):
  from prompt_tuning import launch

  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    monkeypatch.delenv(name, raising=False)
  kwargs, rest = launch.split_distributed_args(
    ["--coordinator_address=10.0.0.1:1234", "--num_processes", "2", "--process_id=1", "--gin.X=1"]
  )
  assert rest == ["--gin.X=1"]
  launch.initialize_distributed(kwargs)
  assert calls == [{"coordinator_address": "10.0.0.1:1234", "num_processes": 2, "process_id": 1}]
  assert launch.split_distributed_args(["--distributed"])[0] == {"auto_detect": True}
  with pytest.raises(launch.UsageError, match="--num_processes must be an integer"):
    launch.split_distributed_args(["--num_processes=two"])
  with pytest.raises(launch.UsageError, match="together"):
    launch.initialize_distributed({"num_processes": 2})


def test_process_shard_info_names_this_process():
  info = partitioning.process_shard_info()
  assert (info.index, info.num_shards) == (0, 1)
