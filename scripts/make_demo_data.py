"""Writes the offline demo data bundled in `prompt_tuning/data/demo_data/`.

`prompt-tuning demo` must run without a network, so its data ships inside the package.
Every sentence is produced here from word lists and templates written for this project
(no external source, no download); a fixed seed makes the output byte-for-byte
reproducible, which `tests/data/test_demo.py` checks against the bundled files.

Outputs:
  sentiment_train.tsv, sentiment_validation.tsv   `text<TAB>label`, label in
      {negative, positive}, balanced. Reviews mix plain praise/complaints, negations
      ("not bad", "far from great") and contrasts ("X was awful, but I still loved it"),
      so the label is learnable but not a single keyword lookup.
  lm_train.txt.gz, lm_validation.txt.gz           one paragraph a line: reviews (many
      followed by a verdict word such as "Verdict: positive."), everyday narratives,
      general statements and sentences that use the label words in other senses. This is
      the corpus for the demo's short prefix-LM adaptation.
  demo_spm.model                                  SentencePiece (BPE) model trained on the
      LM training corpus and the sentiment training inputs.

Usage: python scripts/make_demo_data.py [--out_dir DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import os
import random
from typing import Callable, Sequence

SEED = 20210418  # Fixed: the bundled files are a function of this seed and the code below.
LABELS = ("negative", "positive")
NUM_TRAIN_PER_LABEL = 1000
NUM_VALIDATION_PER_LABEL = 100
NUM_LM_TRAIN = 4000
NUM_LM_VALIDATION = 200
# 1,180 pieces + 100 sentinel ids = 1,280 = 10 x 128 rows of the embedding, no padding.
# The corpus has only ~650 distinct words, so this leaves every word a single piece.
SPM_VOCAB_SIZE = 1180
# BPE, not T5's unigram: on this small templated corpus the unigram trainer stops at ~650
# pieces and still cuts frequent words ("The" -> "Th" + "e", "sentence" -> 3 pieces).
SPM_MODEL_TYPE = "bpe"
TASK_INPUT_PREFIX = "sentence: "

SENTIMENT_FILES = {"train": "sentiment_train.tsv", "validation": "sentiment_validation.tsv"}
LM_FILES = {"train": "lm_train.txt.gz", "validation": "lm_validation.txt.gz"}
SPM_FILE = "demo_spm.model"
DEFAULT_OUT_DIR = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "prompt_tuning", "data", "demo_data"
)


# ---------------------------------------------------------------------------------------
# Vocabulary of the reviews.


@dataclasses.dataclass(frozen=True)
class Domain:
  """What a review can be about; `be` is "was" for experiences and "is" for owned things."""

  items: tuple[str, ...]
  aspects: tuple[str, ...]
  be: str
  openers: tuple[str, ...]


DOMAINS = (
  Domain(
    items=(
      "film",
      "movie",
      "documentary",
      "thriller",
      "comedy",
      "drama",
      "cartoon",
      "sequel",
      "musical",
      "western",
    ),
    aspects=(
      "plot",
      "acting",
      "soundtrack",
      "ending",
      "dialogue",
      "pacing",
      "camera work",
      "script",
      "cast",
      "opening scene",
      "humour",
      "direction",
    ),
    be="was",
    openers=(
      "I watched this {item} last {day}.",
      "We saw this {item} at the cinema on {day}.",
      "My brother picked this {item} for movie night.",
      "I finally watched this {item} in {month}.",
      "We rented this {item} on a rainy {day}.",
      "I went to see this {item} with two friends.",
    ),
  ),
  Domain(
    items=(
      "book",
      "novel",
      "memoir",
      "cookbook",
      "biography",
      "travel guide",
      "detective story",
      "poetry collection",
    ),
    aspects=(
      "writing",
      "story",
      "main character",
      "ending",
      "pacing",
      "prose",
      "first chapter",
      "dialogue",
      "translation",
      "cover",
      "research",
    ),
    be="was",
    openers=(
      "I read this {item} on holiday in {month}.",
      "A friend lent me this {item}.",
      "I finished this {item} in {count} evenings.",
      "Our book club chose this {item} for {month}.",
      "I bought this {item} at the station before a long trip.",
    ),
  ),
  Domain(
    items=(
      "phone",
      "laptop",
      "blender",
      "backpack",
      "kettle",
      "vacuum cleaner",
      "coffee maker",
      "desk lamp",
      "keyboard",
      "camera",
      "jacket",
      "tent",
      "bicycle",
      "speaker",
      "printer",
      "watch",
    ),
    aspects=(
      "battery",
      "screen",
      "price",
      "build quality",
      "design",
      "packaging",
      "delivery",
      "sound",
      "handle",
      "manual",
      "customer service",
      "material",
      "zip",
      "charger",
      "finish",
    ),
    be="is",
    openers=(
      "I bought this {item} {count} weeks ago.",
      "This {item} arrived on {day}.",
      "I have used this {item} every day since {month}.",
      "I ordered this {item} as a gift for my father.",
      "I replaced my old {item} with this one in {month}.",
    ),
  ),
  Domain(
    items=(
      "restaurant",
      "cafe",
      "bakery",
      "pizza place",
      "diner",
      "noodle bar",
      "bistro",
      "tea room",
    ),
    aspects=(
      "food",
      "service",
      "coffee",
      "dessert",
      "menu",
      "staff",
      "atmosphere",
      "soup",
      "bread",
      "wine list",
      "music",
      "terrace",
    ),
    be="was",
    openers=(
      "We went to this {item} for a birthday dinner.",
      "I had lunch at this {item} with a colleague on {day}.",
      "We tried this {item} after a long walk.",
      "We booked a table at this {item} for {count} people.",
      "This {item} opened near our office in {month}.",
    ),
  ),
  Domain(
    items=("hotel", "hostel", "guest house", "resort", "holiday flat", "inn"),
    aspects=(
      "room",
      "bed",
      "breakfast",
      "location",
      "reception",
      "view",
      "pool",
      "shower",
      "wifi",
      "parking",
      "cleaning",
    ),
    be="was",
    openers=(
      "We stayed at this {item} for {count} nights in {month}.",
      "I booked this {item} for a work trip.",
      "We spent a long weekend at this {item}.",
      "We chose this {item} because it is close to the station.",
      "My parents stayed at this {item} last {day}.",
    ),
  ),
)

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = (
  "January",
  "February",
  "March",
  "April",
  "May",
  "June",
  "July",
  "August",
  "September",
  "October",
  "November",
  "December",
)
COUNTS = ("two", "three", "four", "five", "six")

# Gradable adjectives take "very"/"really"; extreme ones only "absolutely"/"truly".
ADJECTIVES = {
  "positive": {
    "gradable": (
      "good",
      "pleasant",
      "impressive",
      "solid",
      "lovely",
      "enjoyable",
      "nice",
      "clever",
    ),
    "extreme": (
      "excellent",
      "wonderful",
      "superb",
      "fantastic",
      "brilliant",
      "perfect",
      "amazing",
      "outstanding",
      "terrific",
      "great",
    ),
  },
  "negative": {
    "gradable": (
      "poor",
      "dull",
      "boring",
      "weak",
      "bland",
      "disappointing",
      "annoying",
      "frustrating",
      "sloppy",
      "bad",
    ),
    "extreme": (
      "terrible",
      "awful",
      "dreadful",
      "horrible",
      "useless",
      "mediocre",
      "pathetic",
      "hopeless",
    ),
  },
}
INTENSIFIERS = {
  "gradable": ("", "", "really ", "very ", "quite ", "rather "),
  "extreme": ("", "", "", "absolutely ", "truly "),
}
# Adjectives whose negation reads naturally and flips the sentiment.
NEGATABLE = {
  "positive": ("bad", "boring", "disappointing", "dull", "annoying", "a problem"),
  "negative": ("good", "great", "impressive", "pleasant", "memorable", "enjoyable"),
}

# Templates for one label. Slots: {item}, {aspect}, {aspect2}, {be}, {adj}.
NEGATED_SENTENCES = {
  "positive": (
    "The {aspect} {be} not {neg} at all.",
    "The {aspect} {be} never {neg}.",
    "I have no complaints about the {aspect}.",
    "I could not fault the {aspect}.",
    "Nothing about the {aspect} {be} disappointing.",
    "The {aspect} {be} not {neg}.",
  ),
  "negative": (
    "The {aspect} {be} not {neg} at all.",
    "The {aspect} {be} far from {neg}.",
    "I did not like the {aspect} at all.",
    "I could not enjoy the {aspect}.",
    "Nothing about the {aspect} {be} {neg}.",
    "The {aspect} {be} not {neg}.",
  ),
}
OVERALL_SENTENCES = {
  "positive": (
    "I loved this {item}.",
    "I would recommend this {item} to anyone.",
    "Highly recommended.",
    "Five stars from me.",
    "It {be} worth every penny.",
    "This {item} exceeded my expectations.",
    "I am really happy with it.",
    "What a wonderful {item}!",
    "I was not disappointed at all.",
    "I have no regrets.",
    "I cannot find anything to complain about.",
  ),
  "negative": (
    "I hated this {item}.",
    "Avoid this {item}.",
    "One star from me.",
    "It {be} a waste of money.",
    "This {item} fell short of my expectations.",
    "I am really unhappy with it.",
    "What a disappointing {item}!",
    "I would not recommend it to anyone.",
    "I did not enjoy it at all.",
    "It {be} not worth the money.",
    "I want my money back.",
  ),
}
# Clauses after "but" / after an "Although ..." clause; they decide the label of a mix.
TURNING_CLAUSES = {
  "positive": (
    "I still loved this {item}",
    "overall this {item} {be} {adj}",
    "the {aspect2} more than made up for it",
    "I would still recommend it",
    "I enjoyed it anyway",
    "in the end I was glad I chose it",
  ),
  "negative": (
    "I still did not like this {item}",
    "overall this {item} {be} {adj}",
    "the {aspect2} ruined it for me",
    "I would not recommend it",
    "I could not enjoy it",
    "in the end I regretted choosing it",
  ),
}
# Most reviews are plain praise or complaints; negations and contrasts, which need word
# order, are a minority that keeps the task from being a keyword lookup. (With 55% of them,
# the demo's 2-layer model, LM-adapted with Adafactor, plateaued at 70% rank accuracy.)
REVIEW_KINDS = {"plain": 0.7, "negated": 0.15, "mixed": 0.15}
VERDICTS = (
  "Verdict: {label}.",
  "Overall verdict: {label}.",
  "Sentiment: {label}.",
  "My verdict is {label}.",
  "In one word: {label}.",
)


def _other(label: str) -> str:
  return LABELS[1 - LABELS.index(label)]


def _adjective(rng: random.Random, label: str) -> str:
  kind = rng.choice(("gradable", "extreme"))
  return rng.choice(INTENSIFIERS[kind]) + rng.choice(ADJECTIVES[label][kind])


def _capitalise(sentence: str) -> str:
  return sentence[0].upper() + sentence[1:]


def _fill(
  rng: random.Random, template: str, domain: Domain, item: str, label: str, aspects: Sequence[str]
) -> str:
  """Fills every slot a template may use; unused values are simply ignored by format."""
  return template.format(
    item=item,
    be=domain.be,
    aspect=aspects[0],
    aspect2=aspects[1],
    adj=_adjective(rng, label),
    neg=rng.choice(NEGATABLE[label]),
    day=rng.choice(DAYS),
    month=rng.choice(MONTHS),
    count=rng.choice(COUNTS),
  )


def make_review(rng: random.Random, label: str) -> str:
  """One review of 1-4 sentences whose overall sentiment is `label`."""
  domain = rng.choice(DOMAINS)
  item = rng.choice(domain.items)
  aspects = rng.sample(domain.aspects, 3)
  fill = lambda template, lab=label: _fill(rng, template, domain, item, lab, aspects)
  sentences = []
  if rng.random() < 0.4:
    sentences.append(fill(rng.choice(domain.openers)))
  kind = rng.choices(tuple(REVIEW_KINDS), weights=tuple(REVIEW_KINDS.values()))[0]
  if kind == "plain":
    sentences.append(fill(rng.choice(("The {aspect} {be} {adj}.", "This {item} {be} {adj}."))))
    if rng.random() < 0.5:
      sentences.append(fill("The {aspect2} {be} {adj} too."))
    if rng.random() < 0.5:
      sentences.append(fill(rng.choice(OVERALL_SENTENCES[label])))
  elif kind == "negated":
    sentences.append(fill(rng.choice(NEGATED_SENTENCES[label])))
    if rng.random() < 0.6:
      sentences.append(fill(rng.choice(OVERALL_SENTENCES[label])))
  else:
    opposite = fill("the {aspect} {be} {adj}", _other(label))
    turn = fill(rng.choice(TURNING_CLAUSES[label]))
    if rng.random() < 0.5:
      sentences.append(_capitalise(f"{opposite}, but {turn}."))
    else:
      sentences.append(f"Although {opposite}, {turn}.")
    if rng.random() < 0.3:
      sentences.append(fill(rng.choice(OVERALL_SENTENCES[label])))
  return " ".join(_capitalise(s) for s in sentences)


# ---------------------------------------------------------------------------------------
# Vocabulary of the general-domain corpus.

PEOPLE = (
  ("Anna", "she", "her"),
  ("Ben", "he", "his"),
  ("Clara", "she", "her"),
  ("David", "he", "his"),
  ("Emma", "she", "her"),
  ("Felix", "he", "his"),
  ("Grace", "she", "her"),
  ("Hugo", "he", "his"),
  ("Iris", "she", "her"),
  ("Jack", "he", "his"),
  ("Lena", "she", "her"),
  ("Marco", "he", "his"),
  ("Nina", "she", "her"),
  ("Oscar", "he", "his"),
  ("Paula", "she", "her"),
  ("Tom", "he", "his"),
  ("Vera", "she", "her"),
  ("Sam", "he", "his"),
)
PLACES = (
  "market",
  "library",
  "beach",
  "park",
  "station",
  "museum",
  "bakery",
  "post office",
  "cinema",
  "harbour",
  "garden centre",
  "swimming pool",
  "old bridge",
  "town hall",
  "hardware shop",
  "bookshop",
)
WHEN = (
  "on Monday morning",
  "after work",
  "early on Saturday",
  "in the afternoon",
  "last week",
  "before breakfast",
  "on a rainy evening",
  "during the holidays",
  "at the end of the month",
  "just after lunch",
)
ACTIONS = (
  "bought some bread and a newspaper",
  "met an old friend from school",
  "waited for the bus in the rain",
  "read a book about the history of the town",
  "took photographs of the boats",
  "sat on a bench and watched the pigeons",
  "asked for directions to the museum",
  "tried a new kind of cheese",
  "found a wallet on the ground and handed it in",
  "listened to a street musician",
  "carried a heavy box up the stairs",
  "wrote a long letter to a cousin",
  "looked for a present for a friend",
  "paid the electricity bill",
  "helped a tourist with a map",
)
ENDINGS = (
  "felt tired but happy",
  "decided to come back the next day",
  "called {pos} mother to tell her about it",
  "walked home along the river",
  "forgot {pos} umbrella there",
  "made a cup of tea and went to bed early",
  "wrote everything down in {pos} diary",
  "was late for dinner",
  "promised to do it again soon",
  "told the whole story to {pos} neighbour",
)
WEATHER = (
  "The weather {stayed} {kind} {span}.",
  "It was {kind} {span}.",
  "The sky turned {colour} in the evening.",
)
WEATHER_SLOTS = {
  "stayed": ("stayed", "was"),
  "kind": ("sunny", "cold", "windy", "mild", "grey", "warm", "wet"),
  "span": ("all day", "until the evening", "for the rest of the week", "that morning"),
  "colour": ("grey", "dark", "pink", "pale blue"),
}
FACTS = (
  "Bread tastes best when it is still warm.",
  "The river runs through the middle of the old town.",
  "Most phones need to be charged every day.",
  "A good story needs characters that feel real.",
  "Many hotels serve breakfast between seven and ten.",
  "The library closes early on Sundays.",
  "Trains to the coast leave every hour in summer.",
  "A sharp knife is safer than a blunt one.",
  "Tea should steep for a few minutes before you drink it.",
  "The museum is free on the first Sunday of each month.",
  "Bicycles need their tyres pumped up every few weeks.",
  "Short films are often shown before the main feature.",
  "Most restaurants in the square open at noon.",
  "Reading before bed helps many people fall asleep.",
  "Fresh snow makes the streets very quiet.",
  "A small garden can still grow a lot of vegetables.",
  "The bus is usually late when it rains.",
  "Old houses are often cold in winter.",
  "Good coffee needs freshly ground beans.",
  "Children learn new words very quickly.",
  "The market sells fruit, fish and flowers on Saturdays.",
  "A warm jacket is useful in the mountains even in summer.",
  "Most printers run out of ink at the worst moment.",
  "Long books are easier to read in short chapters.",
  "Some cafes let you stay for hours with a single cup.",
  "Every camera needs light to take a clear picture.",
  "The harbour is busiest early in the morning.",
  "A map is still handy when the phone has no signal.",
  "Soup is a good way to use up vegetables.",
  "The park is full of runners on weekend mornings.",
)
LABEL_WORD_SENTENCES = (
  "The {test} came back {label}.",
  "{name} tried to stay positive {hard_time}.",
  "Reviews of the new {item} were {mostly} {label}.",
  "The reaction from the audience was {mostly} {label}.",
  "Any number below zero is negative, and any number above zero is positive.",
  "The first quarter brought {label} news for the company.",
  "A {label} attitude can change how a whole day goes.",
  "{name} gave the {item} a {label} review.",
  "The feedback from the customers was {mostly} {label}.",
  "Critics wrote {mostly} {label} things about the {item}.",
  "Most of the comments about the {item} were {label}.",
  "The effect of the new rule was {label} for small shops.",
)
LABEL_WORD_SLOTS = {
  "test": ("test", "blood test", "result of the test", "second test"),
  "hard_time": (
    "during the long winter",
    "after losing the match",
    "while looking for a new job",
    "when the train was cancelled",
  ),
  "mostly": ("mostly", "largely", "overwhelmingly", "clearly", ""),
}


def make_narrative(rng: random.Random) -> str:
  """A 2-4 sentence everyday story in the past tense about one person."""
  name, subject, possessive = rng.choice(PEOPLE)
  sentences = [
    f"{name} went to the {rng.choice(PLACES)} {rng.choice(WHEN)}.",
    f"{_capitalise(subject)} {rng.choice(ACTIONS)}.",
  ]
  if rng.random() < 0.7:
    ending = rng.choice(ENDINGS).format(pos=possessive)
    sentences.append(f"{rng.choice(('Afterwards', 'Later', 'In the end'))} {subject} {ending}.")
  if rng.random() < 0.4:
    weather = rng.choice(WEATHER).format(**{k: rng.choice(v) for k, v in WEATHER_SLOTS.items()})
    sentences.insert(rng.randrange(len(sentences) + 1), weather)
  return " ".join(sentences)


def make_facts(rng: random.Random) -> str:
  return " ".join(rng.sample(FACTS, rng.randint(1, 3)))


def make_label_word_sentence(rng: random.Random) -> str:
  """Sentences that use the label words in senses other than a review's verdict."""
  slots = {k: rng.choice(v) for k, v in LABEL_WORD_SLOTS.items()}
  domain = rng.choice(DOMAINS)
  text = rng.choice(LABEL_WORD_SENTENCES).format(
    label=rng.choice(LABELS), name=rng.choice(PEOPLE)[0], item=rng.choice(domain.items), **slots
  )
  return " ".join(text.split())  # An empty "mostly" slot leaves a double space.


def make_review_with_verdict(rng: random.Random) -> str:
  label = rng.choice(LABELS)
  return f"{make_review(rng, label)} {rng.choice(VERDICTS).format(label=label)}"


def make_plain_review(rng: random.Random) -> str:
  return make_review(rng, rng.choice(LABELS))


# Share of each kind of paragraph in the LM corpus.
LM_MIX: tuple[tuple[Callable[[random.Random], str], float], ...] = (
  (make_review_with_verdict, 0.40),
  (make_plain_review, 0.15),
  (make_narrative, 0.25),
  (make_facts, 0.10),
  (make_label_word_sentence, 0.10),
)


# ---------------------------------------------------------------------------------------
# Assembly.


def make_sentiment_splits(rng: random.Random) -> dict[str, list[tuple[str, str]]]:
  """Balanced, duplicate-free train and validation sets with no text in both."""
  seen: dict[str, None] = {}  # Ordered (unlike a set), so the output is reproducible.
  splits: dict[str, list[tuple[str, str]]] = {"train": [], "validation": []}
  for split, per_label in (
    ("train", NUM_TRAIN_PER_LABEL),
    ("validation", NUM_VALIDATION_PER_LABEL),
  ):
    for label in LABELS:
      made = 0
      while made < per_label:
        text = make_review(rng, label)
        if text not in seen:
          seen[text] = None
          splits[split].append((text, label))
          made += 1
    rng.shuffle(splits[split])
  return splits


def make_lm_corpus(rng: random.Random, exclude: set[str]) -> dict[str, list[str]]:
  """Paragraphs for prefix-LM adaptation; none repeats, none is a sentiment example."""
  makers = [maker for maker, _ in LM_MIX]
  weights = [weight for _, weight in LM_MIX]
  seen: dict[str, None] = {}
  while len(seen) < NUM_LM_TRAIN + NUM_LM_VALIDATION:
    text = rng.choices(makers, weights=weights)[0](rng)
    if text not in seen and text not in exclude:
      seen[text] = None
  lines = list(seen)
  rng.shuffle(lines)
  return {"validation": lines[:NUM_LM_VALIDATION], "train": lines[NUM_LM_VALIDATION:]}


def _write_text(path: str, text: str) -> None:
  with open(path, "w", encoding="utf-8", newline="\n") as f:
    f.write(text)


def _write_gzip(path: str, text: str) -> None:
  # mtime=0 and no file name in the header keep the bytes independent of when/where.
  with open(path, "wb") as raw:
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as f:
      f.write(text.encode("utf-8"))


def generate(out_dir: str = DEFAULT_OUT_DIR) -> dict[str, str]:
  """Writes every bundled file into `out_dir`; returns {file name: path}."""
  from prompt_tuning.data import vocab  # Here so `--help` works without the package.

  os.makedirs(out_dir, exist_ok=True)
  rng = random.Random(SEED)
  sentiment = make_sentiment_splits(rng)
  exclude = {text for examples in sentiment.values() for text, _ in examples}
  corpus = make_lm_corpus(rng, exclude)

  paths = {}
  for split, name in SENTIMENT_FILES.items():
    for text, _ in sentiment[split]:
      if "\t" in text or "\n" in text:
        raise ValueError(f"Generated text contains a tab or newline: {text!r}")
    paths[name] = os.path.join(out_dir, name)
    _write_text(paths[name], "".join(f"{text}\t{label}\n" for text, label in sentiment[split]))
  for split, name in LM_FILES.items():
    paths[name] = os.path.join(out_dir, name)
    _write_gzip(paths[name], "".join(f"{line}\n" for line in corpus[split]))

  spm_texts = (
    corpus["train"] + [TASK_INPUT_PREFIX + t for t, _ in sentiment["train"]] + list(LABELS)
  )
  paths[SPM_FILE] = vocab.train_sentencepiece(
    spm_texts, os.path.join(out_dir, SPM_FILE), vocab_size=SPM_VOCAB_SIZE, model_type=SPM_MODEL_TYPE
  )
  return paths


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument(
    "--out_dir",
    default=DEFAULT_OUT_DIR,
    help="Folder to write into (default: the package's demo_data).",
  )
  args = parser.parse_args(argv)
  for name, path in sorted(generate(args.out_dir).items()):
    print(f"{os.path.getsize(path):>9,d}  {path}")


if __name__ == "__main__":
  main()
