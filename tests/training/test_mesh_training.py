"""The trainer on device meshes (8 fake CPU devices): the same prompt as on one device,
and checkpoints that resume on another mesh.

Every run is the real `trainer.train` on the bundled demo task with a tiny model and
dropout on, so data, dropout keys, sharded placement, donation and orbax all take part.
Differences between meshes are float32 summation order only. Adafactor's first update
is sign(gradient), so after step 1 meshes agree to an ulp; from step 2 on its normalised
updates turn the gradients' relative rounding differences (~1e-5) into parameter
differences of about that much times the learning rate (0.3), growing each step.
"""

from __future__ import annotations

import functools
import shutil

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from prompt_tuning import models
from prompt_tuning.data import demo as demo_data
from prompt_tuning.prompts import Prompt
from prompt_tuning.t5 import T5Config, Transformer
from prompt_tuning.training import partitioning, trainer

STEPS = 3
# Worst prompt difference from one device, measured on meshes 2x4, 1x8 and 8x1: 6e-8
# after step 1, 8.8e-6 after step 2 and 1.7e-5 after step 3 (2.0e-5 for a run resumed
# from a 2x4 checkpoint on one device), while the last step alone moves values by > 1e-2.
AFTER_TWO_STEPS = dict(atol=1e-5, rtol=0)
AFTER_THREE_STEPS = dict(atol=4e-5, rtol=0)
# Skipping LLVM's optimisations makes these tiny programs compile ~3x faster.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


@pytest.fixture(scope="module", autouse=True)
def eight_devices():
  if jax.device_count() < 8:
    pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8")


@pytest.fixture(scope="module")
def model() -> models.EncoderDecoderModel:
  config = T5Config.from_size(
    "tiny", vocab_size=demo_data.demo_vocab_size(), num_heads=8, head_dim=4, dropout_rate=0.1
  )
  return models.EncoderDecoderModel(
    Transformer(config, input_prompt=functools.partial(Prompt, length=3))
  )


def _partitioner(mesh_shape):
  if mesh_shape is None:
    return partitioning.Partitioner(devices=jax.devices()[:1], compiler_options=FAST_COMPILE)
  return partitioning.Partitioner(mesh_shape=mesh_shape, compiler_options=FAST_COMPILE)


def _train(model, base_checkpoint, model_dir, mesh_shape) -> trainer.TrainResult:
  return trainer.train(
    model=model,
    mixture_or_task_name="demo_sentiment",
    task_feature_lengths={"inputs": 24, "targets": 4},
    train_steps=STEPS,
    batch_size=8,
    model_dir=str(model_dir),
    initial_checkpoint_path=base_checkpoint,
    eval_period=None,
    checkpoint_period=2,
    keep_checkpoints=None,
    log_period=STEPS,
    partitioner=_partitioner(mesh_shape),
  )


def _prompt(result: trainer.TrainResult) -> np.ndarray:
  return np.asarray(result.trainable["encoder"]["prompt"]["prompt"])


def _step_2_prompt(model_dir) -> np.ndarray:
  return np.load(model_dir / "numpy_checkpoints" / "checkpoint_2" / "encoder.prompt.prompt.npy")


@pytest.fixture(scope="module")
def one_device_run(tmp_path_factory, model, base_checkpoint):
  model_dir = tmp_path_factory.mktemp("one")
  return model_dir, _train(model, base_checkpoint, model_dir, None)


@pytest.fixture(scope="module")
def one_device(one_device_run) -> np.ndarray:
  return _prompt(one_device_run[1])


@pytest.fixture(scope="module")
def on_2x4(tmp_path_factory, model, base_checkpoint):
  model_dir = tmp_path_factory.mktemp("mesh_2x4")
  return model_dir, _train(model, base_checkpoint, model_dir, (2, 4))


def test_training_on_a_2x4_mesh_matches_one_device(on_2x4, one_device_run, one_device):
  model_dir, result = on_2x4
  assert result.step == STEPS
  before = _step_2_prompt(model_dir)
  np.testing.assert_allclose(before, _step_2_prompt(one_device_run[0]), **AFTER_TWO_STEPS)
  prompt = _prompt(result)
  np.testing.assert_allclose(prompt, one_device, **AFTER_THREE_STEPS)
  # The last step alone moved the prompt by far more than the tolerance.
  assert np.abs(prompt - before).max() > 1e-2
  # The frozen backbone was split T5X-style over "model"; the prompt was replicated.
  frozen = result.params
  assert frozen["decoder"]["logits_dense"]["kernel"].sharding.spec == P(None, "model")
  assert frozen["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"].sharding.spec == P(None, "model")
  assert frozen["token_embedder"]["embedding"].sharding.spec == P("model", None)
  assert result.trainable["encoder"]["prompt"]["prompt"].sharding.is_fully_replicated


def _preempted_copy(model_dir, destination):
  """The run as if killed right after its step-2 checkpoint."""
  shutil.copytree(model_dir, destination)
  shutil.rmtree(destination / f"checkpoint_{STEPS}")
  return destination


def test_resume_on_the_same_mesh_is_bit_identical(tmp_path, on_2x4, model, base_checkpoint):
  model_dir, uninterrupted = on_2x4
  resumed = _train(model, base_checkpoint, _preempted_copy(model_dir, tmp_path / "run"), (2, 4))
  np.testing.assert_array_equal(_prompt(resumed), _prompt(uninterrupted))


@pytest.mark.parametrize("mesh_shape", [(1, 8), None], ids=["1x8", "one_device"])
def test_checkpoint_from_2x4_resumes_on_another_mesh(
  tmp_path, on_2x4, one_device, model, base_checkpoint, mesh_shape
):
  model_dir, _ = on_2x4
  resumed = _train(model, base_checkpoint, _preempted_copy(model_dir, tmp_path / "run"), mesh_shape)
  assert resumed.step == STEPS
  np.testing.assert_allclose(_prompt(resumed), one_device, **AFTER_THREE_STEPS)
