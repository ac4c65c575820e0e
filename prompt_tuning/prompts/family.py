"""The prompt family side by side: which backbone hooks each method uses, and folding
the reparameterised ones into the plain parameters that serve.

Methods (P = prompt length):
  prompt           prompt tuning: P vectors at the input (`Prompt`)
  prefix           Prefix-Tuning: keys/values in every attention layer, MLP-reparameterised
  prefix_folded    the same prefixes as plain parameters (what serves after folding)
  p_tuning         P-Tuning: the input prompt from a bi-LSTM + MLP prompt encoder
  p_tuning_mlp     P-Tuning with the MLP-only prompt encoder
  p_tuning_v2      P-Tuning v2: a deep prompt at every layer of both stacks
  p_tuning_v2_mlp  P-Tuning v2 with the MLP reparameterisation

A reparameterised module computes its prompt from other parameters; `fold` runs that
computation once and returns the plain module (prompts.Prompt, or the same layer module
with `reparameterize=False`) with parameters that give identical outputs. `export`
writes the folded prompt parameters as `.npy` files named by their dotted path, the
trainer's numpy-checkpoint format: `encoder.prompt.prompt.npy` (a plain prompt, for
PROMPT_FILE), `{encoder,decoder}.layer_prompt.{key,value,prompt}.npy` (for
LAYER_PROMPT_DIR).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import re
from typing import Any, Callable, Optional

import jax

from prompt_tuning.prompts import deep_prompt, p_tuning, prefix_tuning
from prompt_tuning.prompts.prompt import Prompt
from prompt_tuning.t5 import network

Params = dict[str, Any]
Factory = Optional[Callable[..., Any]]


@dataclasses.dataclass(frozen=True)
class Method:
  name: str
  description: str
  input_prompt: Callable[[int], Factory]
  layer_prefix: Callable[[int], Factory]
  serves_as: str  # The method whose parameters serve after `fold` (itself if plain).


def _none(length: int) -> Factory:
  del length
  return None


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("prompt", "prompt tuning (input prompt)",
           lambda p: functools.partial(Prompt, length=p), _none, "prompt"),
    Method("prefix", "Prefix-Tuning, MLP-reparameterised (training)", _none,
           lambda p: functools.partial(prefix_tuning.PrefixTuning, length=p),
           "prefix_folded"),
    Method("prefix_folded", "Prefix-Tuning after folding (serving)", _none,
           lambda p: functools.partial(prefix_tuning.PrefixTuning, length=p,
                                       reparameterize=False), "prefix_folded"),
    Method("p_tuning", "P-Tuning, bi-LSTM + MLP prompt encoder",
           lambda p: functools.partial(p_tuning.PTuningPrompt, length=p), _none,
           "prompt"),
    Method("p_tuning_mlp", "P-Tuning, MLP prompt encoder",
           lambda p: functools.partial(p_tuning.PTuningPrompt, length=p,
                                       prompt_encoder="mlp"), _none, "prompt"),
    Method("p_tuning_v2", "P-Tuning v2, deep prompts at every layer", _none,
           lambda p: functools.partial(deep_prompt.DeepPrompt, length=p),
           "p_tuning_v2"),
    Method("p_tuning_v2_mlp", "P-Tuning v2, MLP-reparameterised", _none,
           lambda p: functools.partial(deep_prompt.DeepPrompt, length=p,
                                       reparameterize=True), "p_tuning_v2"),
)}


def hooks(method: str, length: int) -> tuple[Factory, Factory]:
  """(input_prompt, layer_prefix) factories of a method at prompt length `length`."""
  if method not in METHODS:
    raise ValueError(f"unknown prompt method {method!r}; choose one of "
                     f"{', '.join(METHODS)}")
  entry = METHODS[method]
  return entry.input_prompt(length), entry.layer_prefix(length)


def trainable_count(config: Any, method: str, length: int) -> int:
  """Trainable (prompt) parameters of a method, from shapes alone."""
  from prompt_tuning.training import trainable as trainable_lib

  input_prompt, layer_prefix = hooks(method, length)
  abstract = network.abstract_params(config, input_prompt, layer_prefix)
  return trainable_lib.count(prompt_params(abstract))


def fold(module: network.Transformer, params: Params
         ) -> tuple[network.Transformer, Params]:
  """(plain module, its parameters) giving the same outputs as (module, params).

  `params` may be the full tree or the trainable part only; subtrees of hooks without
  a reparameterisation are returned unchanged.
  """
  folded = copy.copy(dict(params))
  input_prompt, layer_prefix = module.input_prompt, module.layer_prefix
  encoder_params = params.get("encoder", {})
  if input_prompt is not None and "prompt" in encoder_params:
    hook = input_prompt()
    if isinstance(hook, p_tuning.PTuningPrompt):
      prompt = jax.jit(lambda p: hook.apply({"params": p}, module.config.emb_dim,
                                            method="folded_params"))(
                                                encoder_params["prompt"])
      folded["encoder"] = {**folded["encoder"], "prompt": prompt}
      input_prompt = functools.partial(Prompt, length=hook.length)
  if layer_prefix is not None:
    any_folded = False
    for stack in prefix_tuning.STACKS:
      stack_params = folded.get(stack, {})
      hook = layer_prefix(config=module.config, stack=stack)
      if "layer_prompt" not in stack_params or not getattr(hook, "reparameterize", False):
        continue
      plain = jax.jit(lambda p, hook=hook: hook.apply({"params": p},
                                                      method="folded_params"))(
                                                          stack_params["layer_prompt"])
      folded[stack] = {**stack_params, "layer_prompt": plain}
      any_folded = True
    if any_folded:
      layer_prefix = functools.partial(layer_prefix, reparameterize=False)
  return module.clone(input_prompt=input_prompt, layer_prefix=layer_prefix), folded


PROMPT_PARAMETERS = re.compile(r".*prompt.*")


def prompt_params(params: Params) -> Params:
  """The prompt parts of a tree (every parameter whose path names a prompt)."""
  from prompt_tuning.training import trainable as trainable_lib

  return trainable_lib.split(params, PROMPT_PARAMETERS.pattern)[0]


def export(module: network.Transformer, params: Params, directory: str) -> list[str]:
  """Folds and writes the prompt parameters as `.npy` files; returns their paths."""
  from prompt_tuning.training import checkpoints

  _, folded = fold(module, prompt_params(params))
  return checkpoints.export_numpy(folded, directory)


def newest_checkpoint(path: str) -> str:
  """`path` itself when it is a training checkpoint, else the newest
  `checkpoint_N` inside it (a MODEL_DIR)."""
  from prompt_tuning.training import initialization

  if initialization.is_training_checkpoint(path):
    return path
  if not os.path.isdir(path):
    raise ValueError(f"{path} is not a training checkpoint or a MODEL_DIR")
  steps = [(int(m.group(1)), name) for name in os.listdir(path)
           if (m := re.fullmatch(r"checkpoint_(\d+)", name))
           and initialization.is_training_checkpoint(os.path.join(path, name))]
  if not steps:
    raise ValueError(f"{path} holds no training checkpoint (checkpoint_N with orbax "
                     "state and metadata); pass MODEL_DIR or MODEL_DIR/checkpoint_N")
  return os.path.join(path, max(steps)[1])


def export_checkpoint(module: network.Transformer, checkpoint: str, directory: str
                      ) -> list[str]:
  """`export` of a training run's (trainable-only or full) checkpoint."""
  from prompt_tuning.training import initialization

  params = initialization.load_model_params(newest_checkpoint(checkpoint))
  return export(module, params, directory)
