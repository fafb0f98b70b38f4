"""Gather a report's rows: the evaluation files, each item's thumbnail, scores and attention strip.

`write_report` (re-exported as `lrcn.report.write_report`) reads what the evaluation wrote,
checked against its manifest (`lrcn.evaluation_files.read_evaluation`), builds one `Row` per item
and hands them to `lrcn.report.page.render_page`. The rows show the references the evaluation
stored (``<split>_references.json``); the data is rebuilt only for the pictures, and a split whose
references changed since the evaluation is refused (its scores describe the old references).
"""

from __future__ import annotations

import base64
import io
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lrcn import build
from lrcn.config import Config, load_config
from lrcn.engine.evaluation import AttentionMaps
from lrcn.errors import LrcnError
from lrcn.evaluation_files import EvaluationFiles, manifest_path, read_evaluation
from lrcn.io import check_writable, read_json, write_text_atomic
from lrcn.metrics import per_item_scores
from lrcn.metrics.per_item import evaluation_identity
from lrcn.predict import evaluate, run_dir_of
from lrcn.report.page import Row, render_page
from lrcn.task import get_task
from lrcn.visualize import attention_strip, denormalise, frame_strip, to_rgb_array

log = logging.getLogger(__name__)

THUMBNAIL_SIZE = 96  # pixels: the height the page shows every picture and frame strip at
STRIP_FRAMES = 4
# Attention strips (attention captioners): each word's thumbnail this many pixels a side, for at
# most this many items (the first of the captions file), so a COCO-sized split stays a page
# a browser opens (each strip is a few kB to a few tens of kB).
ATTENTION_CELL = 64
ATTENTION_ITEMS = 500


_RERUN = "re-run `lrcn evaluate` for this split"


def write_report(run_dir: str | Path, split: str = "test", out: str | Path | None = None) -> Path:
    """Write an HTML report of a run's evaluation on one split.

    Args:
        run_dir: the run folder (``config.yaml``, ``checkpoints/``, ``eval/``); a checkpoint
            file inside one also works.
        split: ``train``, ``val`` or ``test``.
        out: the HTML file to write (default ``<run>/eval/<split>_report.html``).

    Returns:
        The path written.

    Raises:
        LrcnError: not a run folder, unreadable evaluation files, or data that no longer
            matches the evaluation (e.g. a moved manifest).
    """
    run_dir = _run_folder(Path(run_dir))
    cfg = load_config(run_dir / "config.yaml")
    task = get_task(cfg.task)
    if task.items_file is None:
        raise LrcnError(
            f"{run_dir} is a run of task {task.name} ({task.description}), which has no items to "
            f"show; its metrics are in {run_dir / 'eval'}/{split}_metrics.json (`lrcn evaluate` "
            "writes it)."
        )
    eval_dir = run_dir / "eval"
    out_path = Path(out) if out else eval_dir / f"{split}_report.html"
    check_writable(out_path.parent)  # before any evaluation or rendering
    if not manifest_path(eval_dir, split).is_file() and (
        not (eval_dir / f"{split}_metrics.json").is_file()
        or not (eval_dir / f"{split}_{task.items_file}").is_file()
    ):  # an evaluation with a manifest is checked instead (an unfinished one is refused)
        log.info("%s: split %s is not evaluated yet; evaluating it first", run_dir, split)
        evaluate(run_dir, split=split)
    files = read_evaluation(eval_dir, split)
    metrics = read_json(eval_dir / f"{split}_metrics.json", _RERUN)
    if not isinstance(metrics, dict):
        raise LrcnError(
            f"{eval_dir / f'{split}_metrics.json'}: not a JSON object; re-run `lrcn evaluate --checkpoint {run_dir} --split {split}`."
        )
    start = time.perf_counter()
    columns, rows = task.report_rows(cfg, files, metrics, run_dir)
    page = render_page(run_dir, cfg, split, metrics, columns, rows)
    write_text_atomic(out_path, page)
    log.info("report of %d items in %.1f s: %s", len(rows), time.perf_counter() - start, out_path)
    return out_path


def _run_folder(path: Path) -> Path:
    if path.is_file() and path.suffix == ".pt":
        path = run_dir_of(path)
    if not (path / "config.yaml").is_file():
        raise LrcnError(
            f"{path}: not a run folder (no config.yaml); pass the folder `lrcn train` wrote."
        )
    return path


# ----------------------------------------------------------------------------- thumbnails


def _data_uri(image: np.ndarray, max_height: int = THUMBNAIL_SIZE, max_aspect: float = 5) -> str:
    """The smaller of PNG (flat synthetic pictures) and JPEG (photos), as a data URI.

    The page shows every thumbnail ``THUMBNAIL_SIZE`` pixels high, so larger pictures are cut
    down to that height (and at most ``max_aspect`` times as wide).
    """
    picture = Image.fromarray(image)
    scale = min(max_height / picture.height, max_aspect * max_height / picture.width)
    if scale < 1:
        size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    encoded = {}
    for fmt, options in (("PNG", {"optimize": False}), ("JPEG", {"quality": 85})):
        buffer = io.BytesIO()
        picture.save(buffer, format=fmt, **options)
        encoded[fmt] = buffer.getvalue()
    fmt = min(encoded, key=lambda name: len(encoded[name]))
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(encoded[fmt]).decode("ascii")


def _strip_uri(frames: Any) -> str:
    """A strip of a few evenly spaced frames of a clip (T, C, H, W) in [0, 1]."""
    return _data_uri(frame_strip(frames, n=STRIP_FRAMES, gap=2))


def _photo_uri(path: str) -> str | None:
    """A photo's thumbnail straight from its file (keeps its aspect, unlike the model input)."""
    try:
        with Image.open(path) as picture:
            # JPEG: decode at 1/2..1/8 scale, still at least THUMBNAIL_SIZE on each side
            picture.draft("RGB", (THUMBNAIL_SIZE, THUMBNAIL_SIZE))
            rgb = picture.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return _data_uri(np.asarray(rgb))


def _source_thumbnail(
    source: Any, index: int, mean: Sequence[float], std: Sequence[float]
) -> str | None:
    records = getattr(source, "records", None)
    if records is not None and not source.is_video and "path" in records[index]:
        return _photo_uri(records[index]["path"])
    try:
        pixels = source.example(index).pixels
    except LrcnError:  # an unreadable file: the row stays, without a picture
        return None
    if pixels is None:
        return None
    pixels = denormalise(pixels, mean, std)  # (3, H, W) or (T, 3, H, W) in [0, 1]
    return _strip_uri(pixels) if pixels.dim() == 4 else _data_uri(to_rgb_array(pixels))


# ----------------------------------------------------------------------------- rows


def caption_rows(
    cfg: Config, files: EvaluationFiles, metrics: dict[str, Any], run_dir: Path
) -> tuple[list[tuple[str, str]], list[Row]]:
    """A captioning evaluation's item table: each caption beside its stored references, its
    per-item scores, thumbnail and attention strip (the caption tasks' `report_rows`)."""
    split, captions_path = files.split, files.path("captions.json")
    results = read_json(captions_path, _RERUN)
    if not isinstance(results, list) or not all(
        isinstance(r, dict) and "image_id" in r and "caption" in r for r in results
    ):
        raise LrcnError(
            f'{captions_path}: not a COCO results list ([{{"image_id": ..., "caption": ...}}]); '
            f"re-run `lrcn evaluate --checkpoint {run_dir} --split {split}`."
        )
    # the split rebuilt from the run's config: for the pictures, and to check the references
    source = build.build_source_raw(cfg, split)
    index_of = {str(source.item_id(i)): i for i in range(len(source))}
    hypotheses: dict[str, str] = {}
    for result in results:
        item_id = str(result["image_id"])
        if item_id not in index_of:
            raise LrcnError(
                f"{captions_path}: item {item_id} is not in the {split} split of the run's data "
                f"({cfg.data.dataset}); the data changed since evaluation — re-run `lrcn evaluate "
                f"--checkpoint {run_dir} --split {split}`."
            )
        hypotheses[item_id] = str(result["caption"])
    today = {item_id: source.captions(index_of[item_id]) for item_id in hypotheses}
    references = files.references() or today  # 0.2.0 kept none: today's, checked below
    _check_references(files, metrics, references, today, run_dir)
    scores = _stored_scores(files.path("per_item.json"), hypotheses)
    if scores is None:  # an evaluation older than per-item files: score again, as before
        scores = per_item_scores(references, hypotheses, tokenizer="python")
    mean, std = build.normalisation(cfg)
    attention = _attention_maps(files.path("attention.npz"))
    rows = []
    for item_id, caption in hypotheses.items():
        index = index_of[item_id]
        rows.append(
            Row(
                index,
                item_id,
                _source_thumbnail(source, index, mean, std),
                {
                    "caption": caption,
                    "references": references[item_id],
                    "Bleu_4": scores[item_id]["Bleu_4"],
                    "CIDEr": scores[item_id]["CIDEr"],
                },
            )
        )
    if attention is not None:
        _add_attention_strips(rows, attention, source, mean, std)
    columns = [("caption", "text"), ("Bleu_4", "num"), ("CIDEr", "num")]
    return columns, rows


def _check_references(
    files: EvaluationFiles,
    metrics: dict[str, Any],
    stored: dict[str, list[str]],
    today: dict[str, list[str]],
    run_dir: Path,
) -> None:
    """Refuse a split whose references are no longer those the evaluation scored against."""
    identity = metrics.get("evaluation")
    changed = [k for k in today if stored.get(k) != today[k]]
    if not changed and isinstance(identity, dict) and "references_sha1" in identity:
        keys = list(today)
        recorded = identity["references_sha1"]
        if (
            evaluation_identity(keys, today, str(identity.get("tokenizer")))["references_sha1"]
            != recorded
        ):
            changed = ["(the references' sha1 differs from the one the metrics file records)"]
    if changed:
        first = changed[0]
        what = f"item {first}: {today[first]!r}" if first in today else first
        raise LrcnError(
            f"the {files.split} references of {run_dir}'s data changed since the evaluation in "
            f"{files.folder} scored its captions against them ({len(changed)} items, e.g. {what}); "
            f"re-run `lrcn evaluate --checkpoint {run_dir} --split {files.split}`."
        )


def _attention_maps(path: Path) -> AttentionMaps | None:
    """The evaluation's attention maps (attention captioners), or None when it kept none."""
    return AttentionMaps.load(path) if path.is_file() else None


def _add_attention_strips(
    rows: list[Row],
    attention: AttentionMaps,
    source: Any,
    mean: Sequence[float],
    std: Sequence[float],
) -> None:
    """Each row's attention strip (the first ``ATTENTION_ITEMS`` rows with maps); a row whose
    caption has another word count than its maps (a stale file) is left without one."""
    stale = 0
    shown = [row for row in rows if row.item_id in attention.maps][:ATTENTION_ITEMS]
    for row in shown:
        maps, words = attention.maps[row.item_id], row.cells["caption"].split()
        if maps.shape[0] != len(words) + 1:
            stale += 1
            continue
        try:
            pixels = source.example(row.index).pixels
        except LrcnError:  # an unreadable file: no picture, no strip
            continue
        if pixels is None:
            continue
        pictures = denormalise(pixels, mean, std)  # (3, H, W) or (T, 3, H, W) in [0, 1]
        grid = attention.grid if attention.attends == "grid" else None
        strip = attention_strip(pictures, words, maps.astype(np.float32), grid, ATTENTION_CELL)
        row.attention = _data_uri(strip, max_height=strip.shape[0], max_aspect=40)
    if stale:
        log.warning(
            "%d captions have other words than their attention maps; re-run `lrcn evaluate`",
            stale,
        )


def _stored_scores(path: Path, hypotheses: dict[str, str]) -> dict[str, dict[str, float]] | None:
    """Per-item BLEU-4 and CIDEr from the evaluation's per-item file, or None to rescore.

    None when the file is absent (evaluated before lrcn kept it) or lists other items than the
    captions file (then a warning says so).
    """
    if not path.is_file():
        return None
    records = read_json(path, _RERUN)
    try:
        scores = {
            str(r["image_id"]): {"Bleu_4": float(r["Bleu_4"]), "CIDEr": float(r["CIDEr"])}
            for r in records
        }
    except (KeyError, TypeError, ValueError):
        log.warning("%s: not per-item scores with Bleu_4 and CIDEr; scoring again", path)
        return None
    if set(scores) != set(hypotheses):
        log.warning("%s lists other items than the captions file; scoring again", path)
        return None
    return scores


def activity_rows(
    cfg: Config, split: str, predictions_path: Path
) -> tuple[list[tuple[str, str]], list[Row]]:
    """An activity evaluation's item table: each clip's predicted and true label, with its
    probability and a strip of its frames (the activity task's `report_rows`)."""
    predictions = read_json(predictions_path, _RERUN)
    if not isinstance(predictions, list) or not all(
        isinstance(p, dict) and {"label", "predicted", "probability"} <= set(p) for p in predictions
    ):
        raise LrcnError(
            f"{predictions_path}: not a list of {{label, predicted, probability}} records; "
            f"re-run `lrcn evaluate` for split {split}."
        )
    # Predictions are in dataset order (the evaluation loader does not shuffle).
    try:
        data, _ = build.build_activity_dataset(cfg, split)
    except LrcnError as exc:
        log.warning("no thumbnails: %s", exc)
        data = None
    if data is not None and len(data) != len(predictions):
        log.warning("no thumbnails: %d predictions for %d items", len(predictions), len(data))
        data = None
    mean, std = build.normalisation(cfg)
    rows = []
    for index, prediction in enumerate(predictions):
        thumbnail = None
        if data is not None:
            try:
                thumbnail = _strip_uri(denormalise(data[index]["frames"], mean, std))
            except LrcnError:
                thumbnail = None
        rows.append(
            Row(
                index,
                str(prediction.get("id", index)),
                thumbnail,
                {
                    "label": str(prediction["label"]),
                    "predicted": str(prediction["predicted"]),
                    "correct": prediction["label"] == prediction["predicted"],
                    "probability": float(prediction["probability"]),
                },
            )
        )
    columns = [("label", "text"), ("predicted", "text"), ("probability", "num")]
    return columns, rows
