"""Per-item score files: pycocoevalcap's ``imgToEval`` as a JSON list, and reading it back.

Each record holds ``image_id``, ``caption`` and the per-item scores under coco-caption's keys
(``Bleu_1``..``Bleu_4``, ``METEOR``, ``ROUGE_L``, ``CIDEr``), plus what corpus BLEU sums
(``bleu_correct``, ``bleu_guess``, ``length``, ``ref_length``) and, for a metric whose corpus
score sums statistics (METEOR), ``<key>_stats``, so that `lrcn compare` and the bootstrap can
recompute corpus BLEU and METEOR on any subset of items without the references.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from lrcn.errors import LrcnError
from lrcn.io import read_json, write_json_atomic
from lrcn.metrics.bleu import BLEU_KEYS, BleuStatistics
from lrcn.metrics.bootstrap import ItemScores
from lrcn.metrics.registry import SummedStatistics, summed_score
from lrcn.metrics.scoring import ItemEvaluation

_STATS = ("bleu_correct", "bleu_guess", "length", "ref_length")


def per_item_records(
    evaluation: ItemEvaluation, hypotheses: Mapping[Hashable, str]
) -> list[dict[str, Any]]:
    """One record per item, in the evaluation's order (see the module docstring)."""
    records = []
    bleu = evaluation.bleu
    for i, key in enumerate(evaluation.keys):
        record: dict[str, Any] = {"image_id": key, "caption": hypotheses[key]}
        record.update({name: float(v[i]) for name, v in evaluation.per_item.items()})
        if bleu is not None:
            record["bleu_correct"] = [int(c) for c in bleu.correct[:, i]]
            record["bleu_guess"] = [int(g) for g in bleu.guess[:, i]]
            record["length"] = int(bleu.length[i])
            record["ref_length"] = int(bleu.ref_length[i])
        for name, stats in evaluation.summed.items():
            record[f"{name}_stats"] = [float(x) for x in stats.values[i]]
        records.append(record)
    return records


def write_per_item(
    path: str | os.PathLike, evaluation: ItemEvaluation, hypotheses: Mapping[Hashable, str]
) -> None:
    """Write `per_item_records` to ``path`` (atomically)."""
    write_json_atomic(path, per_item_records(evaluation, hypotheses))


def evaluation_identity(
    keys: Sequence[Hashable], references: Mapping[Hashable, Sequence[str]], tokenizer: str
) -> dict[str, Any]:
    """What makes two evaluations comparable item by item: the items, references and tokenizer.

    Returns:
        ``items`` (count), ``item_ids_sha1``, ``references_sha1`` and ``tokenizer``.
    """
    ids = json.dumps([str(k) for k in keys]).encode()
    refs = json.dumps([[str(k), list(references[k])] for k in keys], ensure_ascii=False)
    return {
        "items": len(keys),
        "item_ids_sha1": hashlib.sha1(ids).hexdigest(),
        "references_sha1": hashlib.sha1(refs.encode()).hexdigest(),
        "tokenizer": tokenizer,
    }


def _bad(path: str | os.PathLike, what: str) -> LrcnError:
    return LrcnError(
        f"{path}: {what}; write it again with `lrcn evaluate` (or `lrcn score --per-item`)."
    )


def read_per_item(path: str | os.PathLike) -> tuple[list[str], list[str], ItemScores]:
    """Read a per-item file back: (item ids as text, captions, scores to resample).

    Raises:
        LrcnError: not a per-item file (naming it and how to write it again).
    """
    records = read_json(path, "write it again with `lrcn evaluate`")
    if not isinstance(records, list) or not records or not isinstance(records[0], dict):
        raise _bad(path, "not a non-empty JSON list of per-item records")
    metric_keys = [k for k, v in records[0].items() if isinstance(v, float) and k not in _STATS]
    if not metric_keys:
        raise _bad(path, "its first record holds no scores (e.g. a number under 'CIDEr')")
    try:
        ids = [str(r["image_id"]) for r in records]
        captions = [str(r.get("caption", "")) for r in records]
        values = {k: np.array([r[k] for r in records], dtype=float) for k in metric_keys}
        bleu = None
        if all(k in records[0] for k in _STATS):
            bleu = BleuStatistics(
                np.array([r["bleu_correct"] for r in records], dtype=float).T,
                np.array([r["bleu_guess"] for r in records], dtype=float).T,
                np.array([r["length"] for r in records], dtype=float),
                np.array([r["ref_length"] for r in records], dtype=float),
            )
        summed = _summed_statistics(records, metric_keys)
    except (KeyError, TypeError, ValueError) as err:
        raise _bad(path, f"a record lacks or mangles {err}") from err
    values = {k: v for k, v in values.items() if k not in BLEU_KEYS or bleu is None}
    return ids, captions, ItemScores(values, bleu, summed)


def _summed_statistics(
    records: list[dict[str, Any]], metric_keys: list[str]
) -> dict[str, SummedStatistics]:
    """The ``<key>_stats`` columns of keys whose corpus score sums statistics (METEOR)."""
    summed = {}
    for key in metric_keys:
        score_sums = summed_score(key)
        if score_sums is not None and f"{key}_stats" in records[0]:
            values = np.array([r[f"{key}_stats"] for r in records], dtype=float)
            summed[key] = SummedStatistics(values, score_sums)
    return summed
