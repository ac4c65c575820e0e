"""`prompt-tuning demo`: the offline end-to-end demos, each on bundled or generated data
and a tiny T5 1.1 LM-adapted from scratch, within a few minutes on 2 CPU cores.

  --task sentiment      (default) prompt tuning on the bundled sentiment task: the paper's
                        pipeline in miniature (demo/sentiment.py).
  --task table_to_text  Prefix-Tuning on a generated table-to-text set, BLEU and ROUGE-L
                        before and after (demo/table_to_text.py).
  --head sequence|token|span
                        P-Tuning v2 with a linear head instead of the decoder: sentiment
                        classes, generated NER, generated extractive QA (demo/heads.py).
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
from typing import Sequence

from prompt_tuning.demo import heads, sentiment, table_to_text
from prompt_tuning.demo.sentiment import TINY_DEMO_MODEL, lm_adapt, prompt_tune, run_demo

__all__ = ["TINY_DEMO_MODEL", "lm_adapt", "main", "prompt_tune", "run_demo"]

# Per task: its runner and its defaults for the LM-adaptation steps, the tuning steps
# and the prompt (or prefix) length.
TASKS = {
  "sentiment": (sentiment.run_demo, dict(lm_steps=400, prompt_steps=200, prompt_length=20)),
  "table_to_text": (
    table_to_text.run_demo,
    dict(lm_steps=400, prompt_steps=300, prompt_length=table_to_text.PREFIX_LENGTH),
  ),
}
HEAD_DEFAULTS = dict(
  lm_steps=400, prompt_steps=heads.PROMPT_STEPS, prompt_length=heads.PROMPT_LENGTH
)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="prompt-tuning demo",
    description="Offline end-to-end demo: LM-adapt a tiny T5 1.1 on bundled text, then "
    "tune a prompt on a bundled task (sentiment: prompt tuning, accuracy; table_to_text: "
    "Prefix-Tuning, BLEU / ROUGE-L); prints a before/after table.",
  )
  parser.add_argument("--task", choices=sorted(TASKS), default="sentiment")
  parser.add_argument(
    "--head",
    choices=sorted(heads.HEADS),
    default=None,
    help="train P-Tuning v2 with a linear head on its demo task instead (no --task)",
  )
  parser.add_argument(
    "--out", default=None, help="output directory (default: a new directory under /tmp)"
  )
  parser.add_argument("--lm-steps", type=int, default=None, help="default: per task")
  parser.add_argument("--prompt-steps", type=int, default=None, help="default: per task")
  parser.add_argument(
    "--prompt-length", type=int, default=None, help="prompt or prefix length; default: per task"
  )
  parser.add_argument("--batch-size", type=int, default=32)
  args = parser.parse_args(argv)
  if args.head is not None and args.task != "sentiment":
    parser.error("--head picks its own task; leave out --task")
  run, defaults = TASKS[args.task]
  if args.head is not None:
    run = functools.partial(heads.run_demo, head=args.head)
    defaults = HEAD_DEFAULTS
  settings = {key: getattr(args, key) for key in defaults}
  settings = {key: defaults[key] if value is None else value for key, value in settings.items()}
  name = f"{args.head}_head" if args.head else args.task
  out_dir = args.out or tempfile.mkdtemp(prefix=f"prompt_tuning_demo_{name}_")
  run(
    os.path.abspath(out_dir),
    settings["lm_steps"],
    settings["prompt_steps"],
    settings["prompt_length"],
    args.batch_size,
  )
  return 0
