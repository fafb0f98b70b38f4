"""One registry mechanism behind every kind of named plug-in (encoders, wirings, metrics...).

A `Registry` maps names to registered objects with one behaviour for all of them:

- names are listed in registration order (the built-in ones first, then plug-ins);
- an unknown name is one `LrcnError` sentence listing the registered names;
- a name taken by another object is refused in one sentence; registering the same object again
  (the same module and qualified name: a module imported twice, a notebook cell run again)
  replaces it in place;
- ``normalise`` maps every name to its key (metrics: ``Bleu`` and `` bleu`` are ``bleu``).

Each entry also remembers the plug-in module whose import registered it (`lrcn.plugins` sets it
while importing one), so a run can record the plug-in modules its config uses (`used_plugins`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from lrcn.errors import LrcnError

T = TypeVar("T")

REGISTRIES: list[Registry] = []  # every registry made, in creation order
_IMPORTING: list[str] = []  # the plug-in modules being imported, innermost last


@contextmanager
def importing_plugin(plugin: str) -> Iterator[None]:
    """Registrations made inside this block are recorded as made by plug-in ``plugin``."""
    _IMPORTING.append(plugin)
    try:
        yield
    finally:
        _IMPORTING.pop()


def _where(value: Any) -> Any:
    """What identifies a registered object across imports: its module and qualified name (the
    value itself for an object without them)."""
    qualname = getattr(value, "__qualname__", None)
    if qualname is None:
        return value
    return (getattr(value, "__module__", None), qualname)


def unknown_name(kind: str, name: str, choose: str, names: Iterable[str]) -> str:
    """The one sentence for a name no registry entry has: ``unknown encoder 'x'; set
    encoder.name to one of small_cnn, ...``."""
    return f"unknown {kind} {name!r}; {choose} {', '.join(names) or '(none registered)'}."


class Registry(Generic[T]):
    """Names -> registered objects of one kind (see the module).

    Args:
        kind: what a name names, in messages (``"encoder"``, ``"metric"``).
        choose: the sentence's fix before the list of names (``"set encoder.name to one of"``).
        setting: the config key that names entries (``"encoder.name"``), read by
            `used_plugins`; None when no config key does.
        normalise: a name -> its key; unchanged when None.
        identity: a registered object -> what it was made from (e.g. an entry's builder), compared
            by module and qualified name to tell a second registration of the same object.
    """

    def __init__(
        self,
        kind: str,
        choose: str = "choose one of",
        setting: str | None = None,
        normalise: Callable[[str], str] | None = None,
        identity: Callable[[T], Any] | None = None,
    ) -> None:
        self.kind, self.choose, self.setting = kind, choose, setting
        self._normalise = normalise or (lambda name: name)
        self._identity = identity or (lambda value: value)
        self._entries: dict[str, T] = {}
        self._plugins: dict[str, str | None] = {}  # key -> the plug-in module that registered it
        REGISTRIES.append(self)

    def key(self, name: str) -> str:
        """The key ``name`` is registered and looked up under."""
        return self._normalise(name)

    def register(self, name: str, value: T) -> T:
        """Register ``value`` as ``name`` and return it.

        Raises:
            LrcnError: another object is registered as ``name`` already.
        """
        key = self.key(name)
        taken = self._entries.get(key)
        if taken is not None and _where(self._identity(taken)) != _where(self._identity(value)):
            by = getattr(self._identity(taken), "__qualname__", type(taken).__name__)
            raise LrcnError(
                f"{self.kind} {key!r} is registered already (by {by}); pick another name."
            )
        self._entries[key] = value
        if taken is None or _IMPORTING:
            self._plugins[key] = _IMPORTING[-1] if _IMPORTING else None
        return value

    def find(self, name: str) -> T | None:
        """The object registered as ``name``, or None."""
        return self._entries.get(self.key(name))

    def get(self, name: str) -> T:
        """The object registered as ``name``.

        Raises:
            LrcnError: none is; the sentence lists the registered names.
        """
        value = self.find(name)
        if value is None:
            raise LrcnError(unknown_name(self.kind, name, self.choose, self.names()))
        return value

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._entries)

    def plugin(self, name: str) -> str | None:
        """The plug-in module whose import registered ``name`` (None: built in, or registered by
        code that was not imported as a plug-in)."""
        return self._plugins.get(self.key(name))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.key(name) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"


def _setting_values(config: dict[str, Any], setting: str) -> list[str]:
    """The names a config dict gives ``setting`` (a dotted key): one string or a list of them."""
    value: Any = config
    for part in setting.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def used_plugins(config: dict[str, Any]) -> list[str]:
    """The plug-in modules that registered a name ``config`` (a config as a dict) uses, in order."""
    found = []
    for registry in REGISTRIES:
        if registry.setting is not None:
            for name in _setting_values(config, registry.setting):
                found.append(registry.plugin(name) if name in registry else None)
    return list(dict.fromkeys(plugin for plugin in found if plugin is not None))
