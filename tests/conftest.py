"""Shared set-up: CPU with 8 fake devices and quick-to-compile XLA, a small SentencePiece
vocabulary trained at test time (never downloaded), random model parameters."""

from __future__ import annotations

import os

# Tests run on CPU; keep TensorFlow from grabbing all threads or printing banners.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Multi-device behaviour is tested on 8 fake CPU devices; must be set before jax starts.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
  ).strip()
# The tests' programs are tiny and run a few times each, so compiling them dominates the
# suite: skipping LLVM's optimisations compiles them 2-3x faster. Values differ from the
# optimised code's only by float rounding (~1e-6 relative). Set the flag yourself (e.g.
# --xla_backend_optimization_level=2) to test the optimised code.
if "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"

import pytest

_CORPUS = [
  "The quick brown fox jumps over the lazy dog.",
  "question: who wrote the book? context: The book was written by Jane Austen in 1813.",
  "premise: The sun rose. hypothesis: It was morning. True False entailment",
  "not_entailment entailment neutral contradiction duplicate not_duplicate",
  "equivalent not_equivalent acceptable unacceptable positive negative",
  "boolq passage: Water boils at 100 degrees. question: does water boil",
  "rte cb copa wic wsc multirc record axb axg choice1 choice2 sentence1 sentence2",
  "A paragraph about science, history, sports and music with numbers 1 2 3 4 5.",
]


@pytest.fixture(scope="session")
def spm_path(tmp_path_factory) -> str:
  """Path of a ~300-piece SentencePiece model trained on a few English lines."""
  from prompt_tuning.data import vocab

  out = tmp_path_factory.mktemp("spm") / "test_spm.model"
  return vocab.train_sentencepiece(_CORPUS * 20, str(out), vocab_size=300)


@pytest.fixture(scope="session")
def test_vocabulary(spm_path):
  """A seqio vocabulary over the test SentencePiece model, with 100 sentinel ids."""
  import seqio

  return seqio.SentencePieceVocabulary(spm_path, extra_ids=100)


def _draw_params(config, input_prompt=None, layer_prefix=None, seed: int = 0, head=None) -> dict:
  """Random weights of sensible scale for `config` (and optional prompt modules), drawn
  in numpy: jitting the model's `init` compiles its whole forward pass, seconds per
  configuration on 2 CPU cores."""
  import jax
  import numpy as np

  from prompt_tuning.t5 import abstract_params

  rng = np.random.RandomState(seed)

  def draw(path, leaf):
    name = path[-1].key
    if name == "scale":
      return np.ones(leaf.shape, np.float32)
    if name == "prompt":
      return rng.uniform(-0.5, 0.5, leaf.shape).astype(np.float32)
    std = 1.0 if name == "embedding" else 1.0 / np.sqrt(leaf.shape[0])
    return (rng.normal(size=leaf.shape) * std).astype(np.float32)

  abstract = abstract_params(config, input_prompt, layer_prefix, head)
  return jax.tree_util.tree_map_with_path(draw, abstract)


@pytest.fixture(scope="session")
def random_params():
  """`random_params(config, input_prompt=None, layer_prefix=None, seed=0, head=None)`: a nested dict
  of numpy parameters with the model's names and shapes."""
  return _draw_params


@pytest.fixture
def clean_gin():
  """Gin bindings are global: clear them before and after a test that parses configs, so
  that no test sees another's bindings."""
  import gin

  gin.clear_config()
  yield
  gin.clear_config()
