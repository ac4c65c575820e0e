"""`prompt-tuning similarity`: SPoT's two task-similarity measures on hand-worked prompts,
the ranking table, and one-line errors for missing files and mismatched shapes."""

from __future__ import annotations

import re

import numpy as np
import pytest

from prompt_tuning import cli, similarity

# Target [[1, 0], [0, 1]]: its mean is (0.5, 0.5), direction (1, 1) / sqrt(2).
TARGET = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)


def test_the_cosine_of_means_on_hand_values():
  # Source mean (1, 0): cosine with (1, 1) is 1 / sqrt(2).
  source = np.array([[2.0, 1.0], [0.0, -1.0]])
  assert similarity.mean_pooled_cosine(TARGET, source) == pytest.approx(1 / np.sqrt(2))
  # Opposite means: -1, whatever the lengths.
  assert similarity.mean_pooled_cosine(TARGET, -np.ones((3, 2))) == pytest.approx(-1.0)


def test_the_mean_pairwise_cosine_on_hand_values():
  # Source rows (1, 0) and (1, 1): the four cosines are 1, 1/sqrt(2), 0, 1/sqrt(2).
  source = np.array([[3.0, 0.0], [1.0, 1.0]])
  expected = (1 + 2 / np.sqrt(2) + 0) / 4
  assert similarity.all_pairs_cosine(TARGET, source) == pytest.approx(expected)
  # The two measures differ: the cosine of these means is cos((1,1), (2,0.5)).
  pooled = np.dot([1, 1], [2, 0.5]) / (np.sqrt(2) * np.linalg.norm([2, 0.5]))
  assert similarity.mean_pooled_cosine(TARGET, source) == pytest.approx(pooled)


def test_zero_vectors_have_cosine_zero_not_nan():
  zero = np.zeros((2, 2))
  assert similarity.mean_pooled_cosine(TARGET, zero) == 0.0
  assert similarity.all_pairs_cosine(TARGET, np.array([[0.0, 0.0], [1.0, 0.0]])) == 0.25


def test_ranking_orders_by_the_chosen_measure():
  # a: same mean direction, but rows spread (low pairwise); b: rows close to both targets.
  a = np.array([[5.0, -4.0], [-4.0, 5.0]])
  b = np.array([[1.0, 0.2], [1.0, 0.2]])
  sources = [("a", a), ("b", b)]
  by_pooled = similarity.rank_sources(TARGET, sources, similarity.MEAN_POOLED)
  by_pairs = similarity.rank_sources(TARGET, sources, similarity.ALL_PAIRS)
  assert [name for name, *_ in by_pooled] == ["a", "b"]
  assert [name for name, *_ in by_pairs] == ["b", "a"]
  assert by_pooled[0][1] == pytest.approx(1.0)


def test_the_command_prints_a_ranked_table(tmp_path, capsys):
  paths = {}
  for name, prompt in {
    "target": TARGET,
    "near": np.array([[1.0, 1.0]]),
    "far": np.array([[-1.0, 0.0], [0.0, -1.0], [-1.0, -1.0]]),
    "side": np.array([[1.0, 0.0]]),
  }.items():
    paths[name] = str(tmp_path / f"{name}.npy")
    np.save(paths[name], prompt.astype(np.float32))
  code = cli.main(["similarity", paths["target"], paths["far"], paths["side"], paths["near"]])
  assert code == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].split()[:2] == ["rank", "source"]
  assert [line.split()[1] for line in lines[1:4]] == [paths["near"], paths["side"], paths["far"]]
  assert lines[1].split()[0] == "1" and lines[1].split()[2] == "1.0000"
  assert lines[2].split()[2:] == [f"{1 / np.sqrt(2):.4f}", f"{0.5:.4f}"]
  assert lines[3].split()[2] == "-1.0000"
  assert lines[4] == "sorted by the cosine of means, most similar first"


@pytest.mark.parametrize(
  "make_source,expected",
  [
    (None, "source prompt .*missing.npy does not exist"),
    (np.ones((2, 3)), "width 3 but the target .* has 2"),
    (np.ones((2, 2, 2)), r"has shape \(2, 2, 2\); expected \[length, d_model\]"),
  ],
)
def test_bad_inputs_are_one_line_errors(tmp_path, capsys, make_source, expected):
  target = str(tmp_path / "target.npy")
  np.save(target, TARGET)
  source = str(tmp_path / "missing.npy")
  if make_source is not None:
    source = str(tmp_path / "source.npy")
    np.save(source, make_source)
  assert cli.main(["similarity", target, source]) == 1
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1
  assert err.startswith("prompt-tuning similarity: error:")
  assert re.search(expected, err), err
