"""A prompt table chosen per row must act exactly like the single prompt of that row."""

from __future__ import annotations

import functools

import flax
import jax
import numpy as np
import pytest

from prompt_tuning import models
from prompt_tuning.prompts import Prompt, initializers
from prompt_tuning.models import with_prompt_table
from prompt_tuning.prompts.multi_prompt import (
  MultiPrompt,
  from_files,
  load_prompt_files,
  per_prompt,
)
from prompt_tuning.t5 import T5Config, Transformer, init_params
from prompt_tuning.t5.network import abstract_params, logical_axes
from prompt_tuning.training import partitioning

CFG = T5Config.from_size("tiny", vocab_size=128)
NUM, LENGTH = 3, 4


@pytest.fixture(scope="module")
def setup():
  factory = functools.partial(MultiPrompt, num_prompts=NUM, length=LENGTH)
  params = init_params(CFG, jax.random.PRNGKey(0), input_prompt=factory)
  rng = np.random.RandomState(0)
  enc = rng.randint(1, 128, (6, 7)).astype(np.int32)
  enc[3, 4:] = 0
  tgt = rng.randint(2, 128, (6, 4)).astype(np.int32)
  tgt[1, 2:] = 0
  dec = np.concatenate([np.zeros((6, 1), np.int32), tgt[:, :-1]], axis=1) * (tgt > 0)
  batch = {
    "encoder_input_tokens": enc,
    "decoder_input_tokens": dec,
    "decoder_target_tokens": tgt,
    "decoder_loss_weights": (tgt > 0).astype(np.int32),
    "prompt_ids": np.array([2, 0, 1, 2, 0, 1], np.int32),
  }
  return factory, params, batch


def _single_prompt_params(params, index):
  single = jax.tree_util.tree_map(lambda x: x, params)
  single["encoder"]["prompt"]["prompt"] = params["encoder"]["prompt"]["prompt"][index]
  return single


def _rows(batch, rows):
  return {k: v[rows] for k, v in batch.items() if k != "prompt_ids"}


def test_table_parameter_shape_and_logical_axes(setup):
  _, params, _ = setup
  assert params["encoder"]["prompt"]["prompt"].shape == (NUM, LENGTH, CFG.emb_dim)
  factory = functools.partial(MultiPrompt, num_prompts=NUM, length=LENGTH)
  variables = jax.eval_shape(
    lambda: Transformer(CFG, input_prompt=factory).init(
      jax.random.PRNGKey(0), *(np.ones((1, 1), np.int32),) * 3
    )
  )
  axes = flax.linen.get_partition_spec(variables)["params"]["encoder"]["prompt"]["prompt"]
  assert tuple(axes) == ("prompts", "prompt", "embed")
  # per_prompt draws the prompts independently.
  table = params["encoder"]["prompt"]["prompt"]
  assert not np.allclose(table[0], table[1])


def test_mixed_batch_matches_each_prompt_alone(setup):
  """The plain EncoderDecoderModel forwards the batch's prompt_ids: logits, scores and
  greedy decodes of each row equal the single-prompt model's on that row alone."""
  factory, params, batch = setup
  table_model = models.EncoderDecoderModel(Transformer(CFG, input_prompt=factory))
  logits = np.asarray(jax.jit(table_model.compute_logits)(params, batch))
  scores = np.asarray(jax.jit(table_model.score_batch)(params, batch))
  predictions = np.asarray(jax.jit(table_model.predict_batch)(params, batch))
  # Every prompt has two rows, so the single-prompt functions compile once.
  plain_model = models.EncoderDecoderModel(
    Transformer(CFG, input_prompt=functools.partial(Prompt, length=LENGTH))
  )
  plain_logits = jax.jit(plain_model.compute_logits)
  plain_predict = jax.jit(plain_model.predict_batch)
  for index in range(NUM):
    rows = batch["prompt_ids"] == index
    single = _single_prompt_params(params, index)
    alone = _rows(batch, rows)
    alone_logits = np.asarray(plain_logits(single, alone))
    np.testing.assert_allclose(logits[rows], alone_logits, rtol=1e-5, atol=1e-5)
    # score_batch and loss_fn go through the same forward, prompt_ids included.
    log_probs = np.asarray(jax.nn.log_softmax(alone_logits), np.float64)
    picked = np.take_along_axis(log_probs, alone["decoder_target_tokens"][..., None], -1)
    np.testing.assert_allclose(
      scores[rows], (picked[..., 0] * alone["decoder_loss_weights"]).sum(-1), rtol=1e-5
    )
    np.testing.assert_array_equal(predictions[rows], plain_predict(single, alone))
  # The rows really differ by prompt: the same input under another prompt changes.
  assert not np.allclose(
    logits[0], plain_logits(_single_prompt_params(params, 0), _rows(batch, [0, 1]))[0]
  )


def test_missing_or_misshaped_prompt_ids_are_errors(setup):
  factory, params, batch = setup
  module = Transformer(CFG, input_prompt=factory)
  args = (
    batch["encoder_input_tokens"],
    batch["decoder_input_tokens"],
    batch["decoder_target_tokens"],
  )
  # Shape evaluation traces the model (and so raises) without running it.
  with pytest.raises(ValueError, match="needs prompt_ids"):
    jax.eval_shape(lambda p: module.apply({"params": p}, *args), params)
  with pytest.raises(ValueError, match="one id per row"):
    jax.eval_shape(
      lambda p: module.apply(
        {"params": p}, *args, prompt_inputs={"prompt_ids": np.zeros((2,), np.int32)}
      ),
      params,
    )
  with pytest.raises(ValueError, match="only the prompt input `prompt_ids`"):
    jax.eval_shape(
      lambda p: module.apply(
        {"params": p},
        *args,
        prompt_inputs={"prompt_ids": batch["prompt_ids"], "task_ids": batch["prompt_ids"]},
      ),
      params,
    )
  ids = {"prompt_ids": batch["prompt_ids"]}
  plain = Transformer(CFG)
  with pytest.raises(ValueError, match="no input prompt"):
    jax.eval_shape(
      lambda p: plain.apply({"params": p}, *args, prompt_inputs=ids), abstract_params(CFG)
    )
  # A single prompt serves every row alike: per-row ids would be silently ignored.
  single = Transformer(CFG, input_prompt=functools.partial(Prompt, length=LENGTH))
  with pytest.raises(ValueError, match="use prompts.MultiPrompt"):
    jax.eval_shape(
      lambda p: single.apply({"params": p}, *args, prompt_inputs=ids),
      abstract_params(CFG, functools.partial(Prompt, length=LENGTH)),
    )
  # Through the model, the batch feature `prompt_ids` is what reaches the prompt.
  model = models.EncoderDecoderModel(plain)
  with pytest.raises(ValueError, match="no input prompt"):
    jax.eval_shape(model.compute_logits, abstract_params(CFG), batch)


def test_from_files_loads_the_table_in_order(tmp_path):
  rng = np.random.RandomState(3)
  prompts = [rng.randn(LENGTH, CFG.emb_dim).astype(np.float32) for _ in range(NUM)]
  paths = []
  for i, prompt in enumerate(prompts):
    paths.append(str(tmp_path / f"p{i}.npy"))
    np.save(paths[-1], prompt)
  module = MultiPrompt.from_files(paths)()
  # The `init` field (the initialiser) shadows Module.init, as in `Prompt`.
  params = flax.linen.Module.init(
    module, jax.random.PRNGKey(0), np.zeros((2, 3, CFG.emb_dim), np.float32)
  )["params"]
  table = flax.linen.unbox(params)["prompt"]
  np.testing.assert_array_equal(table, np.stack(prompts))
  # The gin-style initialiser checks the table shape the model asks for.
  with pytest.raises(ValueError, match="expects"):
    from_files(paths)(None, (NUM, LENGTH + 1, CFG.emb_dim))


def test_prompt_files_with_different_shapes_are_rejected(tmp_path):
  np.save(tmp_path / "a.npy", np.zeros((4, 8), np.float32))
  np.save(tmp_path / "b.npy", np.zeros((5, 8), np.float32))
  np.save(tmp_path / "c.npy", np.zeros((4, 8, 1), np.float32))
  with pytest.raises(ValueError, match="same length and width"):
    load_prompt_files([str(tmp_path / "a.npy"), str(tmp_path / "b.npy")])
  with pytest.raises(ValueError, match="2-D"):
    load_prompt_files([str(tmp_path / "c.npy")])
  with pytest.raises(ValueError, match="does not exist"):
    load_prompt_files([str(tmp_path / "missing.npy")])
  with pytest.raises(ValueError, match="no prompt files"):
    load_prompt_files([])


def test_per_prompt_gives_each_prompt_its_own_shape():
  seen = []

  def init(rng, shape, dtype=np.float32):
    seen.append(tuple(shape))
    return initializers.uniform()(rng, shape, dtype)

  table = per_prompt(init)(jax.random.PRNGKey(0), (2, 3, 5))
  assert table.shape == (2, 3, 5) and seen == [(3, 5), (3, 5)]


def test_table_model_keeps_the_settings_and_leaves_the_model_alone(setup):
  _, params, _ = setup
  plain = models.EncoderDecoderModel(
    Transformer(CFG, input_prompt=functools.partial(Prompt, length=LENGTH)),
    decode_kwargs={"temperature": 0.0},
    z_loss=3e-4,
  )
  base = {k: v for k, v in params.items()}
  base["encoder"] = {k: v for k, v in params["encoder"].items() if k != "prompt"}
  table = np.arange(NUM * 2 * CFG.emb_dim, dtype=np.float32).reshape(NUM, 2, CFG.emb_dim)
  served, served_params = with_prompt_table(plain, base, table)
  assert type(served) is models.EncoderDecoderModel
  assert served.module.input_prompt.keywords == {"num_prompts": NUM, "length": 2}
  assert served.z_loss == 3e-4 and served.decode_kwargs == plain.decode_kwargs
  assert plain.module.input_prompt.func is Prompt and "prompt" not in base["encoder"]
  np.testing.assert_array_equal(served_params["encoder"]["prompt"]["prompt"], table)
  assert served_params["decoder"] is base["decoder"]  # Frozen parameters are shared.
  with pytest.raises(ValueError, match="d_model"):
    with_prompt_table(plain, base, table[..., :-1])
  with pytest.raises(ValueError, match="num_prompts, length, d_model"):
    with_prompt_table(plain, base, table[0])


def test_the_table_is_replicated_by_the_standard_rules():
  """The table axis `prompts` has its own rule: every device holds every prompt, while
  the frozen embedding still splits over `model`."""
  assert ("prompts", None) in partitioning.standard_logical_axis_rules()
  factory = functools.partial(MultiPrompt, num_prompts=8, length=LENGTH)
  partitioner = partitioning.Partitioner(num_partitions=2)
  shardings = partitioner.param_shardings(logical_axes(CFG, factory), abstract_params(CFG, factory))
  spec = shardings["encoder"]["prompt"]["prompt"].spec
  assert all(axis is None for axis in spec)
  assert shardings["token_embedder"]["embedding"].spec[0] == "model"


def test_a_table_refuses_a_prompt_file_with_non_finite_values_or_not_npy(tmp_path):
  np.save(tmp_path / "a.npy", np.zeros((4, 8), np.float32))
  bad = np.zeros((4, 8), np.float32)
  bad[0, 0], bad[3, 7] = np.nan, -np.inf
  np.save(tmp_path / "b.npy", bad)
  (tmp_path / "c.npy").write_bytes(b"PK\x03\x04 a zip file, not an array")
  with pytest.raises(ValueError, match=r"b.npy holds 2 non-finite values \(NaN or inf\) of 32"):
    load_prompt_files([str(tmp_path / "a.npy"), str(tmp_path / "b.npy")])
  with pytest.raises(ValueError, match="c.npy is not a NumPy .npy file"):
    load_prompt_files([str(tmp_path / "c.npy")])
