"""The check pass of the `images` and `videos` readers, their seeded group split, and the media
files found under a folder (any depth) that captions files name.

Every problem found is counted in one row of a summary table with what was done about it, so
nothing is dropped silently; `lrcn.data.manifest.prepare` prints the table and saves it, with
every affected file, as ``checks.txt`` beside the manifest.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lrcn.data.media import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, natural_key
from lrcn.data.readers.tables import Entry
from lrcn.errors import LrcnError
from lrcn.text.tokenize import tokenize


@dataclass
class Finding:
    """One kind of problem: the files it touched and what was done about them."""

    check: str
    action: str
    items: list[str] = field(default_factory=list)


class CheckSummary:
    """The findings of a check pass, in the order the checks were declared."""

    def __init__(self) -> None:
        self.findings: dict[str, Finding] = {}

    def declare(self, check: str, action: str) -> None:
        """A check that ran (listed even when it found nothing)."""
        self.findings.setdefault(check, Finding(check, action))

    def add(self, check: str, item: str) -> None:
        """Record one affected file (the check must have been declared)."""
        self.findings[check].items.append(item)

    def table(self) -> str:
        """One row per check: how many files it found, what was done, the first of them."""
        rows = [("check", "found", "what was done", "first")]
        for finding in self.findings.values():
            count = len(finding.items)
            first = finding.items[0] if finding.items else ""
            rows.append((finding.check, str(count), finding.action if count else "-", first))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        return "\n".join(
            "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3]
            for row in rows
        ).rstrip()

    def details(self) -> str:
        """The table followed by every affected file, check by check."""
        parts = [self.table()]
        for finding in self.findings.values():
            if finding.items:
                parts.append(f"\n{finding.check} ({finding.action}):")
                parts += [f"  {item}" for item in finding.items]
        return "\n".join(parts) + "\n"


class Records(list):
    """A reader's records with its check pass attached (``records.checks``)."""

    def __init__(self, records: Iterable[dict], checks: CheckSummary) -> None:
        super().__init__(records)
        self.checks = checks


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Refuse split fractions that leave nothing to train on."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise LrcnError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must each be in "
            "[0, 1) and leave some data to train on (their sum below 1); e.g. val_fraction=0.1 "
            "test_fraction=0.1."
        )


def split_groups(
    groups: Iterable[str], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, str]:
    """Each group's split: test and val take those fractions of the groups, train the rest.

    Groups are ranked by a hash of (seed, group), so the split depends only on the seed and the
    group names: the same data gives the same split anywhere, and adding files to a folder moves
    few of the old ones. With three or more groups a non-zero fraction gets at least one group and
    train keeps at least one.
    """
    names = sorted(set(groups), key=lambda g: hashlib.sha256(f"{seed}\0{g}".encode()).hexdigest())
    counts = []
    for fraction in (test_fraction, val_fraction):
        count = round(fraction * len(names))
        if fraction > 0 and count == 0 and len(names) >= 3:
            count = 1
        counts.append(count)
    n_test, n_val = counts
    while n_test + n_val >= len(names) and n_test + n_val > 0:  # keep a group to train on
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    split = {name: "test" for name in names[:n_test]}
    split.update({name: "val" for name in names[n_test : n_test + n_val]})
    split.update({name: "train" for name in names[n_test + n_val :]})
    return split


def check_readable(
    records: list[dict], load: Callable[[str], object], checks: CheckSummary, what: str
) -> list[dict]:
    """The records whose file ``load`` reads; the others are left out and reported."""
    check = f"unreadable {what}"
    checks.declare(check, "left out")
    kept = []
    for record in records:
        try:
            load(record["path"])
        except LrcnError as err:
            checks.add(check, str(err))
            continue
        kept.append(record)
    return kept


def record_id(relative: str, taken: set[str]) -> str:
    """A record's id: its path under the root without the extension (with it if that clashes)."""
    stem = relative.rsplit(".", 1)[0] if "." in Path(relative).name else relative
    record = stem if stem not in taken else relative
    taken.add(record)
    return record


class MediaIndex:
    """Images, videos or frame folders under ``root`` (any depth), found by the names that
    captions files use: a path relative to ``root``, a file name, or a name without extension."""

    def __init__(self, root: Path, kind: str) -> None:
        self.root = root
        self.kind = kind
        self.relative: dict[str, Path] = {}
        for path in self._walk(root, kind):
            self.relative[path.relative_to(root).as_posix()] = path
        self.by_name: dict[str, list[str]] = defaultdict(list)
        for relative in self.relative:
            name = relative.rsplit("/", 1)[-1]
            self.by_name[name].append(relative)
            if "." in name:
                self.by_name[name.rsplit(".", 1)[0]].append(relative)

    @staticmethod
    def _walk(root: Path, kind: str) -> list[Path]:
        """Image files (``kind`` images) or video files and frame folders (``videos``)."""
        found = []
        for folder, subfolders, files in os.walk(root, followlinks=True):
            subfolders[:] = sorted(
                (d for d in subfolders if not d.startswith(".")), key=natural_key
            )
            images = [f for f in files if Path(f).suffix.lower() in IMAGE_EXTENSIONS]
            if kind == "videos":
                if images and Path(folder) != root:  # a frame folder is one video
                    found.append(Path(folder))
                    subfolders[:] = []
                    continue
                images = [f for f in files if Path(f).suffix.lower() in VIDEO_EXTENSIONS]
            found += [Path(folder) / f for f in sorted(images, key=natural_key)
                      if not f.startswith(".")]  # fmt: skip
        return found

    def find(self, name: str, where: str) -> str | None:
        """The relative path of the file ``name`` means, or None when there is none.

        Raises:
            LrcnError: ``name`` matches several files (naming them and the row).
        """
        relative = name.removeprefix("./")
        if relative in self.relative:
            return relative
        if Path(name).is_absolute():
            path = Path(name)
            try:
                relative = path.relative_to(self.root).as_posix()
            except ValueError:
                return None
            return relative if relative in self.relative else None
        matches = [
            match
            for match in self.by_name.get(relative.rsplit("/", 1)[-1], [])
            if _ends_with(match, relative)
        ]
        if len(matches) > 1:
            raise LrcnError(
                f"{where} names {name}, which matches {len(matches)} files under {self.root} "
                f"({', '.join(matches[:3])}); write its path relative to {self.root} instead."
            )
        return matches[0] if matches else None


def _ends_with(match: str, relative: str) -> bool:
    """Whether path ``match``, with or without its extension, ends with the folders and name
    ``relative`` (``b/x.jpg`` and ``x`` both name ``a/b/x.jpg``)."""
    return any(f"/{path}".endswith(f"/{relative}") for path in (match, match.rsplit(".", 1)[0]))


def resolve_entries(
    entries: dict[str, Entry],
    index: MediaIndex,
    checks: CheckSummary,
    missing: str,
    check_files: bool,
) -> dict[str, Entry]:
    """The captions file's entries by the relative path of the file each names.

    Two names of one file (``a.jpg`` and ``./photos/a.jpg``) are merged and reported. A name
    matching no file is an error, or with ``missing="drop"`` left out and reported; without
    ``check_files`` it is trusted as a path under the root.
    """
    what = index.kind
    twice, absent = f"{what} listed twice", f"{what} named but not found"
    checks.declare(twice, "merged into one record")
    checks.declare(absent, "left out (missing=drop)")
    resolved: dict[str, Entry] = {}
    not_found = []
    for entry in entries.values():
        relative = index.find(entry.name, entry.where)
        if relative is None and check_files:
            not_found.append(entry)
            continue
        relative = relative or entry.name
        other = resolved.get(relative)
        if other is None:
            resolved[relative] = entry
            continue
        checks.add(twice, f"{entry.name} ({entry.where}) is {other.name} ({other.where})")
        for number, caption in enumerate(entry.captions):
            other.add_captions([caption], entry.caption_where(number))
        if entry.split and other.split not in (None, entry.split):
            raise LrcnError(
                f"{entry.where} puts {entry.name} in {entry.split} but {other.where} puts the "
                f"same file ({other.name}) in {other.split}; one file belongs to one split."
            )
    if not_found and missing != "drop":
        first = not_found[0]
        raise LrcnError(
            f"{first.where} names {first.name}, which is not under {index.root}"
            + (
                f" (nor are {len(not_found) - 1} more {what} it names)"
                if len(not_found) > 1
                else ""
            )
            + f"; put the files under {index.root} (any depth), correct the names, or pass "
            "missing=drop to leave them out."
        )
    for entry in not_found:
        checks.add(absent, f"{entry.name} ({entry.where})")
    return resolved


def drop_empty_captions(resolved: dict[str, Entry], checks: CheckSummary, what: str) -> None:
    """Leave out captions with no word after tokenization, and files left with no caption."""
    empty, bare = "captions empty after tokenization", f"{what} left with no caption"
    checks.declare(empty, "caption left out")
    checks.declare(bare, "left out")
    for relative, entry in list(resolved.items()):
        kept, rows = [], []
        for index, caption in enumerate(entry.captions):
            if has_words(caption):
                kept.append(caption)
                rows.append(entry.caption_where(index))
            else:
                checks.add(empty, f"{entry.name}: {caption!r} ({entry.caption_where(index)})")
        entry.captions, entry.caption_rows = kept, rows
        if not kept:
            checks.add(bare, f"{entry.name} ({entry.where})")
            del resolved[relative]


_WORD_CHARACTER = re.compile(r"[^\W_]")
_BRACKET_WORD = re.compile(r"-[lr][rc]b-", re.IGNORECASE)  # PTB's bracket names are punctuation


def has_words(caption: str) -> bool:
    """Whether ``caption`` keeps a token after tokenization (`lrcn.text.tokenize`).

    A letter or digit always makes a word token except in PTB's bracket names, so the tokenizer
    (40,000 Flickr8k captions: 4.5 s) runs only on captions without one or with those names.
    """
    if _WORD_CHARACTER.search(caption) and not _BRACKET_WORD.search(caption):
        return True
    return bool(tokenize(caption))


def check_unnamed(index: MediaIndex, resolved: dict[str, Entry], checks: CheckSummary) -> None:
    """Report the files under the root that the captions file never names."""
    check = f"{index.kind} with no row in the captions file"
    checks.declare(check, "not in the manifest")
    for relative in index.relative:
        if relative not in resolved:
            checks.add(check, relative)
