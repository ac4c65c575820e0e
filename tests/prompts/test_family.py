"""prompts.family.METHODS is the one registry of the prompt family: every gin file of
configs/prompts belongs to exactly one method, each method's gin configuration builds the
hooks the registry names, and every `--method` choice of the tools comes from it."""

from __future__ import annotations

import os

import pytest

from prompt_tuning import info, launch, plan, tree
from prompt_tuning.prompts import Prompt, family
from prompt_tuning.t5 import T5Config, abstract_params, network

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL_FILE = "prompt_tuning/configs/models/t5_1_1_small_prompt.gin"
LENGTH = 2


def _owners() -> dict[str, list[str]]:
  owners: dict[str, list[str]] = {}
  for name, method in family.METHODS.items():
    for file in method.gin_files:
      owners.setdefault(file, []).append(name)
  return owners


def test_every_prompt_gin_file_belongs_to_exactly_one_method():
  on_disk = sorted(f for f in os.listdir(os.path.join(REPO, family.GIN_DIR)) if f.endswith(".gin"))
  owners = _owners()
  assert sorted(owners) == on_disk, (
    f"gin files without a method: {sorted(set(on_disk) - set(owners))}; "
    f"methods naming missing files: {sorted(set(owners) - set(on_disk))}"
  )
  shared = {file: names for file, names in owners.items() if len(names) > 1}
  assert not shared, f"gin files claimed by several methods: {shared}"


def test_a_variant_owns_no_file_and_names_a_method_that_does():
  for name, method in family.METHODS.items():
    if method.variant_of is None:
      assert method.gin_files, f"{name} owns no gin file and is no variant"
      # A method's own bindings are the values of macros its file requires.
      for macro in method.bindings:
        (file,) = method.gin_files
        text = open(os.path.join(REPO, family.GIN_DIR, file)).read()
        assert f"{macro} = %gin.REQUIRED" in text, (name, macro)
    else:
      assert not method.gin_files and method.bindings, name
      assert family.METHODS[method.variant_of].gin_files, name
    assert method.serves_as in family.METHODS, name


def _prompt_shapes(input_prompt, layer_prefix) -> dict[str, tuple[int, ...]]:
  params = abstract_params(T5Config.from_size("tiny"), input_prompt, layer_prefix)
  return {
    name: tuple(leaf.shape) for name, leaf in tree.flatten(family.prompt_params(params)).items()
  }


# Bindings a method's file requires that have nothing to do with shapes: wayward prompts
# initialise from a checkpoint's embedding of PROMPT_TEXT, which this test has no need of.
_SHAPE_FREE_BINDINGS = {"wayward": ["PROMPT_INIT = @initializers.uniform()"]}


@pytest.mark.parametrize("name", list(family.METHODS))
def test_each_methods_gin_configuration_builds_the_hooks_the_registry_names(clean_gin, name):
  file, bindings = family.gin_config(name)
  files = [MODEL_FILE] + ([file] if file else [])
  launch.parse_gin(
    files,
    [
      "network.t5_config.size = 'tiny'",
      f"PROMPT_LENGTH = {LENGTH}",
      *[f"{macro} = {value}" for macro, value in bindings.items()],
      *_SHAPE_FREE_BINDINGS.get(name, []),
    ],
    [],
  )
  module = network.transformer()
  configured = _prompt_shapes(module.input_prompt, module.layer_prefix)
  assert configured == _prompt_shapes(*family.hooks(name, LENGTH))


@pytest.mark.parametrize("file", family.METHODS["prompt"].gin_files)
def test_the_initialiser_files_only_choose_the_prompts_initialiser(clean_gin, file):
  launch.parse_gin(
    [MODEL_FILE, os.path.join(family.GIN_DIR, file)], ["network.t5_config.size = 'tiny'"], []
  )
  assert launch.macro_value("PROMPT_INIT").selector.startswith("initializers.")
  module = network.transformer()
  assert module.input_prompt is Prompt and module.layer_prefix is None


def test_unknown_methods_are_errors_that_list_the_registry():
  with pytest.raises(ValueError, match="choose one of prompt, prefix"):
    family.hooks("adapter", 4)
  with pytest.raises(ValueError, match="unknown prompt method 'adapter'"):
    family.gin_config("adapter")


def _choices(parser, dest: str) -> tuple[str, ...]:
  (action,) = [a for a in parser._actions if a.dest == dest]
  return tuple(action.choices)


def test_the_tools_method_choices_are_the_registrys():
  assert _choices(info._parser(), "method") == tuple(family.METHODS)
  assert _choices(plan._parser(), "method") == tuple(family.METHODS)
  # Only the serving form of the prefixes is no training method.
  assert set(family.METHODS) - set(family.TRAINING_METHODS) == {"prefix_folded"}


def test_trainable_count_counts_the_prompt_parameters_from_shapes():
  config = T5Config.from_size("tiny")
  assert family.trainable_count(config, "prompt", 7) == 7 * config.emb_dim
  d = config.emb_dim  # The MLP encoder: embedding [3, d], then two dense layers d -> d.
  assert family.trainable_count(config, "p_tuning_mlp", 3) == 3 * d + 2 * (d * d + d)
  with pytest.raises(ValueError, match="no prompt parameters"):
    family.prompt_params(abstract_params(config))
