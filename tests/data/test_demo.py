"""The bundled demo data and its SeqIO tasks (prompt_tuning/data/demo.py)."""

from __future__ import annotations

import collections
import gzip
import importlib.util
import os
import sys

import pytest
import seqio

from prompt_tuning.data import demo
from prompt_tuning.data import metrics

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GENERATOR_PATH = os.path.join(REPO_ROOT, "scripts", "make_demo_data.py")
BUNDLED_FILES = (*demo.SENTIMENT_FILES.values(), *demo.LM_FILES.values(), demo.SPM_FILE)


def _read_tsv(split: str) -> list[tuple[str, str]]:
  with open(demo.demo_data_path(demo.SENTIMENT_FILES[split]), encoding="utf-8") as f:
    rows = [line.rstrip("\n").split("\t") for line in f]
  assert all(len(row) == 2 for row in rows), "every line must be text<TAB>label"
  return [(text, label) for text, label in rows]


def _read_corpus(split: str) -> list[str]:
  with gzip.open(demo.demo_data_path(demo.LM_FILES[split]), "rt", encoding="utf-8") as f:
    return f.read().splitlines()


def _load_generator():
  spec = importlib.util.spec_from_file_location("make_demo_data", GENERATOR_PATH)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses look their module up while the file runs.
  try:
    spec.loader.exec_module(module)
  finally:
    del sys.modules[spec.name]
  return module


def _examples(task: str, split: str, seed: int | None = None, limit: int = -1):
  dataset = seqio.get_mixture_or_task(task).get_dataset(
    sequence_length=None, split=split, shuffle=False, seed=seed
  )
  return list(dataset.take(limit).as_numpy_iterator())


# ---------------------------------------------------------------------------------------
# The files.


def test_sentiment_files_parse_and_are_balanced():
  splits = {split: _read_tsv(split) for split in demo.SPLITS}
  assert len(splits["train"]) == 2000 and len(splits["validation"]) == 200
  for rows in splits.values():
    counts = collections.Counter(label for _, label in rows)
    assert set(counts) == set(demo.DEMO_LABELS)
    assert counts["positive"] == counts["negative"]
    assert all(text.strip() == text and text for text, _ in rows)
  train_texts = {text for text, _ in splits["train"]}
  assert len(train_texts) == len(splits["train"])
  assert not train_texts & {text for text, _ in splits["validation"]}


def test_corpus_files_parse_and_do_not_contain_task_examples():
  corpus = {split: _read_corpus(split) for split in demo.SPLITS}
  assert len(corpus["train"]) == 4000 and len(corpus["validation"]) == 200
  task_texts = {text for split in demo.SPLITS for text, _ in _read_tsv(split)}
  for lines in corpus.values():
    assert all(len(line.split(" ")) >= 2 for line in lines)
    assert not task_texts & set(lines)
  # The label words appear in context, e.g. as a review's verdict.
  joined = " ".join(corpus["train"])
  assert joined.count("Verdict: positive.") > 50 and joined.count("Verdict: negative.") > 50


def test_bundle_is_small():
  total = sum(os.path.getsize(demo.demo_data_path(name)) for name in BUNDLED_FILES)
  assert total < 2 * 1024 * 1024


def test_generator_reproduces_the_bundled_files(tmp_path):
  generator = _load_generator()
  generator.generate(str(tmp_path))
  for name in BUNDLED_FILES:
    with open(tmp_path / name, "rb") as new, open(demo.demo_data_path(name), "rb") as old:
      new_bytes, old_bytes = new.read(), old.read()
    if name.endswith(".gz"):
      # Compare the text: another zlib build may compress the same text differently.
      new_bytes, old_bytes = gzip.decompress(new_bytes), gzip.decompress(old_bytes)
    assert new_bytes == old_bytes, f"{name} differs; rerun scripts/make_demo_data.py"


# ---------------------------------------------------------------------------------------
# Vocabulary.


def test_label_words_and_prefix_are_cheap_to_tokenise():
  vocabulary = demo.get_demo_vocabulary()
  for word in demo.DEMO_LABELS:
    assert len(vocabulary.encode(word)) == 1, word
    assert vocabulary.decode(vocabulary.encode(word)) == word
  assert len(vocabulary.encode(demo.INPUT_PREFIX.strip())) <= 2


def test_demo_vocab_size_is_pieces_plus_sentinels_padded_to_128():
  vocabulary = demo.get_demo_vocabulary()
  assert vocabulary.vocab_size == 1180 + 100
  assert demo.demo_vocab_size() == 1280
  assert demo.padded_vocab_size(vocabulary, multiple=1000) == 2000
  with pytest.raises(ValueError, match="multiple"):
    demo.padded_vocab_size(vocabulary, multiple=0)


# ---------------------------------------------------------------------------------------
# Tasks.


def test_sentiment_task_through_the_feature_converter():
  task = seqio.get_mixture_or_task(demo.SENTIMENT_TASK)
  assert metrics.accuracy in task.predict_metric_fns
  lengths = {"inputs": 64, "targets": 4}
  dataset = task.get_dataset(sequence_length=lengths, split="validation", shuffle=False)
  converted = seqio.EncDecFeatureConverter(pack=False)(dataset, lengths)
  batches = list(converted.as_numpy_iterator())
  assert len(batches) == 200
  vocabulary = demo.get_demo_vocabulary()
  rows = _read_tsv("validation")
  for example, (text, label) in zip(batches, rows):
    assert example["encoder_input_tokens"].shape == (64,)
    assert example["decoder_target_tokens"].shape == (4,)
    inputs = example["encoder_input_tokens"]
    num_inputs = int((inputs != 0).sum())
    assert 5 <= num_inputs < 64 and inputs[num_inputs - 1] == 1  # Ends in EOS, untruncated.
    assert vocabulary.decode(inputs[: num_inputs - 1].tolist()) == demo.INPUT_PREFIX + text
    targets = example["decoder_target_tokens"]
    assert targets[1] == 1 and vocabulary.decode(targets[:1].tolist()) == label
    assert example["decoder_input_tokens"][0] == 0  # Decoding starts from pad.


def test_sentiment_postprocessor_and_metric():
  task = seqio.get_mixture_or_task(demo.SENTIMENT_TASK)
  assert task.postprocess_fn("positive") == 1
  assert task.postprocess_fn(b" negative ", is_target=False) == 0
  assert task.postprocess_fn("positively") == -1
  assert task.postprocess_fn("") == -1
  targets = [task.postprocess_fn(t, is_target=True) for t in ("positive", "negative")]
  predictions = [task.postprocess_fn(p) for p in ("positive", "great")]
  assert metrics.accuracy(targets, predictions) == {"accuracy": 50.0}


def test_rank_task_has_one_row_per_candidate_and_one_correct():
  rows = _examples(demo.SENTIMENT_RANK_TASK, "validation")
  assert len(rows) == 2 * 200
  task = seqio.get_mixture_or_task(demo.SENTIMENT_RANK_TASK)
  targets = [
    task.postprocess_fn(row["targets_pretokenized"].decode(), example=row, is_target=True)
    for row in rows
  ]
  by_group = collections.defaultdict(list)
  for target, row in zip(targets, rows):
    by_group[target["group"]].append(target)
    assert row["targets_pretokenized"].decode() == demo.DEMO_LABELS[target["candidate"]]
  assert len(by_group) == 200
  assert all(sorted(t["candidate"] for t in g) == [0, 1] for g in by_group.values())
  assert all(sum(t["is_correct"] for t in g) == 1 for g in by_group.values())

  oracle = [0.0 if t["is_correct"] else -5.0 for t in targets]
  assert demo.rank_classification_accuracy(targets, oracle) == {"accuracy": 100.0}
  inverted = [-s for s in oracle]
  assert demo.rank_classification_accuracy(targets, inverted) == {"accuracy": 0.0}
  always_negative = [0.0 if t["candidate"] == 0 else -1.0 for t in targets]
  assert demo.rank_classification_accuracy(targets, always_negative) == {"accuracy": 50.0}
  with pytest.raises(ValueError, match="scores"):
    demo.rank_classification_accuracy(targets, oracle[:-1])


def test_prefix_lm_prefix_and_continuation_rejoin_to_the_text():
  vocabulary = demo.get_demo_vocabulary()
  lines = _read_corpus("validation")
  examples = _examples(demo.PREFIX_LM_TASK, "validation", seed=7)
  assert len(examples) == len(lines)
  for example, line in zip(examples, lines):
    prefix, continuation = example["inputs"].tolist(), example["targets"].tolist()
    assert prefix[-1] == 1 and continuation[-1] == 1  # EOS on both sides.
    assert len(prefix) >= 2 and len(continuation) >= 2  # At least one token each.
    assert prefix[:-1] + continuation[:-1] == vocabulary.encode(line)
    assert vocabulary.decode(prefix[:-1] + continuation[:-1]) == line


def test_prefix_lm_cuts_are_seeded():
  def cuts(seed):
    examples = _examples(demo.PREFIX_LM_TASK, "validation", seed=seed, limit=60)
    return [len(e["inputs"]) for e in examples]

  first = cuts(1)
  assert first == cuts(1)
  assert first != cuts(2)
  assert len(set(first)) > 10  # The cut point varies between texts.


def test_prefix_lm_through_the_feature_converter():
  """With short features, each example is an untrimmed window of its paragraph."""
  vocabulary = demo.get_demo_vocabulary()
  lengths = {"inputs": 16, "targets": 12}
  dataset = seqio.get_mixture_or_task(demo.PREFIX_LM_TASK).get_dataset(
    sequence_length=lengths, split="validation", shuffle=False, seed=0
  )
  converted = seqio.EncDecFeatureConverter(pack=False)(dataset, lengths)
  lines = _read_corpus("validation")
  for example, line in list(zip(converted.as_numpy_iterator(), lines))[:40]:
    assert example["encoder_input_tokens"].shape == (16,)
    assert example["decoder_target_tokens"].shape == (12,)
    inputs = example["encoder_input_tokens"][example["encoder_input_tokens"] != 0].tolist()
    targets = example["decoder_target_tokens"][example["decoder_target_tokens"] != 0].tolist()
    assert inputs[-1] == 1 and targets[-1] == 1 and len(inputs) >= 2 and len(targets) >= 2
    window = " ".join(map(str, inputs[:-1] + targets[:-1]))
    assert f" {window} " in f" {' '.join(map(str, vocabulary.encode(line)))} "


def test_register_rebinds_the_vocabulary(test_vocabulary):
  try:
    assert demo.register(test_vocabulary) == [*demo.TASK_NAMES, demo.LM_ADAPTATION_MIXTURE]
    for name in demo.TASK_NAMES:
      features = seqio.get_mixture_or_task(name).output_features
      assert features["inputs"].vocabulary is test_vocabulary
  finally:
    demo.register()
  vocabulary = seqio.get_mixture_or_task(demo.SENTIMENT_TASK).output_features["inputs"].vocabulary
  assert vocabulary.sentencepiece_model_file == demo.DEMO_SPM_PATH


def test_token_lengths_fit_small_feature_lengths():
  """The demo can use inputs 64 / targets 4 for sentiment without truncating anything."""
  vocabulary = demo.get_demo_vocabulary()
  for split in demo.SPLITS:
    rows = _read_tsv(split)
    # +1: the EOS that the tasks append.
    assert max(len(vocabulary.encode(demo.INPUT_PREFIX + text)) + 1 for text, _ in rows) <= 64
    assert max(len(vocabulary.encode(label)) + 1 for _, label in rows) == 2
    # A paragraph's prefix and continuation together hold at most its tokens (+ 2 EOS).
    assert max(len(vocabulary.encode(line)) + 2 for line in _read_corpus(split)) <= 128


def test_rank_task_scores_through_the_seqio_evaluator():
  """The evaluator regroups candidate rows by idx: oracle scores give 100%, a constant 50%."""
  task = demo.SENTIMENT_RANK_TASK
  evaluator = seqio.Evaluator(
    mixture_or_task_name=task,
    feature_converter=seqio.EncDecFeatureConverter(pack=False),
    eval_split="validation",
    sequence_length=None,
    use_memory_cache=True,
  )
  is_correct = [
    bool(ex["is_correct"]) for ex in evaluator.cached_task_datasets[task].as_numpy_iterator()
  ]
  positive_id = demo.get_demo_vocabulary().encode("positive")[0]

  def oracle(dataset, model_feature_shapes=None):
    del model_feature_shapes
    return [(int(i), 0.0 if is_correct[int(i)] else -3.0) for i, _ in dataset.as_numpy_iterator()]

  def always_positive(dataset, model_feature_shapes=None):
    del model_feature_shapes
    return [
      (int(i), float(ex["decoder_target_tokens"][0] == positive_id))
      for i, ex in dataset.as_numpy_iterator()
    ]

  for score_fn, expected in ((oracle, 100.0), (always_positive, 50.0)):
    results, _ = evaluator.evaluate(compute_metrics=True, predict_fn=None, score_fn=score_fn)
    assert results.result()[task] == {"accuracy": expected}


def test_verdict_task_cuts_at_the_cue_and_targets_a_label():
  task = seqio.get_mixture_or_task(demo.VERDICT_LM_TASK)
  examples = list(task.get_dataset(None, split="train", shuffle=False).take(20).as_numpy_iterator())
  assert len(examples) == 20
  for ex in examples:
    assert ex["inputs_pretokenized"].decode().endswith(demo.VERDICT_CUE)
    assert ex["targets_pretokenized"].decode() in demo.DEMO_LABELS
  mixture = seqio.get_mixture_or_task(demo.LM_ADAPTATION_MIXTURE)
  assert {t.name for t in mixture.tasks} == {demo.PREFIX_LM_TASK, demo.VERDICT_LM_TASK}
