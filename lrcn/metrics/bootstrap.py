"""Confidence intervals and paired tests over items: the bootstrap and approximate randomisation.

Corpus BLEU is not a mean of per-item BLEU, so a resample sums the items' clipped matches,
guesses and lengths (`BleuStatistics`) and recomputes coco-caption's corpus formula; corpus METEOR
is likewise the jar's formula on summed statistics (`SummedStatistics`); CIDEr-D and ROUGE_L are
means of per-item values (CIDEr-D's document frequencies stay those of the full reference set, as
the per-item values were computed with them). Every resample is drawn
at once with a seeded numpy Generator, so 1,000 resamples of 5,000 items take a fraction of a
second and the same seed gives the same intervals bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from lrcn.metrics.bleu import BLEU_KEYS, BleuStatistics, corpus_bleu
from lrcn.metrics.registry import SummedStatistics

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
LEVEL = 0.95
MIN_ITEMS = 2  # every resample of one item is that item: its "interval" would have no width


class ItemScores:
    """One system's per-item scores in a form every resample can sum.

    Args:
        values: metric key -> (N,) per-item values whose mean is the corpus score (CIDEr,
            ROUGE_L, METEOR...); BLEU keys given here are ignored in favour of ``bleu``.
        bleu: the items' BLEU statistics, or None when BLEU was not computed.
        summed: metric key -> the items' statistics whose sums give the corpus score (METEOR);
            a key here is not resampled as a mean even when ``values`` has it.
    """

    def __init__(
        self,
        values: Mapping[str, np.ndarray],
        bleu: BleuStatistics | None,
        summed: Mapping[str, SummedStatistics] | None = None,
    ) -> None:
        self.summed = dict(summed or {})
        self.means = {
            k: np.asarray(v, dtype=float)
            for k, v in values.items()
            if k not in BLEU_KEYS and k not in self.summed
        }
        self.bleu = bleu
        sizes = {len(v) for v in self.means.values()} | {
            len(s.values) for s in self.summed.values()
        }
        if bleu is not None:
            sizes.add(len(bleu.length))
        if len(sizes) > 1:
            raise ValueError(f"per-item arrays of different lengths: {sorted(sizes)}")
        self.size = sizes.pop() if sizes else 0

    @property
    def keys(self) -> list[str]:
        """The metric keys these scores give, BLEU-1..4 first."""
        bleu = list(BLEU_KEYS[: self.bleu.correct.shape[0]]) if self.bleu is not None else []
        return bleu + list(self.summed) + list(self.means)

    def _bleu_sums(self, weights: np.ndarray | None) -> tuple[np.ndarray, ...]:
        """Summed BLEU statistics: over all items (``weights`` None) or per row of ``weights``."""
        stats = self.bleu
        assert stats is not None
        columns = np.vstack([stats.correct, stats.guess, stats.length, stats.ref_length]).T
        if weights is None:
            sums = columns.sum(axis=0)[None]  # (1, 2n+2)
        else:
            sums = weights @ columns  # (B, 2n+2), exact: integer counts in float64
        n = stats.correct.shape[0]
        return sums[:, :n], sums[:, n : 2 * n], sums[:, 2 * n], sums[:, 2 * n + 1]

    def corpus(self, weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Corpus scores, (1,) each, or (B,) for item counts ``weights`` of shape (B, N)."""
        out: dict[str, np.ndarray] = {}
        if self.bleu is not None:
            bleu = corpus_bleu(*self._bleu_sums(weights))  # (B, n)
            out.update({key: bleu[:, k] for k, key in enumerate(BLEU_KEYS[: bleu.shape[1]])})
        for key, stats in self.summed.items():
            sums = stats.values.sum(axis=0)[None] if weights is None else weights @ stats.values
            out[key] = stats.score_sums(sums)
        for key, values in self.means.items():
            if weights is None:
                out[key] = np.array([values.mean()])
            else:
                out[key] = weights @ values / self.size
        return out


def resample_counts(size: int, resamples: int, seed: int = DEFAULT_SEED) -> np.ndarray:
    """How often each item is drawn in each bootstrap resample, (resamples, size) float64."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, size, size=(resamples, size))  # (B, N)
    rows = np.repeat(np.arange(resamples), size)
    counts = np.bincount(rows * size + draws.ravel(), minlength=resamples * size)
    return counts.reshape(resamples, size).astype(float)


def _interval(samples: np.ndarray) -> list[float]:
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return [float(low), float(high)]


def bootstrap_intervals(
    scores: ItemScores, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED
) -> dict[str, list[float]]:
    """95% percentile intervals of every corpus score, items resampled with replacement.

    Returns:
        ``<key>_ci95`` -> [low, high] for every key of ``scores``; empty when ``resamples`` is 0
        or there are fewer than `MIN_ITEMS` items (`interval_note` says why).
    """
    if resamples <= 0 or scores.size < MIN_ITEMS:
        return {}
    samples = scores.corpus(resample_counts(scores.size, resamples, seed))
    return {f"{key}_ci95": _interval(values) for key, values in samples.items()}


def interval_note(size: int, resamples: int) -> str | None:
    """Why `bootstrap_intervals` gave no intervals though ``resamples`` asked for them, or None."""
    if resamples <= 0 or size >= MIN_ITEMS:
        return None
    return (
        f"no 95% intervals: the bootstrap resamples items and needs at least {MIN_ITEMS}, "
        f"this evaluation has {size}"
    )


def paired_test(
    a: ItemScores,
    b: ItemScores,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> dict[str, dict[str, float | list[float]]]:
    """Paired bootstrap interval of A - B and approximate-randomisation p-value, per metric.

    The bootstrap resamples items (the same draws for both systems). Approximate randomisation
    swaps each item's A and B scores with probability 1/2 and counts how often the swapped
    difference is at least as large as the observed one; p = (count + 1) / (resamples + 1).

    Returns:
        key -> {"a", "b", "diff", "diff_ci95": [low, high], "p"} for the keys both give.
    """
    if a.size != b.size:
        raise ValueError(f"paired test of {a.size} against {b.size} items")
    keys = [k for k in a.keys if k in b.keys]
    full_a, full_b = a.corpus(), b.corpus()
    counts = resample_counts(a.size, resamples, seed)
    boot_a, boot_b = a.corpus(counts), b.corpus(counts)
    swap = np.random.default_rng(seed + 1).random((resamples, a.size)) < 0.5  # (R, N)
    perm_a, perm_b = _swapped(a, b, swap), _swapped(b, a, swap)
    out: dict[str, dict[str, float | list[float]]] = {}
    for key in keys:
        diff = float(full_a[key][0] - full_b[key][0])
        perm = perm_a[key] - perm_b[key]  # (R,)
        # a swapped difference ties the observed one when all that differs is rounding
        extreme = np.abs(perm) >= abs(diff) - 1e-12
        out[key] = {
            "a": float(full_a[key][0]),
            "b": float(full_b[key][0]),
            "diff": diff,
            "diff_ci95": _interval(boot_a[key] - boot_b[key]),
            "p": float((extreme.sum() + 1) / (resamples + 1)),
        }
    return out


def _swapped(first: ItemScores, second: ItemScores, swap: np.ndarray) -> dict[str, np.ndarray]:
    """Corpus scores, (R,) each, of ``first`` with the items where ``swap`` is set taken from
    ``second``."""
    keep = (~swap).astype(float)  # (R, N)
    take = swap.astype(float)
    out: dict[str, np.ndarray] = {}
    if first.bleu is not None and second.bleu is not None:
        mine, theirs = first._bleu_sums(keep), second._bleu_sums(take)
        summed = [x + y for x, y in zip(mine, theirs)]
        bleu = corpus_bleu(*summed)
        out.update({key: bleu[:, k] for k, key in enumerate(BLEU_KEYS[: bleu.shape[1]])})
    for key, stats in first.summed.items():
        if key in second.summed:
            sums = keep @ stats.values + take @ second.summed[key].values
            out[key] = stats.score_sums(sums)
    for key, values in first.means.items():
        if key in second.means:
            out[key] = (keep @ values + take @ second.means[key]) / first.size
    return out
