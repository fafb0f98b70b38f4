"""An nltk-style corpus BLEU, the reference the tests check known answers against.

Not part of lrcn: coco-caption's BLEU (``lrcn.metrics.bleu``) is what lrcn reports.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Sequence


def _counts(tokens: Sequence[str], n: int) -> list[Counter]:
    return [Counter(zip(*[tokens[i:] for i in range(k)])) for k in range(1, n + 1)]


def corpus_bleu(
    list_of_references: Sequence[Sequence[Sequence[str]]],
    hypotheses: Sequence[Sequence[str]],
    weights: Sequence[float] = (0.25, 0.25, 0.25, 0.25),
) -> float:
    """Corpus BLEU equal to ``nltk.translate.bleu_score.corpus_bleu`` without smoothing.

    Same conventions as nltk (not coco-caption): clipped counts summed over the corpus, each
    hypothesis shorter than n adds 1 to the n-gram denominator, closest reference length (the
    shorter on ties), brevity penalty ``exp(1 - r/c)`` when ``c <= r``, 0 when no unigram
    matches, and a zero higher-order precision counted as ``sys.float_info.min`` (so the score
    is ~0, as nltk returns with its warning, which this function does not emit).

    Args:
        list_of_references: per hypothesis, its reference token lists.
        hypotheses: hypothesis token lists.
        weights: one weight per n-gram order.

    Returns:
        The BLEU score.
    """
    if len(list_of_references) != len(hypotheses):
        raise ValueError("corpus_bleu needs one list of references per hypothesis")
    if not hypotheses:
        raise ValueError("corpus_bleu needs at least one hypothesis")
    orders = len(weights)
    numerators, denominators = [0] * orders, [0] * orders
    hyp_total, ref_total = 0, 0
    for refs, hyp in zip(list_of_references, hypotheses):
        hyp_counts = _counts(list(hyp), orders)
        ref_counts = [_counts(list(ref), orders) for ref in refs]
        for k in range(orders):
            numerators[k] += sum(
                min(count, max((ref[k].get(gram, 0) for ref in ref_counts), default=0))
                for gram, count in hyp_counts[k].items()
            )
            denominators[k] += max(1, sum(hyp_counts[k].values()))
        hyp_total += len(hyp)
        ref_total += min((len(ref) for ref in refs), key=lambda r: (abs(r - len(hyp)), r))
    if numerators[0] == 0:
        return 0.0
    if hyp_total > ref_total:
        penalty = 1.0
    elif hyp_total == 0:
        penalty = 0.0
    else:
        penalty = math.exp(1 - ref_total / hyp_total)
    precisions = [
        num / den if num else sys.float_info.min for num, den in zip(numerators, denominators)
    ]
    return penalty * math.exp(math.fsum(w * math.log(p) for w, p in zip(weights, precisions)))
