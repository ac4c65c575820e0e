"""`prompt-tuning export-prompt`: what a trained prompt-family run serves, as `.npy` files.

A reparameterised method (Prefix-Tuning's MLP, P-Tuning's prompt encoder) is folded
first (`prompts.family.fold`), so what is written is always the plain parameters, named
by their dotted path as in the trainer's numpy checkpoint: `encoder.prompt.prompt.npy` (a
prompt, for PROMPT_FILE) and `{encoder,decoder}.layer_prompt.{key,value,prompt}.npy` (for
LAYER_PROMPT_DIR).
"""

from __future__ import annotations

from typing import Any, Mapping

from prompt_tuning import convert
from prompt_tuning.prompts import family
from prompt_tuning.t5 import network
from prompt_tuning.training import checkpoints

Params = Mapping[str, Any]


def export(module: network.Transformer, params: Params, directory: str) -> list[str]:
  """Folds and writes the prompt parameters of `params` (the full tree or the trainable
  part) as `.npy` files; returns their paths."""
  _, folded = family.fold(module, family.prompt_params(params))
  return checkpoints.export_numpy(folded, directory)


def export_checkpoint(module: network.Transformer, checkpoint: str, directory: str) -> list[str]:
  """`export` of a training run: `checkpoint` is a MODEL_DIR (its newest checkpoint is
  used) or one `MODEL_DIR/checkpoint_N`, trainable-only or full."""
  params = convert.load_params(convert.newest_run_checkpoint(checkpoint))
  return export(module, params, directory)
