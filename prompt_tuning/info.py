"""`prompt-tuning info`: parameter counts of a configuration, from shapes alone.

`jax.eval_shape` traces the model without allocating it, so even XXL is instant.
"""

from __future__ import annotations

import argparse
import collections

from prompt_tuning import tree
from prompt_tuning.prompts import family
from prompt_tuning.t5 import T5Config, abstract_params


def _group(name: str) -> str:
  """A readable group for a parameter path (e.g. `encoder attention`)."""
  parts = name.split("/")
  if parts[0] == "token_embedder":
    return "shared embedding"
  if parts[-2:] == ["logits_dense", "kernel"]:
    return "decoder logits (untied)"
  if any("prompt" in part for part in parts):  # `prompt`, `layer_prompt` (prompts.family).
    return "prompt (trainable)"
  stack = parts[0]
  if parts[1] == "relpos_bias":
    return f"{stack} relative position bias"
  if parts[1].endswith("_norm"):
    return f"{stack} norms"
  block = parts[2]
  if block.endswith("layer_norm"):
    return f"{stack} norms"
  if block in ("attention", "self_attention"):
    return f"{stack} self-attention"
  if block == "encoder_decoder_attention":
    return f"{stack} cross-attention"
  return f"{stack} {block}"


def parameter_groups(
  config: T5Config, prompt_length: int = 0, method: str = "prompt"
) -> dict[str, int]:
  """Counts per group; with `prompt_length`, the trainable part of `method` (one of
  `prompts.family.METHODS`: prompt tuning, Prefix-Tuning, P-Tuning, P-Tuning v2) too."""
  factory, layer_prefix = None, None
  if prompt_length:
    factory, layer_prefix = family.hooks(method, prompt_length)
  groups: dict[str, int] = collections.OrderedDict()
  flat = tree.flatten(abstract_params(config, factory, layer_prefix))
  for name, value in sorted(flat.items()):
    groups[_group(name)] = groups.get(_group(name), 0) + tree.count(value)
  return groups


def _human(n: float) -> str:
  for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
    if n >= scale:
      return f"{n / scale:.2f}{unit}"
  return str(int(n))


# The paper's prompt length: what --method alone and --compare-methods count at.
DEFAULT_PROMPT_LENGTH = 100


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="prompt-tuning info",
    description="Parameter counts of a T5 1.1 size (no weights are allocated).",
  )
  parser.add_argument(
    "--size", default="base", help="tiny, small, base, large, xl, xxl, mt5_small ... mt5_xxl"
  )
  parser.add_argument(
    "--prompt-length",
    type=int,
    default=0,
    help="also report a soft prompt of this length (trainable)",
  )
  parser.add_argument(
    "--method",
    default=None,
    choices=tuple(family.METHODS),
    help="which prompt method --prompt-length counts (default prompt; given alone, "
    f"counted at P={DEFAULT_PROMPT_LENGTH}; see --compare-methods)",
  )
  parser.add_argument(
    "--compare-methods",
    action="store_true",
    help="print a table of every method's trainable parameters at "
    "--prompt-length (100 if not given) instead",
  )
  return parser


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  config = T5Config.from_size(args.size)
  if args.compare_methods:
    return _print_method_table(config, args.size, args.prompt_length or DEFAULT_PROMPT_LENGTH)
  method = args.method or "prompt"
  prompt_length = args.prompt_length or (DEFAULT_PROMPT_LENGTH if args.method else 0)
  groups = parameter_groups(config, prompt_length, method)
  frozen = sum(v for k, v in groups.items() if not k.startswith("prompt"))
  print(
    f"T5 1.1 {args.size}: d_model={config.emb_dim} heads={config.num_heads} "
    f"layers={config.num_encoder_layers}/{config.num_decoder_layers} "
    f"d_ff={config.mlp_dim} vocab={config.vocab_size}"
  )
  width = max(len(k) for k in groups) + 2
  for name, count in groups.items():
    print(f"  {name:<{width}}{count:>16,}  {_human(count):>8}")
  print(f"  {'total (frozen backbone)':<{width}}{frozen:>16,}  {_human(frozen):>8}")
  if prompt_length:
    trainable = groups["prompt (trainable)"]
    label = "prompt tuning" if method == "prompt" else method
    # A method whose size does not depend on the prompt length (IA3) names no P.
    if family.trainable_count(config, method, 1) != family.trainable_count(config, method, 2):
      label = f"{label}, P={prompt_length}"
    print(
      f"{label}: {trainable:,} trainable parameters "
      f"= {100.0 * trainable / frozen:.4f}% of the model"
    )
  return 0


def method_table(config: T5Config, prompt_length: int) -> list[dict[str, object]]:
  """One row per prompt method: trainable parameters, their share of the frozen model,
  and what serves after folding the reparameterisation away."""
  frozen = tree.count(abstract_params(config))
  rows = []
  for name, method in family.METHODS.items():
    trainable = family.trainable_count(config, name, prompt_length)
    served = (
      trainable
      if method.serves_as == name
      else family.trainable_count(config, method.serves_as, prompt_length)
    )
    rows.append(
      {
        "method": name,
        "description": method.description,
        "trainable": trainable,
        "percent": 100.0 * trainable / frozen,
        "served": served,
        "frozen": frozen,
      }
    )
  return rows


def _print_method_table(config: T5Config, size: str, prompt_length: int) -> int:
  rows = method_table(config, prompt_length)
  print(
    f"T5 1.1 {size}, P={prompt_length}: trainable parameters per method "
    f"(frozen backbone {rows[0]['frozen']:,})"
  )
  width = max(len(str(row["method"])) for row in rows) + 2
  print(f"  {'method':<{width}}{'trainable':>14}{'% of model':>12}{'served':>14}  description")
  for row in rows:
    print(
      f"  {row['method']:<{width}}{row['trainable']:>14,}{row['percent']:>11.4f}%"
      f"{row['served']:>14,}  {row['description']}"
    )
  print(
    "  served: the parameters left after `prompt-tuning export-prompt` folds a "
    "reparameterisation away"
  )
  return 0
