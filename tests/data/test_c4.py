"""Prefix-LM and span-corruption tasks over mocked TFDS text, and the sentinel switch."""

from __future__ import annotations

import gin
import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from prompt_tuning.data import c4

_DOCUMENTS = [
  "The quick brown fox jumps over the lazy dog. " * 6,
  "The book was written by Jane Austen in 1813.",
  "A paragraph about science, history, sports and music with numbers 1 2 3 4 5.",
  "The sun rose.",
]


def _fake_as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **kwargs):
  """The same few documents for any text dataset, under the key `text` or `article`."""
  del split, decoders, read_config, shuffle_files, kwargs
  key = "article" if self.name == "cnn_dailymail" else "text"
  return tf.data.Dataset.from_tensor_slices({key: _DOCUMENTS, "url": ["u"] * len(_DOCUMENTS)})


@pytest.fixture(scope="module", autouse=True)
def registered(test_vocabulary):
  return c4.register(test_vocabulary)


@pytest.fixture()
def mock_tfds():
  with tfds.testing.mock_data(as_dataset_fn=_fake_as_dataset):
    yield


def _dataset(name: str, lengths, split: str = "train", seed: int = 0) -> tf.data.Dataset:
  return seqio.get_mixture_or_task(name).get_dataset(
    lengths, split=split, shuffle=False, seed=seed, num_epochs=1, try_in_mem_cache=False
  )


def _strip_eos(tokens, vocabulary) -> list[int]:
  tokens = [int(t) for t in tokens]
  assert tokens[-1] == vocabulary.eos_id
  return tokens[:-1]


def _is_window(part: list[int], whole: list[int]) -> bool:
  return any(whole[i : i + len(part)] == part for i in range(len(whole) - len(part) + 1))


def test_names_are_registered(registered):
  assert registered == ["c4_prefix_lm", "c4_span_corruption"]


def test_prefix_lm_splits_documents_into_prefix_and_continuation(mock_tfds, test_vocabulary):
  # Long enough for every document: each example is one whole document, cut once.
  examples = list(_dataset("c4_prefix_lm", {"inputs": 128, "targets": 128}).as_numpy_iterator())
  assert len(examples) == len(_DOCUMENTS)
  for example, document in zip(examples, _DOCUMENTS):
    prefix = _strip_eos(example["inputs"], test_vocabulary)
    continuation = _strip_eos(example["targets"], test_vocabulary)
    assert prefix and continuation
    assert prefix + continuation == test_vocabulary.encode(document)
    assert test_vocabulary.decode(prefix + continuation) == document.strip()


def test_prefix_lm_windows_fit_the_lengths_and_depend_on_the_seed(mock_tfds, test_vocabulary):
  lengths = {"inputs": 12, "targets": 6}
  first, again, other = (
    [
      (e["inputs"].tolist(), e["targets"].tolist())
      for e in _dataset("c4_prefix_lm", lengths, seed=s).as_numpy_iterator()
    ]
    for s in (1, 1, 2)
  )
  assert first == again and first != other
  assert len(first) == len(_DOCUMENTS)  # One example per document, never packed.
  for (inputs, targets), document in zip(first + other, _DOCUMENTS + _DOCUMENTS):
    prefix = _strip_eos(inputs, test_vocabulary)
    continuation = _strip_eos(targets, test_vocabulary)
    assert 1 <= len(prefix) <= 11 and 1 <= len(continuation) <= 5
    assert _is_window(prefix + continuation, test_vocabulary.encode(document))

  converted = seqio.EncDecFeatureConverter(pack=False)(_dataset("c4_prefix_lm", lengths), lengths)
  batch = next(converted.as_numpy_iterator())
  assert batch["encoder_input_tokens"].shape == (12,)
  assert batch["decoder_input_tokens"][0] == 0  # Decoding starts from pad, as in T5.


def test_span_corruption_lengths_match_t5():
  assert c4.span_corruption_lengths(512) == (568, 114)
  assert c4.span_corruption_lengths(32)[0] > 32


def test_noise_mask_has_t5_counts_and_starts_clean():
  seeds = [tf.constant([1, 2]), tf.constant([3, 4])]
  mask = c4.random_spans_noise_mask(tf.constant(100), 0.15, 3.0, seeds).numpy()
  assert mask.shape == (100,) and mask.sum() == 15 and not mask[0]
  span_starts = np.flatnonzero(mask & ~np.concatenate([[False], mask[:-1]]))
  assert len(span_starts) == 5


def _uncorrupt(inputs: list[int], targets: list[int], first_sentinel: int) -> list[int]:
  """Puts each sentinel's hidden tokens (from the targets) back into the inputs."""
  hidden: dict[int, list[int]] = {}
  current = None
  for token in targets:
    if token > first_sentinel - 100:
      current = token
      hidden[current] = []
    else:
      hidden[current].append(token)
  restored = []
  for token in inputs:
    restored += hidden[token] if token in hidden else [token]
  return restored


def test_span_corruption_end_to_end(mock_tfds, test_vocabulary):
  lengths = {"inputs": 32, "targets": 12}
  tokens_length, targets_length = c4.span_corruption_lengths(32)
  dataset = _dataset("c4_span_corruption", lengths)
  examples = list(dataset.as_numpy_iterator())
  stream = sum((test_vocabulary.encode(d) for d in _DOCUMENTS), [])
  first_sentinel = c4.first_sentinel_id(test_vocabulary)
  assert first_sentinel == test_vocabulary.encode("<extra_id_0>")[0]

  restored = []
  for example in examples:
    inputs = _strip_eos(example["inputs"], test_vocabulary)
    targets = _strip_eos(example["targets"], test_vocabulary)
    sentinels = [t for t in inputs if t > first_sentinel - 100]
    # Sentinels count down from <extra_id_0>, in the same order in inputs and targets.
    assert sentinels == list(range(first_sentinel, first_sentinel - len(sentinels), -1))
    assert targets[0] == first_sentinel
    assert [t for t in targets if t > first_sentinel - 100] == sentinels
    restored += _uncorrupt(inputs, targets, first_sentinel)
  # Packed documents, cut into segments, corrupted and put back: the original stream.
  assert restored == stream
  assert len(examples[0]["inputs"]) == 32  # A full segment fills the inputs exactly.
  assert len(examples[0]["targets"]) <= targets_length
  assert len(_strip_eos(examples[0]["inputs"], test_vocabulary)) < tokens_length

  converted = seqio.EncDecFeatureConverter(pack=False)(dataset, lengths)
  batch = next(converted.as_numpy_iterator())
  assert batch["decoder_target_tokens"][0] == first_sentinel


def test_span_corruption_is_deterministic_given_a_seed(mock_tfds):
  lengths = {"inputs": 32, "targets": 12}
  a, b, c = (
    [
      e["inputs"].tolist()
      for e in _dataset("c4_span_corruption", lengths, seed=s).as_numpy_iterator()
    ]
    for s in (3, 3, 4)
  )
  assert a == b and a != c


def test_text_task_registers_any_tfds_text_source_from_gin(mock_tfds, test_vocabulary):
  gin.clear_config()
  try:
    gin.parse_config(
      [
        "text_task.tfds_name = 'cnn_dailymail:3.4.0'",
        "text_task.text_key = 'article'",
        "text_task.objective = 'prefix_lm'",
        "text_task.splits = {'train': 'train[:2]'}",
        "get_vocabulary.spm_path = '%s'" % test_vocabulary.sentencepiece_model_file,
      ]
    )
    name = c4.text_task()
  finally:
    gin.clear_config()
  assert name == "cnn_dailymail_prefix_lm"
  assert "cnn_dailymail_span_corruption" in seqio.TaskRegistry.names()
  example = next(_dataset(name, {"inputs": 128, "targets": 128}).as_numpy_iterator())
  assert (
    test_vocabulary.decode(
      _strip_eos(example["inputs"], test_vocabulary)
      + _strip_eos(example["targets"], test_vocabulary)
    )
    == _DOCUMENTS[0].strip()
  )
  with pytest.raises(ValueError, match="Unknown objective"):
    c4.text_task(objective="mlm")


# ----------------------------------------------------------------------------------------
# The sentinel switch, over a task that needs no TFDS.


def _label_id(output, example=None, is_target=False):
  del example, is_target
  return {"no": 0, "yes": 1}.get(output.strip(), -1)


@pytest.fixture()
def tiny_task(test_vocabulary):
  name = "tiny_yes_no"
  seqio.TaskRegistry.remove(name)

  def source(split, shuffle_files, seed=None):
    del split, shuffle_files, seed
    return tf.data.Dataset.from_tensor_slices(
      {"inputs": ["is the sun up?", "is it night?"], "targets": ["yes", "no"]}
    )

  seqio.TaskRegistry.add(
    name,
    source=seqio.FunctionDataSource(source, splits=("train", "validation")),
    preprocessors=[
      seqio.preprocessors.tokenize,
      seqio.CacheDatasetPlaceholder(),
      seqio.preprocessors.append_eos_after_trim,
    ],
    output_features=c4.output_features(test_vocabulary),
    postprocess_fn=_label_id,
    metric_fns=[],
  )
  yield name
  seqio.TaskRegistry.remove(name)


def test_sentinel_variant_round_trips(tiny_task, test_vocabulary):
  variant = c4.add_sentinel_variant(tiny_task)
  assert variant == "tiny_yes_no_sentinel"
  task = seqio.TaskRegistry.get(variant)
  lengths = {"inputs": 16, "targets": 8}
  examples = list(
    task.get_dataset(lengths, split="validation", shuffle=False, num_epochs=1).as_numpy_iterator()
  )
  sentinel = c4.first_sentinel_id(test_vocabulary)
  plain = seqio.TaskRegistry.get(tiny_task).get_dataset(
    lengths, split="validation", shuffle=False, num_epochs=1
  )
  for example, original in zip(examples, plain.as_numpy_iterator()):
    assert example["targets"][0] == sentinel
    assert example["targets"][1:].tolist() == original["targets"].tolist()
    assert example["targets"][-1] == test_vocabulary.eos_id
    assert example["inputs"].tolist() == original["inputs"].tolist()

  # What the model would generate: the target tokens, sentinel included.
  generated = [test_vocabulary.decode(e["targets"].tolist()) for e in examples]
  assert generated[0].startswith("<extra_id_0>")
  assert [
    task.postprocess_fn(g, example=e, is_target=False) for g, e in zip(generated, examples)
  ] == [1, 0]
  assert [
    task.postprocess_fn(e["targets_pretokenized"].decode(), example=e, is_target=True)
    for e in examples
  ] == [1, 0]
  assert c4.strip_sentinel("<extra_id_0> yes <extra_id_0>") == "yes <extra_id_0>"

  # Trimming keeps the EOS and the sentinel: length 3 leaves one target token.
  short = next(
    task.get_dataset(
      {"inputs": 16, "targets": 3}, split="validation", shuffle=False, num_epochs=1
    ).as_numpy_iterator()
  )
  assert short["targets"].tolist()[0] == sentinel and short["targets"][-1] == 1


def test_sentinel_variant_of_a_mixture_and_gin_switch(tiny_task):
  mixture = "tiny_mixture"
  seqio.MixtureRegistry.remove(mixture)
  seqio.MixtureRegistry.add(mixture, [(tiny_task, 2.0)])
  try:
    gin.parse_config(["maybe_add_sentinel.add_sentinel = True"])
    variant = c4.maybe_add_sentinel(mixture)
    gin.clear_config()
    assert c4.maybe_add_sentinel(mixture) == mixture  # Off by default.
    sentinel_mixture = seqio.MixtureRegistry.get(variant)
    assert variant == "tiny_mixture_sentinel"
    assert {t.name: sentinel_mixture.get_rate(t) for t in sentinel_mixture.tasks} == {
      "tiny_yes_no_sentinel": 2.0
    }
  finally:
    gin.clear_config()
    seqio.MixtureRegistry.remove(mixture)
    seqio.MixtureRegistry.remove("tiny_mixture_sentinel")
    seqio.TaskRegistry.remove("tiny_yes_no_sentinel")
  with pytest.raises(ValueError, match="already is a sentinel variant"):
    c4.add_sentinel_variant("tiny_yes_no_sentinel")
  with pytest.raises(ValueError, match="No task or mixture named"):
    c4.add_sentinel_variant("no_such_task")
