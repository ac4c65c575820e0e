"""The prompt family side by side, the one registry of its methods: which backbone hooks
each uses, which gin files configure it, and folding the reparameterised ones into the
plain parameters that serve.

Methods (P = prompt length):
  prompt           prompt tuning: P vectors at the input (`Prompt`)
  prefix           Prefix-Tuning: keys/values in every attention layer, MLP-reparameterised
  prefix_folded    the same prefixes as plain parameters (what serves after folding)
  p_tuning         P-Tuning: the input prompt from a bi-LSTM + MLP prompt encoder
  p_tuning_mlp     P-Tuning with the MLP-only prompt encoder
  p_tuning_v2      P-Tuning v2: a deep prompt at every layer of both stacks
  p_tuning_v2_mlp  P-Tuning v2 with the MLP reparameterisation
  prefix_peft      Prefix-Tuning in Hugging Face PEFT's T5 layout (decoder only, positioned)
  wayward          prompt tuning with a penalty towards a discrete prompt (prompts/wayward.py)
  per_layer        the input prompt rewritten before each encoder layer by that layer's
                   prompt (the upstream's per-layer prompts, `replace`)
  per_layer_add    the same, each layer's prompt added to the prompt positions
  ia3              IA3: learned scalings of keys, values and MLP hidden states (prompts/ia3.py)
  multi_task_*     a shared prompt and per-task parts, combined by add, concat,
                   concat_features or project (prompts/multi_task.py; counted at 8 tasks)

Every file of `prompt_tuning/configs/prompts/` belongs to exactly one method: the
initialiser files to "prompt", each method file to its method; a variant is its base
method's file plus gin bindings (`gin_config`). Every `--method` choice of the tools
comes from `METHODS`.

A reparameterised module computes its prompt from other parameters; `fold` runs that
computation once and returns the plain module (prompts.Prompt, or the same layer module
with `reparameterize=False`) with parameters that give identical outputs.
`prompt_tuning.export` writes them for serving.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import re
from typing import Any, Callable, Mapping, Optional

import jax

from prompt_tuning import tree
from prompt_tuning.prompts import deep_prompt, ia3, multi_task, p_tuning, peft_prefix, prefix_tuning
from prompt_tuning.prompts.prompt import Prompt
from prompt_tuning.t5 import network

Params = dict[str, Any]
Factory = Optional[Callable[..., Any]]


# Where the method gin files live, as `prompt-tuning train --gin_file` takes them.
GIN_DIR = "prompt_tuning/configs/prompts"


@dataclasses.dataclass(frozen=True)
class Method:
  """One prompt-family method.

  gin_files: the files of GIN_DIR this method owns. For "prompt" they only choose the
    initialiser (the model's `*_prompt.gin` already configures prompt tuning); for the
    others the one file is what selects the method.
  variant_of / bindings: a variant owns no file; it is `variant_of`'s file plus these
    gin macro bindings. A method with its own file may bind macros that file requires
    (the values the registry's hooks are counted at, e.g. NUM_TASKS).
  trains: False for a form that only serves (the folded prefixes).
  """

  name: str
  description: str
  input_prompt: Callable[[int], Factory]
  layer_prefix: Callable[[int], Factory]
  serves_as: str  # The method whose parameters serve after `fold` (itself if plain).
  gin_files: tuple[str, ...] = ()
  variant_of: str | None = None
  bindings: Mapping[str, str] = dataclasses.field(default_factory=dict)
  trains: bool = True


def _none(length: int) -> Factory:
  del length
  return None


def _input_prompt(length: int) -> Factory:
  return functools.partial(Prompt, length=length)


def _per_layer_prompts(combine: str) -> Callable[[int], Factory]:
  """The upstream's per-layer prompts: encoder deep prompts that rewrite the input
  prompt's positions (`deep_prompt.DeepPrompt.combine`)."""
  return lambda length: functools.partial(
    deep_prompt.DeepPrompt, length=length, stacks=("encoder",), combine=combine
  )


# The upstream's multi-task setting, what the registry counts multi-task prompts at.
MULTI_TASK_COUNT = 8


def _multi_task_prompt(combine: str) -> Callable[[int], Factory]:
  return lambda length: functools.partial(
    multi_task.MultiTaskPrompt, num_tasks=MULTI_TASK_COUNT, length=length, combine=combine
  )


PROMPT_INITIALIZER_FILES = (
  "uniform.gin",
  "uniform_positive.gin",
  "from_sampled_vocab.gin",
  "from_class_labels.gin",
  "from_string.gin",
  "from_file.gin",
)

METHODS: dict[str, Method] = {
  m.name: m
  for m in (
    Method(
      "prompt",
      "prompt tuning (input prompt)",
      _input_prompt,
      _none,
      "prompt",
      gin_files=PROMPT_INITIALIZER_FILES,
    ),
    Method(
      "prefix",
      "Prefix-Tuning, MLP-reparameterised (training)",
      _none,
      lambda p: functools.partial(prefix_tuning.PrefixTuning, length=p),
      "prefix_folded",
      gin_files=("prefix_tuning.gin",),
    ),
    Method(
      "prefix_folded",
      "Prefix-Tuning after folding (serving)",
      _none,
      lambda p: functools.partial(prefix_tuning.PrefixTuning, length=p, reparameterize=False),
      "prefix_folded",
      variant_of="prefix",
      bindings={"REPARAMETERIZE": "False"},
      trains=False,
    ),
    Method(
      "p_tuning",
      "P-Tuning, bi-LSTM + MLP prompt encoder",
      lambda p: functools.partial(p_tuning.PTuningPrompt, length=p),
      _none,
      "prompt",
      gin_files=("p_tuning.gin",),
    ),
    Method(
      "p_tuning_mlp",
      "P-Tuning, MLP prompt encoder",
      lambda p: functools.partial(p_tuning.PTuningPrompt, length=p, prompt_encoder="mlp"),
      _none,
      "prompt",
      variant_of="p_tuning",
      bindings={"P_TUNING_ENCODER": "'mlp'"},
    ),
    Method(
      "p_tuning_v2",
      "P-Tuning v2, deep prompts at every layer",
      _none,
      lambda p: functools.partial(deep_prompt.DeepPrompt, length=p),
      "p_tuning_v2",
      gin_files=("p_tuning_v2.gin",),
    ),
    Method(
      "p_tuning_v2_mlp",
      "P-Tuning v2, MLP-reparameterised",
      _none,
      lambda p: functools.partial(deep_prompt.DeepPrompt, length=p, reparameterize=True),
      "p_tuning_v2",
      variant_of="p_tuning_v2",
      bindings={"REPARAMETERIZE": "True"},
    ),
    Method(
      "wayward",
      "wayward prompts: prompt tuning pulled towards a discrete prompt's embedding",
      _input_prompt,
      _none,
      "prompt",
      gin_files=("wayward.gin",),
    ),
    Method(
      "per_layer",
      "per-layer prompts: each encoder layer's prompt replaces the prompt positions",
      _input_prompt,
      _per_layer_prompts("replace"),
      "per_layer",
      gin_files=("per_layer.gin",),
    ),
    Method(
      "per_layer_add",
      "per-layer prompts added to the prompt positions",
      _input_prompt,
      _per_layer_prompts("add"),
      "per_layer_add",
      variant_of="per_layer",
      bindings={"PER_LAYER_COMBINE": "'add'"},
    ),
    Method(
      "ia3",
      "IA3: learned scalings of attention keys/values and MLP hidden states",
      _none,
      lambda p: ia3.IA3,
      "ia3",
      gin_files=("ia3.gin",),
    ),
    *(
      Method(
        f"multi_task_{combine}",
        f"multi-task prompts: shared and per-task prompts combined by {combine}",
        _multi_task_prompt(combine),
        _none,
        f"multi_task_{combine}",
        gin_files=(f"multi_task_{combine}.gin",),
        bindings={"NUM_TASKS": str(MULTI_TASK_COUNT)},
      )
      for combine in multi_task.COMBINES
    ),
    Method(
      "prefix_peft",
      "Prefix-Tuning in PEFT's T5 layout (decoder self-attention, positioned)",
      _none,
      lambda p: functools.partial(peft_prefix.PeftPrefixTuning, length=p),
      "prefix_peft",
      gin_files=("prefix_tuning_peft.gin",),
    ),
  )
}
# The methods a run can train (every `--method` of the training tools).
TRAINING_METHODS = tuple(name for name, method in METHODS.items() if method.trains)


def method(name: str) -> Method:
  if name not in METHODS:
    raise ValueError(f"unknown prompt method {name!r}; choose one of {', '.join(METHODS)}")
  return METHODS[name]


def gin_config(name: str) -> tuple[str | None, dict[str, str]]:
  """(gin file to pass after the model file, or None for prompt tuning; the gin macro
  bindings that select this method on top of it)."""
  entry = method(name)
  if entry.variant_of is not None:
    file, bindings = gin_config(entry.variant_of)
    return file, {**bindings, **entry.bindings}
  if entry.name == "prompt":
    return None, dict(entry.bindings)
  (file,) = entry.gin_files
  return os.path.join(GIN_DIR, file), dict(entry.bindings)


def hooks(name: str, length: int) -> tuple[Factory, Factory]:
  """(input_prompt, layer_prefix) factories of a method at prompt length `length`."""
  entry = method(name)
  return entry.input_prompt(length), entry.layer_prefix(length)


def trainable_count(config: Any, name: str, length: int) -> int:
  """Trainable (prompt) parameters of a method, from shapes alone."""
  input_prompt, layer_prefix = hooks(name, length)
  return tree.count(prompt_params(network.abstract_params(config, input_prompt, layer_prefix)))


def fold(module: network.Transformer, params: Params) -> tuple[network.Transformer, Params]:
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
      prompt = jax.jit(
        lambda p: hook.apply({"params": p}, module.config.emb_dim, method="folded_params")
      )(encoder_params["prompt"])
      folded["encoder"] = {**folded["encoder"], "prompt": prompt}
      input_prompt = functools.partial(Prompt, length=hook.length)
  if layer_prefix is not None:
    any_folded = False
    for stack in prefix_tuning.STACKS:
      stack_params = folded.get(stack, {})
      hook = layer_prefix(config=module.config, stack=stack)
      if "layer_prompt" not in stack_params or not getattr(hook, "reparameterize", False):
        continue
      plain = jax.jit(lambda p, hook=hook: hook.apply({"params": p}, method="folded_params"))(
        stack_params["layer_prompt"]
      )
      folded[stack] = {**stack_params, "layer_prompt": plain}
      any_folded = True
    if any_folded:
      layer_prefix = functools.partial(layer_prefix, reparameterize=False)
  return module.clone(input_prompt=input_prompt, layer_prefix=layer_prefix), folded


# What trains in every method of the family: each parameter whose path names a prompt
# (`encoder/prompt/...`, `{encoder,decoder}/layer_prompt/...`), the trainer's default.
PROMPT_PARAMETERS = re.compile(r".*prompt.*")


def prompt_params(params: Params) -> Params:
  """The prompt parts of a tree; a tree without any is an error (nothing to train or
  export)."""
  flat = tree.flatten(params)
  found = {name: value for name, value in flat.items() if PROMPT_PARAMETERS.fullmatch(name)}
  if not found:
    raise ValueError(
      f"no prompt parameters (names matching {PROMPT_PARAMETERS.pattern!r}) "
      f"among {', '.join(sorted(flat)[:5])}"
    )
  return tree.unflatten(found)
