"""`score` and `per_item_scores`: check the captions, tokenize them once, run the scorers.

As pycocoevalcap's ``COCOEvalCap.evaluate``: the registered scorers named in ``metrics`` each
get the same tokenized ``gts`` and ``res``, and their corpus scores are gathered under the
metrics' keys, in `METRIC_ORDER`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from lrcn.errors import LrcnError
from lrcn.metrics.ngrams import shared_tables
from lrcn.metrics.registry import (
    METRIC_ORDER,
    MetricUnavailable,
    TokenizedItems,
    Tokens,
    available_metrics,
    get_metric,
    metric_keys,
)
from lrcn.metrics.tokenizer import lone_surrogate, tokenize_captions

DEFAULT_METRICS = ("bleu", "meteor", "rouge", "cider")


class EmptyReferences(LrcnError):
    """An item's references hold no word at all, so no metric can score it (``key`` says which)."""

    def __init__(self, key: Hashable) -> None:
        super().__init__(
            f"Every reference caption of key {key!r} is empty (no words after tokenization), "
            "so it cannot be scored; drop that item or give it a reference caption."
        )
        self.key = key


def check_metrics(metrics: Sequence[str] | str) -> list[str]:
    """Registered metric names from a list or one comma-separated string, in registry order.

    Raises:
        LrcnError: an unknown name, or none at all; the sentence lists the registered ones.
    """
    if isinstance(metrics, str):
        metrics = [m for m in metrics.split(",") if m]
    wanted = [m.strip().lower() for m in metrics]
    known = available_metrics()
    unknown = [m for m in wanted if m not in known]
    if unknown or not wanted:
        raise LrcnError(
            f"Unknown or empty metrics {unknown or list(metrics)!r}; "
            f"choose from {', '.join(known)}."
        )
    return [m for m in known if m in wanted]


def check_caption(caption: Any, what: str, key: Hashable) -> str:
    """``caption`` if it is text; otherwise an `LrcnError` naming ``what`` and ``key``."""
    if not isinstance(caption, str):
        raise LrcnError(
            f"The {what} for key {key!r} is {type(caption).__name__}, not a string; "
            "pass captions as text."
        )
    bad = lone_surrogate(caption)
    if bad is not None:
        raise LrcnError(
            f"The {what} for key {key!r} holds a lone surrogate ({bad}), which is not text; "
            "write the whole surrogate pair or the character itself."
        )
    return caption


def check_references(references: Mapping, keys: Sequence[Hashable]) -> list[list[str]]:
    """Each key's reference captions, checked to be a non-empty list of strings."""
    out = []
    for key in keys:
        refs = references[key]
        if isinstance(refs, str) or not isinstance(refs, Sequence):
            raise LrcnError(
                f"The references for key {key!r} must be a list of caption strings, "
                f"got {type(refs).__name__}; wrap a single caption in a list."
            )
        if not refs:
            raise LrcnError(
                f"Key {key!r} has no reference captions; coco-caption needs at least one, "
                "so drop that item or add its references."
            )
        out.append([check_caption(r, "reference", key) for r in refs])
    return out


def check_words(keys: Sequence[Hashable], references: Sequence[Sequence[Tokens]]) -> None:
    """Raise `EmptyReferences` for the first key whose tokenized references hold no word."""
    for key, refs in zip(keys, references):
        if not any(refs):
            raise EmptyReferences(key)


def _check_keys(references: Mapping, hypotheses: Mapping) -> list[Hashable]:
    keys = list(hypotheses)
    if not keys:
        raise LrcnError("There are no hypotheses to score; pass at least one caption.")
    missing = [k for k in keys if k not in references]
    if missing:
        raise LrcnError(
            f"{len(missing)} hypothesis key(s) have no references (first: {missing[0]!r}); "
            "every hypothesis key must be a key of the references."
        )
    return keys


def _tokenized_items(
    references: Mapping[Hashable, Sequence[str]],
    hypotheses: Mapping[Hashable, str],
    tokenizer: str,
) -> tuple[list[Hashable], TokenizedItems, TokenizedItems, str]:
    """Checked and tokenized (keys, gts, res, tokenizer used), one tokenizer call for all."""
    keys = _check_keys(references, hypotheses)
    raw_refs = check_references(references, keys)
    raw_hyps = [check_caption(hypotheses[k], "hypothesis", k) for k in keys]
    flat = raw_hyps + [r for refs in raw_refs for r in refs]
    tokens, used = tokenize_captions(flat, tokenizer)
    pos = len(raw_hyps)
    refs = []
    for item in raw_refs:
        refs.append(tokens[pos : pos + len(item)])
        pos += len(item)
    check_words(keys, refs)
    gts = dict(zip(keys, refs))
    res = {key: [hyp] for key, hyp in zip(keys, tokens[: len(raw_hyps)])}
    return keys, gts, res, used


def score_tokens(
    gts: TokenizedItems, res: TokenizedItems, metrics: Sequence[str]
) -> tuple[dict[str, float], dict[str, str]]:
    """Run each registered scorer in ``metrics`` on tokenized items.

    Returns:
        (corpus score per result key in `METRIC_ORDER`, reason per metric that could not run).
    """
    results: dict[str, float] = {}
    unavailable: dict[str, str] = {}
    with shared_tables():
        for name in metrics:
            keys = metric_keys(name)
            try:
                corpus, _ = get_metric(name)().compute_score(gts, res)
            except MetricUnavailable as err:
                unavailable[keys[0] if len(keys) == 1 else name] = str(err)
                continue
            values = corpus if len(keys) > 1 else [corpus]
            results.update({key: float(value) for key, value in zip(keys, values)})
    ordered = {k: results[k] for k in METRIC_ORDER if k in results}
    return {**ordered, **results}, unavailable


def score(
    references: Mapping[Hashable, Sequence[str]],
    hypotheses: Mapping[Hashable, str],
    metrics: Sequence[str] = DEFAULT_METRICS,
    tokenizer: str = "auto",
) -> dict[str, Any]:
    """Score captions as coco-caption does, over the keys of ``hypotheses``.

    Args:
        references: key -> reference captions (raw text).
        hypotheses: key -> one generated caption; its keys must be keys of ``references``.
        metrics: registered metric names (built in: ``bleu, meteor, rouge, cider, spice``), a
            list or one comma-separated string as the command line takes it.
        tokenizer: ``auto``, ``ptb``, ``python`` or ``none`` (see `tokenize_captions`).

    Returns:
        ``Bleu_1``..``Bleu_4``, ``METEOR``, ``ROUGE_L``, ``CIDEr`` (those asked for and
        available, and the keys of other registered metrics asked for), ``tokenizer`` (the one
        used) and, when a metric could not run, ``unavailable`` (metric -> reason).

    Raises:
        LrcnError: unknown metric, missing keys, a caption that is not text, or an item whose
            references hold no word.
    """
    wanted = check_metrics(metrics)
    _, gts, res, used = _tokenized_items(references, hypotheses, tokenizer)
    results, unavailable = score_tokens(gts, res, wanted)
    out: dict[str, Any] = dict(results)
    out["tokenizer"] = used
    if unavailable:
        out["unavailable"] = unavailable
    return out


def per_item_scores(
    references: Mapping[Hashable, Sequence[str]],
    hypotheses: Mapping[Hashable, str],
    tokenizer: str = "auto",
) -> dict[Hashable, dict[str, float]]:
    """Per-item ``Bleu_4`` (coco-caption's sentence BLEU) and ``CIDEr`` (df over the whole set).

    Returns:
        key -> {"Bleu_4": ..., "CIDEr": ...} for every key of ``hypotheses``.
    """
    keys, gts, res, _ = _tokenized_items(references, hypotheses, tokenizer)
    with shared_tables():
        _, bleu = get_metric("bleu")().compute_score(gts, res)  # (4, N)
        _, cider = get_metric("cider")().compute_score(gts, res)  # (N,)
    return {
        key: {"Bleu_4": float(bleu[3, i]), "CIDEr": float(cider[i])} for i, key in enumerate(keys)
    }
