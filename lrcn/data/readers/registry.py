"""The reader registry: dataset name -> function reading a dataset's native files into records.

A reader takes the dataset's folder (``root``) and keyword options and returns manifest records
(see `lrcn.data.readers`). Register one with ``@register_reader("name")`` from anywhere, e.g. a
test file or a plugin module imported before ``lrcn prepare name`` runs.
"""

from __future__ import annotations

from collections.abc import Callable

from lrcn.errors import LrcnError

Reader = Callable[..., list[dict]]

READERS: dict[str, Reader] = {}


def register_reader(name: str) -> Callable[[Reader], Reader]:
    """Decorator registering ``reader`` under ``name`` (a later registration replaces it)."""

    def register(reader: Reader) -> Reader:
        READERS[name] = reader
        return reader

    return register


def get_reader(name: str) -> Reader:
    """The reader registered under ``name``.

    Raises:
        LrcnError: no reader has that name (the sentence lists those that do).
    """
    reader = READERS.get(name)
    if reader is None:
        raise LrcnError(
            f"unknown dataset {name!r}; choose one of {', '.join(available_readers())}."
        )
    return reader


def available_readers() -> list[str]:
    """The registered reader names, sorted."""
    return sorted(READERS)
