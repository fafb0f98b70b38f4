"""Captions files as people keep them: CSV/TSV with a header, JSON Lines, COCO-style JSON.

`read_table` turns any of them into rows (a dict per row, with its line); `find_column` guesses
which column holds the image (or video), the captions, the split and the group from common
spellings, or takes the one the user named; `gather_captions` groups the rows by file name.
The `images` and `videos` readers share these.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lrcn.data.readers.files import clean, json_list, read_json, read_text
from lrcn.errors import LrcnError

# Common spellings, tried in order (after lower-casing and turning spaces and hyphens into _).
IMAGE_COLUMNS = ("image", "image_name", "image_file", "image_path", "filename", "file_name",
                 "file", "path", "img", "image_id", "photo", "picture")  # fmt: skip
VIDEO_COLUMNS = ("video", "video_name", "video_file", "video_path", "video_id", "clip",
                 "clip_name", "filename", "file_name", "file", "path", "name")  # fmt: skip
CAPTION_COLUMNS = ("caption", "captions", "text", "sentence", "sentences", "description",
                   "descriptions", "comment", "raw")  # fmt: skip
SPLIT_COLUMNS = ("split", "subset", "set", "partition", "fold")
GROUP_COLUMNS = ("group", "group_id", "groups", "group_name")
# caption_1, caption 2, captions0, text_3, ... : several caption columns on one row
_NUMBERED_CAPTION = re.compile(r"(caption|text|sentence|description|comment)s?_?\d+")
_DELIMITERS = ("\t", ",", ";", "|")

SPLIT_NAMES = {"train": "train", "training": "train", "restval": "train", "val": "val",
               "valid": "val", "validation": "val", "dev": "val", "test": "test",
               "testing": "test"}  # fmt: skip


@dataclass
class Table:
    """A captions file's rows: ``rows[i]`` maps column name -> value and came from ``lines[i]``."""

    path: Path
    what: str
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    unit: str = "line"  # "line" for text files, "entry" for JSON ones

    def where(self, index: int) -> str:
        """``captions file F line N`` for row ``index``."""
        return f"{self.what} {self.path} {self.unit} {self.lines[index]}"


def normalise(name: str) -> str:
    """A column name as compared: lower case, spaces and hyphens as underscores."""
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


def read_table(path: Path, what: str = "captions file") -> Table:
    """Rows of a CSV/TSV (header line), JSON Lines, COCO-style JSON or JSON list of objects."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _read_json_lines(path, what)
    if suffix == ".json":
        return _read_json(path, what)
    return _read_delimited(path, what)


# A last line no captions file holds: a quote still open at the end of the file swallows it
# into a cell, which is how an unclosed quote is told from a quoted caption spanning lines.
_END = "\uffff"


def _read_delimited(path: Path, what: str) -> Table:
    """Rows of a CSV/TSV by the csv module's quoting rules: a quoted cell may hold the delimiter,
    doubled quotes and line ends (a row is numbered by the line it starts on)."""
    text = read_text(path, what)
    header_line = text.split("\n", 1)[0]
    delimiter = next((d for d in _DELIMITERS if d in header_line), None)
    if delimiter is None:
        raise LrcnError(
            f"{what} {path} line 1 ({header_line[:60]!r}) is not a header of columns separated by "
            "commas or tabs; start the file with a header such as 'image,caption'."
        )
    end = _END
    while end in text:
        end += _END
    ending = "" if text.endswith("\n") else "\n"
    reader = csv.reader(io.StringIO(f"{text}{ending}{end}\n", newline=""), delimiter=delimiter)
    table = Table(path, what, [])
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise LrcnError(
                f"{what} {path} line {start} is not valid CSV ({err}); fix that line."
            ) from None
        if row == [end]:
            break
        if any(end in cell for cell in row):  # the quote opened on line `start` never closed
            raise LrcnError(
                f"{what} {path} line {start} opens a quote that does not close before the end "
                'of the file; close the quote, or double each quote inside a quoted caption ("").'
            )
        if not table.columns:
            table.columns = [cell.strip() for cell in row]
        elif any(cell.strip() for cell in row):
            table.rows.append(_cells(row, table.columns, delimiter))
            table.lines.append(start)
        start = reader.line_num + 1
    return table


def _cells(row: list[str], columns: list[str], delimiter: str) -> dict[str, str]:
    """A row as column -> cell; cells beyond the header belong to the last column (an unquoted
    comma inside a caption, as in Kaggle's Flickr8k captions.txt)."""
    if len(row) > len(columns):
        row = [*row[: len(columns) - 1], delimiter.join(row[len(columns) - 1 :])]
    return {name: row[i] if i < len(row) else "" for i, name in enumerate(columns)}


def _read_json_lines(path: Path, what: str) -> Table:
    table = Table(path, what, [])
    for number, line in enumerate(read_text(path, what).split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise LrcnError(
                f"{what} {path} line {number} is not valid JSON ({err.msg}); fix that line."
            ) from None
        if not isinstance(row, dict):
            raise LrcnError(
                f"{what} {path} line {number} is not a JSON object; write one object a line, "
                'e.g. {"image": "a.jpg", "caption": "a dog runs"}.'
            )
        _add(table, row, number)
    return table


def _read_json(path: Path, what: str) -> Table:
    data = read_json(path, what)
    table = Table(path, what, [], unit="entry")
    if isinstance(data, dict) and "annotations" in data and "images" in data:
        return _coco_rows(data, path, what)
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise LrcnError(
            f"{what} {path} is neither COCO-style JSON (images, annotations) nor a list of "
            "objects; write one of those, or a CSV with an 'image,caption' header."
        )
    for number, row in enumerate(data, 1):
        _add(table, row, number)
    return table


def _coco_rows(data: dict, path: Path, what: str) -> Table:
    """One row per annotation: the image's fields (file_name, split, ...) and its caption."""
    images = {}
    for image in json_list(data, "images", path, what):
        if "id" not in image or "file_name" not in image:
            raise LrcnError(
                f"{what} {path}: an image entry lacks 'id' or 'file_name' ({image!r:.100}); "
                "is it a COCO captions file?"
            )
        images[image["id"]] = image
    table = Table(path, what, [], unit="annotation")
    for number, annotation in enumerate(json_list(data, "annotations", path, what), 1):
        image = images.get(annotation.get("image_id"))
        if image is None:
            raise LrcnError(
                f"{what} {path} annotation {number} names image_id "
                f"{annotation.get('image_id')!r}, which is not in its images list; fix the file."
            )
        _add(table, {**image, "caption": annotation.get("caption", "")}, number)
    return table


def _add(table: Table, row: dict, number: int) -> None:
    for name in row:
        if name not in table.columns:
            table.columns.append(name)
    table.rows.append(row)
    table.lines.append(number)


def find_column(
    table: Table, given: str | None, spellings: Sequence[str], option: str, required: bool
) -> str | None:
    """The column named by the user (``given``), else the first of ``spellings`` present.

    Raises:
        LrcnError: ``given`` is not a column, or no column fits and one is ``required``; the
            sentence lists the columns seen.
    """
    by_name = {normalise(name): name for name in table.columns}
    if given:
        if normalise(given) in by_name:
            return by_name[normalise(given)]
        raise LrcnError(
            f"{table.what} {table.path} has no column {given!r} (columns seen: "
            f"{_seen(table)}); pass {option}= one of those."
        )
    found = next((by_name[name] for name in spellings if name in by_name), None)
    if found is None and required:
        raise LrcnError(
            f"{table.what} {table.path}: cannot tell which column is the {option.split('_')[0]} "
            f"(columns seen: {_seen(table)}); name it with {option}=COLUMN."
        )
    return found


def caption_columns(table: Table, given: str | None) -> list[str]:
    """The caption column(s): ``given`` (comma-separated), a common spelling, or numbered ones
    (``caption_1``, ``caption_2``, ...) holding one caption each."""
    if given:
        return [
            find_column(table, name.strip(), (), "caption_column", True) or ""
            for name in given.split(",")
        ]
    single = find_column(table, None, CAPTION_COLUMNS, "caption_column", False)
    if single:
        return [single]
    numbered = [name for name in table.columns if _NUMBERED_CAPTION.fullmatch(normalise(name))]
    if not numbered:
        find_column(table, None, (), "caption_column", True)  # raises, listing the columns
    return numbered


def _seen(table: Table) -> str:
    return ", ".join(repr(name) for name in table.columns) or "none"


@dataclass
class Entry:
    """What a captions file says about one image or video: its captions, split and group."""

    name: str
    where: str  # the first row naming it, for messages
    captions: list[str] = field(default_factory=list)
    split: str | None = None
    group: str | None = None
    caption_rows: list[str] = field(default_factory=list)  # where each caption is, for messages

    def add_captions(self, captions: list[str], where: str) -> None:
        """Captions read at ``where`` (a row, or the rows of another name of the same file)."""
        self.captions += captions
        self.caption_rows += [where] * len(captions)

    def caption_where(self, index: int) -> str:
        """The row that gave caption ``index`` (the entry's first row if it was not recorded)."""
        return self.caption_rows[index] if index < len(self.caption_rows) else self.where


def gather_captions(
    table: Table,
    name_column: str,
    text_columns: list[str],
    split_column: str | None,
    group_column: str | None,
) -> dict[str, Entry]:
    """Rows grouped by file name (several rows per file, or several caption columns a row).

    Raises:
        LrcnError: a row without a file name, an unknown split value, or one file given two
            splits (naming the file and line).
    """
    entries: dict[str, Entry] = {}
    for index, row in enumerate(table.rows):
        name = clean(str(row.get(name_column) or "")).replace("\\", "/")
        if not name:
            raise LrcnError(
                f"{table.where(index)} has no {name_column!r}; fill it in or delete the row."
            )
        entry = entries.setdefault(name, Entry(name, table.where(index)))
        for column in text_columns:
            entry.add_captions(_texts(row.get(column)), table.where(index))
        if split_column:
            _set_split(entry, row.get(split_column), table.where(index))
        if group_column and row.get(group_column) not in (None, ""):
            entry.group = str(row[group_column])
    return entries


def _texts(value: Any) -> list[str]:
    """A cell's captions: a string, or a list of strings (JSON)."""
    if isinstance(value, list):
        return [clean(str(item)) for item in value if item is not None]
    return [] if value is None else [clean(str(value))]


def _set_split(entry: Entry, value: Any, where: str) -> None:
    split = SPLIT_NAMES.get(normalise(value or ""))
    if split is None:
        raise LrcnError(
            f"{where} has split {value!r}; use train, val or test (or drop the split column for "
            "a seeded split)."
        )
    if entry.split not in (None, split):
        raise LrcnError(
            f"{where} puts {entry.name} in {split} but {entry.where} put it in {entry.split}; "
            "one image or video belongs to one split: fix the file."
        )
    entry.split = split
