"""The synthetic dataset registry: a name and a task -> a builder making one split.

A builder is called with keyword arguments ``split`` (train, val or test), ``size`` (items in the
split), ``seed`` (``data.seed``), ``data`` (the config's ``data`` section, for fields such as
``image_size``, ``num_frames``, ``variant``), ``mean`` and ``std`` (the encoder's normalisation).
Captioning builders return a `lrcn.data.datasets.Source`; activity builders a torch ``Dataset``
with a ``class_names`` list; attribute builders (stage 1 pretraining) a torch ``Dataset`` with a
``heads`` mapping. Register one with ``@register_dataset("name", task="caption")`` from anywhere;
``data.dataset=name`` then builds it. One name may serve several tasks (``shapes`` is captioning
data and, for ``task: attributes``, the same images with their ground truth as labels).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lrcn.errors import LrcnError

Builder = Callable[..., Any]


@dataclass(frozen=True)
class SyntheticDataset:
    """A registered dataset: its name, the task it serves and its split builder."""

    name: str
    task: str
    builder: Builder


DATASETS: dict[tuple[str, str], SyntheticDataset] = {}  # (name, task) -> entry


def register_dataset(name: str, task: str) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder`` as dataset ``name`` of ``task`` (caption, video_caption,
    activity or attributes); a later registration of the same name and task replaces it."""

    def register(builder: Builder) -> Builder:
        DATASETS[(name, task)] = SyntheticDataset(name, task, builder)
        return builder

    return register


def find_dataset(name: str, task: str | None = None) -> SyntheticDataset | None:
    """The dataset registered as ``name`` (for ``task``, when given), or None."""
    if task is not None:
        return DATASETS.get((name, task))
    return next((entry for (found, _), entry in DATASETS.items() if found == name), None)


def get_dataset(name: str, task: str | None = None) -> SyntheticDataset:
    """The dataset registered as ``name`` (for ``task``, when given).

    Raises:
        LrcnError: no such dataset (the sentence lists those there are).
    """
    entry = find_dataset(name, task)
    if entry is None:
        raise LrcnError(
            f"unknown synthetic dataset {name!r}"
            + (f" for task {task}" if task else "")
            + f"; choose one of {', '.join(available_datasets(task))}."
        )
    return entry


def available_datasets(task: str | None = None) -> list[str]:
    """Names of the registered datasets (of ``task``, when given), sorted."""
    return sorted({name for name, entry_task in DATASETS if task is None or entry_task == task})
