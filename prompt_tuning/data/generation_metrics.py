"""Metrics of the generation tasks (table-to-text and XSum), on the scales the
Prefix-Tuning paper reports: BLEU, chrF, TER, METEOR-free E2E metrics and ROUGE.

Every scorer takes `references` (one list of reference strings per example, of any
length) and `predictions` (one string per example). Table-to-text sets have several
references per input but one example per (input, reference) pair, so their tasks hand
metrics dict targets `{"group": <input>, "value": <reference>, "category": ...}`;
`multi_reference` regroups them so that each input is scored once against all its
references, as the E2E, WebNLG and DART evaluations do (docs/generation.md).

Where each number comes from (a maintained library each; nothing is re-implemented):
  bleu, chrf, ter   sacrebleu's corpus scores, its defaults (13a tokenisation, cased),
                    with a variable number of references per example.
  nist              nltk's `corpus_nist` (n = 5) over sacrebleu's 13a tokens, lowercased.
  cider, rouge_l_coco  pycocoevalcap's CIDEr and ROUGE-L (beta 1.2,
                    best reference), which the E2E challenge's scripts call, over
                    lowercased 13a tokens.
  rouge_stemmed     rouge-score's ROUGE-1/2/L with the Porter stemmer (XSum as
                    Prefix-Tuning reports it), mean F-measure x 100, best reference.

Not computed: METEOR. Its reference implementation is Java's METEOR 1.5 with paraphrase
tables that pycocoevalcap downloads on first use (they are not in its wheel), and nltk's
METEOR needs WordNet, another download; no offline, maintained implementation exists.
The papers' official scripts also differ in tokenisation (E2E's mteval, WebNLG's
multi-bleu on tokenised text), so these numbers are close to, not identical with, theirs.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from prompt_tuning.data import metrics
from prompt_tuning.data.postprocessors import as_text

References = Sequence[Sequence[str]]
Scorer = Callable[[References, Sequence[str]], dict[str, float]]


def _check(references: References, predictions: Sequence[str]) -> None:
  metrics._check_lengths(references, predictions)
  empty = [i for i, refs in enumerate(references) if not refs]
  if empty:
    raise ValueError(f"examples {empty[:5]} have no reference; every example needs one")


def reference_streams(references: References) -> list[list[str | None]]:
  """sacrebleu's layout: stream k holds every example's k-th reference, None where an
  example has fewer (sacrebleu skips those)."""
  depth = max(len(refs) for refs in references)
  return [
    [as_text(refs[k]) if k < len(refs) else None for refs in references] for k in range(depth)
  ]


def bleu(references: References, predictions: Sequence[str]) -> dict[str, float]:
  """Corpus BLEU (sacrebleu's defaults), 0-100."""
  import sacrebleu

  _check(references, predictions)
  hypotheses = [as_text(p) for p in predictions]
  return {"bleu": float(sacrebleu.corpus_bleu(hypotheses, reference_streams(references)).score)}


def chrf(references: References, predictions: Sequence[str]) -> dict[str, float]:
  """Corpus chrF (sacrebleu's chrF2), 0-100."""
  import sacrebleu

  _check(references, predictions)
  hypotheses = [as_text(p) for p in predictions]
  return {"chrf": float(sacrebleu.corpus_chrf(hypotheses, reference_streams(references)).score)}


def ter(references: References, predictions: Sequence[str]) -> dict[str, float]:
  """Corpus TER (sacrebleu), edits per reference word x 100: lower is better."""
  import sacrebleu

  _check(references, predictions)
  hypotheses = [as_text(p) for p in predictions]
  return {"ter": float(sacrebleu.corpus_ter(hypotheses, reference_streams(references)).score)}


def tokens(text: str | bytes) -> list[str]:
  """Lowercased 13a tokens: what NIST, CIDEr and COCO's ROUGE-L count."""
  from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

  return Tokenizer13a()(as_text(text).lower()).split()


def nist(references: References, predictions: Sequence[str], n: int = 5) -> dict[str, float]:
  """Corpus NIST (nltk, up to 5-grams): information-weighted n-gram precision, on its own
  scale (E2E systems score 8-9).

  Orders longer than every hypothesis have no n-grams to weigh; they add nothing, as in
  mteval (nltk would divide by zero), so very short generations still get a score."""
  from nltk.translate.nist_score import corpus_nist

  _check(references, predictions)
  refs = [[tokens(r) for r in example] for example in references]
  hyps = [tokens(p) for p in predictions]
  order = min(n, max(len(h) for h in hyps))
  if order == 0:
    return {"nist": 0.0}
  return {"nist": float(corpus_nist(refs, hyps, n=order))}


def _coco_inputs(
  references: References, predictions: Sequence[str]
) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
  gts = {i: [" ".join(tokens(r)) for r in refs] for i, refs in enumerate(references)}
  res = {i: [" ".join(tokens(p))] for i, p in enumerate(predictions)}
  return gts, res


def cider(references: References, predictions: Sequence[str]) -> dict[str, float]:
  """CIDEr (pycocoevalcap): TF-IDF-weighted n-gram similarity, IDF over the references
  of the scored corpus, on its own scale (E2E systems score 2-2.5)."""
  from pycocoevalcap.cider.cider import Cider

  _check(references, predictions)
  score, _ = Cider().compute_score(*_coco_inputs(references, predictions))
  return {"cider": float(score)}


def rouge_l_coco(references: References, predictions: Sequence[str]) -> dict[str, float]:
  """ROUGE-L as COCO's (and the E2E challenge's) scripts compute it: LCS F-measure with
  beta 1.2 against the best-matching reference, averaged over examples, x 100."""
  from pycocoevalcap.rouge.rouge import Rouge

  _check(references, predictions)
  score, _ = Rouge().compute_score(*_coco_inputs(references, predictions))
  return {"rouge_l": 100.0 * float(score)}


ROUGE_STEMMED_KEYS = ("rouge1", "rouge2", "rougeL")


def rouge_stemmed(references: References, predictions: Sequence[str]) -> dict[str, float]:
  """ROUGE-1/2/L F-measures with the Porter stemmer (rouge-score), each example against
  its best reference, averaged, x 100: XSum as the Prefix-Tuning paper reports it.

  Unlike `metrics.rouge` (the T5 library's ROUGE: no stemmer, bootstrap median) this is
  the plain mean, as the papers' summarisation scripts print it."""
  from rouge_score import rouge_scorer

  _check(references, predictions)
  scorer = rouge_scorer.RougeScorer(list(ROUGE_STEMMED_KEYS), use_stemmer=True)
  totals = collections.defaultdict(float)
  for refs, prediction in zip(references, predictions):
    scores = scorer.score_multi([as_text(r) for r in refs], as_text(prediction))
    for key in ROUGE_STEMMED_KEYS:
      totals[key] += scores[key].fmeasure
  return {key: 100.0 * totals[key] / len(predictions) for key in ROUGE_STEMMED_KEYS}


def single_reference(*scorers: Scorer) -> Callable[[Sequence[Any], Sequence[Any]], dict]:
  """A seqio metric `fn(targets, predictions)` over one reference string per example."""

  def metric(targets: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
    references = [[as_text(t)] for t in targets]
    return _run(scorers, references, [as_text(p) for p in predictions])

  metric.__name__ = "+".join(s.__name__ for s in scorers)
  return metric


def _run(scorers: Sequence[Scorer], references: References, predictions: Sequence[str]) -> dict:
  results: dict[str, float] = {}
  for scorer in scorers:
    results.update(scorer(references, predictions))
  return results


def group_references(
  targets: Sequence[Mapping[str, Any]], predictions: Sequence[Any]
) -> list[tuple[str, list[str], str]]:
  """[(category, references, prediction)] per distinct `group`, in order of first
  appearance; the prediction is the group's first (every example of a group has the same
  input, so a deterministic decoder predicts the same text for each)."""
  if len(targets) != len(predictions):
    raise ValueError(
      f"Got {len(targets)} targets but {len(predictions)} predictions; pass one prediction "
      "per target."
    )
  groups: dict[str, tuple[str, list[str], str]] = {}
  for target, prediction in zip(targets, predictions):
    if not isinstance(target, Mapping) or "group" not in target or "value" not in target:
      raise ValueError(
        "multi-reference metrics need dict targets {'group', 'value'}; use the task's own "
        f"postprocessor (got {type(target).__name__})"
      )
    key = as_text(target["group"])
    if key not in groups:
      groups[key] = (as_text(target.get("category", "")), [], as_text(prediction))
    groups[key][1].append(as_text(target["value"]))
  return list(groups.values())


def multi_reference(
  *scorers: Scorer, seen_categories: frozenset[str] | None = None
) -> Callable[[Sequence[Any], Sequence[Any]], dict]:
  """A seqio metric that scores each input once against all of its references.

  With `seen_categories` (WebNLG), every score is also reported on the inputs whose
  category is seen in training (`{key}_seen`) and on the others (`{key}_unseen`), each
  only when it has inputs; the plain keys are over all inputs."""

  def metric(targets: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
    grouped = group_references(targets, predictions)
    results = _run(scorers, [g[1] for g in grouped], [g[2] for g in grouped])
    if seen_categories is None:
      return results
    seen = np.array([g[0] in seen_categories for g in grouped])
    for suffix, chosen in (("seen", seen), ("unseen", ~seen)):
      subset = [g for g, keep in zip(grouped, chosen) if keep]
      if subset:
        scores = _run(scorers, [g[1] for g in subset], [g[2] for g in subset])
        results.update({f"{key}_{suffix}": value for key, value in scores.items()})
    return results

  metric.__name__ = "multi_reference_" + "+".join(s.__name__ for s in scorers)
  return metric
