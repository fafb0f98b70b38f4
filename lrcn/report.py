"""``lrcn report``: one self-contained HTML page of an evaluation, to read a model's mistakes.

The page shows the split's metrics (the model, the leave-one-out human references and the
most-frequent-caption baseline side by side), then every item: a thumbnail (a strip of frames for
video), the generated caption, the references and the item's BLEU-4 and CIDEr (read from the
evaluation's ``<split>_per_item.json``; evaluations older than that file are scored again),
sortable by clicking a column header. The metrics carry their 95% intervals, and what the
captions copy from training and how varied they are follows. Activity runs list label, prediction and probability instead.
For an attention captioner the evaluation's ``<split>_attention.npz`` adds, under each caption,
the strip of where every word looked (`lrcn.visualize.attention_strip`).

Thumbnails are embedded as data URIs and the page carries its own CSS and a few lines of
JavaScript, so the file can be mailed or archived alone. When the split has not been evaluated
yet, `write_report` runs `lrcn.predict.evaluate` on the run's best checkpoint first.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lrcn import build
from lrcn.config import Config, load_config
from lrcn.engine.evaluation import AttentionMaps
from lrcn.errors import LrcnError
from lrcn.io import check_writable, read_json, write_text_atomic
from lrcn.metrics import METRIC_ORDER, per_item_scores
from lrcn.predict import evaluate, run_dir_of
from lrcn.visualize import attention_strip, denormalise, frame_strip, to_rgb_array

log = logging.getLogger(__name__)

THUMBNAIL_SIZE = 96  # pixels: the height the page shows every picture and frame strip at
STRIP_FRAMES = 4
# Attention strips (attention captioners): each word's thumbnail this many pixels a side, for at
# most this many items (the first of the captions file), so a COCO-sized split stays a page
# a browser opens (each strip is a few kB to a few tens of kB).
ATTENTION_CELL = 64
ATTENTION_ITEMS = 500


@dataclass
class _Row:
    """One item of the page."""

    index: int
    item_id: str
    thumbnail: str | None  # data URI
    cells: dict[str, Any] = field(default_factory=dict)
    attention: str | None = None  # data URI of the caption's attention strip


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
    if cfg.task == "attributes":
        raise LrcnError(
            f"{run_dir} is a pretraining run (task attributes): it has no captions to show; its "
            f"accuracies are in {run_dir / 'eval'}/{split}_metrics.json (`lrcn evaluate` writes it)."
        )
    eval_dir = run_dir / "eval"
    out_path = Path(out) if out else eval_dir / f"{split}_report.html"
    check_writable(out_path.parent)  # before any evaluation or rendering
    wanted = "predictions" if cfg.task == "activity" else "captions"
    if (
        not (eval_dir / f"{split}_metrics.json").is_file()
        or not (eval_dir / f"{split}_{wanted}.json").is_file()
    ):
        log.info("%s: split %s is not evaluated yet; evaluating it first", run_dir, split)
        evaluate(run_dir, split=split)
    metrics = read_json(eval_dir / f"{split}_metrics.json", _RERUN)
    if not isinstance(metrics, dict):
        raise LrcnError(
            f"{eval_dir / f'{split}_metrics.json'}: not a JSON object; re-run `lrcn evaluate --checkpoint {run_dir} --split {split}`."
        )
    start = time.perf_counter()
    if cfg.task == "activity":
        columns, rows = _activity_rows(cfg, split, eval_dir / f"{split}_predictions.json")
    else:
        columns, rows = _caption_rows(cfg, split, eval_dir / f"{split}_captions.json", run_dir)
    page = _page(run_dir, cfg, split, metrics, columns, rows)
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


def _caption_rows(
    cfg: Config, split: str, captions_path: Path, run_dir: Path
) -> tuple[list[tuple[str, str]], list[_Row]]:
    results = read_json(captions_path, _RERUN)
    if not isinstance(results, list) or not all(
        isinstance(r, dict) and "image_id" in r and "caption" in r for r in results
    ):
        raise LrcnError(
            f'{captions_path}: not a COCO results list ([{{"image_id": ..., "caption": ...}}]); '
            f"re-run `lrcn evaluate --checkpoint {run_dir} --split {split}`."
        )
    # The evaluate step saves no references: rebuild the split from the run's config.
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
    references = {item_id: source.captions(index_of[item_id]) for item_id in hypotheses}
    scores = _stored_scores(captions_path.with_name(f"{split}_per_item.json"), hypotheses)
    if scores is None:  # an evaluation older than per-item files: score again, as before
        scores = per_item_scores(references, hypotheses, tokenizer="python")
    mean, std = build.normalisation(cfg)
    attention = _attention_maps(captions_path.with_name(f"{split}_attention.npz"))
    rows = []
    for item_id, caption in hypotheses.items():
        index = index_of[item_id]
        rows.append(
            _Row(
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


def _attention_maps(path: Path) -> AttentionMaps | None:
    """The evaluation's attention maps (attention captioners), or None when it kept none."""
    return AttentionMaps.load(path) if path.is_file() else None


def _add_attention_strips(
    rows: list[_Row],
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


def _activity_rows(
    cfg: Config, split: str, predictions_path: Path
) -> tuple[list[tuple[str, str]], list[_Row]]:
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
            _Row(
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


# ----------------------------------------------------------------------------- HTML


_CSS = """
:root { --ink: #1d2330; --muted: #667085; --line: #e4e7ec; --accent: #2f6fde; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: #f6f7f9; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 20px 60px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 28px 0 10px; }
.meta { color: var(--muted); margin: 0 0 4px; }
.meta code { color: var(--ink); }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; overflow: hidden; }
table { border-collapse: collapse; width: 100%; }
th, td { padding: 7px 12px; text-align: left; vertical-align: top; border-bottom: 1px solid var(--line); }
th { background: #eef1f5; font-weight: 600; white-space: nowrap; }
tbody tr:last-child td { border-bottom: 0; }
table.metrics { width: auto; min-width: 320px; }
table.metrics td.num, table.metrics th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.items tbody tr:nth-child(even) { background: #fafbfc; }
table.items tbody tr:hover { background: #f1f6ff; }
th.sortable { cursor: pointer; user-select: none; }
th.sortable:hover { color: var(--accent); }
th.sortable::after { content: " \\2195"; color: #aab; font-weight: 400; }
th.asc::after { content: " \\25B2"; color: var(--accent); }
th.desc::after { content: " \\25BC"; color: var(--accent); }
td.thumb { width: 1%; padding: 6px 10px; }
td.thumb img { display: block; height: 96px; width: auto; max-width: 420px; border-radius: 4px;
               image-rendering: pixelated; background: #000; }
td.thumb img.photo { image-rendering: auto; }
td.thumb .missing { width: 96px; height: 96px; display: flex; align-items: center; justify-content: center;
                    color: var(--muted); background: #eee; border-radius: 4px; font-size: 12px; }
td.idx { color: var(--muted); width: 1%; white-space: nowrap; font-variant-numeric: tabular-nums; }
.generated { font-size: 15px; font-weight: 600; margin-bottom: 4px; }
.item-id { color: var(--muted); font-size: 11px; font-family: ui-monospace, monospace; }
ol.refs { margin: 2px 0 0; padding-left: 18px; color: var(--muted); font-size: 13px; }
.attention { margin: 6px 0 4px; overflow-x: auto; max-width: 760px; }
.attention img { display: block; height: auto; max-width: none; image-rendering: auto; }
td.score { width: 1%; white-space: nowrap; text-align: right; font-variant-numeric: tabular-nums; }
.bar { height: 5px; width: 72px; margin: 5px 0 0 auto; background: #edf0f4; border-radius: 3px; }
.bar span { display: block; height: 100%; background: var(--accent); border-radius: 3px; }
.ok { color: #16803c; font-weight: 600; }
.bad { color: #c4320a; font-weight: 600; }
.note { color: var(--muted); font-size: 12px; margin-top: 8px; }
.ci { color: var(--muted); font-size: 12px; }
"""

_JS = """
// Click a header to sort by it (numbers best-first, text A-Z; click again to reverse).
// The order is kept in the address (#sort=-CIDEr), so a sorted view can be linked to.
function sortTable(table, th, descending) {
  var column = th.cellIndex, numeric = th.dataset.type === "num";
  table.querySelectorAll("th.sortable").forEach(function (h) { h.classList.remove("asc", "desc"); });
  th.classList.add(descending ? "desc" : "asc");
  var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
  rows.sort(function (a, b) {
    var x = a.cells[column].dataset.sort, y = b.cells[column].dataset.sort;
    var order = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
    return descending ? -order : order;
  });
  rows.forEach(function (row) { body.appendChild(row); });
}
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th.sortable").forEach(function (th) {
    th.addEventListener("click", function () {
      var sorted = th.classList.contains("asc") || th.classList.contains("desc");
      var descending = sorted ? th.classList.contains("asc") : th.dataset.type === "num";
      sortTable(table, th, descending);
      try { history.replaceState(null, "", "#sort=" + (descending ? "-" : "") + th.dataset.key); }
      catch (e) { /* some browsers refuse history changes on file:// pages */ }
    });
  });
  var wanted = /^#sort=(-?)(.+)$/.exec(decodeURIComponent(location.hash));
  if (wanted) {
    var th = table.querySelector('th.sortable[data-key="' + wanted[2] + '"]');
    if (th) sortTable(table, th, wanted[1] === "-");
  }
});
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _metric_table(metrics: dict[str, Any]) -> str:
    names = [k for k in METRIC_ORDER if isinstance(metrics.get(k), int | float)]
    names += sorted(
        k
        for k, v in metrics.items()
        if isinstance(v, float)
        and k not in names
        and not k.startswith(("reference_loo_", "baseline_"))
    )
    columns = [("", "model")]
    if any(isinstance(metrics.get(f"reference_loo_{k}"), float) for k in names):
        columns.append(("reference_loo_", "human (leave-one-out)"))
    if any(isinstance(metrics.get(f"baseline_{k}"), float) for k in names):
        columns.append(("baseline_", "fixed-caption baseline"))
    head = "".join(f'<th class="num">{_esc(title)}</th>' for _, title in columns)
    body = []
    for name in names:
        cells = []
        for prefix, _ in columns:
            value = metrics.get(prefix + name)
            interval = metrics.get(f"{prefix}{name}_ci95")
            bounds = (
                f' <span class="ci">[{interval[0]:.4f}, {interval[1]:.4f}]</span>'
                if isinstance(interval, list) and len(interval) == 2
                else ""
            )
            cells.append(
                f'<td class="num">{value:.4f}{bounds}</td>'
                if isinstance(value, int | float)
                else '<td class="num">&ndash;</td>'
            )
        body.append(f"<tr><th>{_esc(name)}</th>{''.join(cells)}</tr>")
    if not body:
        return '<p class="note">No metrics in the evaluation file.</p>'
    table = (
        f'<div class="card" style="display:inline-block"><table class="metrics"><thead><tr>'
        f"<th>metric</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )
    notes = []
    if metrics.get("baseline_caption"):
        notes.append(
            "human: each reference scored against the others; fixed-caption baseline: the most "
            f"frequent training caption, &ldquo;{_esc(metrics['baseline_caption'])}&rdquo;, for every item"
        )
    details = [
        f"{key}: {_esc(metrics[key])}"
        for key in ("items", "beam_size", "tokenizer", "skipped")
        if key in metrics
    ]
    if details:
        notes.append(", ".join(details))
    if any(isinstance(metrics.get(f"{k}_ci95"), list) for k in names):
        notes.append(
            "[low, high]: 95% bootstrap interval over items (resampling the split's items); "
            "compare two models on the same items with `lrcn compare`"
        )
    unavailable = metrics.get("unavailable")
    if isinstance(unavailable, dict):
        notes += [f"{_esc(k)} not computed: {_esc(v)}" for k, v in unavailable.items()]
    notes_html = "".join(f'<p class="note">{n}</p>' for n in notes)
    return table + notes_html + _caption_statistics(metrics.get("caption_statistics"))


_STATISTICS = (
    ("copied_from_train", "copied verbatim from a training caption", "{:.1%}"),
    ("distinct_captions", "distinct captions", "{:.1%}"),
    ("vocabulary", "words used", "{}"),
    ("reference_vocabulary", "words in the references", "{}"),
    ("distinct_1", "distinct-1 (distinct words / words)", "{:.4f}"),
    ("distinct_2", "distinct-2 (distinct bigrams / bigrams)", "{:.4f}"),
    ("mean_length", "mean length (words)", "{:.2f}"),
    ("reference_mean_length", "references' mean length (words)", "{:.2f}"),
)


def _caption_statistics(stats: Any) -> str:
    """What the captions copy and how varied they are, as a small table (empty when absent)."""
    if not isinstance(stats, dict):
        return ""
    rows = [
        f'<tr><th>{_esc(title)}</th><td class="num">{_esc(fmt.format(stats[key]))}</td></tr>'
        for key, title, fmt in _STATISTICS
        if isinstance(stats.get(key), int | float)
    ]
    if not rows:
        return ""
    return (
        '<h2>Captions: copies and diversity</h2><div class="card" style="display:inline-block">'
        f'<table class="metrics"><tbody>{"".join(rows)}</tbody></table></div>'
    )


def _score_cell(value: float, top: float) -> str:
    width = 0.0 if top <= 0 else max(0.0, min(1.0, value / top)) * 100
    return (
        f'<td class="score" data-sort="{value:.6f}">{value:.3f}'
        f'<div class="bar"><span style="width:{width:.0f}%"></span></div></td>'
    )


def _thumb_cell(row: _Row, photo: bool) -> str:
    if row.thumbnail is None:
        return '<td class="thumb"><div class="missing">no image</div></td>'
    klass = ' class="photo"' if photo else ""
    return f'<td class="thumb"><img{klass} src="{row.thumbnail}" alt="{_esc(row.item_id)}"></td>'


def _items_table(cfg: Config, columns: list[tuple[str, str]], rows: list[_Row]) -> str:
    photo = cfg.data.dataset == "manifest"
    is_activity = cfg.task == "activity"
    headers = ['<th class="sortable" data-type="num" data-key="index">#</th>', "<th>input</th>"]
    for name, kind in columns:
        title = {"caption": "generated caption / references", "Bleu_4": "BLEU-4"}.get(name, name)
        headers.append(
            f'<th class="sortable" data-type="{kind}" data-key="{_esc(name)}">{_esc(title)}</th>'
        )
    tops = {
        name: max((row.cells[name] for row in rows), default=0.0)
        for name, kind in columns
        if kind == "num"
    }
    tops["Bleu_4"] = tops["probability"] = 1.0
    body = []
    for row in rows:
        cells = [
            f'<td class="idx" data-sort="{row.index}">{row.index + 1}</td>',
            _thumb_cell(row, photo),
        ]
        if is_activity:
            mark = (
                '<span class="ok">&#10003;</span>'
                if row.cells["correct"]
                else '<span class="bad">&#10007;</span>'
            )
            cells.append(
                f'<td data-sort="{_esc(row.cells["label"])}">{_esc(row.cells["label"])}</td>'
            )
            cells.append(
                f'<td data-sort="{_esc(row.cells["predicted"])}">{mark} {_esc(row.cells["predicted"])}</td>'
            )
            cells.append(_score_cell(row.cells["probability"], 1.0))
        else:
            refs = "".join(f"<li>{_esc(ref)}</li>" for ref in row.cells["references"])
            strip = (
                f'<div class="attention"><img class="strip" src="{row.attention}" '
                f'alt="where each word looked"></div>'
                if row.attention
                else ""
            )
            cells.append(
                f'<td data-sort="{_esc(row.cells["caption"])}"><div class="generated">'
                f'{_esc(row.cells["caption"])}</div>{strip}<ol class="refs">{refs}</ol>'
                f'<div class="item-id">{_esc(row.item_id)}</div></td>'
            )
            cells.append(_score_cell(row.cells["Bleu_4"], tops["Bleu_4"]))
            cells.append(_score_cell(row.cells["CIDEr"], tops["CIDEr"]))
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (
        '<div class="card"><table class="items sortable"><thead><tr>'
        + "".join(headers)
        + "</tr></thead><tbody>"
        + "\n".join(body)
        + "</tbody></table></div>"
    )


def _page(
    run_dir: Path,
    cfg: Config,
    split: str,
    metrics: dict[str, Any],
    columns: list[tuple[str, str]],
    rows: list[_Row],
) -> str:
    task = {"caption": "image description", "video_caption": "video description"}.get(
        cfg.task, "activity recognition"
    )
    model = _esc(cfg.encoder.name)
    if cfg.task == "video_caption":
        model += f" + {_esc(cfg.encoder.temporal)} over frames"
    model += " &rarr; LSTM" + (f" ({_esc(cfg.decoder.variant)})" if cfg.task != "activity" else "")
    title = f"lrcn report: {run_dir.name} ({split})"
    if cfg.task == "activity":
        correct = sum(1 for row in rows if row.cells["correct"])
        summary = f"{correct} of {len(rows)} correct. Click a column header to sort."
    else:
        stored = (run_dir / "eval" / f"{split}_per_item.json").is_file()
        tokenizer = metrics.get("tokenizer", "python") if stored else "python, scored again"
        summary = (
            f"{len(rows)} items. Per-item BLEU-4 is coco-caption's sentence BLEU; per-item CIDEr "
            f"uses the document frequencies of the whole split ({tokenizer} tokenizer). "
            "Click a column header to sort."
        )
        strips = sum(1 for row in rows if row.attention)
        if strips:
            summary += (
                f" Under {strips} of the captions: where the model looked for each word (its "
                "attention weights, bilinearly upsampled; bright = the most weight)."
            )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<h1>{_esc(run_dir.name)} &middot; {_esc(split)} split</h1>
<p class="meta">{_esc(task)} &middot; data <code>{_esc(cfg.data.dataset)}</code> &middot; model {model}
&middot; run <code>{_esc(run_dir.resolve())}</code> &middot; written {_esc(time.strftime("%Y-%m-%d %H:%M"))}</p>
<h2>Metrics</h2>
{_metric_table(metrics)}
<h2>Items</h2>
<p class="meta">{_esc(summary)}</p>
{_items_table(cfg, columns, rows)}
</main>
<script>{_JS}</script>
</body>
</html>
"""
