"""Leave-one-out reference scores: how well one human caption agrees with the others.

Each held-out reference is scored against all the item's others, so holding out every one of an
item's n references costs n (n - 1) reference sentences: 2,000 references on one item were 4
million, 133 s and 9 GB. Past `MAX_HELD_OUT` references, a seeded sample of that many is held
out instead (each still against all n - 1 others), so the cost is linear in n; items with at most
`MAX_HELD_OUT` (every real dataset's 5 or 20) are scored exactly as before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from lrcn.metrics.registry import Tokens
from lrcn.metrics.scoring import (
    DEFAULT_METRICS,
    check_metrics,
    check_references,
    check_words,
    score_tokens,
)
from lrcn.metrics.tokenizer import tokenize_captions

LOO_PREFIX = "reference_loo_"
MAX_HELD_OUT = 20  # `eval.reference_loo_max_held_out`'s default
SAMPLE_SEED = 0


def held_out_indices(
    references: Sequence[str], max_held_out: int, seed: int = SAMPLE_SEED
) -> list[int]:
    """Which of an item's references are held out: all of them, or past ``max_held_out`` (> 0) a
    sample of that many, in order, drawn from a generator seeded by ``seed`` and the references'
    text (so an item's sample does not depend on the other items or their order)."""
    n = len(references)
    if max_held_out <= 0 or n <= max_held_out:
        return list(range(n))
    digest = hashlib.sha256("\n".join(references).encode("utf-8", "surrogatepass")).digest()
    rng = np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])
    return sorted(int(i) for i in rng.choice(n, size=max_held_out, replace=False))


def _pairs(
    items: Sequence[Sequence[Tokens]], held_out: Sequence[Sequence[int]]
) -> tuple[list[Tokens], list[list[Tokens]]]:
    """Each held-out reference of each item as a hypothesis, with all the item's others."""
    hyps: list[Tokens] = []
    others: list[list[Tokens]] = []
    for item_tokens, indices in zip(items, held_out):
        for i in indices:
            hyps.append(item_tokens[i])
            others.append(list(item_tokens[:i]) + list(item_tokens[i + 1 :]))
    return hyps, others


def leave_one_out_scores(
    references: Mapping[Hashable, Sequence[str]],
    metrics: Sequence[str] = DEFAULT_METRICS,
    tokenizer: str = "auto",
    max_held_out: int = MAX_HELD_OUT,
    seed: int = SAMPLE_SEED,
) -> dict[str, Any]:
    """Human-style ceiling: each reference scored against the item's other references.

    Every item with at least two references gives one pair per reference; all pairs are scored
    as one corpus (CIDEr's document frequency counts the pairs' reference sets). An item with
    more than ``max_held_out`` references (``max_held_out`` > 0) gives ``max_held_out`` pairs,
    its held-out references a seeded sample (`held_out_indices`), each against all its others.

    Returns:
        Every key of `score`'s result prefixed with ``reference_loo_`` (e.g.
        ``reference_loo_Bleu_4``, ``reference_loo_tokenizer``), plus ``reference_loo_pairs``;
        when an item was sampled also ``reference_loo_sampled`` (True),
        ``reference_loo_sampled_items`` (how many items) and ``reference_loo_max_held_out``;
        an empty dict when no item has two references.

    Raises:
        LrcnError: as `score`; an item whose references all hold no word is named.
    """
    wanted = check_metrics(metrics)
    keys = [k for k, refs in references.items() if not isinstance(refs, str) and len(refs) >= 2]
    if not keys:
        return {}
    raw_refs = check_references(references, keys)
    flat = [r for refs in raw_refs for r in refs]
    tokens, used = tokenize_captions(flat, tokenizer)  # once for all pairs
    items, pos = [], 0
    for item in raw_refs:
        items.append(tokens[pos : pos + len(item)])
        pos += len(item)
    check_words(keys, items)
    held_out = [held_out_indices(refs, max_held_out, seed) for refs in raw_refs]
    hyps, others = _pairs(items, held_out)
    gts = dict(enumerate(others))
    res = {i: [hyp] for i, hyp in enumerate(hyps)}
    results, unavailable = score_tokens(gts, res, metrics=wanted)
    out: dict[str, Any] = {LOO_PREFIX + k: v for k, v in results.items()}
    out[LOO_PREFIX + "tokenizer"] = used
    out[LOO_PREFIX + "pairs"] = len(hyps)
    sampled = sum(len(indices) < len(refs) for indices, refs in zip(held_out, raw_refs))
    if sampled:
        out[LOO_PREFIX + "sampled"] = True
        out[LOO_PREFIX + "sampled_items"] = sampled
        out[LOO_PREFIX + "max_held_out"] = max_held_out
    if unavailable:
        out[LOO_PREFIX + "unavailable"] = unavailable
    return out
