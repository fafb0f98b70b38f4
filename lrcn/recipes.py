"""Recipes: the YAML configs of ``configs/``, found by name (``lrcn train -c shapes``) anywhere.

``configs/`` at the top of the repository is their single source. A built wheel carries them as
``lrcn/configs/*.yaml`` (setup.py maps the folder into the package); a clone, an editable install
or ``PYTHONPATH`` finds them beside the ``lrcn`` folder. A config given as a path is used as is.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from lrcn.errors import LrcnError

_PACKAGE = Path(__file__).resolve().parent
_MAX_DESCRIPTION = 110


def recipes_dir() -> Path | None:
    """The folder the recipes are read from: the installed package's, else the clone's."""
    if (_PACKAGE / "configs").is_dir():
        return _PACKAGE / "configs"
    clone = _PACKAGE.parent
    if (clone / "setup.py").is_file() and (clone / "configs").is_dir():
        return clone / "configs"
    return None


def available_recipes() -> dict[str, Path]:
    """Recipe name -> YAML file, sorted by name."""
    folder = recipes_dir()
    if folder is None:
        return {}
    return {path.stem: path for path in sorted(folder.glob("*.yaml"))}


def describe_recipe(path: Path) -> str:
    """The recipe's one-line description: the first sentence of its leading ``#`` comment."""
    lines = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    text = " ".join(lines)
    sentence = re.split(r"(?<=[.!?])(?<!al\.)\s", text, maxsplit=1)[0]  # not after "et al."
    if len(sentence) > _MAX_DESCRIPTION:
        sentence = sentence.split("; ", 1)[0]
    if len(sentence) > _MAX_DESCRIPTION:
        sentence = sentence[: _MAX_DESCRIPTION - 1].rsplit(" ", 1)[0] + "…"
    return sentence


def is_recipe_name(config: str | os.PathLike) -> bool:
    """Whether ``config`` reads as a recipe name (no folder, no .yaml) rather than a path."""
    text = os.fspath(config)
    return (
        bool(text)
        and "/" not in text
        and os.sep not in text
        and not text.endswith((".yaml", ".yml"))
    )


def resolve_config(config: str | os.PathLike) -> Path:
    """The YAML file ``config`` means: an existing file or any path as given, else a recipe.

    Raises:
        LrcnError: ``config`` is neither an existing file nor a recipe name (the sentence lists
            the recipes).
    """
    path = Path(config)
    if path.exists() or not is_recipe_name(config):
        return path
    recipes = available_recipes()
    if path.name in recipes:
        return recipes[path.name]
    listed = ", ".join(recipes) or "none found (is lrcn installed with its configs?)"
    raise LrcnError(
        f"{config}: no such config file or recipe; pass a YAML file or a recipe name: {listed} "
        "(`lrcn recipes` describes them)."
    )
