"""Your own videos: one subfolder per class (UCF101's, Kinetics' and ImageFolder's layout) holding
video files or frame folders, with an optional captions file for video description."""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path

from lrcn.data.media import natural_key, read_frames
from lrcn.data.readers.checks import (
    CheckSummary,
    MediaIndex,
    Records,
    check_fractions,
    check_readable,
    record_id,
    split_groups,
)
from lrcn.data.readers.files import abspath
from lrcn.data.readers.images import captioned_files, check_missing_option
from lrcn.data.readers.registry import register_reader
from lrcn.data.readers.tables import SPLIT_NAMES
from lrcn.errors import LrcnError


@register_reader("videos")
def read_videos(
    root: str | os.PathLike,
    captions: str | None = None,
    video_column: str | None = None,
    caption_column: str | None = None,
    split_column: str | None = None,
    group_column: str | None = None,
    group_pattern: str = r"_g(\d+)_",
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    min_class_items: int = 2,
    missing: str = "error",
    check_files: bool = True,
) -> list[dict]:
    """Videos or frame folders under ``root``: activity records labelled by their class folder,
    or, with a ``captions`` file (as for `read_images`; ``video_column=``), captioning records.

    ``root`` may also hold ``train/``, ``val/`` and ``test/`` folders with the classes inside: then
    they are the split. Otherwise the split comes from a split column, else a seeded split that
    keeps each group together (per class where groups stay within one): a ``group`` column, else
    ``group_pattern`` in the file name (UCF101's ``v_Class_g08_c01``), else each video alone.
    The check pass (``check_files``) decodes a frame of every video, and reports classes with
    fewer than ``min_class_items`` videos.
    """
    root = Path(root)
    check_fractions(val_fraction, test_fraction)
    check_missing_option(missing)
    if not root.is_dir():
        raise LrcnError(f"--root {root} is not a folder; pass the folder of class folders.")
    try:
        pattern = re.compile(group_pattern)
    except re.error as err:
        raise LrcnError(
            f"group_pattern={group_pattern!r} is not a regular expression ({err}); fix it."
        ) from None
    index = MediaIndex(root, "videos")
    checks = CheckSummary()
    by_split_folder = _split_folders(root)
    if captions:
        items = _captioned(root, captions, index, checks, missing, check_files,
                           (video_column, caption_column, split_column, group_column))  # fmt: skip
    else:
        items = _labelled(root, index, by_split_folder)
    for relative, item in items.items():
        if by_split_folder:
            item["split"] = SPLIT_NAMES[relative.split("/", 1)[0].lower()]
        if not item.get("group"):
            match = pattern.search(Path(relative).name)
            item["group"] = f"{item.get('class', '')}/{match.group(0)}" if match else relative
    _assign_splits(items, val_fraction, test_fraction, seed)
    records = _records(root, items)
    if check_files:
        records = check_readable(records, lambda path: read_frames(path, 1), checks, "videos")
    if not captions:
        records = _check_classes(root, items, records, min_class_items, checks)
    return Records(records, checks)


def _split_folders(root: Path) -> bool:
    """Whether ``root``'s folders are splits (train/, val/, test/) with the classes inside."""
    folders = [p.name.lower() for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return bool(folders) and all(name in SPLIT_NAMES for name in folders)


def _class_of(relative: str, by_split_folder: bool) -> str | None:
    parts = relative.split("/")[1:] if by_split_folder else relative.split("/")
    return parts[0] if len(parts) > 1 else None


def _labelled(root: Path, index: MediaIndex, by_split_folder: bool) -> dict[str, dict]:
    """Every video under a class folder, with its class."""
    items = {}
    for relative in index.relative:
        class_name = _class_of(relative, by_split_folder)
        if class_name is None:
            raise LrcnError(
                f"video {root / relative} is not inside a class folder; put each video (or "
                f"frame folder) in a folder named after its class under {root}, or give a "
                "captions file with captions=FILE for video description."
            )
        items[relative] = {"class": class_name}
    return items


def _captioned(
    root: Path,
    captions: str,
    index: MediaIndex,
    checks: CheckSummary,
    missing: str,
    check_files: bool,
    columns: tuple[str | None, str | None, str | None, str | None],
) -> dict[str, dict]:
    """Videos named in the captions file, with their captions and any split and group."""
    resolved = captioned_files(root, captions, index, checks, columns, missing, check_files)
    return {
        relative: {"captions": entry.captions, "split": entry.split, "group": entry.group}
        for relative, entry in resolved.items()
    }


def _assign_splits(
    items: dict[str, dict], val_fraction: float, test_fraction: float, seed: int
) -> None:
    """A seeded split of the groups of the items without one; per class when no group spans two."""
    if any(item.get("split") for item in items.values()):
        for item in items.values():
            item["split"] = item.get("split") or "train"
        return
    classes_of: dict[str, set] = defaultdict(set)
    for item in items.values():
        classes_of[item["group"]].add(item.get("class"))
    per_class = all(len(classes) == 1 for classes in classes_of.values())
    strata: dict[object, list[str]] = defaultdict(list)
    for group, classes in classes_of.items():
        strata[next(iter(classes)) if per_class else None].append(group)
    split_of = {}
    for groups in strata.values():
        split_of.update(split_groups(groups, val_fraction, test_fraction, seed))
    for item in items.values():
        item["split"] = split_of[item["group"]]


def _records(root: Path, items: dict[str, dict]) -> list[dict]:
    labels = {name: n for n, name in enumerate(sorted({i["class"] for i in items.values()
                                                        if i.get("class")}, key=natural_key))}  # fmt: skip
    taken: set[str] = set()
    records = []
    for relative, item in items.items():
        record = {"id": record_id(relative, taken), "path": abspath(root / relative),
                  "split": item["split"]}  # fmt: skip
        if "captions" in item:
            record["captions"] = item["captions"]
        else:
            record.update(label=labels[item["class"]], label_name=item["class"])
        records.append(record)
    return records


def _check_classes(
    root: Path,
    items: dict[str, dict],
    records: list[dict],
    min_class_items: int,
    checks: CheckSummary,
) -> list[dict]:
    """Refuse a class folder with no readable video; report classes with too few videos."""
    few = f"classes with fewer than {min_class_items} videos"
    checks.declare(few, "kept (too few to appear in every split)")
    counts: dict[str, int] = defaultdict(int)
    for record in records:
        counts[record["label_name"]] += 1
    folders = {item["class"] for item in items.values()} | _class_folders(root)
    for name in sorted(folders, key=natural_key):
        found = [relative for relative, item in items.items() if item["class"] == name]
        if not found:
            raise LrcnError(
                f"class folder {name!r} under {root} holds no video files or frame folders; add videos "
                "(.mp4, .avi, ...) or folders of frames to it, or remove the folder."
            )
        if counts[name] == 0:
            raise LrcnError(
                f"class folder {Path(root / found[0]).parent} holds no readable video (none of "
                f"its {len(found)} could be decoded, the first being {found[0]}); re-encode "
                "them (e.g. ffmpeg -i in.avi out.mp4) or remove the folder."
            )
        if counts[name] < min_class_items:
            checks.add(few, f"{name}: {counts[name]}")
    return records


def _class_folders(root: Path) -> set[str]:
    """The class folders under ``root`` (or under its split folders)."""
    tops = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if _split_folders(root):
        tops = [
            p for top in tops for p in top.iterdir() if p.is_dir() and not p.name.startswith(".")
        ]
    return {p.name for p in tops}
