"""UCF101 with its official train/test split lists, and a group-wise val split."""

from __future__ import annotations

import os
import random
import re
from collections import defaultdict
from pathlib import Path

from lrcn.data.readers.files import (
    abspath,
    find_dir,
    find_file,
    read_lines,
    resolve_path,
    verify_files,
)
from lrcn.data.readers.registry import register_reader
from lrcn.errors import LrcnError

_UCF_NAME = re.compile(r"v_(.+)_g(\d+)_c(\d+)")


def read_ucf101_classes(path: str | os.PathLike) -> list[str]:
    """classInd.txt (``1 ApplyEyeMakeup``, CRLF as shipped) -> class names, index = label."""
    path = Path(path)
    what = "UCF101 class index"
    numbered = {}
    for number, line in read_lines(path, what):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise LrcnError(f"{what} {path} line {number} is not 'NUMBER ClassName'; fix it.")
        numbered[int(parts[0])] = parts[1]
    if sorted(numbered) != list(range(1, len(numbered) + 1)):
        raise LrcnError(f"{what} {path} does not number its classes 1..{len(numbered)}; fix it.")
    return [numbered[i] for i in range(1, len(numbered) + 1)]


@register_reader("ucf101")
def read_ucf101(
    root: str | os.PathLike,
    split: int = 1,
    list_dir: str | None = None,
    video_dir: str | None = None,
    val_fraction: float = 0.0,
    seed: int = 0,
    check_files: bool = False,
) -> list[dict]:
    """UCF101 with an official train/test split (``split`` 1, 2 or 3).

    Reads classInd.txt, trainlistNN.txt (``Class/v_Class_gGG_cCC.avi LABEL``) and testlistNN.txt
    (no label: it comes from the folder name). There is no val split unless ``val_fraction`` > 0:
    then that fraction of each class's training groups (gGG, at least one) is held out as val,
    chosen with ``seed``, so clips of one group (same actors and scene) never straddle train and
    val. Videos are ``video_dir/Class/v_....avi`` (default: UCF-101/ or ``root``), or directly in
    ``video_dir`` when it has no class folders.
    """
    root = Path(root)
    if split not in (1, 2, 3):
        raise LrcnError(f"UCF101 split={split} does not exist; use 1, 2 or 3.")
    if not 0.0 <= val_fraction < 1.0:
        raise LrcnError(f"val_fraction={val_fraction} must be in [0, 1).")
    base = resolve_path(root, list_dir, "UCF101 list folder") if list_dir else root
    option = "list_dir"
    class_file = find_file(base, ["classInd.txt"], "UCF101 classInd.txt", option)
    train_file = find_file(base, [f"trainlist0{split}.txt"], "UCF101 train list", option)
    test_file = find_file(base, [f"testlist0{split}.txt"], "UCF101 test list", option)
    classes = read_ucf101_classes(class_file)
    labels = {name: index for index, name in enumerate(classes)}
    if video_dir:
        videos = resolve_path(root, video_dir, "UCF101 video folder")
    else:
        videos = find_dir(root, ["UCF-101", "UCF101", "videos"])
    nested = any((videos / name).is_dir() for name in classes)

    records = []
    for path, split_name in ((train_file, "train"), (test_file, "test")):
        records += _read_list(path, split_name, labels, class_file, videos, nested)
    if val_fraction > 0:
        _hold_out_groups(records, val_fraction, seed)
    return verify_files(records, check_files)


def _read_list(
    path: Path,
    split_name: str,
    labels: dict[str, int],
    class_file: Path,
    videos: Path,
    nested: bool,
) -> list[dict]:
    """One split's list file (``Class/v_Class_gGG_cCC.avi [LABEL]`` lines) -> its records, each
    label checked against the class index; ``nested``: the videos sit in class folders."""
    records = []
    for number, line in read_lines(path, "UCF101 list"):
        parts = line.split()
        class_name, slash, filename = parts[0].partition("/")
        where = f"UCF101 list {path} line {number}"
        if not slash or not filename:
            raise LrcnError(f"{where} is not 'Class/v_Class_gGG_cCC.avi [LABEL]'; fix it.")
        if class_name not in labels:
            raise LrcnError(
                f"{where} names class {class_name!r}, which is not in {class_file}; use the "
                "class index shipped with the same lists."
            )
        label = labels[class_name]
        if len(parts) > 1 and parts[1] != str(label + 1):
            raise LrcnError(
                f"{where} gives label {parts[1]} but {class_file} numbers {class_name} "
                f"{label + 1}; use the class index shipped with the same lists."
            )
        video = videos / parts[0] if nested else videos / filename
        records.append(
            {
                "id": Path(filename).stem,
                "path": abspath(video),
                "split": split_name,
                "label": label,
                "label_name": class_name,
            }
        )
    return records


def _hold_out_groups(records: list[dict], fraction: float, seed: int) -> None:
    """Move ``fraction`` of each class's train groups (at least one) to val, in place."""
    groups: dict[str, set[str]] = defaultdict(set)
    for record in records:
        if record["split"] == "train":
            groups[record["label_name"]].add(_ucf_group(record["id"]))
    rng = random.Random(seed)
    held_out = set()
    for class_name in sorted(groups):
        names = sorted(groups[class_name])
        count = min(len(names) - 1, max(1, round(fraction * len(names))))
        held_out.update((class_name, name) for name in rng.sample(names, count))
    for record in records:
        if (
            record["split"] == "train"
            and (record["label_name"], _ucf_group(record["id"])) in held_out
        ):
            record["split"] = "val"


def _ucf_group(video_id: str) -> str:
    match = _UCF_NAME.fullmatch(video_id)
    return match.group(2) if match else video_id
