"""PEFT adapters out and in (docs/interop.md): a prompt trained here, exported with
`export_main` and loaded by `peft.PeftModel.from_pretrained` on the model `convert --to hf`
wrote, computes our logits; a PEFT prompt imported with `import_main` computes PEFT's. Both
sides must use T5 1.1's own lm_head: a tied load would agree with itself and be wrong."""

from __future__ import annotations

import functools
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning import convert, peft_interop, tree
from prompt_tuning.convert import hf
from prompt_tuning.prompts import Prompt, initializers, p_tuning, peft_prefix
from prompt_tuning.t5 import T5Config, Transformer
from tests.cli_testing import LEGACY_BASE, run_cli, tiny_job_args

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

INPUTS = np.array([[5, 9, 200, 31, 1, 0, 0], [7, 7, 1, 0, 0, 0, 0]], np.int32)
TARGETS = np.array([[4, 88, 1], [12, 1, 0]], np.int32)
DECODER_INPUTS = np.concatenate([np.zeros((2, 1), np.int32), TARGETS[:, :-1]], 1)
REAL = TARGETS > 0


@pytest.fixture(scope="module")
def base():
  """The tiny frozen model of the legacy fixture: (config, params)."""
  with convert.open_checkpoint(LEGACY_BASE) as reader:
    config = convert.checkpoint_config(reader)
  return config, convert.load_params(LEGACY_BASE, config)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  """A prompt-tuning run of two steps on the tiny model (P=3)."""
  path = str(tmp_path_factory.mktemp("run") / "model_dir")
  result = run_cli(
    tiny_job_args(
      "train",
      "prompt_finetune.gin",
      MODEL_DIR=repr(path),
      TRAIN_STEPS="2",
      CHECKPOINT_PERIOD="2",
      EVAL_PERIOD="None",
    )
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return path


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("hf") / "base")
  result = run_cli(["convert", LEGACY_BASE, path, "--to", "hf"])
  assert result.returncode == 0, result.stderr[-3000:]
  return path


def _load_hf(directory: str):
  """The HF model as a user should load it here: restored where this transformers ties."""
  model = transformers.T5ForConditionalGeneration.from_pretrained(directory).eval()
  if not hf.check_lm_head_loading().from_pretrained_untied:
    hf.restore_lm_head(model, directory)
  return model


def _untied(model) -> bool:
  return model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr() and not torch.equal(
    model.lm_head.weight, model.shared.weight
  )


def _hf_logits(model) -> np.ndarray:
  with torch.no_grad():
    return model(
      input_ids=torch.tensor(INPUTS).long(),
      attention_mask=torch.tensor(INPUTS > 0).long(),
      decoder_input_ids=torch.tensor(DECODER_INPUTS).long(),
    ).logits.numpy()


def _our_logits(config: T5Config, params, prompt_factory=None) -> np.ndarray:
  module = Transformer(config, input_prompt=prompt_factory)
  forward = jax.jit(lambda p, x, y, z: module.apply({"params": p}, x, y, z))
  return np.asarray(
    forward(params, jnp.asarray(INPUTS), jnp.asarray(DECODER_INPUTS), jnp.asarray(TARGETS))
  )


def _with_prompt(params, prompt: np.ndarray):
  flat = tree.flatten(params)
  flat[peft_interop.PROMPT_PARAM] = jnp.asarray(prompt)
  return tree.unflatten(flat)


def test_the_installed_transformers_is_checked_for_the_tied_lm_head_trap():
  check = hf.check_lm_head_loading()
  assert check.transformers_version == transformers.__version__
  assert hf.check_lm_head_loading() is check  # Cached: one tiny load per process.
  advice = hf.loading_advice("/some/dir")
  assert transformers.__version__ in advice and "docs/interop.md" in advice
  if check.from_pretrained_untied:
    assert advice.startswith("note:")
  else:
    assert "restore_lm_head" in advice


def test_a_tied_lm_head_gives_wrong_logits_and_restore_lm_head_repairs_it(base, hf_dir):
  config, params = base
  ours = _our_logits(config, params)
  model = _load_hf(hf_dir)
  assert _untied(model)
  np.testing.assert_allclose(_hf_logits(model)[REAL], ours[REAL], atol=1e-4, rtol=0)
  # What a tied load computes: the input embedding as output matrix, logits scaled.
  model.tie_weights()
  if hasattr(model.config, "scale_decoder_outputs"):
    model.config.scale_decoder_outputs = True
  model.lm_head.weight = model.shared.weight
  assert np.abs(_hf_logits(model)[REAL] - ours[REAL]).max() > 1e-2
  hf.restore_lm_head(model, hf_dir)
  assert _untied(model)
  np.testing.assert_allclose(_hf_logits(model)[REAL], ours[REAL], atol=1e-4, rtol=0)


def test_an_exported_prompt_computes_our_logits_in_peft(base, model_dir, hf_dir, tmp_path, capsys):
  config, params = base
  out = str(tmp_path / "adapter")
  assert peft_interop.export_main([model_dir, out, "--base-model", hf_dir]) == 0
  printed = capsys.readouterr().out
  assert os.path.join(out, "adapter_model.safetensors") in printed
  assert transformers.__version__ in printed  # The lm_head advice for this version.
  checkpoint = convert.newest_run_checkpoint(model_dir)
  prompt = np.asarray(convert.read_variable(checkpoint, peft_interop.PROMPT_PARAM))
  assert prompt.shape == (3, config.emb_dim)
  with open(os.path.join(out, "adapter_config.json")) as f:
    written = json.load(f)
  assert written["base_model_name_or_path"] == hf_dir
  assert written["num_layers"] == config.num_encoder_layers

  model = peft.PeftModel.from_pretrained(_load_hf(hf_dir), out).eval()
  assert isinstance(model.peft_config["default"], peft.PromptTuningConfig)
  assert _untied(model.get_base_model())  # PEFT's wrapping did not re-tie it.
  theirs = _hf_logits(model)
  ours = _our_logits(config, _with_prompt(params, prompt), functools.partial(Prompt, length=3))
  np.testing.assert_allclose(theirs[REAL], ours[REAL], atol=1e-4, rtol=0)
  # The prompt matters: without it the logits are others.
  assert np.abs(_our_logits(config, params)[REAL] - ours[REAL]).max() > 1e-3


def test_a_peft_trained_prompt_imports_and_evaluates_here_to_peft_logits(base, hf_dir, tmp_path):
  config, params = base
  torch.manual_seed(0)
  peft_config = peft.PromptTuningConfig(
    task_type="SEQ_2_SEQ_LM", num_virtual_tokens=4, num_transformer_submodules=1
  )
  model = peft.get_peft_model(_load_hf(hf_dir), peft_config).eval()
  with torch.no_grad():  # PEFT's random init, scaled like a trained prompt.
    model.prompt_encoder["default"].embedding.weight.mul_(0.5)
  theirs = _hf_logits(model)
  adapter = str(tmp_path / "peft_adapter")
  model.save_pretrained(adapter)
  out = str(tmp_path / "imported.npy")
  assert peft_interop.import_main([adapter, out]) == 0
  # Loaded as PROMPT_FILE does: the from_file initialiser of a prompts.Prompt.
  factory = functools.partial(Prompt, length=4, init=initializers.from_file(out))
  module = Transformer(config, input_prompt=factory)
  variables = module.init(
    jax.random.PRNGKey(0), jnp.asarray(INPUTS), jnp.asarray(DECODER_INPUTS), jnp.asarray(TARGETS)
  )
  prompt = nn.unbox(variables)["params"]["encoder"]["prompt"]["prompt"]
  ours = _our_logits(config, _with_prompt(params, np.asarray(prompt)), factory)
  np.testing.assert_allclose(ours[REAL], theirs[REAL], atol=1e-4, rtol=0)


def test_import_refuses_what_it_cannot_compute_as_peft_does(base, hf_dir, tmp_path):
  config, _ = base
  prefix = peft.get_peft_model(
    _load_hf(hf_dir), peft.PrefixTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=2)
  )
  prefix.save_pretrained(str(tmp_path / "prefix"))
  with pytest.raises(ValueError, match="prefix adapter imports to a directory"):
    peft_interop.import_main([str(tmp_path / "prefix"), str(tmp_path / "p.npy")])
  with open(tmp_path / "prefix" / peft_interop.ADAPTER_CONFIG) as f:
    prefix_config = json.load(f)
  with open(tmp_path / "prefix" / peft_interop.ADAPTER_CONFIG, "w") as f:
    json.dump({**prefix_config, "num_transformer_submodules": 1}, f)
  with pytest.raises(ValueError, match="only PEFT's T5 default"):
    peft_interop.import_main([str(tmp_path / "prefix"), str(tmp_path / "prefix_out")])
  both = peft.get_peft_model(
    _load_hf(hf_dir), peft.PromptTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=2)
  )
  both.save_pretrained(str(tmp_path / "both"))
  with pytest.raises(ValueError, match="num_transformer_submodules=2"):
    peft_interop.import_main([str(tmp_path / "both"), str(tmp_path / "p.npy")])
  with pytest.raises(ValueError, match="has no adapter_config.json"):
    peft_interop.import_main([str(tmp_path), str(tmp_path / "p.npy")])
  assert not os.path.exists(tmp_path / "p.npy")


def test_export_refuses_layer_prompts_and_names_the_reason(tmp_path):
  exported = tmp_path / "exported"
  exported.mkdir()
  np.save(exported / "encoder.layer_prompt.key.npy", np.zeros((2, 3, 32), np.float32))
  with pytest.raises(ValueError, match="relative position bias"):
    peft_interop.export_main([str(exported), str(tmp_path / "out")])
  params = {"encoder": {"layer_prompt": {"prompt": np.zeros((2, 3, 32), np.float32)}}}
  with pytest.raises(ValueError, match="Prefix-Tuning and P-Tuning v2 do not export"):
    peft_interop.prompt_from_params(params, "run")
  assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("encoder,layers,hidden", [("lstm", 1, 6), ("mlp", 2, 10)])
def test_a_p_tuning_prompt_folds_to_its_encoder_output(encoder, layers, hidden):
  module = p_tuning.PTuningPrompt(
    length=3, prompt_encoder=encoder, hidden_dim=hidden, lstm_layers=layers
  )
  embedded = jnp.zeros((1, 2, 16))
  variables = nn.unbox(module.init(jax.random.PRNGKey(1), embedded))
  expected = module.apply(variables, 16, method="folded_params")["prompt"]
  prompt, method = peft_interop.prompt_from_params(
    {"encoder": {"prompt": variables["params"]}}, "run"
  )
  assert method == "P-Tuning"
  np.testing.assert_allclose(prompt, np.asarray(expected), atol=1e-6)


def test_the_default_base_model_is_the_lm_adapted_t5_of_the_run_size(tmp_path):
  assert peft_interop.default_base_model(768, None) == "google/t5-base-lm-adapt"
  assert (
    peft_interop.default_base_model(4096, T5Config.from_size("xxl")) == "google/t5-xxl-lm-adapt"
  )
  with pytest.raises(ValueError, match="--base-model"):
    peft_interop.default_base_model(32, T5Config.from_size("tiny"))
  with pytest.raises(ValueError, match="--base-model"):
    peft_interop.default_base_model(512, T5Config.from_size("mt5_small"))
  # A bare prompt file of a base-sized prompt gets base's name and its shape.
  np.save(tmp_path / "p.npy", np.ones((2, 768), np.float32))
  assert peft_interop.export_main([str(tmp_path / "p.npy"), str(tmp_path / "out")]) == 0
  with open(tmp_path / "out" / "adapter_config.json") as f:
    written = json.load(f)
  assert written["base_model_name_or_path"] == "google/t5-base-lm-adapt"
  shape = (written["num_virtual_tokens"], written["token_dim"], written["num_layers"])
  assert shape == (2, 768, 12)


# --- Prefix-Tuning in PEFT's T5 layout ------------------------------------------------

# Odd depth (layers l and l + N/2 do not pair up) and heads x head_dim != d_model.
ODD = T5Config(
  vocab_size=256,
  emb_dim=24,
  num_heads=2,
  head_dim=8,
  num_encoder_layers=3,
  num_decoder_layers=3,
  mlp_dim=32,
)


@pytest.fixture(scope="module")
def odd_model(tmp_path_factory):
  """(params, HF directory) of a random model of the ODD shape."""
  tokens = jnp.ones((1, 1), jnp.int32)
  variables = Transformer(ODD).init(jax.random.PRNGKey(3), tokens, tokens, tokens)
  params = nn.unbox(variables)["params"]
  directory = str(tmp_path_factory.mktemp("odd") / "hf")
  hf.write_hf_checkpoint(params, ODD, directory)
  return params, directory


def _prefix_logits(params, prefix_dir: str, length: int) -> np.ndarray:
  factory = functools.partial(peft_prefix.PeftPrefixTuning, length=length, init_dir=prefix_dir)
  module = Transformer(ODD, layer_prefix=factory)
  tokens = jnp.ones((1, 1), jnp.int32)
  prefix = nn.unbox(module.init(jax.random.PRNGKey(0), tokens, tokens, tokens))["params"]
  full = {
    **params,
    "decoder": {**params["decoder"], "layer_prompt": prefix["decoder"]["layer_prompt"]},
  }
  forward = jax.jit(lambda p, x, y, z: module.apply({"params": p}, x, y, z))
  return np.asarray(
    forward(full, jnp.asarray(INPUTS), jnp.asarray(DECODER_INPUTS), jnp.asarray(TARGETS))
  )


def test_a_peft_prefix_adapter_imports_and_evaluates_here_to_peft_logits(odd_model, tmp_path):
  params, directory = odd_model
  torch.manual_seed(0)
  peft_config = peft.PrefixTuningConfig(
    task_type="SEQ_2_SEQ_LM", num_virtual_tokens=3, token_dim=16, num_attention_heads=2
  )
  model = peft.get_peft_model(_load_hf(directory), peft_config).eval()
  theirs = _hf_logits(model)
  plain = _hf_logits(_load_hf(directory))
  assert np.abs(theirs[REAL] - plain[REAL]).max() > 1e-2  # The prefix matters.
  adapter = str(tmp_path / "peft_prefix")
  model.save_pretrained(adapter)
  out = str(tmp_path / "layer_prompts")
  assert peft_interop.import_main([adapter, out]) == 0
  assert os.listdir(out) == [peft_interop.PEFT_PREFIX_FILE]
  ours = _prefix_logits(params, out, length=3)
  np.testing.assert_allclose(ours[REAL], theirs[REAL], atol=1e-4, rtol=0)


def test_a_peft_layout_prefix_trained_here_exports_and_computes_our_logits_in_peft(
  odd_model, tmp_path
):
  params, directory = odd_model
  exported = tmp_path / "export"
  exported.mkdir()
  prefix = np.random.RandomState(0).normal(size=(4, 3 * 2 * 16)).astype(np.float32)
  np.save(exported / peft_interop.PEFT_PREFIX_FILE, prefix)
  ours = _prefix_logits(params, str(exported), length=4)
  out = str(tmp_path / "adapter")
  # The directory alone does not say the model's depth and heads: --base-model does.
  with pytest.raises(ValueError, match="pass --base-model"):
    peft_interop.export_main([str(exported), out])
  assert peft_interop.export_main([str(exported), out, "--base-model", directory]) == 0
  with open(os.path.join(out, peft_interop.ADAPTER_CONFIG)) as f:
    config = json.load(f)
  assert (config["peft_type"], config["num_layers"], config["token_dim"]) == (
    "PREFIX_TUNING",
    3,
    16,
  )
  model = peft.PeftModel.from_pretrained(_load_hf(directory), out).eval()
  np.testing.assert_allclose(_hf_logits(model)[REAL], ours[REAL], atol=1e-4, rtol=0)


def test_a_reparameterised_peft_layout_run_is_folded_for_export(tmp_path):
  factory = functools.partial(
    peft_prefix.PeftPrefixTuning, length=2, reparameterize=True, hidden_dim=5
  )
  module = Transformer(ODD, layer_prefix=factory)
  tokens = jnp.ones((1, 1), jnp.int32)
  params = nn.unbox(module.init(jax.random.PRNGKey(1), tokens, tokens, tokens))["params"]
  prompt_params = {"decoder": {"layer_prompt": params["decoder"]["layer_prompt"]}}
  prefix, method = peft_interop.prompt_from_params(prompt_params, "run")
  assert method == peft_interop.PEFT_PREFIX_METHOD
  folded = jax.jit(
    lambda p: factory(config=ODD, stack="decoder").apply({"params": p}, method="folded_params")
  )(params["decoder"]["layer_prompt"])
  np.testing.assert_allclose(prefix, folded[peft_prefix.PARAM], rtol=0, atol=1e-6)
