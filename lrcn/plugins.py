"""Plug-in modules: code outside lrcn that registers encoders, wirings, metrics, readers, datasets.

Three ways in, each imported before a config is checked against the registries:

- an installed package declares an entry point in the group ``lrcn.plugins`` (setup.py:
  ``entry_points={"lrcn.plugins": ["my_plugin = my_plugin"]}``; pyproject.toml:
  ``[project.entry-points."lrcn.plugins"]`` ``my_plugin = "my_plugin"``); the ``lrcn`` command
  imports every one at start (`load_entry_points`);
- ``--plugin MODULE`` on the command line (repeatable): a module name on ``sys.path`` or a
  ``.py`` file;
- a config's top-level ``plugins: [MODULE, ...]``, in the same two forms.

A run records the plug-in modules it needs in its config (``config.yaml`` and every checkpoint's):
the config's ``plugins`` plus each plug-in module, entry point or ``--plugin``, that registered a
name the config uses (`lrcn.registry.used_plugins`). Loading a saved config imports them first
(`resolve_plugins`, from `lrcn.config`), so ``evaluate``, ``caption``, ``report`` and ``train
--resume`` find the plug-in's names, or refuse in one sentence naming the missing module.

A ``.py`` file is recorded by its absolute path and imported as the module named by its stem.
Importing a module runs its code: a config's (or a checkpoint's) ``plugins`` is code it asks to
run, as its name says.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lrcn.errors import LrcnError
from lrcn.registry import importing_plugin, used_plugins

GROUP = "lrcn.plugins"
_FIX = (
    "install the package that provides it, or pass --plugin with its module name (on PYTHONPATH) "
    "or its .py file"
)
_IMPORTED: set[str] = set()  # entries imported in this process
_FILE_MODULES: dict[str, str] = {}  # module name -> the .py file imported as it
_ENTRY_POINTS: list[str] | None = None  # the entry points' modules, once imported


def _is_file(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or "\\" in spec


def plugin_entry(spec: str) -> str:
    """How a plug-in is recorded: a module name as given, a ``.py`` file as its absolute path."""
    spec = spec.strip()
    return str(Path(spec).expanduser().resolve()) if _is_file(spec) else spec


def _import_file(path: Path, source: str) -> None:
    """Import ``path`` as the module named by its stem (once; the name must be free)."""
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__file__", None) == str(path):
        return
    if not path.is_file():
        if name in _FILE_MODULES or name in _IMPORTED:  # moved, and given again by --plugin
            return
        raise LrcnError(f"{source}: plugin file {path} does not exist; {_FIX}.")
    if loaded is not None:
        raise LrcnError(
            f"{source}: plugin file {path} would be imported as module {name!r}, which is taken "
            f"already (by {getattr(loaded, '__file__', None) or 'a built-in module'}); rename "
            "the file."
        )
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise LrcnError(f"{source}: plugin file {path} is not a Python module; pass a .py file.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: dataclasses and pickling look it up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    _FILE_MODULES[name] = str(path)


def _failure(entry: str, exc: Exception, source: str) -> LrcnError:
    """The sentence for a plug-in module that could not be imported."""
    missing = isinstance(exc, ModuleNotFoundError) and exc.name is not None
    if missing and (entry == exc.name or entry.startswith(f"{exc.name}.")):
        return LrcnError(f"{source}: plugin module {entry!r} is not installed; {_FIX}.")
    reason = str(exc).splitlines()[0] if str(exc) else ""
    return LrcnError(
        f"{source}: plugin {entry!r} failed to import ({exc.__class__.__name__}: {reason}); fix "
        "it, or remove it from `plugins` / --plugin."
    )


def import_plugin(spec: str, source: str = "--plugin") -> str:
    """Import one plug-in (a module name or a ``.py`` file), its registrations recorded as its own.

    Args:
        spec: a module name or a path to a ``.py`` file.
        source: what named it (a config file, ``--plugin``), for messages.

    Returns:
        Its entry: the module name, or the file's absolute path.

    Raises:
        LrcnError: it cannot be found or fails to import.
    """
    entry = plugin_entry(spec)
    if entry in _IMPORTED:
        return entry
    try:
        with importing_plugin(entry):
            if _is_file(entry):
                _import_file(Path(entry), source)
            else:
                importlib.import_module(entry)
    except LrcnError:
        raise
    except Exception as exc:  # a plug-in's own code may raise anything while it is imported
        raise _failure(entry, exc, source) from None
    _IMPORTED.add(entry)
    return entry


def import_plugins(specs: Iterable[str], source: str = "--plugin") -> list[str]:
    """`import_plugin` for each of ``specs``, in order; their entries."""
    return [import_plugin(spec, source) for spec in specs]


def load_entry_points() -> list[str]:
    """Import every installed plug-in of the entry-point group ``lrcn.plugins`` (once a process).

    Returns:
        Their modules, in the order the installed packages list them.

    Raises:
        LrcnError: one fails to import; the sentence names it and its package.
    """
    global _ENTRY_POINTS
    if _ENTRY_POINTS is not None:
        return _ENTRY_POINTS
    modules = []
    for point in importlib.metadata.entry_points(group=GROUP):
        package = point.dist.name if point.dist is not None else point.module
        try:
            with importing_plugin(point.module):
                point.load()
        except Exception as exc:  # a plug-in's own code may raise anything while it is imported
            reason = str(exc).splitlines()[0] if str(exc) else ""
            raise LrcnError(
                f"plugin {point.name} = {point.value} of the installed package {package} failed "
                f"to import ({exc.__class__.__name__}: {reason}); fix it or `pip uninstall "
                f"{package}`."
            ) from None
        _IMPORTED.add(point.module)
        modules.append(point.module)
    _ENTRY_POINTS = modules
    return modules


def add_plugin_option(parser: argparse.ArgumentParser) -> None:
    """``--plugin MODULE`` (repeatable, into ``plugins``) on a command's parser."""
    parser.add_argument(
        "--plugin",
        dest="plugins",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this plug-in module (a name on PYTHONPATH or a .py file) first; repeatable",
    )


def load_command_plugins(specs: Iterable[str]) -> None:
    """What an ``lrcn`` command imports before it runs: the installed plug-ins (entry points),
    then the ``--plugin`` ones."""
    load_entry_points()
    import_plugins(specs)


def resolve_plugins(listed: Iterable[str], config: dict[str, Any], source: str) -> list[str]:
    """Import a config's ``plugins``; return what the run records: their entries, then the
    plug-in modules that registered a name ``config`` (the config as a dict) uses.

    Raises:
        LrcnError: a listed plug-in cannot be imported (the sentence names it and the fix).
    """
    entries = import_plugins(listed, source)
    return list(dict.fromkeys([*entries, *used_plugins(config)]))
