"""SPoT's source tasks over mocked TFDS data: the upstream's names and formats, the MNLI
train/dev split, the unlabelled-example rule and the source mixtures."""

from __future__ import annotations

import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from prompt_tuning.data import glue, mrqa, spot, tasks

LENGTHS = {"inputs": 64, "targets": 16}


def _fake_as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **kwargs):
  """Three examples per builder whose texts name the builder, its config and the split."""
  del decoders, read_config, shuffle_files, kwargs
  config = self.builder_config.name if self.builder_config else ""
  origin = f"{self.name} {config} {split}".replace("  ", " ")
  texts = lambda key: [f"the {key} {i} ({origin})" for i in range(3)]  # noqa: E731
  if self.name == "mrqa":
    return tf.data.Dataset.from_tensor_slices(
      {
        "qid": ["m0", "m1", "m2"],
        "subset": ["x"] * 3,
        "question": texts("question"),
        "context": ["The book was written by Jane Austen in 1813."] * 3,
        "answers": tf.ragged.constant([["Jane Austen"], ["1813"], ["Austen"]]),
      }
    )
  features = {
    key: texts(key)
    for key in ("hypothesis", "premise", "context", "sentence", "sentence1", "sentence2")
  }
  features.update({key: texts(key) for key in ("question", "question1", "question2")})
  summary_keys = ("email_body", "subject_line", "text", "summary", "document", "article")
  features.update({key: texts(key) for key in (*summary_keys, "highlights", "dialogue")})
  labels = [0, 1, -1] if self.name == "snli" else [0, 1, 1]
  dtype = tf.float32 if config == "stsb" else tf.int64
  features["label"] = tf.constant(labels, dtype)
  features["idx"] = tf.range(3, dtype=tf.int32)
  features["uid"] = [f"u{i}" for i in range(3)]
  return tf.data.Dataset.from_tensor_slices(features)


@pytest.fixture(scope="module", autouse=True)
def registered(test_vocabulary):
  glue.register(test_vocabulary)
  mrqa.register(test_vocabulary)
  return spot.register(test_vocabulary)


@pytest.fixture()
def mock_tfds():
  with tfds.testing.mock_data(as_dataset_fn=_fake_as_dataset):
    yield


def _examples(name: str, split: str) -> list[dict]:
  task = seqio.TaskRegistry.get(name)
  ds = task.get_dataset(LENGTHS, split=split, shuffle=False, num_epochs=1, try_in_mem_cache=False)
  return list(ds.as_numpy_iterator())


def _text(example: dict, key: str) -> str:
  return example[f"{key}_pretokenized"].decode()


def test_the_upstream_task_names_are_registered():
  names = set(spot.register())
  assert {
    "spot_glue_cola_v200",
    "spot_glue_rte_v200",
    "spot_glue_mnli_train_v200",
    "spot_glue_mnli_validation_matched_v200",
    "spot_glue_mnli_validation_mismatched_v200",
    "spot_glue_mnli_and_dev_v200",
    "spot_anli_r1_v010",
    "spot_anli_r3_v010",
    "spot_doc_nli_v100",
    "spot_snli_v110",
    "spot_mrqa_squad_v100",
    "spot_mrqa_natural_questions_v100",
  } <= names
  assert not any("ax" in name.split("_") for name in names)  # AX has no labels to train on


def test_register_all_registers_the_spot_tasks_too(test_vocabulary):
  names = tasks.register_all(test_vocabulary)
  assert spot.MNLI_MIXTURE in names and spot.NLI_MIXTURE in names


def test_nli_examples_read_name_hypothesis_then_premise(mock_tfds):
  anli = _examples("spot_anli_r2_v010", "train")
  assert _text(anli[0], "inputs") == (
    "anli_r2 hypothesis: the hypothesis 0 (anli r2 train) context: the context 0 (anli r2 train)"
  )
  assert [_text(x, "targets") for x in anli] == ["entailment", "neutral", "neutral"]
  doc = _examples("spot_doc_nli_v100", "validation")
  assert _text(doc[1], "inputs").startswith("doc_nli hypothesis: the hypothesis 1 (doc_nli")
  assert " premise: the premise 1 " in _text(doc[1], "inputs")
  assert [_text(x, "targets") for x in doc] == ["not_entailment", "entailment", "entailment"]


def test_an_unlabelled_nli_example_keeps_its_text_with_the_target_unk(mock_tfds):
  snli = _examples("spot_snli_v110", "train")
  assert len(snli) == 3
  assert _text(snli[2], "targets") == "<unk>"


def test_nli_accuracy_compares_label_strings_so_an_off_label_answer_is_wrong():
  task = seqio.TaskRegistry.get("spot_snli_v110")
  assert task.postprocessor is None
  (metric,) = task.metric_fns
  result = metric(["entailment", "<unk>", "neutral"], ["entailment", "maybe", "neutral"])
  assert result == pytest.approx({"accuracy": 200 / 3})


def test_spot_glue_tasks_are_t5s_glue_format(mock_tfds):
  for name in ("rte", "stsb", "qqp"):
    ours = _examples(spot.glue_task_name(name), "validation")
    t5 = _examples(glue.task_name(name), "validation")
    assert [_text(x, "inputs") for x in ours] == [_text(x, "inputs") for x in t5]
    assert [_text(x, "targets") for x in ours] == [_text(x, "targets") for x in t5]


def test_mnli_trains_on_its_train_split_and_evaluates_on_both_dev_sets(mock_tfds):
  assert seqio.TaskRegistry.get(spot.MNLI_TRAIN).splits == ("train",)
  (train,) = {_text(x, "inputs").rsplit("(", 1)[1] for x in _examples(spot.MNLI_TRAIN, "train")}
  assert train == "glue mnli train)"
  for tfds_split, task in spot.MNLI_DEV.items():
    assert seqio.TaskRegistry.get(task).splits == ("validation",)
    origins = {_text(x, "inputs").rsplit("(", 1)[1] for x in _examples(task, "validation")}
    assert origins == {f"glue mnli {tfds_split})"}
  mixture = seqio.MixtureRegistry.get(spot.MNLI_MIXTURE)
  assert {t.name for t in mixture.tasks} == {spot.MNLI_TRAIN, *spot.MNLI_DEV.values()}
  trained = {t.name for t in mixture.tasks if "train" in t.splits}
  assert trained == {spot.MNLI_TRAIN}


def test_spot_mrqa_tasks_are_the_squad_format_of_the_domain_shift_study(mock_tfds):
  ours = _examples(spot.mrqa_task_name("news_qa"), "train")
  theirs = _examples(mrqa.mrqa_task_name("news_qa"), "train")
  assert [_text(x, "inputs") for x in ours] == [_text(x, "inputs") for x in theirs]
  assert _text(ours[0], "inputs").startswith("question: the question 0 ( mrqa news _ qa train )")


def test_the_source_mixtures_cover_each_family_and_train_only_on_train_splits():
  glue_mix = seqio.MixtureRegistry.get(spot.GLUE_MIXTURE)
  assert {t.name for t in glue_mix.tasks} == {
    *(spot.glue_task_name(n) for n in spot.GLUE_TASKS),
    spot.MNLI_TRAIN,
  }
  assert all("train" in t.splits for t in glue_mix.tasks)
  nli_mix = seqio.MixtureRegistry.get(spot.NLI_MIXTURE)
  assert {t.name for t in nli_mix.tasks} == {nli.task_name for nli in spot.NLI_SETS}
  mrqa_mix = seqio.MixtureRegistry.get(spot.MRQA_MIXTURE)
  assert len(mrqa_mix.tasks) == len(mrqa.IN_DOMAIN) == 6
  assert not any("textbook_qa" in t.name for t in mrqa_mix.tasks)  # held out, as upstream


def test_summarisation_sources_read_name_summarize_then_the_text(mock_tfds, test_vocabulary):
  names = set(spot.register(test_vocabulary))
  assert {s.task_name for s in spot.SUMMARIZATION_SETS} | {spot.SUMMARIZATION_MIXTURE} <= names
  assert "spot_cnn_dailymail_v340" in names and "spot_billsum_v300" in names
  aeslc = _examples("spot_aeslc_v100", "validation")
  assert _text(aeslc[1], "inputs") == "aeslc summarize: the email_body 1 (aeslc validation)"
  assert _text(aeslc[1], "targets") == "the subject_line 1 (aeslc validation)"
  cnn = _examples("spot_cnn_dailymail_v340", "train")
  assert _text(cnn[0], "inputs").startswith("cnn_dailymail summarize: the article 0 (cnn_dailymail")
  assert _text(cnn[0], "targets").startswith("the highlights 0 ")
  assert len(_examples("spot_billsum_v300", "ca_test")) == 3


def test_summaries_are_scored_by_t5s_rouge():
  task = seqio.TaskRegistry.get("spot_samsum_v100")
  assert task.postprocessor is None
  (metric,) = task.metric_fns
  result = metric(["the cat sat on the mat"], ["the cat sat"])
  # One example: rouge1 P 3/3, R 3/6 -> F 2/3; rouge2 P 2/2, R 2/5 -> F 4/7.
  assert result == pytest.approx({"rouge1": 200 / 3, "rouge2": 400 / 7, "rougeLsum": 200 / 3})
