"""Layer prompts initialised from real words: the frozen model's own activations on a
given string, as the Prefix-Tuning paper does ("initialising the prefix with activations
of real words ... helps in low-data settings").

The string (e.g. "summarize" or "table-to-text:") is tokenised with the task vocabulary,
repeated cyclically until it fills the P prefix positions, and run once through the
frozen backbone (no prompt, no dropout) as encoder input and as decoder input. Then, for
every layer l:

  Prefix-Tuning (`PrefixTuning(real_words=...)`, reparameterize=False)
    key / value              the encoder's (or decoder's) self-attention keys and values
                             of the string at layer l, [P, heads * head_dim];
    cross_key / cross_value  the decoder's cross-attention keys and values of the
                             string's encoding at layer l.
  P-Tuning v2 (`DeepPrompt(real_words=...)`, reparameterize=False)
    prompt                   the input of layer l on the string, [P, d_model], so that
                             the layer's frozen norm and key/value kernels turn it into
                             exactly the string's keys and values.

So the untrained prefix makes every layer attend to what it would attend to had the
string been there, minus its relative positions (prefix positions carry none). The
MLP-reparameterised forms have no direct parameters to set, so they are refused: the
paper initialises the prefixes themselves. `configs/prompts/init/real_words.gin` wires
this for either method; docs/prompt_family.md, "Initialising from real words".
"""

from __future__ import annotations

import concurrent.futures
import functools
from typing import Any, Callable, Sequence

import gin
import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning import convert
from prompt_tuning.data import vocab as vocab_lib
from prompt_tuning.t5.config import T5Config
from prompt_tuning.t5.network import Transformer

Array = jax.Array
Initializer = Callable[..., Array]
# The string's activations per stack: {"key", "value", "hidden"} in both stacks, plus
# {"cross_key", "cross_value"} in the decoder, each [layers, P, width].
Activations = dict[str, dict[str, np.ndarray]]


def activations(config: T5Config, params: Any, token_ids: Sequence[int]) -> Activations:
  """The frozen backbone's per-layer activations on `token_ids` (module docstring).

  Runs in a thread of its own: initialisers are called while the model's `init` is being
  traced, and JAX's (and flax's) trace state is per thread, so there the forward pass is
  plain eager computation, not part of the outer trace."""
  with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
    return pool.submit(_activations, config, params, token_ids).result()


def _activations(config: T5Config, params: Any, token_ids: Sequence[int]) -> Activations:
  tokens = jnp.asarray(np.asarray(token_ids, np.int32)[None])
  _, state = Transformer(config).apply(
    {"params": params},
    tokens,
    tokens,
    tokens,
    capture_intermediates=True,
    mutable=["intermediates"],
  )
  captured = jax.tree.map(np.asarray, state["intermediates"])
  # The shared embedder runs for the encoder, then for the decoder.
  embedded = [np.asarray(x[0]) for x in captured["token_embedder"]["__call__"]]
  result: Activations = {}
  attentions = {"encoder": "attention", "decoder": "self_attention"}
  for index, stack in enumerate(("encoder", "decoder")):
    layers = [captured[stack][f"layers_{i}"] for i in range(_num_layers(config, stack))]
    outputs = [np.asarray(layer["__call__"][0][0]) for layer in layers]
    entry = {"hidden": np.stack([embedded[index]] + outputs[:-1])}
    for kind in ("key", "value"):
      entry[kind] = np.stack(
        [np.asarray(layer[attentions[stack]][kind]["__call__"][0][0]) for layer in layers]
      )
      if stack == "decoder":
        entry[f"cross_{kind}"] = np.stack(
          [
            np.asarray(layer["encoder_decoder_attention"][kind]["__call__"][0][0])
            for layer in layers
          ]
        )
    result[stack] = entry
  return result


def _num_layers(config: T5Config, stack: str) -> int:
  return config.num_encoder_layers if stack == "encoder" else config.num_decoder_layers


@functools.lru_cache(maxsize=16)
def _checkpoint_activations(path: str, config: T5Config, token_ids: tuple[int, ...]) -> Activations:
  """Cached per string and length: gin builds a fresh `RealWords` for every module that
  asks, and the model's initialisation is traced more than once. The frozen weights are
  dropped once the (small) activations are computed."""

  def load_and_run() -> Activations:
    params = convert.load_params(path, config, allow_unexpected=r".*prompt.*")
    return _activations(config, params, token_ids)

  with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
    return pool.submit(load_and_run).result()


@gin.configurable(module="prompts")
class RealWords:
  """Where real-word activations come from: `text`, the frozen model (`checkpoint`, any
  format `prompt_tuning.convert` reads, or `params` directly) and the `vocabulary` (the
  gin-configured task vocabulary by default).

  The checkpoint is read once per process and prefix length (an extra host copy of the
  frozen weights while the initial prefixes are computed, freed after); the activations
  are cached.
  """

  def __init__(
    self,
    text: str = gin.REQUIRED,
    checkpoint: str | None = None,
    vocabulary: Any = None,
    params: Any = None,
  ):
    if not text or not str(text).strip():
      raise ValueError("RealWords.text is empty; give the words to initialise from")
    self.text = str(text)
    self.checkpoint = checkpoint
    self.vocabulary = vocabulary
    self.params = params
    self._cache: dict[tuple[T5Config, int], Activations] = {}

  def token_ids(self, length: int) -> np.ndarray:
    """The text's ids repeated cyclically to `length` positions."""
    pieces = self.vocabulary if self.vocabulary is not None else vocab_lib.get_vocabulary()
    ids = np.asarray(list(pieces.encode(self.text)), np.int32)
    if ids.size == 0:
      raise ValueError(
        f"the real-words text {self.text!r} tokenises to nothing; give text the vocabulary knows"
      )
    return np.resize(ids, length)

  def activations(self, config: T5Config, length: int) -> Activations:
    ids = self.token_ids(length)
    if self.params is None:
      if not self.checkpoint:
        raise ValueError(
          "initialising prefixes from real words needs the frozen model: bind "
          "prompts.RealWords.checkpoint (configs/prompts/init/real_words.gin binds it to "
          "INITIAL_CHECKPOINT_PATH)"
        )
      return _checkpoint_activations(str(self.checkpoint), config, tuple(int(i) for i in ids))
    key = (config, length)
    if key not in self._cache:
      self._cache[key] = activations(config, self.params, ids)
    return self._cache[key]

  def initializer(
    self, config: T5Config, stack: str, kind: str, rows: Sequence[int]
  ) -> Initializer:
    """An initializer of shape [len(rows), P, width]: `kind`'s activations of `stack`
    at the layers `rows`."""

    def init(rng: Array, shape: Sequence[int], dtype: Any = jnp.float32) -> Array:
      del rng
      value = self.activations(config, int(shape[1]))[stack][kind][np.asarray(list(rows), int)]
      if tuple(value.shape) != tuple(shape):
        raise ValueError(
          f"real-word {stack} {kind} activations have shape {value.shape}, the prefix "
          f"{tuple(shape)}; use the checkpoint of the model being prompted"
        )
      return jnp.asarray(value, dtype)

    return init


def refuse_reparameterized(method: str) -> None:
  raise ValueError(
    f"{method} from real words sets the prefixes themselves, which the MLP "
    "reparameterisation does not have; set REPARAMETERIZE = False (real_words.gin does)"
  )
