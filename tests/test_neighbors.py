"""`prompt-tuning neighbors`: cosine top-k against brute force, the printed table, the
class-label flag, padding rows ignored and a clear error on a width mismatch."""

from __future__ import annotations

import numpy as np
import pytest

from prompt_tuning import cli
from prompt_tuning import neighbors


def _brute_force(prompt, embedding, k):
  ids, sims = [], []
  for row in np.asarray(prompt, np.float64):
    cosines = [float(row @ e / (np.linalg.norm(row) * np.linalg.norm(e))) for e in embedding]
    ranked = sorted(range(len(embedding)), key=lambda i: (-cosines[i], i))[:k]
    ids.append(ranked)
    sims.append([cosines[i] for i in ranked])
  return np.array(ids), np.array(sims)


def test_nearest_neighbors_matches_brute_force():
  rng = np.random.default_rng(0)
  embedding = rng.normal(size=(200, 16)) * rng.uniform(0.1, 5.0, size=(200, 1))
  prompt = rng.normal(size=(7, 16)).astype(np.float32)
  ids, sims = neighbors.nearest_neighbors(prompt, embedding, k=5)
  expected_ids, expected_sims = _brute_force(prompt, embedding, 5)
  np.testing.assert_array_equal(ids, expected_ids)
  np.testing.assert_allclose(sims, expected_sims, rtol=1e-9, atol=1e-12)
  assert np.all(np.diff(sims, axis=1) <= 0)


def test_nearest_neighbors_is_scale_invariant_and_finds_exact_rows():
  rng = np.random.default_rng(1)
  embedding = rng.normal(size=(50, 8))
  prompt = np.stack([3.0 * embedding[17], 0.01 * embedding[4]])
  ids, sims = neighbors.nearest_neighbors(prompt, embedding, k=1)
  assert ids[:, 0].tolist() == [17, 4]
  np.testing.assert_allclose(sims[:, 0], 1.0)


def test_nearest_neighbors_rejects_bad_shapes():
  with pytest.raises(ValueError, match="prompt width 4 does not match the embedding width 8"):
    neighbors.nearest_neighbors(np.ones((2, 4)), np.ones((10, 8)), k=3)
  with pytest.raises(ValueError, match="k must be between 1 and"):
    neighbors.nearest_neighbors(np.ones((2, 8)), np.ones((10, 8)), k=11)


@pytest.fixture
def embedding_checkpoint(tmp_path, test_vocabulary):
  """A checkpoint whose embedding has padding rows past the vocabulary's ids."""
  from prompt_tuning import convert

  rows = test_vocabulary.vocab_size + 28
  rng = np.random.default_rng(2)
  embedding = rng.normal(size=(rows, 16)).astype(np.float32)
  path = convert.save_params_orbax(
    {
      "token_embedder": {"embedding": embedding},
      "decoder": {"decoder_norm": {"scale": np.ones(16, np.float32)}},
    },
    str(tmp_path / "ckpt"),
  )
  return path, embedding


def _run(capsys, args):
  code = cli.main(["neighbors", *args]) if "neighbors" in cli.COMMANDS else neighbors.main(args)
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def test_cli_prints_a_table_and_flags_class_labels(
  tmp_path, capsys, spm_path, test_vocabulary, embedding_checkpoint
):
  checkpoint, embedding = embedding_checkpoint
  label_ids = [
    i
    for i in test_vocabulary.encode("positive")
    if test_vocabulary.tokenizer.id_to_piece(i) != "\u2581"
  ]
  sentinel_0 = test_vocabulary.vocab_size - 1  # <extra_id_0> is the last id.
  padding_row = embedding.shape[0] - 1
  unrelated = 10 if 10 not in label_ids else 11
  prompt = np.stack(
    [
      2.0 * embedding[label_ids[0]],
      embedding[sentinel_0],
      embedding[padding_row],
      0.5 * embedding[unrelated],
    ]
  )
  prompt_path = str(tmp_path / "prompt.npy")
  np.save(prompt_path, prompt)

  code, out, _ = _run(
    capsys,
    [
      "--prompt",
      prompt_path,
      "--checkpoint",
      checkpoint,
      "--vocab",
      spm_path,
      "-k",
      "3",
      "--labels",
      "positive,negative",
    ],
  )
  assert code == 0
  lines = out.splitlines()
  assert lines[0].split()[:2] == ["position", "label"]
  rows = lines[1:5]
  first_piece = test_vocabulary.tokenizer.id_to_piece(label_ids[0])
  assert rows[0].split()[:3] == ["0", "*positive", first_piece]
  assert "(1.000)" in rows[0]
  assert rows[1].split()[:2] == ["1", "<extra_id_0>"]
  assert "*" not in rows[3]
  assert rows[3].split()[1] == test_vocabulary.tokenizer.id_to_piece(unrelated)
  for row in rows:  # k neighbours per position, each `piece (cosine)`.
    assert row.count("(") == 3
  # The padding row is never a neighbour, even of itself.
  assert "(1.000)" not in rows[2]
  assert lines[5].startswith("1 of 4 positions have a class label")


def test_cli_width_mismatch_is_one_line_error(tmp_path, capsys, spm_path, embedding_checkpoint):
  checkpoint, _ = embedding_checkpoint
  prompt_path = str(tmp_path / "wide.npy")
  np.save(prompt_path, np.ones((3, 32), np.float32))
  embedding_npy = str(tmp_path / "embedding.npy")
  np.save(embedding_npy, np.ones((500, 16), np.float32))
  for source in (checkpoint, embedding_npy):
    if "neighbors" in cli.COMMANDS:
      code, _, err = _run(
        capsys, ["--prompt", prompt_path, "--checkpoint", source, "--vocab", spm_path]
      )
      assert code == 1
      assert len(err.strip().splitlines()) == 1
      assert "prompt width 32" in err and "embedding width 16" in err
    else:
      with pytest.raises(ValueError, match="prompt width 32 .* embedding width 16"):
        neighbors.main(["--prompt", prompt_path, "--checkpoint", source, "--vocab", spm_path])


def test_cli_reads_the_embedding_from_a_trainer_style_npy(
  tmp_path, capsys, spm_path, test_vocabulary
):
  rng = np.random.default_rng(3)
  embedding = rng.normal(size=(test_vocabulary.vocab_size, 8)).astype(np.float32)
  embedding_path = str(tmp_path / "embedding.npy")
  np.save(embedding_path, embedding)
  prompt_path = str(tmp_path / "prompt.npy")
  np.save(prompt_path, embedding[[5, 6]])
  code, out, _ = _run(
    capsys,
    ["--prompt", prompt_path, "--checkpoint", embedding_path, "--vocab", spm_path, "-k", "1"],
  )
  assert code == 0
  rows = out.splitlines()[1:]
  assert len(rows) == 2  # No label summary without --labels.
  assert rows[0].split()[1] == test_vocabulary.tokenizer.id_to_piece(5)
