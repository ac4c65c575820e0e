"""Bundled and generated tasks for the linear-head demos (`prompt-tuning demo --head
sequence|token|span`), written for this project:

  demo_sentiment_cls  the bundled sentiment reviews (data/demo.py) with the label as an
                      integer class for the sequence head. Metric: accuracy.
  demo_ner            generated sentences from templates over word lists of people,
                      places and organisations, BIO-tagged (B-PER I-PER, B-LOC, B-ORG
                      I-ORG, O) for the token head. Metric: entity F1 (seqeval).
  demo_story_lm       prefix-LM cuts (c4.prefix_lm) of generated stories and NER
                      sentences alone, no questions and no tags: what a pre-trained model
                      would have read; `demo_story_lm_adaptation` mixes it with the demo's
                      own LM adaptation, for the token and span demos' frozen model.
  demo_qa_span        a generated short story of three people (where each works, for
                      which company) and a question about one of them, the answer a
                      span of the story, for the span head. Metric: SQuAD EM / F1.

Everything comes from `random.Random(seed)` over the lists below, so the examples are
the same on every machine; no file is read beyond the bundled reviews.
"""

from __future__ import annotations

import random
from typing import Any

import seqio
import tensorflow as tf

from prompt_tuning.data import classification, demo, metrics, spans, tagging

SENTIMENT_CLS_TASK = "demo_sentiment_cls"
STORY_LM_TASK = "demo_story_lm"
STORY_LM_MIXTURE = "demo_story_lm_adaptation"
NER_TASK = "demo_ner"
QA_SPAN_TASK = "demo_qa_span"
SPLIT_SIZES = {"train": 2000, "validation": 200}
SEEDS = {"train": 11, "validation": 12}
NER_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")

FIRST_NAMES = ("Anna", "Ben", "Clara", "David", "Emma", "Felix", "Greta", "Hugo", "Ida", "Jonas")
LAST_NAMES = ("Berg", "Stone", "Miller", "Lund", "Wood", "Hart", "Fox", "Moor")
PLACES = (
  ("Oslo",),
  ("Paris",),
  ("Lima",),
  ("Cairo",),
  ("New", "Harbor"),
  ("Green", "Valley"),
  ("Port", "Royal"),
  ("Rome",),
)
COMPANIES = (
  ("Blue", "Sky", "Foods"),
  ("Red", "River"),
  ("Acme",),
  ("Silver", "Lake", "Bank"),
  ("North", "Star"),
  ("Globex",),
)
# (words with slots, which slots): PER, ORG and LOC fill the slots in turn.
NER_TEMPLATES = (
  "PER works for ORG in LOC .",
  "PER moved to LOC last year .",
  "ORG opened an office in LOC .",
  "PER and PER met at the ORG shop .",
  "the food was good , said PER .",
  "PER visited LOC with PER .",
  "a new road to LOC was built by ORG .",
  "it rained all day in LOC .",
)


def _person(rng: random.Random) -> tuple[str, ...]:
  if rng.random() < 0.5:
    return (rng.choice(FIRST_NAMES),)
  return (rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES))


def _entity(kind: str, rng: random.Random) -> tuple[str, ...]:
  if kind == "PER":
    return _person(rng)
  return rng.choice(PLACES if kind == "LOC" else COMPANIES)


def ner_sentence(rng: random.Random) -> tuple[list[str], list[str]]:
  """(words, BIO tags) of one generated sentence."""
  words, tags = [], []
  for slot in rng.choice(NER_TEMPLATES).split():
    if slot in ("PER", "ORG", "LOC"):
      entity = _entity(slot, rng)
      words.extend(entity)
      tags.extend([f"B-{slot}"] + [f"I-{slot}"] * (len(entity) - 1))
    else:
      words.append(slot)
      tags.append("O")
  return words, tags


def _ner_dataset(split: str, shuffle_files: bool = False, seed: int | None = None) -> Any:
  del shuffle_files, seed
  rng = random.Random(SEEDS[split])
  rows = [ner_sentence(rng) for _ in range(SPLIT_SIZES[split])]
  tag_ids = {tag: i for i, tag in enumerate(NER_TAGS)}
  return tf.data.Dataset.from_generator(
    lambda: ({"tokens": w, "ner": [tag_ids[t] for t in t_]} for w, t_ in rows),
    output_signature={
      "tokens": tf.TensorSpec([None], tf.string),
      "ner": tf.TensorSpec([None], tf.int64),
    },
  )


def qa_example(rng: random.Random) -> dict[str, Any]:
  """A three-person story and one question about it, with the answer's character offset."""
  people = rng.sample(FIRST_NAMES, 3)
  places = rng.sample(PLACES, 3)
  companies = rng.sample(COMPANIES, 3)
  sentences, facts = [], []
  for person, place, company in zip(people, places, companies):
    place_text, company_text = " ".join(place), " ".join(company)
    sentences.append(f"{person} works for {company_text} in {place_text}.")
    facts.append((person, place_text, company_text))
  context = " ".join(sentences)
  person, place, company = rng.choice(facts)
  question, answer = rng.choice(
    (
      (f"Where does {person} work?", place),
      (f"Which company does {person} work for?", company),
      (f"Who works for {company}?", person),
    )
  )
  # The answer's own sentence holds it once; search from there.
  sentence_start = context.index(f"{person} works for")
  return {
    "question": question,
    "context": context,
    "answers": {"text": [answer], "answer_start": [context.index(answer, sentence_start)]},
    "id": f"demo-{rng.getrandbits(32):08x}",
  }


def _qa_dataset(split: str, shuffle_files: bool = False, seed: int | None = None) -> Any:
  del shuffle_files, seed
  rng = random.Random(SEEDS[split] + 100)
  rows = [qa_example(rng) for _ in range(SPLIT_SIZES[split])]
  return tf.data.Dataset.from_tensor_slices(
    {
      "question": [row["question"] for row in rows],
      "context": [row["context"] for row in rows],
      "answers": {
        "text": [row["answers"]["text"] for row in rows],
        "answer_start": [row["answers"]["answer_start"] for row in rows],
      },
      "id": [row["id"] for row in rows],
    }
  )


def _story_lm_dataset(split: str, shuffle_files: bool = False, seed: int | None = None) -> Any:
  del shuffle_files, seed
  rng = random.Random(SEEDS[split] + 200)
  texts = []
  for _ in range(SPLIT_SIZES[split]):
    texts.append(qa_example(rng)["context"])
    texts.append(" ".join(ner_sentence(rng)[0]))
  return tf.data.Dataset.from_tensor_slices({"targets": texts})


def _function_source(dataset_fn: Any) -> seqio.DataSource:
  return seqio.FunctionDataSource(
    dataset_fn, splits=tuple(SPLIT_SIZES), num_input_examples=dict(SPLIT_SIZES)
  )


def register(vocabulary: seqio.Vocabulary | None = None) -> list[str]:
  """(Re)registers the head demo tasks with `vocabulary` (default: the demo's)."""
  vocabulary = vocabulary if vocabulary is not None else demo.get_demo_vocabulary()
  sentiment = classification.add_classification_task(
    SENTIMENT_CLS_TASK,
    demo.sentiment_source(),
    [demo.parse_sentiment_line],
    demo.DEMO_LABELS,
    demo.sentiment_label,
    [metrics.accuracy],
    vocabulary,
  )
  ner = tagging.ner_task(NER_TASK, _function_source(_ner_dataset), NER_TAGS, vocabulary)
  qa = spans.span_task(QA_SPAN_TASK, _function_source(_qa_dataset), vocabulary)
  demo.add_domain_lm_adaptation(STORY_LM_TASK, STORY_LM_MIXTURE, _story_lm_dataset, vocabulary)
  return [sentiment, ner, qa, STORY_LM_TASK, STORY_LM_MIXTURE]


register()
