"""Atomic file writes: write to a temporary name in the same folder, then rename.

A crash (or SIGKILL) mid-write leaves the previous file, never a truncated one under the real name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lrcn.errors import LrcnError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) so that readers see the old file or the new one, never half."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, data: Any, indent: int | None = 2) -> None:
    """Write ``data`` as JSON atomically (non-ASCII kept as is)."""
    write_text_atomic(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike, fix: str) -> Any:
    """Parse a UTF-8 JSON file; a missing, unreadable or invalid file is one sentence ending in ``fix``.

    Raises:
        LrcnError: naming ``path`` (and the line of invalid JSON).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LrcnError(f"{path}: no such file; {fix}.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise LrcnError(f"{path} could not be read ({err}); {fix}.") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise LrcnError(f"{path} line {err.lineno}: not valid JSON ({err.msg}); {fix}.") from None
