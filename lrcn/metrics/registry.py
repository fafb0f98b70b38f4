"""The metric registry: one scorer interface (pycocoevalcap's) and one order of result keys.

A metric is a class with ``compute_score(gts, res) -> (corpus_score, per_item_scores)``, as
pycocoevalcap's ``Bleu``, ``Cider``... have, registered under a name::

    @register_metric("toy")
    class Toy:
        keys = ("Toy",)  # result keys, optional: the registered name when left out

        def compute_score(self, gts, res):
            ...

``gts`` maps each item key to its reference token lists, ``res`` the same keys to a list
holding the one hypothesis token list. A metric with several keys (BLEU) returns one corpus
score and one per-item array per key. A metric that cannot run here raises
`MetricUnavailable` with the reason; `lrcn.metrics.score` reports it under ``unavailable``.

A metric whose corpus score is not the mean of its items' scores (METEOR) also leaves, after
``compute_score``, a `SummedStatistics` as its ``statistics`` attribute: per-item sufficient
statistics whose sums give the corpus score, which the bootstrap and paired tests resample (a
metric without it is resampled as a mean of its per-item scores, or not at all).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from lrcn.errors import LrcnError
from lrcn.registry import Registry

Tokens = list[str]
TokenizedItems = Mapping[Hashable, Sequence[Tokens]]

# Keys of the metrics the datasets compute themselves (classification and scene/motion checks),
# listed after the registered metrics' keys wherever metrics are printed or shown.
TASK_KEYS = (
    "accuracy",
    "motion_accuracy",
    "motion_colour_accuracy",
    "scene_accuracy",
    "scene_accuracy_1",
    "scene_accuracy_2",
    "scene_accuracy_3",
    "relation_accuracy",  # shapes: the left/right, above/below relations captions state hold
    "relation_stated",
)


@dataclass
class SummedStatistics:
    """Per-item sufficient statistics of a corpus score that sums them (see the module).

    ``values`` is (N, k); ``score_sums`` maps summed statistics (..., k) to corpus scores (...).
    """

    values: np.ndarray
    score_sums: Callable[[np.ndarray], np.ndarray]


# result key -> the function that scores summed statistics (for reading per-item files back)
SUMMED_SCORES: Registry[Callable[[np.ndarray], np.ndarray]] = Registry("summed score")


def register_summed_score(key: str, score_sums: Callable[[np.ndarray], np.ndarray]) -> None:
    """Say that result ``key``'s corpus score is ``score_sums`` of summed per-item statistics."""
    SUMMED_SCORES.register(key, score_sums)


def summed_score(key: str) -> Callable[[np.ndarray], np.ndarray] | None:
    """The function registered for ``key`` by `register_summed_score`, or None."""
    return SUMMED_SCORES.find(key)


class MetricUnavailable(Exception):
    """Raised by a scorer that cannot run here; the message is the reason a user reads."""


class Scorer(Protocol):
    """pycocoevalcap's scorer interface over tokenized captions."""

    def compute_score(self, gts: TokenizedItems, res: TokenizedItems) -> tuple[Any, Any]:
        """Score ``res[k][0]`` against ``gts[k]`` for every key of ``res``.

        Returns:
            (corpus score, per-item scores); a list of each when the metric has several keys.
        """
        ...


def _metric_key(name: str) -> str:
    return name.strip().lower()


# Metric names are case-insensitive: a config's `Bleu` or `CIDEr` is metric bleu, cider.
SCORERS: Registry[type] = Registry(
    "metric", "choose from", setting="eval.metrics", normalise=_metric_key
)
_T = TypeVar("_T", bound=type)


def register_metric(name: str) -> Callable[[_T], _T]:
    """Class decorator: make a scorer class available as metric ``name`` (lower case).

    Raises:
        LrcnError: ``name`` is taken by another class, or the class has no ``compute_score``.
    """

    def decorator(cls: _T) -> _T:
        if not callable(getattr(cls, "compute_score", None)):
            raise LrcnError(f"Metric {name!r}: {cls.__name__} needs a compute_score(gts, res).")
        return SCORERS.register(name, cls)

    return decorator


def available_metrics() -> tuple[str, ...]:
    """Registered metric names, in registration order (the built-in ones first)."""
    return SCORERS.names()


def get_metric(name: str) -> type:
    """The scorer class registered as ``name``.

    Raises:
        LrcnError: no metric has that name; the sentence lists the registered ones.
    """
    return SCORERS.get(name)


def metric_keys(name: str) -> tuple[str, ...]:
    """The result keys metric ``name`` produces: its class's ``keys``, else the name itself."""
    return tuple(getattr(get_metric(name), "keys", (SCORERS.key(name),)))


class _MetricOrder(Sequence[str]):
    """Every registered metric's keys in registration order, then `TASK_KEYS`; always current."""

    def _keys(self) -> tuple[str, ...]:
        keys = [k for name in SCORERS for k in metric_keys(name)]
        return tuple(dict.fromkeys([*keys, *TASK_KEYS]))

    def __getitem__(self, index: Any) -> Any:
        return self._keys()[index]

    def __len__(self) -> int:
        return len(self._keys())

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __repr__(self) -> str:
        return f"METRIC_ORDER{self._keys()!r}"


# The key order of the CLI's printout, the HTML report and the metrics file.
METRIC_ORDER: Sequence[str] = _MetricOrder()
