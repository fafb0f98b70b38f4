"""`score` and `per_item_scores`: check the captions, tokenize them once, run the scorers.

As pycocoevalcap's ``COCOEvalCap.evaluate``: the registered scorers named in ``metrics`` each
get the same tokenized ``gts`` and ``res``, and their corpus scores are gathered under the
metrics' keys, in `METRIC_ORDER`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lrcn.config import DEFAULT_METRICS
from lrcn.errors import LrcnError
from lrcn.metrics.bleu import BleuStatistics, bleu_statistics
from lrcn.metrics.bootstrap import (
    DEFAULT_SEED,
    ItemScores,
    bootstrap_intervals,
    interval_note,
)
from lrcn.metrics.ngrams import eval_table, shared_tables
from lrcn.metrics.registry import (
    METRIC_ORDER,
    SCORERS,
    MetricUnavailable,
    SummedStatistics,
    TokenizedItems,
    Tokens,
    available_metrics,
    get_metric,
    metric_keys,
)
from lrcn.metrics.tokenizer import lone_surrogate, tokenize_captions

# resampled as means of per-item scores (METEOR only where its statistics were not kept)
MEAN_KEYS = ("METEOR", "ROUGE_L", "CIDEr")


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
    wanted = [SCORERS.key(m) for m in metrics]
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
                f"The references for key {key!r} must be a list of caption strings, got "
                f"{type(refs).__name__}; wrap a single caption in a list (and pass the references "
                "first, the hypotheses second)."
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


@dataclass
class _Scored:
    """What `_run_scorers` returns: corpus and per-item scores, statistics, reasons."""

    corpus: dict[str, float]
    per_item: dict[str, np.ndarray]
    summed: dict[str, SummedStatistics]
    unavailable: dict[str, str]


def _run_scorers(gts: TokenizedItems, res: TokenizedItems, metrics: Sequence[str]) -> _Scored:
    """Run every scorer: corpus and per-item scores per key, the summed statistics of metrics
    that leave them (`SummedStatistics`), and the reason per metric that could not run."""
    out = _Scored({}, {}, {}, {})
    for name in metrics:
        keys = metric_keys(name)
        try:
            scorer = get_metric(name)()
            corpus, items = scorer.compute_score(gts, res)
        except MetricUnavailable as err:
            out.unavailable[keys[0] if len(keys) == 1 else name] = str(err)
            continue
        values = corpus if len(keys) > 1 else [corpus]
        item_values = items if len(keys) > 1 else [items]
        out.corpus.update({key: float(value) for key, value in zip(keys, values)})
        out.per_item.update(_item_arrays(keys, item_values, len(res)))
        statistics = getattr(scorer, "statistics", None)
        if len(keys) == 1 and isinstance(statistics, SummedStatistics):
            out.summed[keys[0]] = statistics
    ordered = {k: out.corpus[k] for k in METRIC_ORDER if k in out.corpus}
    out.corpus = {**ordered, **out.corpus}
    return out


def _item_arrays(keys: Sequence[str], item_values: Any, size: int) -> dict[str, np.ndarray]:
    """Each key's per-item scores as an (N,) float array; keys whose scores are not are left out
    (a registered metric may return anything as its per-item scores)."""
    out = {}
    for key, values in zip(keys, item_values):
        try:
            array = np.asarray(values, dtype=float)
        except (TypeError, ValueError):
            continue
        if array.shape == (size,):
            out[key] = array
    return out


def score_tokens(
    gts: TokenizedItems, res: TokenizedItems, *, metrics: Sequence[str]
) -> tuple[dict[str, float], dict[str, str]]:
    """Run each registered scorer in ``metrics`` on tokenized items.

    Returns:
        (corpus score per result key in `METRIC_ORDER`, reason per metric that could not run).
    """
    with shared_tables():
        scored = _run_scorers(gts, res, metrics)
    return scored.corpus, scored.unavailable


@dataclass
class ItemEvaluation:
    """One scoring pass kept whole: corpus scores, per-item scores and BLEU's statistics.

    ``per_item`` maps each result key to an (N,) array in the order of ``keys`` (pycocoevalcap's
    ``imgToEval`` values); ``bleu`` holds what corpus BLEU sums, for resampling.
    """

    keys: list[Hashable]
    corpus: dict[str, float]
    per_item: dict[str, np.ndarray]
    bleu: BleuStatistics | None
    tokenizer: str
    unavailable: dict[str, str] = field(default_factory=dict)
    summed: dict[str, SummedStatistics] = field(default_factory=dict)

    def item_scores(self) -> ItemScores:
        """The per-item scores in the form the bootstrap and paired tests resample.

        BLEU and METEOR are resampled through their statistics (`summed`); ROUGE_L and CIDEr as
        means of their per-item scores; another metric only when its corpus score is the mean of
        its items'.
        """
        means = {
            key: values
            for key, values in self.per_item.items()
            if key not in self.summed
            and (
                key in MEAN_KEYS or abs(float(values.mean()) - self.corpus.get(key, np.nan)) <= 1e-9
            )
        }
        return ItemScores(means, self.bleu, self.summed)

    def results(self, bootstrap: int = 0, seed: int = DEFAULT_SEED) -> dict[str, Any]:
        """`score`'s dict: corpus scores, ``<key>_ci95`` intervals when ``bootstrap`` > 0 (or
        ``bootstrap_note`` saying why not, with fewer than 2 items), ``tokenizer`` and
        ``unavailable``."""
        out: dict[str, Any] = dict(self.corpus)
        items = self.item_scores()
        out.update(bootstrap_intervals(items, bootstrap, seed))
        note = interval_note(items.size, bootstrap)
        if note is not None:
            out["bootstrap_note"] = note
        out["tokenizer"] = self.tokenizer
        if self.unavailable:
            out["unavailable"] = self.unavailable
        return out


def evaluate_items(
    references: Mapping[Hashable, Sequence[str]],
    hypotheses: Mapping[Hashable, str],
    *,
    metrics: Sequence[str] | str = DEFAULT_METRICS,
    tokenizer: str = "auto",
) -> ItemEvaluation:
    """Score captions as coco-caption does and keep every item's scores (see `score`)."""
    wanted = check_metrics(metrics)
    keys, gts, res, used = _tokenized_items(references, hypotheses, tokenizer)
    with shared_tables():
        scored = _run_scorers(gts, res, wanted)
        bleu = bleu_statistics(*_bleu_table(gts, res)) if "bleu" in wanted else None
    return ItemEvaluation(
        keys, scored.corpus, scored.per_item, bleu, used, scored.unavailable, scored.summed
    )


def _bleu_table(gts: TokenizedItems, res: TokenizedItems) -> tuple[Any, int, np.ndarray]:
    table, ref_item = eval_table(gts, res)
    return table, len(res), ref_item


def score(
    references: Mapping[Hashable, Sequence[str]],
    hypotheses: Mapping[Hashable, str],
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    tokenizer: str = "auto",
    bootstrap: int = 0,
    seed: int = DEFAULT_SEED,
) -> dict[str, Any]:
    """Score captions as coco-caption does, over the keys of ``hypotheses``.

    References come first, as in pycocoevalcap's ``compute_score(gts, res)`` and every scoring
    function of lrcn; the options are keyword-only, so no call can pass them out of place.

    Args:
        references: key -> reference captions (raw text).
        hypotheses: key -> one generated caption; its keys must be keys of ``references``.
        metrics: registered metric names (built in: ``bleu, meteor, rouge, cider, spice``), a
            list or one comma-separated string as the command line takes it.
        tokenizer: ``auto``, ``ptb``, ``python`` or ``none`` (see `tokenize_captions`).
        bootstrap: resamples for 95% intervals (``<key>_ci95``); 0 leaves them out.
        seed: the resampling seed.

    Returns:
        ``Bleu_1``..``Bleu_4``, ``METEOR``, ``ROUGE_L``, ``CIDEr`` (those asked for and
        available, and the keys of other registered metrics asked for), their ``<key>_ci95``
        intervals when ``bootstrap`` > 0 (with a single item none, and ``bootstrap_note`` says
        so), ``tokenizer`` (the one used) and, when a metric could not run, ``unavailable``
        (metric -> reason).

    Raises:
        LrcnError: unknown metric, missing keys, a caption that is not text, or an item whose
            references hold no word.
    """
    evaluation = evaluate_items(references, hypotheses, metrics=metrics, tokenizer=tokenizer)
    return evaluation.results(bootstrap, seed)


def per_item_scores(
    references: Mapping[Hashable, Sequence[str]],
    hypotheses: Mapping[Hashable, str],
    *,
    tokenizer: str = "auto",
    metrics: Sequence[str] | str = ("bleu", "rouge", "cider"),
) -> dict[Hashable, dict[str, float]]:
    """Each item's scores, as pycocoevalcap's ``imgToEval`` holds them.

    Per-item BLEU is coco-caption's sentence BLEU, CIDEr-D uses the document frequencies of the
    whole reference set, METEOR (when asked for and Java runs) the jar's per-segment score.

    Returns:
        key -> {"Bleu_1".."Bleu_4", "ROUGE_L", "CIDEr", ...} for every key of ``hypotheses``.
    """
    evaluation = evaluate_items(references, hypotheses, metrics=metrics, tokenizer=tokenizer)
    per_item = evaluation.per_item
    return {
        key: {name: float(values[i]) for name, values in per_item.items()}
        for i, key in enumerate(evaluation.keys)
    }
