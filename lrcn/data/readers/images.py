"""Your own images: a folder of photos (any depth) and a captions file (CSV/TSV, JSONL, COCO)."""

from __future__ import annotations

import os
from pathlib import Path

from lrcn.data.media import load_image
from lrcn.data.readers.checks import (
    CheckSummary,
    MediaIndex,
    Records,
    check_fractions,
    check_readable,
    check_unnamed,
    drop_empty_captions,
    record_id,
    resolve_entries,
    split_groups,
)
from lrcn.data.readers.files import abspath, find_file, resolve_path
from lrcn.data.readers.registry import register_reader
from lrcn.data.readers.tables import (
    GROUP_COLUMNS,
    IMAGE_COLUMNS,
    SPLIT_COLUMNS,
    VIDEO_COLUMNS,
    Entry,
    caption_columns,
    find_column,
    gather_captions,
    read_table,
)
from lrcn.errors import LrcnError

CAPTION_FILES = ("captions.csv", "captions.tsv", "captions.txt", "captions.jsonl",
                 "captions.json", "annotations.json")  # fmt: skip


def find_captions_file(root: Path, captions: str | None) -> Path:
    """The captions file given (relative to the working folder or ``root``), or found in ``root``."""
    if captions:
        return resolve_path(root, captions, "captions file")
    if not root.is_dir():
        raise LrcnError(f"--root {root} is not a folder; pass the folder that holds your files.")
    found = find_file(root, CAPTION_FILES, "captions file", "captions")
    assert found is not None  # required=True raises instead
    return found


def captioned_files(
    root: Path,
    captions: str | None,
    index: MediaIndex,
    checks: CheckSummary,
    columns: tuple[str | None, str | None, str | None, str | None],
    missing: str,
    check_files: bool,
) -> dict[str, Entry]:
    """The captions file's entries by the relative path of the image or video each names.

    ``columns`` are the name, caption, split and group columns the user gave (None: guessed).
    The name checks of the check pass run here: names of missing files, two names of one file,
    files never named (with ``check_files``) and captions with no word.
    """
    name_column, caption_column, split_column, group_column = columns
    spellings, option = (
        (IMAGE_COLUMNS, "image_column")
        if index.kind == "images"
        else (VIDEO_COLUMNS, "video_column")
    )
    table = read_table(find_captions_file(root, captions))
    name = find_column(table, name_column, spellings, option, True) or ""
    texts = caption_columns(table, caption_column)
    split = find_column(table, split_column, SPLIT_COLUMNS, "split_column", False)
    group = find_column(table, group_column, GROUP_COLUMNS, "group_column", False)
    entries = gather_captions(table, name, texts, split, group)
    resolved = resolve_entries(entries, index, checks, missing, check_files)
    if check_files:
        check_unnamed(index, resolved, checks)
    drop_empty_captions(resolved, checks, index.kind)
    return resolved


def check_missing_option(missing: str) -> None:
    """Refuse a ``missing`` option other than ``error`` or ``drop``."""
    if missing not in ("error", "drop"):
        raise LrcnError(f"missing={missing!r} is not an option; use 'error' or 'drop'.")


@register_reader("images")
def read_images(
    root: str | os.PathLike,
    captions: str | None = None,
    image_column: str | None = None,
    caption_column: str | None = None,
    split_column: str | None = None,
    group_column: str | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    missing: str = "error",
    check_files: bool = True,
) -> list[dict]:
    """A folder of images (any depth) with a captions file: CSV or TSV with a header (several
    rows per image, or several caption columns), JSON Lines, or COCO-style JSON.

    The image, caption, split and group columns are guessed from common spellings (image,
    filename, path, ...; caption, text, sentence, ...) or named with ``image_column=`` etc. A file
    may name an image by its path under ``root``, its file name, or its name without extension.
    The split comes from a split column, else from a seeded split by image (by group, when there
    is a group column) that never puts one image in two splits.

    The check pass (``check_files``) refuses captions naming missing images (or, with
    ``missing="drop"``, leaves them out), opens every image, merges two names of one file, and
    leaves out captions with no word; each is one row of ``records.checks``.
    """
    root = Path(root)
    check_fractions(val_fraction, test_fraction)
    check_missing_option(missing)
    checks = CheckSummary()
    index = MediaIndex(root, "images")
    columns = (image_column, caption_column, split_column, group_column)
    resolved = captioned_files(root, captions, index, checks, columns, missing, check_files)
    splits = _splits(resolved, val_fraction, test_fraction, seed)
    taken: set[str] = set()
    records = [
        {
            "id": record_id(relative, taken),
            "path": abspath(root / relative),
            "split": splits[relative],
            "captions": entry.captions,
        }
        for relative, entry in resolved.items()
    ]
    if check_files:
        records = check_readable(records, lambda path: load_image(path, 8), checks, "images")
    return Records(records, checks)


def _splits(
    resolved: dict[str, Entry], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, str]:
    """Each file's split: its split column, else a seeded split of its group (or of itself)."""
    if any(entry.split for entry in resolved.values()):
        return {relative: entry.split or "train" for relative, entry in resolved.items()}
    groups = {relative: entry.group or relative for relative, entry in resolved.items()}
    by_group = split_groups(groups.values(), val_fraction, test_fraction, seed)
    return {relative: by_group[group] for relative, group in groups.items()}
