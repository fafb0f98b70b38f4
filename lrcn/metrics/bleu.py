"""coco-caption's BLEU-1..4 (``BleuScorer`` with ``option="closest"``), on shared n-gram tables.

Written to give pycocoevalcap's numbers (within 1e-6) on the same tokens, and faster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lrcn.metrics.ngrams import NgramTable, eval_table, group_starts, lookup, sum_by
from lrcn.metrics.registry import TokenizedItems, register_metric

BLEU_KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4")


def _clipped_matches(table: NgramTable, num_hyps: int, ref_item: np.ndarray, k: int) -> np.ndarray:
    """Per hypothesis, its (k+1)-grams clipped by their most counts in any one reference, (N,)."""
    sent, gram, count = table.sent[k], table.gram[k], table.count[k]
    is_ref = sent >= num_hyps
    # the most times each (item, n-gram) occurs in any one of the item's references
    ref_keys = ref_item[sent[is_ref] - num_hyps] * table.num_grams(k) + gram[is_ref]
    order = np.argsort(ref_keys, kind="stable")
    ref_keys, ref_counts = ref_keys[order], count[is_ref][order]
    if len(ref_keys):
        bounds = np.flatnonzero(np.r_[True, ref_keys[1:] != ref_keys[:-1]])
        ref_keys, ref_counts = ref_keys[bounds], np.maximum.reduceat(ref_counts, bounds)
    hyp_keys = sent[~is_ref] * table.num_grams(k) + gram[~is_ref]
    clipped = np.minimum(count[~is_ref], lookup(ref_keys, ref_counts, hyp_keys, 0))
    return sum_by(sent[~is_ref], clipped, num_hyps)


TINY, SMALL = 1e-15, 1e-9  # coco-caption's: no zero division, and 0 matches score 0


@dataclass
class BleuStatistics:
    """Per-item sufficient statistics of corpus BLEU: resample these, not per-item BLEU.

    ``correct`` and ``guess`` are (n, N): clipped n-gram matches and the hypothesis' n-gram
    count per order; ``length`` (N,) the hypothesis length, ``ref_length`` (N,) the closest
    reference length (the shorter on ties), as coco-caption's ``BleuScorer`` keeps them.
    """

    correct: np.ndarray
    guess: np.ndarray
    length: np.ndarray
    ref_length: np.ndarray


def bleu_statistics(table: NgramTable, num_hyps: int, ref_item: np.ndarray) -> BleuStatistics:
    """Each item's clipped matches, guesses, length and closest reference length.

    Sentences ``0..num_hyps-1`` of ``table`` are the hypotheses, the rest references, grouped by
    item (``ref_item`` non-decreasing, every item has one).
    """
    n = len(table.sent)
    test_len = table.lengths[:num_hyps]  # (N,)
    ref_len = table.lengths[num_hyps:]  # (R,)
    # closest reference length, the shorter on ties: min of (distance, length) per item
    scale = int(ref_len.max(initial=0)) + 1
    closeness = np.abs(ref_len - test_len[ref_item]) * scale + ref_len  # (R,)
    closest = np.minimum.reduceat(closeness, group_starts(ref_item, num_hyps)) % scale  # (N,)
    correct = np.zeros((n, num_hyps))  # (n, N)
    guess = np.zeros((n, num_hyps))  # (n, N)
    for k in range(n):
        correct[k] = _clipped_matches(table, num_hyps, ref_item, k)
        guess[k] = np.maximum(0, test_len - k)
    return BleuStatistics(correct, guess, test_len, closest)


def corpus_bleu(
    correct: np.ndarray, guess: np.ndarray, length: np.ndarray, ref_length: np.ndarray
) -> np.ndarray:
    """coco-caption's corpus BLEU-1..n from summed statistics, for many (re)samples at once.

    Args:
        correct, guess: (..., n) summed clipped matches and guesses per order.
        length, ref_length: (...,) summed hypothesis and closest reference lengths.

    Returns:
        (..., n) BLEU-1..n, the floats coco-caption's loop gives on the same sums.
    """
    # cumulative products in coco-caption's order, so the floats match
    precision = np.cumprod((correct + TINY) / (guess + SMALL), axis=-1)  # (..., n)
    bleu = precision ** (1.0 / np.arange(1, correct.shape[-1] + 1))
    ratio = (length + TINY) / (ref_length + SMALL)  # (...,)
    penalty = np.where(ratio < 1, np.exp(1 - 1 / np.minimum(ratio, 1)), 1.0)
    return bleu * penalty[..., None]


def coco_bleu(
    table: NgramTable, num_hyps: int, ref_item: np.ndarray
) -> tuple[list[float], np.ndarray]:
    """coco-caption's ``BleuScorer.compute_score(option="closest")``.

    Sentences ``0..num_hyps-1`` of ``table`` are the hypotheses, the rest references, grouped by
    item (``ref_item`` non-decreasing, every item has one).

    Returns:
        (corpus BLEU-1..n, per-item BLEU-1..n of shape (n, N)).
    """
    tiny, small = TINY, SMALL
    stats = bleu_statistics(table, num_hyps, ref_item)
    n = len(table.sent)
    correct, guess = stats.correct, stats.guess
    test_len, closest = stats.length, stats.ref_length
    # cumulative products in coco-caption's order, so the floats match
    per_item = np.cumprod((correct + tiny) / (guess + small), axis=0)  # (n, N)
    per_item **= 1.0 / np.arange(1, n + 1)[:, None]
    ratio = (test_len + tiny) / (closest + small)  # (N,)
    short = ratio < 1
    per_item[:, short] *= np.exp(1 - 1 / ratio[short])
    scores, bleu = [], 1.0
    for k in range(n):
        bleu *= (float(correct[k].sum()) + tiny) / (float(guess[k].sum()) + small)
        scores.append(bleu ** (1.0 / (k + 1)))
    ratio = (int(test_len.sum()) + tiny) / (int(closest.sum()) + small)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores, per_item


@register_metric("bleu")
class Bleu:
    """BLEU-1..4: corpus scores as a list of four, per-item scores as an array (4, N)."""

    keys = BLEU_KEYS

    def compute_score(
        self, gts: TokenizedItems, res: TokenizedItems
    ) -> tuple[list[float], np.ndarray]:
        """coco-caption's BLEU of ``res`` against ``gts`` (see `coco_bleu`)."""
        table, ref_item = eval_table(gts, res)
        return coco_bleu(table, len(res), ref_item)
