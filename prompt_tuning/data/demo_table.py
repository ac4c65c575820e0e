"""A generated table-to-text set for the offline demo (`prompt-tuning demo --task
table_to_text`), written for this project: restaurant attributes in E2E's style and
sentences built from templates.

  demo_table_to_text  `name : Blue Door | eatType : pub | food : Italian | area : riverside`
                      -> "Blue Door is an Italian pub in the riverside area." Training has
                      one reference per table (one of two sentence styles, at random);
                      validation has both styles for each of its tables, scored as E2E
                      is: each table once against all its references (BLEU and COCO's
                      ROUGE-L, generation_metrics).
  demo_restaurant_lm  prefix-LM cuts (c4.prefix_lm) of restaurant descriptions alone, no
                      tables: what a pre-trained model would have read about restaurants.
  demo_table_lm_adaptation  that and the demo's own LM-adaptation mixture: the frozen model
                      the demo prompts has read the domain's words, never a table.

Everything comes from `random.Random(seed)` over the word lists below, so the examples are
the same on every machine; no file is read. The demo vocabulary splits the rarer words
into pieces, which only makes the sequences a little longer.
"""

from __future__ import annotations

import random
from typing import Mapping

import seqio
import tensorflow as tf

from prompt_tuning.data import demo, generation, generation_metrics

TABLE_TASK = "demo_table_to_text"
RESTAURANT_LM_TASK = "demo_restaurant_lm"
TABLE_LM_MIXTURE = "demo_table_lm_adaptation"
SPLIT_SIZES = {"train": 2000, "validation": 100}
SEEDS = {"train": 1, "validation": 2, "lm": 3}

NAMES = (
  "Blue Door",
  "Green Olive",
  "Red Lantern",
  "Silver Spoon",
  "The Old Mill",
  "Sunrise Cafe",
  "The Copper Pot",
  "River House",
  "The Happy Cow",
  "Bright Star",
  "The Golden Fork",
  "Little Garden",
)
EAT_TYPES = ("restaurant", "coffee shop", "pub")
FOODS = ("French", "Italian", "Chinese", "Indian", "Japanese", "English")
AREAS = ("riverside", "city centre")
PRICES = ("cheap", "moderate", "expensive")
OPTIONAL_CHANCE = 0.6


def sample_table(rng: random.Random) -> dict[str, str]:
  """name, eatType and food always; area, priceRange and familyFriendly each often."""
  table = {"name": rng.choice(NAMES), "eatType": rng.choice(EAT_TYPES), "food": rng.choice(FOODS)}
  if rng.random() < OPTIONAL_CHANCE:
    table["area"] = rng.choice(AREAS)
  if rng.random() < OPTIONAL_CHANCE:
    table["priceRange"] = rng.choice(PRICES)
  if rng.random() < OPTIONAL_CHANCE:
    table["familyFriendly"] = rng.choice(("yes", "no"))
  return table


def linearize(table: Mapping[str, str]) -> str:
  """E2E's linearisation, as generation.linearize_attributes writes it."""
  return " | ".join(f"{key} : {value}" for key, value in table.items())


def _article(word: str) -> str:
  return "an" if word[0].lower() in "aeiou" else "a"


def describe(table: Mapping[str, str], style: int) -> str:
  """One of two sentence styles: 0 leads with the name, 1 with the kind of place."""
  kind = " ".join(w for w in (table.get("priceRange"), table["food"], table["eatType"]) if w)
  family = table.get("familyFriendly")
  if style == 0:
    text = f"{table['name']} is {_article(kind)} {kind}"
    if "area" in table:
      text += f" in the {table['area']} area"
    text += "."
    if family is not None:
      text += " It is family friendly." if family == "yes" else " It is not family friendly."
    return text
  text = f"There is {_article(kind)} {kind} called {table['name']}"
  if "area" in table:
    text += f" near the {table['area']}"
  text += "."
  if family is not None:
    text += " Children are welcome." if family == "yes" else " Children are not welcome."
  return text


def examples(split: str) -> list[dict[str, str]]:
  """The split's (inputs, targets) pairs: train one random style per table, validation
  both styles of each table."""
  rng = random.Random(SEEDS[split])
  rows = []
  for _ in range(SPLIT_SIZES[split]):
    table = sample_table(rng)
    styles = (rng.randrange(2),) if split == "train" else (0, 1)
    rows.extend({"inputs": linearize(table), "targets": describe(table, s)} for s in styles)
  return rows


def restaurant_sentences(count: int = 2000) -> list[str]:
  rng = random.Random(SEEDS["lm"])
  return [describe(sample_table(rng), rng.randrange(2)) for _ in range(count)]


def _table_dataset(
  split: str, shuffle_files: bool = False, seed: int | None = None
) -> tf.data.Dataset:
  del shuffle_files, seed
  rows = examples(split)
  return tf.data.Dataset.from_tensor_slices(
    {key: [row[key] for row in rows] for key in ("inputs", "targets")}
  )


def _lm_dataset(
  split: str, shuffle_files: bool = False, seed: int | None = None
) -> tf.data.Dataset:
  del shuffle_files, seed
  sentences = restaurant_sentences()
  cut = len(sentences) * 9 // 10
  chosen = sentences[:cut] if split == "train" else sentences[cut:]
  return tf.data.Dataset.from_tensor_slices({"targets": chosen})


DEMO_TABLE_METRIC = generation_metrics.multi_reference(
  generation_metrics.bleu, generation_metrics.rouge_l_coco
)


def register(vocabulary: seqio.Vocabulary | None = None) -> list[str]:
  """(Re)registers the demo's table-to-text tasks with `vocabulary` (default: the demo's)."""
  vocabulary = vocabulary if vocabulary is not None else demo.get_demo_vocabulary()
  features = {
    "inputs": seqio.Feature(vocabulary=vocabulary, add_eos=True),
    "targets": seqio.Feature(vocabulary=vocabulary, add_eos=True),
  }
  seqio.TaskRegistry.remove(TABLE_TASK)
  seqio.TaskRegistry.add(
    TABLE_TASK,
    source=seqio.FunctionDataSource(
      _table_dataset,
      splits=tuple(SPLIT_SIZES),
      num_input_examples={
        "train": SPLIT_SIZES["train"],
        "validation": 2 * SPLIT_SIZES["validation"],
      },
    ),
    preprocessors=[
      seqio.preprocessors.tokenize,
      seqio.CacheDatasetPlaceholder(),
      seqio.preprocessors.append_eos_after_trim,
    ],
    output_features=features,
    postprocess_fn=generation.reference_with_input,
    metric_fns=[DEMO_TABLE_METRIC],
  )
  demo.add_domain_lm_adaptation(RESTAURANT_LM_TASK, TABLE_LM_MIXTURE, _lm_dataset, vocabulary)
  return [TABLE_TASK, RESTAURANT_LM_TASK, TABLE_LM_MIXTURE]


register()
