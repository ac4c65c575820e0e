"""`prompt-tuning recycle`: the word filter, each recycler on maps it must recover, and the
end-to-end claim of prompt recycling: a prompt trained on one tiny model, recycled
through the two models' word embeddings, does its task on a second tiny model trained
from another seed, where random prompts are at chance."""

from __future__ import annotations

import functools
import itertools
import re

import jax
import numpy as np
import optax
import pytest
import seqio

from prompt_tuning import cli, convert, models, recycle, tree
from prompt_tuning.data import vocab
from prompt_tuning.prompts import Prompt
from prompt_tuning.t5 import T5Config, Transformer


def test_the_word_filter_keeps_whole_lower_case_words_in_id_order_after_the_skip():
  pieces = ["<pad>", "</s>", "<unk>", "\u2581the", "s", "\u2581Dog", "\u2581a1", "\u2581"]
  pieces += [f"\u2581w{'x' * i}" for i in range(10)] + ["\u2581<extra_id_0>", "\u2581caf\u00e9"]
  words = recycle.recycling_words(pieces, skip=2, size=5)
  assert [pieces[i] for i in words] == [f"\u2581w{'x' * i}" for i in range(1, 6)]
  # The window slides back when the vocabulary ends before it; all when there are few.
  assert [pieces[i] for i in recycle.recycling_words(pieces, skip=8, size=5)][
    -1
  ] == "\u2581wxxxxxxxxx"
  assert len(recycle.recycling_words(pieces, skip=8, size=5)) == 5
  assert len(recycle.recycling_words(pieces)) == 11


def test_v2v_lin_recovers_a_linear_map_and_lin_comb_agrees_with_it():
  rng = np.random.default_rng(0)
  source = rng.normal(size=(300, 8))
  mapping = rng.normal(size=(8, 12))
  target = source @ mapping
  prompt = rng.normal(size=(5, 8))
  np.testing.assert_allclose(recycle.fit_linear(source, target), mapping, atol=1e-9)
  lin = recycle.recycle(prompt, source, target, "v2v-lin")
  comb = recycle.recycle(prompt, source, target, "lin-comb")
  assert lin.shape == (5, 12) and lin.dtype == np.float32
  np.testing.assert_allclose(lin, prompt @ mapping, rtol=1e-4, atol=1e-4)
  # Minimum-norm weights over more words than dimensions: the same map (module docstring).
  np.testing.assert_allclose(comb, lin, rtol=1e-4, atol=1e-4)


def test_lin_comb_reproduces_a_prompt_made_of_words():
  rng = np.random.default_rng(1)
  source, target = rng.normal(size=(6, 10)), rng.normal(size=(6, 4))
  # Fewer words than dimensions: the combination is exact and unique.
  weights = rng.normal(size=(3, 6))
  recycled = recycle.recycle(weights @ source, source, target, "lin-comb")
  np.testing.assert_allclose(recycled, weights @ target, rtol=1e-4, atol=1e-4)


def test_v2v_nn_learns_a_nonlinear_map_its_loss_falling():
  rng = np.random.default_rng(2)
  source = rng.normal(size=(400, 6)).astype(np.float32)
  target = np.maximum(source @ rng.normal(size=(6, 4)), 0.0)
  mapping, history = recycle.fit_network(source, target, learning_rate=3e-3)
  assert len(history) == recycle.EPOCHS and history[-1] < 0.2 * history[0], history
  error = np.mean((mapping(source[:50]) - target[:50]) ** 2)
  assert error < 0.2 * np.mean(target[:50] ** 2)


# ---------------------------------------------------------------- end to end

_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
NUM_WORDS = 200
EMBEDDING_SCALE = 0.1


@pytest.fixture(scope="module")
def word_vocabulary(tmp_path_factory):
  """A SentencePiece word model of 200 invented lower-case words: every one passes the
  recycling filter, so the map is fit on all of them."""
  words = ["".join(pair) for pair in itertools.product(_SYLLABLES, _SYLLABLES)]
  chosen = [words[i] for i in np.random.RandomState(0).choice(len(words), NUM_WORDS, False)]
  lines = [" ".join(chosen[i : i + 8]) for i in range(0, NUM_WORDS, 8)] * 3
  path = str(tmp_path_factory.mktemp("words") / "words.model")
  vocab.train_sentencepiece(lines, path, vocab_size=NUM_WORDS + 3, model_type="word")
  return path, seqio.SentencePieceVocabulary(path, extra_ids=100)


def _batch(rng, words, size, label=None):
  """The backbones' task: 4 words, the first a class word (class A -> label 0, B -> 1),
  the rest neutral. With `label`, the prompt's task: the 3 neutral words alone, whose
  answer must come from the prompt standing where the class word was."""
  labels, class_a, class_b, neutral = words
  tokens = rng.choice(neutral, size=(size, 4))
  if label is None:
    classes = rng.randint(2, size=size)
    tokens[:, 0] = np.where(classes == 0, rng.choice(class_a, size), rng.choice(class_b, size))
    answer = labels[classes]
  else:
    tokens, answer = tokens[:, 1:], np.full(size, labels[label])
  eos = np.ones((size, 1), np.int64)
  return {
    "encoder_input_tokens": np.concatenate([tokens, eos], 1).astype(np.int32),
    "decoder_input_tokens": np.stack([np.zeros(size), answer], 1).astype(np.int32),
    "decoder_target_tokens": np.concatenate([answer[:, None], eos], 1).astype(np.int32),
  }


def _with_prompt(params, prompt):
  flat = dict(tree.flatten(params))
  flat["encoder/prompt/prompt"] = prompt
  return tree.unflatten(flat)


def _train_backbone(config, words, seed, random_params, steps=300):
  """A tiny model trained from seed `seed` (init and data order). Its embedding starts
  small so that what training puts there, the structure that pre-training gives real
  models and that recycling relies on, is not drowned by the random initialisation."""
  model = models.EncoderDecoderModel(Transformer(config))
  optimizer = optax.adam(3e-3)

  @jax.jit
  def step(params, state, batch):
    grads = jax.grad(lambda p: model.loss_fn(p, batch)[0])(params)
    updates, state = optimizer.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  params = random_params(config, seed=seed)
  params["token_embedder"]["embedding"] *= EMBEDDING_SCALE
  state = optimizer.init(params)
  rng = np.random.RandomState(seed)
  for _ in range(steps):
    params, state = step(params, state, _batch(rng, words, 32))
  return jax.tree.map(np.asarray, params)


def test_a_recycled_prompt_does_its_task_on_another_model_where_random_prompts_do_not(
  tmp_path, capsys, word_vocabulary, random_params
):
  spm_path, vocabulary = word_vocabulary
  processor = vocabulary.tokenizer
  ids = recycle.recycling_words(
    [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
  )
  assert len(ids) == NUM_WORDS
  words = (ids[:2], ids[2::3], ids[3::3], ids[4::3])
  config = T5Config.from_size("tiny", vocab_size=vocabulary.vocab_size)
  source, target = (_train_backbone(config, words, seed, random_params) for seed in (0, 1))
  paths = {}
  for name, params in (("source", source), ("target", target)):
    paths[name] = convert.save_params_orbax(params, str(tmp_path / name))

  prompted = models.EncoderDecoderModel(
    Transformer(config, input_prompt=functools.partial(Prompt, length=1))
  )
  optimizer = optax.adam(0.05)

  @jax.jit
  def prompt_step(prompt, state, params, batch):
    grads = jax.grad(lambda p: prompted.loss_fn(_with_prompt(params, p), batch)[0])(prompt)
    updates, state = optimizer.update(grads, state, prompt)
    return optax.apply_updates(prompt, updates), state

  score = jax.jit(
    lambda params, prompt, batch: prompted.score_batch(_with_prompt(params, prompt), batch)
  )

  def accuracy(params, prompt, label):
    """Rank classification between the two labels on 64 examples of task `label`."""
    batch = _batch(np.random.RandomState(99), words, 64, label)
    scores = []
    for candidate in words[0]:
      answer = np.full(64, candidate)
      candidate_batch = dict(batch)
      candidate_batch["decoder_input_tokens"] = np.stack([np.zeros(64), answer], 1).astype(np.int32)
      candidate_batch["decoder_target_tokens"] = np.stack([answer, np.ones(64)], 1).astype(np.int32)
      scores.append(np.asarray(score(params, prompt, candidate_batch)))
    return float(np.mean(np.argmax(scores, axis=0) == label))

  # One prompt per label, trained on the source model only.
  for label in (0, 1):
    prompt = np.random.RandomState(5 + label).uniform(-0.5, 0.5, (1, config.emb_dim))
    prompt = (prompt * EMBEDDING_SCALE).astype(np.float32)
    state = optimizer.init(prompt)
    rng = np.random.RandomState(10 + label)
    for _ in range(60):
      prompt, state = prompt_step(prompt, state, source, _batch(rng, words, 32, label))
    assert accuracy(source, prompt, label) == 1.0
    paths[label] = str(tmp_path / f"prompt_{label}.npy")
    np.save(paths[label], np.asarray(prompt))

  # Random prompts on the target model: at chance on average over draws.
  rng = np.random.RandomState(7)
  random_accuracy = np.mean(
    [
      accuracy(target, rng.normal(0, 0.2, (1, config.emb_dim)).astype(np.float32), label)
      for label in (0, 1)
      for _ in range(8)
    ]
  )
  assert random_accuracy < 0.75, random_accuracy

  for method in ("v2v-lin", "v2v-nn"):
    for label in (0, 1):
      out = str(tmp_path / f"recycled_{method}_{label}.npy")
      args = ["--prompt", paths[label], "--source-checkpoint", paths["source"]]
      args += ["--target-checkpoint", paths["target"], "--method", method, "--out", out]
      assert cli.main(["recycle", *args, "--vocab", spm_path]) == 0
      assert f"with {method} over {NUM_WORDS} words" in capsys.readouterr().out
      recycled = np.load(out)
      assert recycled.shape == (1, config.emb_dim)
      assert accuracy(target, recycled, label) >= 0.9, (method, label, random_accuracy)


@pytest.fixture
def small_checkpoint(tmp_path):
  return convert.save_params_orbax(
    {"token_embedder": {"embedding": np.ones((400, 16), np.float32)}}, str(tmp_path / "ckpt")
  )


@pytest.mark.parametrize(
  "change,expected",
  [
    ({"--prompt": "missing.npy"}, "prompt file .*missing.npy does not exist"),
    ({}, "prompt width 8 .* source embedding width 16"),
    ({"--source-checkpoint": "nowhere"}, "source checkpoint .*nowhere does not exist"),
    ({"--out": "out.txt"}, "--out .*out.txt must name a .npy file"),
  ],
)
def test_bad_inputs_are_one_line_errors(
  tmp_path, capsys, spm_path, small_checkpoint, change, expected
):
  prompt = str(tmp_path / "prompt.npy")
  np.save(prompt, np.ones((2, 8), np.float32))
  flags = {
    "--prompt": prompt,
    "--source-checkpoint": small_checkpoint,
    "--target-checkpoint": small_checkpoint,
    "--method": "v2v-lin",
    "--out": str(tmp_path / "out.npy"),
    "--vocab": spm_path,
  }
  flags.update({flag: str(tmp_path / value) for flag, value in change.items()})
  assert cli.main(["recycle", *itertools.chain(*flags.items())]) == 1
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and err.startswith("prompt-tuning recycle: error:")
  assert re.search(expected, err), err
