"""The reader registry: dataset name -> function reading a dataset's native files into records.

A reader takes the dataset's folder (``root``) and keyword options and returns manifest records
(see `lrcn.data.readers`). Register one with ``@register_reader("name")`` from anywhere, e.g. a
test file or a plugin module (``lrcn prepare name --plugin MODULE``; `lrcn.plugins`).
"""

from __future__ import annotations

from collections.abc import Callable

from lrcn.registry import Registry

Reader = Callable[..., list[dict]]

READERS: Registry[Reader] = Registry("dataset")


def register_reader(name: str) -> Callable[[Reader], Reader]:
    """Decorator registering ``reader`` under ``name`` (a name taken by another reader is an
    `LrcnError`)."""

    def register(reader: Reader) -> Reader:
        return READERS.register(name, reader)

    return register


def get_reader(name: str) -> Reader:
    """The reader registered under ``name``.

    Raises:
        LrcnError: no reader has that name (the sentence lists those that do).
    """
    return READERS.get(name)


def available_readers() -> tuple[str, ...]:
    """The registered reader names, in registration order."""
    return READERS.names()
