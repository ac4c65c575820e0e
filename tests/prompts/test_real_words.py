"""Prefixes and deep prompts initialised from real words equal the frozen model's own
activations on that string (checked by hand at the layers where that is short), through
gin and a checkpoint as training uses them, and are refused where they cannot apply."""

from __future__ import annotations

import functools
import glob
import os

import jax
import numpy as np
import pytest

from prompt_tuning import convert
from prompt_tuning.data import demo
from prompt_tuning.prompts.deep_prompt import DeepPrompt
from prompt_tuning.prompts.prefix_tuning import PrefixTuning
from prompt_tuning.prompts.real_words import RealWords
from prompt_tuning.t5 import Transformer
from tests.cli_testing import LEGACY_BASE, run_cli, tiny_job_args
from tests.prompts import family_testing
from tests.prompts.family_testing import CFG

TEXT = "The quick brown fox"
DEMO_SPM = demo.demo_data_path("demo_spm.model")


@pytest.fixture(scope="module")
def frozen():
  return family_testing.eager_init()


@pytest.fixture(scope="module")
def ids(test_vocabulary):
  return np.asarray(test_vocabulary.encode(TEXT), np.int32)


def _words(frozen, test_vocabulary) -> RealWords:
  return RealWords(TEXT, params=frozen, vocabulary=test_vocabulary)


def _rms_norm(x, scale):
  return x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + CFG.layer_norm_epsilon) * scale


def _init(layer_prefix):
  return family_testing.eager_init(layer_prefix=layer_prefix)


def test_prefixes_are_the_strings_keys_and_values_in_every_layer(frozen, test_vocabulary, ids):
  words = _words(frozen, test_vocabulary)
  hook = functools.partial(
    PrefixTuning, length=len(ids), reparameterize=False, cross_attention=True, real_words=words
  )
  prefix = _init(hook)
  embedded = np.asarray(frozen["token_embedder"]["embedding"])[ids]
  layer0 = frozen["encoder"]["layers_0"]
  normed = _rms_norm(embedded, np.asarray(layer0["pre_attention_layer_norm"]["scale"]))
  for kind in ("key", "value"):
    by_hand = normed @ np.asarray(layer0["attention"][kind]["kernel"])
    np.testing.assert_allclose(
      prefix["encoder"]["layer_prompt"][kind][0], by_hand, rtol=1e-4, atol=1e-5
    )
  # Cross-attention: the string's encoding through each decoder layer's kernels.
  encoded = Transformer(CFG).apply({"params": frozen}, ids[None], method=Transformer.encode)
  sequence = np.asarray(encoded.sequence[0])
  for layer in range(CFG.num_decoder_layers):
    attention = frozen["decoder"][f"layers_{layer}"]["encoder_decoder_attention"]
    for kind in ("key", "value"):
      np.testing.assert_allclose(
        prefix["decoder"]["layer_prompt"][f"cross_{kind}"][layer],
        sequence @ np.asarray(attention[kind]["kernel"]),
        rtol=1e-4,
        atol=1e-5,
      )


def test_deep_prompts_are_the_layer_inputs_whose_keys_are_the_prefixes(
  frozen, test_vocabulary, ids
):
  words = _words(frozen, test_vocabulary)
  deep = _init(functools.partial(DeepPrompt, length=len(ids), real_words=words))
  prefix = _init(
    functools.partial(PrefixTuning, length=len(ids), reparameterize=False, real_words=words)
  )
  embedded = np.asarray(frozen["token_embedder"]["embedding"])[ids]
  for stack, attention, norm in (
    ("encoder", "attention", "pre_attention_layer_norm"),
    ("decoder", "self_attention", "pre_self_attention_layer_norm"),
  ):
    hidden = deep[stack]["layer_prompt"]["prompt"]
    np.testing.assert_allclose(hidden[0], embedded, rtol=1e-6)  # Layer 0's input.
    for layer in range(hidden.shape[0]):
      params = frozen[stack][f"layers_{layer}"]
      normed = _rms_norm(np.asarray(hidden[layer]), np.asarray(params[norm]["scale"]))
      np.testing.assert_allclose(
        prefix[stack]["layer_prompt"]["key"][layer],
        normed @ np.asarray(params[attention]["key"]["kernel"]),
        rtol=1e-4,
        atol=1e-5,
      )


def test_a_short_string_is_repeated_to_fill_the_prefix(frozen, test_vocabulary, ids):
  words = _words(frozen, test_vocabulary)
  assert list(words.token_ids(2 * len(ids) + 1)) == [*ids, *ids, ids[0]]
  deep = _init(functools.partial(DeepPrompt, length=2 * len(ids) + 1, real_words=words))
  hidden = deep["encoder"]["layer_prompt"]["prompt"]
  np.testing.assert_allclose(hidden[0][len(ids)], hidden[0][0])  # Same token, embedded.


def test_the_forms_without_direct_prefixes_are_refused(frozen, test_vocabulary):
  words = _words(frozen, test_vocabulary)
  with pytest.raises(ValueError, match="REPARAMETERIZE = False"):
    _init(functools.partial(PrefixTuning, length=2, real_words=words))
  with pytest.raises(ValueError, match="REPARAMETERIZE = False"):
    _init(functools.partial(DeepPrompt, length=2, reparameterize=True, real_words=words))
  with pytest.raises(ValueError, match="per-layer prompts"):
    _init(functools.partial(DeepPrompt, length=2, combine="add", real_words=words))
  with pytest.raises(ValueError, match="RealWords.checkpoint"):
    _init(
      functools.partial(
        DeepPrompt, length=2, real_words=RealWords(TEXT, vocabulary=test_vocabulary)
      )
    )
  with pytest.raises(ValueError, match="empty"):
    RealWords("  ")


def test_training_from_the_gin_file_starts_at_the_checkpoints_activations(tmp_path):
  """prefix_tuning.gin + init/real_words.gin: with a zero learning rate the saved prefix
  is the initial one, which equals the activations of the run's frozen checkpoint."""
  model_dir = tmp_path / "run"
  result = run_cli(
    tiny_job_args(
      "train",
      "prompt_finetune.gin",
      "prompt_tuning/configs/prompts/prefix_tuning.gin",
      "prompt_tuning/configs/prompts/init/real_words.gin",
      REAL_WORDS_TEXT="'positive review'",
      MODEL_DIR=repr(str(model_dir)),
      TRAIN_STEPS="1",
      EVAL_PERIOD="None",
      CHECKPOINT_PERIOD="1",
      LEARNING_RATE="0.0",
      # The words are read with the task's vocabulary, as the class-label initialiser's.
      **{"prompt_tuning.data.vocab.get_vocabulary.spm_path": repr(DEMO_SPM)},
    )
  )
  assert result.returncode == 0, result.stderr[-3000:]
  saved = sorted(glob.glob(str(model_dir / "numpy_checkpoints" / "checkpoint_*")))[-1]
  key = np.load(os.path.join(saved, "encoder.layer_prompt.key.npy"))
  config = CFG.__class__.from_size("tiny", vocab_size=demo.demo_vocab_size())
  words = RealWords(
    "positive review",
    params=jax.tree.map(np.asarray, convert.load_params(LEGACY_BASE, config)),
    vocabulary=demo.get_demo_vocabulary(),
  )
  expected = words.activations(config, key.shape[1])["encoder"]["key"]
  np.testing.assert_allclose(key, expected, rtol=1e-4, atol=1e-5)
