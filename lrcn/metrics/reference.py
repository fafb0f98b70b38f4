"""Leave-one-out reference scores: how well one human caption agrees with the others."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

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


def _pairs(items: Sequence[Sequence[Tokens]]) -> tuple[list[Tokens], list[list[Tokens]]]:
    """Each reference of each item as a hypothesis, with the item's other references."""
    hyps: list[Tokens] = []
    others: list[list[Tokens]] = []
    for item_tokens in items:
        for i, held_out in enumerate(item_tokens):
            hyps.append(held_out)
            others.append(list(item_tokens[:i]) + list(item_tokens[i + 1 :]))
    return hyps, others


def leave_one_out_scores(
    references: Mapping[Hashable, Sequence[str]],
    metrics: Sequence[str] = DEFAULT_METRICS,
    tokenizer: str = "auto",
) -> dict[str, Any]:
    """Human-style ceiling: each reference scored against the item's other references.

    Every item with at least two references gives one pair per reference; all pairs are scored
    as one corpus (CIDEr's document frequency counts the pairs' reference sets).

    Returns:
        Every key of `score`'s result prefixed with ``reference_loo_`` (e.g.
        ``reference_loo_Bleu_4``, ``reference_loo_tokenizer``), plus ``reference_loo_pairs``;
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
    hyps, others = _pairs(items)
    gts = dict(enumerate(others))
    res = {i: [hyp] for i, hyp in enumerate(hyps)}
    results, unavailable = score_tokens(gts, res, wanted)
    out: dict[str, Any] = {LOO_PREFIX + k: v for k, v in results.items()}
    out[LOO_PREFIX + "tokenizer"] = used
    out[LOO_PREFIX + "pairs"] = len(hyps)
    if unavailable:
        out[LOO_PREFIX + "unavailable"] = unavailable
    return out
