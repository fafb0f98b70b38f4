"""File helpers the readers share: finding, reading and checking dataset files."""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from lrcn.errors import LrcnError

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")

# Where Flickr downloads keep their images, tried in order.
IMAGE_DIRS = ("Images", "images", "Flicker8k_Dataset", "Flickr8k_Dataset/Flicker8k_Dataset",
               "Flickr8k_Dataset", "flickr30k_images", "flickr30k-images",
               "flickr30k_images/flickr30k_images")  # fmt: skip


def resolve_path(root: Path, given: str | os.PathLike, what: str) -> Path:
    """A path given by the user: absolute, relative to the working folder, or to ``root``."""
    path = Path(given)
    if not path.is_absolute() and not path.exists():
        path = root / path
    if not path.exists():
        raise LrcnError(f"{what} {given} was not found (also looked under {root}); fix the path.")
    return path


def candidates(root: Path, pattern: str) -> list[Path]:
    """Files matching ``pattern`` in ``root``, or else in its immediate subfolders."""
    found = sorted(p for p in root.glob(pattern) if p.is_file())
    if found:
        return found
    return sorted(p for p in root.glob(f"*/{pattern}") if p.is_file())


def find_file(
    root: Path,
    patterns: Sequence[str],
    what: str,
    option: str,
    required: bool = True,
    exclude: str | None = None,
) -> Path | None:
    """Find one file by the first of ``patterns`` that matches under ``root``.

    Raises:
        LrcnError: nothing matches (when ``required``) or a pattern matches several files.
    """
    if not root.is_dir():
        raise LrcnError(f"dataset root {root} is not a folder; pass --root the dataset's folder.")
    for pattern in patterns:
        found = [p for p in candidates(root, pattern) if not (exclude and exclude in p.name)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            names = ", ".join(str(p) for p in found[:5])
            raise LrcnError(
                f"several {what} files under {root} ({names}); choose one with {option}=PATH."
            )
    if required:
        raise LrcnError(
            f"no {what} ({' or '.join(patterns)}) under {root}; pass --root the folder that "
            f"holds it or give it with {option}=PATH."
        )
    return None


def find_dir(root: Path, names: Iterable[str]) -> Path:
    """The first of ``names`` that is a folder under ``root``, else ``root`` itself."""
    for name in names:
        if (root / name).is_dir():
            return root / name
    return root


def read_text(path: Path, what: str) -> str:
    """Read a UTF-8 text file (a BOM is dropped); refuse missing, empty or non-UTF-8 files."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LrcnError(f"{what} {path} does not exist; check the path.") from None
    except IsADirectoryError:
        raise LrcnError(f"{what} {path} is a folder, not a file; give the file.") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise LrcnError(
            f"{what} {path} line {line} is not valid UTF-8 ({err.reason}); re-save the file "
            "as UTF-8."
        ) from None
    if not text.strip():
        raise LrcnError(f"{what} {path} is empty; re-download it.")
    return text


def read_lines(path: Path, what: str) -> list[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers; CRLF and trailing blanks are stripped."""
    # split("\n"), not splitlines(): captions may hold U+2028 or form feeds that are not breaks.
    lines = read_text(path, what).split("\n")
    return [(number, line.rstrip()) for number, line in enumerate(lines, 1) if line.strip()]


def read_json(path: Path, what: str) -> Any:
    """A UTF-8 JSON file, refused with the line of its first error."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise LrcnError(
            f"{what} {path} line {err.lineno} is not valid JSON ({err.msg}); re-download it."
        ) from None


def json_list(data: Any, key: str, path: Path, what: str) -> list[dict]:
    """``data[key]``, which must be a list of objects."""
    items = data.get(key) if isinstance(data, dict) else None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise LrcnError(
            f"{what} {path} has no list of objects under {key!r}; is it the right file?"
        )
    return items


def field(item: dict, key: str, path: Path, what: str) -> Any:
    """``item[key]``, refused naming the file when the entry lacks it."""
    if key not in item:
        raise LrcnError(f"{what} {path}: an entry lacks {key!r} ({item!r:.120}); re-download it.")
    return item[key]


def clean(caption: str) -> str:
    """Collapse runs of whitespace (COCO captions carry newlines and trailing spaces)."""
    return " ".join(caption.split())


def csv_rows(reader: Any, path: Path, what: str) -> Iterator[Any]:
    """Rows of a csv reader, turning the csv module's errors into one naming file and line."""
    try:
        yield from reader
    except csv.Error as err:
        raise LrcnError(
            f"{what} {path} line {reader.line_num} is not valid CSV ({err}); fix that line."
        ) from None


def abspath(path: Path) -> str:
    """The absolute path as a string (no stat, no symlink resolution)."""
    return os.path.abspath(path)


def verify_files(records: list[dict], check_files: bool) -> list[dict]:
    """``records``, after checking every path exists when ``check_files`` is set."""
    if check_files:
        missing = [record["path"] for record in records if not os.path.exists(record["path"])]
        if missing:
            raise LrcnError(
                f"{len(missing)} of {len(records)} images/videos are missing, the first being "
                f"{missing[0]}; point the reader at the folder that holds them."
            )
    return records


def split_of(name: str, splits: dict[str, str], unlisted: str) -> str | None:
    """The split of image ``name``; unlisted images are trained on or dropped (None)."""
    split = splits.get(name)
    if split is None and unlisted == "train":
        return "train"
    return split


def check_unlisted(unlisted: str) -> None:
    """Refuse an ``unlisted`` option other than ``drop`` or ``train``."""
    if unlisted not in ("drop", "train"):
        raise LrcnError(f"unlisted={unlisted!r} is not an option; use 'drop' or 'train'.")


def caption_records(
    captions: dict[str, list[str]],
    paths: dict[str, Path],
    splits: dict[str, str] | None,
    unlisted: str,
    source: Path,
) -> list[dict]:
    """Records for image names with captions; images in no split list are dropped or trained on."""
    records, dropped = [], 0
    for name, texts in captions.items():
        split = "train" if splits is None else split_of(name, splits, unlisted)
        if split is None:
            dropped += 1
            continue
        record_id = Path(name).stem
        records.append(
            {"id": record_id, "path": abspath(paths[name]), "split": split, "captions": texts}
        )
    if dropped:
        logger.info("%s: %d images are in no split list and were left out", source, dropped)
    return records
