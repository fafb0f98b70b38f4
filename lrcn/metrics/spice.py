"""SPICE is registered so it can be asked for, and always reported unavailable."""

from __future__ import annotations

from typing import Any

from lrcn.metrics.registry import MetricUnavailable, TokenizedItems, register_metric

SPICE_REASON = (
    "SPICE needs Stanford CoreNLP models that pycocoevalcap downloads on first use, "
    "and lrcn scores offline"
)


@register_metric("spice")
class Spice:
    """Never runs (it downloads Stanford CoreNLP models on first use); says why."""

    keys = ("SPICE",)

    def compute_score(self, gts: TokenizedItems, res: TokenizedItems) -> tuple[Any, Any]:
        """Raises `MetricUnavailable` with `SPICE_REASON`."""
        raise MetricUnavailable(SPICE_REASON)
