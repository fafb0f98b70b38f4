"""coco-caption's ROUGE_L: the F-measure of the longest common subsequence, bit-parallel."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lrcn.metrics.ngrams import split_items
from lrcn.metrics.registry import TokenizedItems, Tokens, register_metric


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence, bit-parallel over ``a`` (Allison-Dix)."""
    masks: dict[str, int] = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(a)) - 1
    row = full
    for tok in b:
        matches = row & masks.get(tok, 0)
        row = ((row + matches) | (row - matches)) & full
    return len(a) - row.bit_count()


def rouge_l(hyp: Tokens, refs: Sequence[Tokens], beta: float = 1.2) -> float:
    """coco-caption's ROUGE_L for one item: LCS F-measure from the best precision and recall."""
    # coco-caption splits the joined caption on " ", so an empty caption is one empty token.
    hyp = hyp or [""]
    prec_max, rec_max = 0.0, 0.0
    for ref in refs:
        ref = ref or [""]
        lcs = lcs_length(ref, hyp)
        prec_max = max(prec_max, lcs / len(hyp))
        rec_max = max(rec_max, lcs / len(ref))
    if prec_max == 0 or rec_max == 0:
        return 0.0
    return ((1 + beta**2) * prec_max * rec_max) / float(rec_max + beta**2 * prec_max)


@register_metric("rouge")
class Rouge:
    """ROUGE_L: the mean over items, and each item's score (N,)."""

    keys = ("ROUGE_L",)

    def compute_score(self, gts: TokenizedItems, res: TokenizedItems) -> tuple[float, np.ndarray]:
        """coco-caption's ROUGE_L of ``res`` against ``gts``."""
        hyps, refs = split_items(gts, res)
        per_item = [rouge_l(h, r) for h, r in zip(hyps, refs)]
        return float(np.mean(per_item)), np.array(per_item)
