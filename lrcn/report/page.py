"""Render a report's page: the metrics table, the sortable items table, CSS and a little JavaScript.

Everything is inline so the page can be mailed or archived alone; `lrcn.report.collect` builds
the rows it renders.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lrcn.config import Config
from lrcn.metrics import METRIC_ORDER
from lrcn.task import get_task


@dataclass
class Row:
    """One item of the page."""

    index: int
    item_id: str
    thumbnail: str | None  # data URI
    cells: dict[str, Any] = field(default_factory=dict)
    attention: str | None = None  # data URI of the caption's attention strip


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
    notes_html = "".join(f'<p class="note">{n}</p>' for n in _notes(metrics, names))
    return table + notes_html + _caption_statistics(metrics.get("caption_statistics"))


def _notes(metrics: dict[str, Any], names: list[str]) -> list[str]:
    """The lines under the metrics table: baselines, details, intervals, what was not computed."""
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
    if metrics.get("bootstrap_note"):
        notes.append(_esc(metrics["bootstrap_note"]))
    unavailable = metrics.get("unavailable")
    if isinstance(unavailable, dict):
        notes += [f"{_esc(k)} not computed: {_esc(v)}" for k, v in unavailable.items()]
    return notes


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


def _thumb_cell(row: Row, photo: bool) -> str:
    if row.thumbnail is None:
        return '<td class="thumb"><div class="missing">no image</div></td>'
    klass = ' class="photo"' if photo else ""
    return f'<td class="thumb"><img{klass} src="{row.thumbnail}" alt="{_esc(row.item_id)}"></td>'


def _items_table(cfg: Config, columns: list[tuple[str, str]], rows: list[Row]) -> str:
    photo = cfg.data.dataset == "manifest"
    is_activity = get_task(cfg.task).labels
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


def render_page(
    run_dir: Path,
    cfg: Config,
    split: str,
    metrics: dict[str, Any],
    columns: list[tuple[str, str]],
    rows: list[Row],
) -> str:
    """The whole HTML page of a run's evaluation on ``split``: its ``metrics`` and ``rows``
    (``columns``: the items table's (name, kind) score columns)."""
    task = get_task(cfg.task)
    model = _esc(task.model_summary(cfg))
    title = f"lrcn report: {run_dir.name} ({split})"
    if task.labels:
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
<p class="meta">{_esc(task.description)} &middot; data <code>{_esc(cfg.data.dataset)}</code> &middot; model {model}
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
