"""The generation metrics against values worked out by hand, with several and with
varying numbers of references, and their errors on malformed input."""

from __future__ import annotations

import pytest

from prompt_tuning.data import generation_metrics as gm


def test_bleu_matches_the_hand_computed_geometric_mean_of_precisions():
  # Clipped n-gram precisions 5/6, 3/5, 2/4, 1/3; equal lengths, so no brevity penalty.
  score = gm.bleu([["the cat sat on a mat"]], ["the cat sat on the mat"])["bleu"]
  assert score == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25, abs=1e-6)


def test_bleu_uses_every_reference_and_allows_their_number_to_vary():
  references = [["the cat sat on a mat", "the cat sat on the mat"], ["a dog barked"]]
  assert gm.bleu(references, ["the cat sat on the mat", "a dog barked"])["bleu"] == pytest.approx(
    100
  )
  assert gm.reference_streams(references) == [
    ["the cat sat on a mat", "a dog barked"],
    ["the cat sat on the mat", None],
  ]


def test_ter_counts_edits_per_reference_word():
  assert gm.ter([["a b x d"]], ["a b c d"])["ter"] == pytest.approx(25.0)
  assert gm.ter([["a b x d", "a b c d"]], ["a b c d"])["ter"] == pytest.approx(0.0)


def test_chrf_is_100_for_a_copy_and_0_without_shared_characters():
  assert gm.chrf([["hello world"]], ["hello world"])["chrf"] == pytest.approx(100)
  assert gm.chrf([["aaaa"]], ["zzzz"])["chrf"] == pytest.approx(0)


def test_nist_of_a_copy_of_distinct_words_is_the_unigram_information():
  # One reference of four distinct words: each unigram carries log2(4 / 1) = 2 bits, every
  # longer n-gram log2(1 / 1) = 0; the average over the hypothesis' unigrams is 2.
  assert gm.nist([["a b c d"]], ["a b c d"])["nist"] == pytest.approx(2.0)


def test_coco_rouge_l_is_the_lcs_f_measure_with_beta_1_2():
  # LCS "a b": precision = recall = 2/3, so F = 2/3 whatever beta.
  assert gm.rouge_l_coco([["a b d"]], ["a b c"])["rouge_l"] == pytest.approx(200 / 3)
  # Precision 2/2, recall 2/4: F = (1 + 1.44) * 1 * 0.5 / (0.5 + 1.44 * 1).
  expected = 100 * 2.44 * 0.5 / (0.5 + 1.44)
  assert gm.rouge_l_coco([["a b c d"]], ["a b"])["rouge_l"] == pytest.approx(expected)


def test_cider_ranks_a_copy_above_a_partial_match_and_lowercases():
  references = [["The Eagle is a coffee shop"], ["Zizzi is a pub by the river"]]
  copy = gm.cider(references, ["the eagle is a coffee shop", "zizzi is a pub by the river"])
  partial = gm.cider(references, ["the eagle is a pub", "zizzi is a coffee shop"])
  assert copy["cider"] > partial["cider"] > 0


def test_stemmed_rouge_takes_the_best_reference():
  scores = gm.rouge_stemmed([["cats are running", "a dog"]], ["the cat runs"])
  # Stems: {cat, run} shared with the first reference (3 and 3 tokens): F1 = 2/3.
  assert scores["rouge1"] == pytest.approx(200 / 3)
  assert scores["rouge2"] == pytest.approx(0.0)


def test_multi_reference_groups_by_input_and_scores_the_first_prediction():
  targets = [
    {"group": "t1", "value": "a b c d"},
    {"group": "t1", "value": "a b x d"},
    {"group": "t2", "value": "e f g h"},
  ]
  metric = gm.multi_reference(gm.ter)
  assert metric(targets, ["a b x d", "ignored", "e f g h"])["ter"] == pytest.approx(0.0)


def test_malformed_inputs_fail_with_a_clear_message():
  with pytest.raises(ValueError, match="dict targets"):
    gm.multi_reference(gm.bleu)(["plain text"], ["x"])
  with pytest.raises(ValueError, match="one prediction per"):
    gm.bleu([["a"]], ["a", "b"])
  with pytest.raises(ValueError, match="no reference"):
    gm.bleu([[]], ["a"])
  with pytest.raises(ValueError, match="zero examples"):
    gm.ter([], [])


def test_nist_scores_generations_shorter_than_its_longest_n_gram():
  assert gm.nist([["a b"]], ["a b"])["nist"] == pytest.approx(1.0)  # log2(2 / 1)
  assert gm.nist([["a b"]], [""])["nist"] == 0.0
