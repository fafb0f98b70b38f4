"""METEOR 1.5 through pycocoevalcap's Java jar, when Java is on PATH."""

from __future__ import annotations

from typing import Any

from lrcn.metrics import java
from lrcn.metrics.ngrams import split_items
from lrcn.metrics.registry import MetricUnavailable, TokenizedItems, register_metric


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


@register_metric("meteor")
class Meteor:
    """pycocoevalcap's METEOR 1.5 on joined tokens; one JVM per call, ended before returning."""

    keys = ("METEOR",)

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
            score, per_item = meteor.compute_score(joined_gts, joined_res)
        except (OSError, ValueError) as err:
            raise MetricUnavailable(
                f"METEOR's Java process failed ({err}); check `java -version` and free memory (2 GB)"
            ) from err
        finally:
            _close_meteor(meteor)
        return float(score), per_item
