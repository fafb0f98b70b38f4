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
from lrcn.registry import Registry, unknown_name

Builder = Callable[..., Any]


@dataclass(frozen=True)
class SyntheticDataset:
    """A registered dataset: its name, the task it serves and its split builder."""

    name: str
    task: str
    builder: Builder


# task -> the registry of its datasets (one name may be registered once per task)
DATASETS: dict[str, Registry[SyntheticDataset]] = {}


def _registry(task: str) -> Registry[SyntheticDataset]:
    if task not in DATASETS:
        DATASETS[task] = Registry(
            f"{task} dataset", setting="data.dataset", identity=lambda entry: entry.builder
        )
    return DATASETS[task]


def register_dataset(name: str, task: str) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder`` as dataset ``name`` of ``task`` (caption, video_caption,
    activity or attributes); a name another builder has for that task is an `LrcnError`."""

    def register(builder: Builder) -> Builder:
        _registry(task).register(name, SyntheticDataset(name, task, builder))
        return builder

    return register


def find_dataset(name: str, task: str | None = None) -> SyntheticDataset | None:
    """The dataset registered as ``name`` (for ``task``, when given), or None."""
    if task is not None:
        return DATASETS[task].find(name) if task in DATASETS else None
    return next((registry.find(name) for registry in DATASETS.values() if name in registry), None)


def get_dataset(name: str, task: str | None = None) -> SyntheticDataset:
    """The dataset registered as ``name`` (for ``task``, when given).

    Raises:
        LrcnError: no such dataset (the sentence lists those there are).
    """
    if task is not None:
        return _registry(task).get(name)
    entry = find_dataset(name)
    if entry is None:
        raise LrcnError(
            unknown_name("synthetic dataset", name, "choose one of", available_datasets())
        )
    return entry


def available_datasets(task: str | None = None) -> tuple[str, ...]:
    """Names of the registered datasets (of ``task``, when given), in registration order."""
    if task is not None:
        return _registry(task).names()
    return tuple(dict.fromkeys(name for registry in DATASETS.values() for name in registry))
