"""COCO caption files: annotations and results in, `score_files` (the ``lrcn score`` command).

Also the one JSON reader of `lrcn.metrics`, whose errors name the file and what to pass.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

from lrcn.errors import LrcnError
from lrcn.io import check_writable, read_json
from lrcn.metrics.per_item import write_per_item
from lrcn.metrics.scoring import DEFAULT_METRICS, EmptyReferences, evaluate_items
from lrcn.metrics.tokenizer import lone_surrogate

_SURROGATE_FIX = (
    "which is not text; fix that \\u escape in the file (write the whole surrogate pair, "
    "e.g. \\ud83d\\ude00, or the character itself)."
)


def _check_text(path: str | os.PathLike, where: str, caption: str) -> str:
    """``caption`` unless it holds a lone surrogate (JSON's ``"\\ud83d"`` without its pair)."""
    bad = lone_surrogate(caption)
    if bad is not None:
        raise LrcnError(
            f"{path}: the caption of {where} holds a lone surrogate ({bad}), {_SURROGATE_FIX}"
        )
    return caption


def load_coco_references(path: str | os.PathLike) -> dict[Hashable, list[str]]:
    """Read a COCO captions file (``annotations[].image_id/caption``) as image id -> captions."""
    what = "a COCO captions file such as captions_val2014.json"
    data = read_json(path, f"pass {what}")
    annotations = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(annotations, list):
        raise LrcnError(f"{path} has no 'annotations' list; pass {what}.")
    references: dict[Hashable, list[str]] = {}
    for i, ann in enumerate(annotations):
        if not (
            isinstance(ann, dict) and isinstance(ann.get("caption"), str) and "image_id" in ann
        ):
            raise LrcnError(
                f"{path}: annotations[{i}] lacks an 'image_id' or a string 'caption'; pass {what}."
            )
        if not isinstance(ann["image_id"], Hashable):
            raise LrcnError(f"{path}: annotations[{i}] has a non-scalar image_id; pass {what}.")
        caption = _check_text(path, f"annotations[{i}]", ann["caption"])
        references.setdefault(ann["image_id"], []).append(caption)
    if not references:
        raise LrcnError(f"{path} holds no captions; pass {what}.")
    return references


def _result_entry(path: str | os.PathLike, i: int, entry: Any, what: str) -> tuple[Hashable, str]:
    """One results entry's (image_id, caption), checked."""
    if not (
        isinstance(entry, dict) and isinstance(entry.get("caption"), str) and "image_id" in entry
    ):
        raise LrcnError(
            f"{path}: entry {i} lacks an 'image_id' or a string 'caption'; pass {what}."
        )
    image_id = entry["image_id"]
    if not isinstance(image_id, Hashable):
        raise LrcnError(
            f"{path}: entry {i} has an image_id of type {type(image_id).__name__}; use ids."
        )
    return image_id, _check_text(path, f"entry {i} (image_id {image_id!r})", entry["caption"])


def load_coco_results(path: str | os.PathLike) -> dict[Hashable, str]:
    """Read a COCO results file (``[{"image_id", "caption"}]``) as image id -> caption.

    Like coco-caption (whose BLEU scorer asserts one hypothesis per image), an image id given
    twice is an error.
    """
    what = 'a COCO results file: a JSON list of {"image_id": ..., "caption": ...}'
    data = read_json(path, f"pass {what}")
    if not isinstance(data, list) or not data:
        raise LrcnError(f"{path} is not a non-empty JSON list; pass {what}.")
    hypotheses: dict[Hashable, str] = {}
    for i, entry in enumerate(data):
        image_id, caption = _result_entry(path, i, entry, what)
        if image_id in hypotheses:
            raise LrcnError(
                f"{path}: image_id {image_id!r} has more than one caption (entry {i}); "
                "coco-caption scores exactly one caption per image, so keep one."
            )
        hypotheses[image_id] = caption
    return hypotheses


def score_files(
    annotations_path: str | os.PathLike,
    results_path: str | os.PathLike,
    metrics: Sequence[str] = DEFAULT_METRICS,
    tokenizer: str = "auto",
    bootstrap: int = 0,
    per_item_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Score a COCO results file against COCO caption annotations (the ``lrcn score`` command).

    Only the image ids in the results are scored, as coco-caption does with
    ``cocoEval.params["image_id"] = cocoRes.getImgIds()``.

    Args:
        bootstrap: resamples for the ``<metric>_ci95`` intervals; 0 leaves them out.
        per_item_path: where to write every item's scores (pycocoevalcap's ``imgToEval`` as a
            JSON list, see `lrcn.metrics.per_item`); None writes nothing.

    Returns:
        The same keys as `score`.
    """
    references = load_coco_references(annotations_path)
    hypotheses = load_coco_results(results_path)
    missing = [k for k in hypotheses if k not in references]
    if missing:
        raise LrcnError(
            f"{results_path}: {len(missing)} image_id(s) have no captions in {annotations_path} "
            f"(first: {missing[0]!r}); score results against the annotations of the same split."
        )
    if per_item_path is not None:
        check_writable(Path(per_item_path).parent)
    try:
        evaluation = evaluate_items(references, hypotheses, metrics=metrics, tokenizer=tokenizer)
    except EmptyReferences as err:
        raise LrcnError(
            f"{annotations_path}: every caption of image_id {err.key!r} is empty (no words after "
            f"tokenization), so it cannot be scored; fix its captions or leave it out of {results_path}."
        ) from err
    if per_item_path is not None:
        write_per_item(per_item_path, evaluation, hypotheses)
    return evaluation.results(bootstrap)
