"""``lrcn compare``: is system A better than system B on the same items, or is it noise?

Two evaluations of the same split (``<run>/eval/<split>_metrics.json`` and the
``<split>_per_item.json`` beside it) are paired item by item: for every metric, the corpus
scores of A and B, the difference A - B with its 95% paired-bootstrap interval, and the
approximate-randomisation p-value (`lrcn.metrics.bootstrap.paired_test`). Evaluations of
different items, splits, tokenizers or reference sets are refused. With several runs per side
(e.g. seeds) each side's per-item scores are averaged over its runs before pairing, and every
run's corpus scores are summarised as mean and standard deviation.

Each side is read through `lrcn.evaluation_files.read_evaluation`: an unfinished evaluation, or
a file changed since ``lrcn evaluate`` wrote it, is refused. Two sides that are the same
evaluation (identical files) are compared with a warning, and per-item differences within
float64 rounding (`ROUNDING`) count as zero, so rounding noise never shows as a difference.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from lrcn.errors import LrcnError
from lrcn.evaluation_files import file_sha256, read_evaluation
from lrcn.io import check_writable, read_json, write_json_atomic
from lrcn.metrics import METRIC_ORDER
from lrcn.metrics.bleu import BleuStatistics
from lrcn.metrics.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, ItemScores, paired_test
from lrcn.metrics.per_item import read_per_item
from lrcn.metrics.registry import SummedStatistics

log = logging.getLogger(__name__)

# what must agree for two evaluations to be paired, in the order a refusal names them
_IDENTITY = (
    ("split", "splits"),
    ("items", "numbers of items"),
    ("item_ids_sha1", "items"),
    ("tokenizer", "tokenizers"),
    ("references_sha1", "reference sets"),
)

# Per-item differences this small, relative to the scores (or absolute below 1), are float64
# rounding, not a difference between the systems. A per-item score is a chain of rounded float64
# operations (CIDEr-D: tf-idf vectors of 4 n-gram orders against tens of references, with
# document frequencies over the split; METEOR's statistics; averages over runs); with at most
# n = 10**6 of them its rounding error is below n * 2**-53 * |score| ~ 1.1e-10 * |score| (the
# bound for a sum of n terms). 1e-9 leaves a factor of 9 above that; a real difference between
# two captions' scores is far larger, and one below 1e-9 of the score cannot show in the
# four decimals the table prints.
ROUNDING = 1e-9


@dataclass
class Evaluation:
    """One evaluated system: its files, identity and per-item scores."""

    source: str  # as the user named it
    metrics_path: Path
    identity: dict[str, Any]
    ids: list[str]
    scores: ItemScores
    digest: str  # equal for the same evaluation (identical metrics and per-item files)

    @property
    def name(self) -> str:
        """A short name: the run folder's (or the evaluation folder's) name."""
        folder = self.metrics_path.parent
        return folder.parent.name if folder.name == "eval" else folder.name


def _metrics_path(source: str, split: str) -> Path:
    """The metrics file of a run folder, evaluation folder, metrics file or per-item file."""
    path = Path(source)
    if path.is_file():
        if path.name.endswith("_per_item.json"):
            return path.with_name(path.name.replace("_per_item.json", "_metrics.json"))
        return path
    if (path / "eval").is_dir() or (path / "config.yaml").is_file():
        path = path / "eval"
    return path / f"{split}_metrics.json"


def load_evaluation(source: str, split: str = "test") -> Evaluation:
    """Read one side's evaluation: a run folder, an ``eval`` folder or its metrics file.

    Raises:
        LrcnError: no evaluation of ``split`` there (naming the file and the command that
            writes it), or one written before per-item files existed.
    """
    metrics_path = _metrics_path(source, split)
    rerun = f"run `lrcn evaluate --checkpoint {source} --split {split}` first"
    name = metrics_path.name
    read_evaluation(  # checks the split's files against their manifest (unfinished: refused)
        metrics_path.parent,
        name[: -len("_metrics.json")] if name.endswith("_metrics.json") else split,
    )
    if not metrics_path.is_file():
        raise LrcnError(
            f"{metrics_path} does not exist, so {source} has no evaluation of split {split}; {rerun}."
        )
    metrics = read_json(metrics_path, rerun)
    identity = metrics.get("evaluation") if isinstance(metrics, dict) else None
    if not isinstance(identity, dict) or "per_item" not in identity:
        raise LrcnError(
            f"{metrics_path} was written before per-item scores were kept (no 'evaluation' entry); "
            f"re-run `lrcn evaluate --checkpoint {source} --split {_split_of(metrics, split)}`."
        )
    per_item_path = metrics_path.parent / str(identity["per_item"])
    if not per_item_path.is_file():
        raise LrcnError(f"{per_item_path} does not exist beside {metrics_path}; {rerun}.")
    ids, _, scores = read_per_item(per_item_path)
    if len(ids) != identity.get("items"):
        raise LrcnError(
            f"{per_item_path} holds {len(ids)} items but {metrics_path} says "
            f"{identity.get('items')}; {rerun}."
        )
    digest = file_sha256(metrics_path) + file_sha256(per_item_path)
    return Evaluation(source, metrics_path, identity, ids, scores, digest)


def _split_of(metrics: Any, default: str) -> str:
    return str(metrics.get("split", default)) if isinstance(metrics, dict) else default


def check_comparable(a: Evaluation, b: Evaluation) -> None:
    """Refuse, in one sentence naming both files, evaluations that cannot be paired by item."""
    for key, what in _IDENTITY:
        if a.identity.get(key) != b.identity.get(key):
            raise LrcnError(
                f"{a.metrics_path} and {b.metrics_path} were evaluated on different {what} "
                f"({a.identity.get(key)} vs {b.identity.get(key)}); evaluate both on the same "
                "split of the same data with the same eval.tokenizer before comparing them."
            )
    if a.ids != b.ids:
        raise LrcnError(
            f"{a.metrics_path} and {b.metrics_path} list their items in different orders; "
            "re-run `lrcn evaluate` for both."
        )


def _average(evaluations: list[Evaluation]) -> ItemScores:
    """One side's per-item scores averaged over its runs (BLEU, METEOR: their statistics)."""
    if len(evaluations) == 1:
        return evaluations[0].scores
    scores = [e.scores for e in evaluations]
    keys = [k for k in scores[0].means if all(k in s.means for s in scores)]
    means = {k: np.mean([s.means[k] for s in scores], axis=0) for k in keys}
    bleu = None
    if all(s.bleu is not None for s in scores):
        stats = [s.bleu for s in scores]
        bleu = BleuStatistics(
            *(np.mean([getattr(x, f.name) for x in stats], axis=0) for f in fields(BleuStatistics))
        )
    summed = {
        key: SummedStatistics(
            np.mean([s.summed[key].values for s in scores], axis=0), first.score_sums
        )
        for key, first in scores[0].summed.items()
        if all(key in s.summed for s in scores)
    }
    return ItemScores(means, bleu, summed)


def _snap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``b`` with every value within `ROUNDING` of ``a``'s set to ``a``'s."""
    if a.shape != b.shape:
        return b
    scale = np.maximum(1.0, np.maximum(np.abs(a), np.abs(b)))
    return np.where(np.abs(a - b) <= ROUNDING * scale, a, b)


def without_rounding(a: ItemScores, b: ItemScores) -> ItemScores:
    """B's per-item scores with those within float64 rounding of A's made equal to A's."""
    means = {k: _snap(a.means[k], v) if k in a.means else v for k, v in b.means.items()}
    summed = {
        k: SummedStatistics(_snap(a.summed[k].values, s.values), s.score_sums)
        if k in a.summed
        else s
        for k, s in b.summed.items()
    }
    bleu = b.bleu
    if a.bleu is not None and b.bleu is not None:  # counts; averaged over runs they may round
        bleu = BleuStatistics(
            *(_snap(getattr(a.bleu, f.name), getattr(b.bleu, f.name)) for f in fields(bleu))
        )
    return ItemScores(means, bleu, summed)


def _spread(evaluations: list[Evaluation], keys: list[str]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation (ddof 1) of each run's corpus score."""
    values = {k: [float(e.scores.corpus()[k][0]) for e in evaluations] for k in keys}
    return {
        k: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0}
        for k, v in values.items()
    }


def compare(
    runs_a: list[str],
    runs_b: list[str],
    split: str = "test",
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Compare two systems (one or more runs each) item by item and write the result as JSON.

    Args:
        runs_a, runs_b: run folders, ``eval`` folders or metrics files.
        out: the JSON file (default ``<A's eval folder>/compare_<B's name>_<split>.json``).

    Returns:
        ``a``, ``b`` (the sources), ``split``, ``items``, ``metrics`` (key -> a, b, diff,
        diff_ci95, p; plus ``a_runs``/``b_runs`` mean and std with several runs) and ``out``.
    """
    if not runs_a or not runs_b:
        raise LrcnError("lrcn compare needs runs on both sides: RUN_A RUN_B, or --a ... --b ....")
    if resamples < 1:
        raise LrcnError(f"--resamples {resamples}: pass at least 1 (1000 is usual).")
    side_a = [load_evaluation(r, split) for r in runs_a]
    side_b = [load_evaluation(r, split) for r in runs_b]
    for other in side_a[1:] + side_b:
        check_comparable(side_a[0], other)
    out_path = Path(out) if out else _default_out(side_a[0], side_b, split)
    check_writable(out_path.parent)
    same = sorted(e.digest for e in side_a) == sorted(e.digest for e in side_b)
    if same:
        log.warning(
            "%s and %s are the same evaluation (identical metrics and per-item files), so every "
            "difference is 0; to compare decodings, evaluate into another folder (e.g. `lrcn "
            "evaluate --checkpoint RUN --beam-size 3 --out-dir RUN/eval_beam3`).",
            ", ".join(e.source for e in side_a),
            ", ".join(e.source for e in side_b),
        )
    scores_a = _average(side_a)
    table = paired_test(scores_a, without_rounding(scores_a, _average(side_b)), resamples, seed)
    keys = [k for k in METRIC_ORDER if k in table] + [k for k in table if k not in METRIC_ORDER]
    result_metrics: dict[str, Any] = {k: table[k] for k in keys}
    if len(side_a) > 1 or len(side_b) > 1:
        for label, side in (("a_runs", side_a), ("b_runs", side_b)):
            for key, spread in _spread(side, keys).items():
                result_metrics[key][label] = spread
    result = {
        "a": [e.source for e in side_a],
        "b": [e.source for e in side_b],
        "split": split,
        "items": side_a[0].identity.get("items"),
        "tokenizer": side_a[0].identity.get("tokenizer"),
        "resamples": resamples,
        "seed": seed,
        "same_evaluation": same,
        "metrics": result_metrics,
        "out": str(out_path),
    }
    write_json_atomic(out_path, result)
    return result


def _default_out(first_a: Evaluation, side_b: list[Evaluation], split: str) -> Path:
    name = "+".join(e.name for e in side_b)
    return first_a.metrics_path.parent / f"compare_{name}_{split}.json"


def format_table(result: dict[str, Any]) -> str:
    """The comparison as a text table: metric, A, B, A-B [95% interval], p (and run spreads)."""
    rows = [("metric", "A", "B", "A-B", "95% interval", "p")]
    several = any("a_runs" in row for row in result["metrics"].values())
    for key, row in result["metrics"].items():
        low, high = row["diff_ci95"]
        cells = (key, f"{row['a']:.4f}", f"{row['b']:.4f}", f"{row['diff']:+.4f}")
        cells += (f"[{low:+.4f}, {high:+.4f}]", f"{row['p']:.4f}")
        if several:
            cells += tuple(
                f"{row[s]['mean']:.4f} ± {row[s]['std']:.4f}" for s in ("a_runs", "b_runs")
            )
        rows.append(cells)
    if several:
        rows[0] += ("A runs mean ± std", "B runs mean ± std")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    head = (
        f"A: {', '.join(result['a'])}\nB: {', '.join(result['b'])}\n"
        f"{result['items']} items of split {result['split']}, paired bootstrap and approximate "
        f"randomisation with {result['resamples']} resamples (seed {result['seed']})"
    )
    return head + "\n" + "\n".join(lines) + f"\nwritten to {result['out']}"
