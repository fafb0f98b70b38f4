"""Recorded results: the metrics of a recipe's runs over seeds and machines, and where a new run lands.

A result file (``docs/results/<recipe>.json`` in a checkout, written by ``scripts/results.py
record``) holds, for every metric of ``eval/<split>_metrics.json``, its ``mean``, ``min``, ``max``
and the number of ``runs``, plus the ``command`` that made each run, the ``commit`` and the
``machines`` (CPU, PyTorch's kernel set, threads) they ran on, and ``each_run`` with every run's own
figures. A training run is a trajectory: another CPU's kernels or another thread count round
differently, and after thousands of steps the run lands elsewhere within the spread of its seeds,
so a single number is never *the* result; the range over seeds and kernel sets is.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent.parent / "docs" / "results"  # in a checkout


def summarize(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float | int]]:
    """``{metric: {mean, min, max, runs}}`` over the runs' numeric metrics (NaN ones left out)."""
    values: dict[str, list[float]] = {}
    for run in runs:
        for name, value in run.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if not math.isnan(value):
                values.setdefault(name, []).append(float(value))
    return {
        name: {
            "mean": statistics.fmean(vals),
            "min": min(vals),
            "max": max(vals),
            "runs": len(vals),
        }
        for name, vals in sorted(values.items())
    }


def load_result(recipe: str, directory: str | Path | None = None) -> dict[str, Any] | None:
    """The recorded result of ``recipe``, or None where there is none (e.g. a pip install, which
    ships no docs/) or it cannot be read."""
    path = Path(directory or RESULTS_DIR) / f"{recipe}.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def standing(
    metrics: Mapping[str, Any], record: Mapping[str, Any], names: Iterable[str]
) -> list[str]:
    """One line per metric: this run's value beside the recorded mean and range, and whether it
    lies inside. Metrics missing on either side are left out."""
    lines = []
    for name in names:
        value, spread = metrics.get(name), record.get(name)
        if not isinstance(value, int | float) or not isinstance(spread, dict):
            continue
        lo, hi = spread["min"], spread["max"]
        where = "inside" if lo <= value <= hi else ("below" if value < lo else "above")
        lines.append(
            f"  {name} {value:.3f}: {where} the recorded range {lo:.3f}-{hi:.3f} "
            f"(mean {spread['mean']:.3f} over {spread['runs']} runs)"
        )
    return lines
