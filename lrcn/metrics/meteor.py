"""METEOR 1.5 through pycocoevalcap's Java jar, when Java is on PATH.

The jar scores each caption into 23 sufficient statistics (lengths, function words, matches per
module, chunks) and its corpus METEOR sums those over the captions and scores the sums: it is
not the mean of the per-caption scores (on the shapes demo's test split 0.376 against a mean of
0.460). The statistics are kept (`Meteor.statistics`) so that intervals and paired tests resample
them and score the sums with `meteor_from_sums`, which gives the jar's corpus value (tested to
1e-12).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lrcn.metrics import java
from lrcn.metrics.ngrams import split_items
from lrcn.metrics.registry import (
    MetricUnavailable,
    SummedStatistics,
    TokenizedItems,
    register_metric,
    register_summed_score,
)

# The jar's parameters for `-l en` (alpha, beta, gamma, delta) and its four modules' weights
# (exact, stem, synonym, paraphrase), as its `computeMetrics` uses them.
ALPHA, BETA, GAMMA, DELTA = 0.85, 0.2, 0.6, 0.75
MODULE_WEIGHTS = np.array([1.0, 0.6, 0.8, 0.6])
STATS_LENGTH = 23  # tstLen refLen tstFunc refFunc, 4 x (tstContent refContent tstFunc refFunc),
# chunks, tstWordMatches refWordMatches


def _parts(stats: np.ndarray) -> tuple[np.ndarray, ...]:
    """(test length, ref length, test function words, ref function words, stage matches
    (..., 4 stages, [test content, ref content, test function, ref function]), chunks)."""
    stages = stats[..., 4:20].reshape(stats.shape[:-1] + (4, 4))
    return stats[..., 0], stats[..., 1], stats[..., 2], stats[..., 3], stages, stats[..., 20]


def _perfect(stats: np.ndarray) -> np.ndarray:
    """Where the caption matched its reference word for word in one chunk (the jar's test)."""
    test_len, ref_len, _, _, stages, chunks = _parts(stats)
    test_matches = stages[..., 0].sum(-1) + stages[..., 2].sum(-1)
    ref_matches = stages[..., 1].sum(-1) + stages[..., 3].sum(-1)
    return (test_matches == test_len) & (ref_matches == ref_len) & (chunks == 1)


def meteor_statistics(lines: list[str]) -> np.ndarray:
    """The jar's per-caption statistics lines as an (N, 23) array ready to sum: a perfect
    caption's chunk is left out, as the jar's aggregation (``MeteorStats.addStats``) does."""
    stats = np.array([[float(x) for x in line.split()] for line in lines], dtype=float)
    stats = stats.reshape(len(lines), STATS_LENGTH)
    stats[_perfect(stats), 20] = 0.0
    return stats


def meteor_from_sums(sums: np.ndarray) -> np.ndarray:
    """METEOR 1.5 of summed statistics (..., 23) -> (...), the jar's ``computeMetrics``."""
    sums = np.asarray(sums, dtype=float)
    test_len, ref_len, test_func, ref_func, stages, chunks = _parts(sums)
    weighted = (stages * MODULE_WEIGHTS[:, None]).sum(-2)  # (..., 4): weighted matches by column
    test_weighted = DELTA * weighted[..., 0] + (1 - DELTA) * weighted[..., 2]
    ref_weighted = DELTA * weighted[..., 1] + (1 - DELTA) * weighted[..., 3]
    test_matches = stages[..., 0].sum(-1) + stages[..., 2].sum(-1)
    ref_matches = stages[..., 1].sum(-1) + stages[..., 3].sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = test_weighted / (DELTA * (test_len - test_func) + (1 - DELTA) * test_func)
        recall = ref_weighted / (DELTA * (ref_len - ref_func) + (1 - DELTA) * ref_func)
        f_mean = 1.0 / ((1 - ALPHA) / precision + ALPHA / recall)
        frag = np.where(_perfect(sums), 0.0, chunks / ((test_matches + ref_matches) / 2))
        score = f_mean * (1.0 - GAMMA * frag**BETA)
    return np.where(np.isnan(score), 0.0, np.maximum(score, 0.0))


register_summed_score("METEOR", meteor_from_sums)


def _close_meteor(meteor: Any) -> None:
    """End Meteor's JVM now rather than whenever the garbage collector runs ``__del__``."""
    proc = meteor.meteor_p
    if meteor.lock.locked():  # compute_score failed holding it; __del__ would wait forever
        meteor.lock.release()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        try:
            stream.close()
        except OSError:
            pass  # a broken pipe means the JVM is gone already
    proc.kill()
    proc.wait()


def _score_with_statistics(
    meteor: Any, gts: dict[int, list[str]], res: dict[int, list[str]]
) -> tuple[float, list[float], list[str]]:
    """pycocoevalcap's ``Meteor.compute_score``, keeping each caption's statistics line."""
    lines = []
    with meteor.lock:
        for i in gts:
            lines.append(meteor._stat(res[i][0], gts[i]))
        eval_line = "EVAL" + "".join(f" ||| {line}" for line in lines)
        meteor.meteor_p.stdin.write(f"{eval_line}\n".encode())
        meteor.meteor_p.stdin.flush()
        per_item = [float(meteor.meteor_p.stdout.readline().strip()) for _ in lines]
        score = float(meteor.meteor_p.stdout.readline().strip())
    return score, per_item, lines


@register_metric("meteor")
class Meteor:
    """pycocoevalcap's METEOR 1.5 on joined tokens; one JVM per call, ended before returning."""

    keys = ("METEOR",)
    statistics: SummedStatistics | None = None  # after compute_score: what the corpus score sums

    def compute_score(self, gts: TokenizedItems, res: TokenizedItems) -> tuple[float, Any]:
        """METEOR of ``res`` against ``gts``.

        Raises:
            MetricUnavailable: no Java or pycocoevalcap, or the JVM did not start or failed.
        """
        if not java.java_available():
            raise MetricUnavailable("METEOR needs `java` on PATH (coco-caption's meteor-1.5.jar)")
        if not java.pycocoevalcap_available():
            raise MetricUnavailable("METEOR needs pycocoevalcap (pip install 'lrcn[coco]')")
        from pycocoevalcap.meteor.meteor import Meteor as JavaMeteor

        hyps, refs = split_items(gts, res)
        # "|||" separates fields in Meteor's stdio protocol; pycocoevalcap strips it from hypotheses.
        joined_gts = {
            i: [" ".join(r).replace("|||", "") for r in item] for i, item in enumerate(refs)
        }
        joined_res = {i: [" ".join(h)] for i, h in enumerate(hyps)}
        try:
            meteor = JavaMeteor()
        except OSError as err:
            raise MetricUnavailable(f"METEOR's Java process did not start ({err})") from err
        try:
            score, per_item, lines = _score_with_statistics(meteor, joined_gts, joined_res)
        except (OSError, ValueError) as err:
            raise MetricUnavailable(
                f"METEOR's Java process failed ({err}); check `java -version` and free memory (2 GB)"
            ) from err
        finally:
            _close_meteor(meteor)
        self.statistics = SummedStatistics(meteor_statistics(lines), meteor_from_sums)
        return float(score), per_item
