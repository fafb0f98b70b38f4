"""coco-caption's CIDEr-D (``Cider``: clipped, Gaussian length penalty, x10) and `CiderD`.

The registered ``cider`` metric counts document frequency over the evaluated items'
references, as coco-caption does; `CiderD` takes it from a fixed corpus (self-critical
training's reward) and equals coco-caption's CIDEr when built from the evaluated set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lrcn.metrics.ngrams import (
    NgramTable,
    eval_table,
    group_starts,
    set_document_frequency,
    sum_by,
)
from lrcn.metrics.registry import TokenizedItems, register_metric

CIDER_SIGMA = 6.0


def cider_d(
    table: NgramTable,
    idf: Sequence[np.ndarray],
    hyp_set: np.ndarray,
    ref_set: np.ndarray,
    sigma: float = CIDER_SIGMA,
) -> np.ndarray:
    """coco-caption's CIDEr (CIDEr-D: clipped, Gaussian length penalty, x10), per hypothesis.

    Sentences ``0..N-1`` of ``table`` are hypotheses; the rest are references in sets
    (``ref_set``, non-decreasing). Hypothesis i is scored against set ``hyp_set[i]``, so
    hypotheses sampled for one image share one set. ``idf[k]`` holds each n-gram id's weight.

    Returns:
        (N,) CIDEr-D per hypothesis.
    """
    num_hyps = len(hyp_set)
    num_sets = int(ref_set.max(initial=-1)) + 1
    set_start = group_starts(ref_set, num_sets)  # (U,)
    set_size = np.bincount(ref_set, minlength=num_sets)  # (U,)
    # one "pair" per (hypothesis, reference of its set); hypothesis i's pairs are contiguous
    pairs_per_hyp = set_size[hyp_set]  # (N,)
    pair_start = np.cumsum(pairs_per_hyp) - pairs_per_hyp  # (N,)
    num_pairs = int(pairs_per_hyp.sum())
    pair_hyp = np.repeat(np.arange(num_hyps), pairs_per_hyp)  # (P,)
    pair_ref = set_start[hyp_set][pair_hyp] + np.arange(num_pairs) - pair_start[pair_hyp]  # (P,)
    # coco-caption's "length" is the bigram count (it counts where its 0-based order is 1)
    length = np.maximum(table.lengths - 1, 0)  # (S,)
    delta = length[pair_hyp] - length[num_hyps + pair_ref]  # (P,)
    penalty = np.exp(-(delta.astype(float) ** 2) / (2 * sigma**2))  # (P,)
    total = np.zeros(num_pairs)  # (P,)
    for k in range(len(table.sent)):
        sent, gram = table.sent[k], table.gram[k]
        vec = table.count[k] * idf[k][gram]  # (E,) tf-idf of each entry
        norm = np.sqrt(sum_by(sent, vec**2, len(table.lengths)))  # (S,)
        is_ref = sent >= num_hyps
        h_sent, h_vec = sent[~is_ref], vec[~is_ref]
        r_ref, r_vec = sent[is_ref] - num_hyps, vec[is_ref]
        # join each hypothesis entry with the entries of the same n-gram in its reference set
        r_keys = ref_set[r_ref] * table.num_grams(k) + gram[is_ref]
        h_keys = hyp_set[h_sent] * table.num_grams(k) + gram[~is_ref]
        h_entry, r_entry = _equal_keys(h_keys, r_keys)  # (M,), (M,)
        hyp_i, ref_r, r_val = h_sent[h_entry], r_ref[r_entry], r_vec[r_entry]
        clipped = np.minimum(h_vec[h_entry], r_val) * r_val  # (M,) clipping is CIDEr-D's "D"
        pair = pair_start[hyp_i] + ref_r - set_start[hyp_set[hyp_i]]
        val = sum_by(pair, clipped, num_pairs)  # (P,)
        denom = norm[pair_hyp] * norm[num_hyps + pair_ref]  # (P,)
        val = np.divide(val, denom, out=val, where=denom != 0)
        total += val * penalty
    per_hyp = sum_by(pair_hyp, total, num_hyps)  # (N,)
    return per_hyp / len(table.sent) / np.maximum(pairs_per_hyp, 1) * 10.0


def _equal_keys(h_keys: np.ndarray, r_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (hypothesis entry, reference entry) pair whose keys are equal, as indices into
    ``h_keys`` and ``r_keys``: a sort-merge join, so the cost is (E_h + E_r) log E_r, not E_h x E_r.
    A hypothesis entry's matches come out contiguous, in the references' order."""
    order = np.argsort(r_keys, kind="stable")
    r_keys = r_keys[order]
    lo = np.searchsorted(r_keys, h_keys, "left")
    matches = np.searchsorted(r_keys, h_keys, "right") - lo  # (E_h,)
    h_entry = np.repeat(np.arange(len(h_keys)), matches)  # (M,)
    # the j-th match of a hypothesis entry sits at lo + j in the sorted reference keys
    r_entry = order[
        np.repeat(lo, matches)
        + np.arange(len(h_entry))
        - np.repeat(np.cumsum(matches) - matches, matches)
    ]
    return h_entry, r_entry


def idf_weights(df: np.ndarray, num_documents: int) -> np.ndarray:
    """coco-caption's idf: log(#documents) - log(max(1, df)); unseen n-grams get the maximum."""
    return math.log(float(num_documents)) - np.log(np.maximum(1.0, df))


def eval_cider(table: NgramTable, ref_item: np.ndarray) -> np.ndarray:
    """coco-caption's CIDEr per item, df counted over the evaluated items' references, (N,)."""
    num_items = len(table.lengths) - len(ref_item)
    df = set_document_frequency(table, ref_item, num_items)
    return cider_d(table, [idf_weights(d, num_items) for d in df], np.arange(num_items), ref_item)


@register_metric("cider")
class Cider:
    """coco-caption's CIDEr (CIDEr-D): the mean over items, and each item's score (N,)."""

    keys = ("CIDEr",)

    def compute_score(self, gts: TokenizedItems, res: TokenizedItems) -> tuple[float, np.ndarray]:
        """CIDEr-D of ``res`` against ``gts``, document frequency over ``gts``."""
        per_item = eval_cider(*eval_table(gts, res))
        return float(np.mean(per_item)), per_item
