"""MSR-VTT: videodatainfo.json files and/or the 1k-A test CSV."""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path

from lrcn.data.readers.files import (
    SPLITS,
    abspath,
    candidates,
    clean,
    field,
    find_dir,
    find_file,
    json_list,
    read_json,
    read_lines,
    resolve_path,
    verify_files,
)
from lrcn.data.readers.registry import register_reader
from lrcn.errors import LrcnError

logger = logging.getLogger(__name__)


def _read_jsfusion(path: Path) -> dict[str, list[str]]:
    """MSR-VTT 1k-A test CSV (``key;vid_key;video_id;sentence``) -> video id -> captions."""
    what = "MSR-VTT 1k-A CSV"
    lines = read_lines(path, what)
    header = [cell.strip() for cell in lines[0][1].split(";")]
    if header != ["key", "vid_key", "video_id", "sentence"]:
        raise LrcnError(
            f"{what} {path} line {lines[0][0]} is not the 'key;vid_key;video_id;sentence' header; "
            "is it MSRVTT_JSFUSION_test.csv?"
        )
    captions: dict[str, list[str]] = defaultdict(list)
    for number, line in lines[1:]:
        cells = line.split(";", 3)  # the sentence may hold semicolons
        if len(cells) != 4:
            raise LrcnError(
                f"{what} {path} line {number} has {len(cells)} fields, not 4 "
                "(key;vid_key;video_id;sentence); fix that line."
            )
        caption = clean(cells[3])
        if caption:
            captions[cells[2].strip()].append(caption)
    return captions


@register_reader("msrvtt")
def read_msrvtt(
    root: str | os.PathLike,
    info_json: str | None = None,
    test_csv: str | None = None,
    video_dir: str | None = None,
    split_scheme: str | None = None,
    extension: str = ".mp4",
    check_files: bool = False,
) -> list[dict]:
    """MSR-VTT: videodatainfo.json files and/or the 1k-A test CSV (MSRVTT_JSFUSION_test.csv).

    ``split_scheme="official"`` (default when a json is present) keeps the json's
    train/validate/test (6,513/497/2,990). ``"1k-A"`` (default with only the CSV) makes the CSV's
    1,000 videos the test split (captions from the json where present, else the CSV's one sentence
    per video) and every other json video train. Videos are ``<video_id><extension>`` in
    ``video_dir`` (default: videos/all, videos, TrainValVideo + TestVideo, or ``root``).
    """
    root = Path(root)
    json_files, csv_path = _msrvtt_files(root, info_json, test_csv)
    scheme = _msrvtt_scheme(root, split_scheme, json_files, csv_path)
    splits, captions = _read_info_files(json_files)
    if scheme == "1k-A":
        test = _read_jsfusion(csv_path)
        splits = {video_id: "train" for video_id in splits}
        for video_id, texts in test.items():
            splits[video_id] = "test"
            captions.setdefault(video_id, texts)
    folders = _video_folders(root, video_dir)
    records, uncaptioned = [], 0
    for video_id, split in splits.items():
        if split not in SPLITS:
            raise LrcnError(f"MSR-VTT video {video_id} has an unknown split {split!r}.")
        if not captions.get(video_id):
            uncaptioned += 1
            continue
        path = folders[split] / f"{video_id}{extension}"
        records.append(
            {"id": video_id, "path": abspath(path), "split": split, "captions": captions[video_id]}
        )
    if uncaptioned:
        logger.info("MSR-VTT: %d videos have no captions and were left out", uncaptioned)
    return verify_files(records, check_files)


def _msrvtt_files(
    root: Path, info_json: str | None, test_csv: str | None
) -> tuple[list[Path], Path | None]:
    """The videodatainfo.json files and the 1k-A CSV, given or found under ``root``."""
    if info_json:
        json_files = [
            resolve_path(root, name, "MSR-VTT info file") for name in info_json.split(",")
        ]
    else:
        json_files = candidates(root, "*videodatainfo*.json")
    if test_csv:
        csv_path = resolve_path(root, test_csv, "MSR-VTT 1k-A CSV")
    else:
        csv_path = find_file(
            root, ["MSRVTT_JSFUSION_test.csv", "msrvtt_test*.csv"], "1k-A CSV", "test_csv", False
        )
    if not json_files and csv_path is None:
        raise LrcnError(
            f"no MSR-VTT videodatainfo.json or MSRVTT_JSFUSION_test.csv under {root}; pass --root "
            "the MSR-VTT folder or give the files with info_json=PATH / test_csv=PATH."
        )
    return json_files, csv_path


def _msrvtt_scheme(
    root: Path, split_scheme: str | None, json_files: list[Path], csv_path: Path | None
) -> str:
    """``official`` or ``1k-A``, checked against the files there are."""
    scheme = split_scheme or ("official" if json_files else "1k-A")
    if scheme not in ("official", "1k-A"):
        raise LrcnError(f"split_scheme={scheme!r} is not an option; use 'official' or '1k-A'.")
    if scheme == "1k-A" and csv_path is None:
        raise LrcnError(f"split_scheme='1k-A' needs MSRVTT_JSFUSION_test.csv under {root}.")
    if scheme == "official" and not json_files:
        raise LrcnError(f"split_scheme='official' needs videodatainfo.json under {root}.")
    return scheme


def _read_info_files(json_files: list[Path]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Video id -> split (``validate`` is val) and video id -> captions, from the json files."""
    splits: dict[str, str] = {}
    captions: dict[str, list[str]] = {}
    for path in json_files:
        what = "MSR-VTT info file"
        data = read_json(path, what)
        for video in json_list(data, "videos", path, what):
            split = str(field(video, "split", path, what))
            splits[field(video, "video_id", path, what)] = "val" if split == "validate" else split
        file_captions: dict[str, list[str]] = defaultdict(list)
        for sentence in json_list(data, "sentences", path, what):
            caption = clean(str(field(sentence, "caption", path, what)))
            if caption:
                file_captions[field(sentence, "video_id", path, what)].append(caption)
        # videodatainfo.json and train_val_videodatainfo.json overlap: first file wins.
        for video_id, texts in file_captions.items():
            captions.setdefault(video_id, texts)
    return splits, captions


def _video_folders(root: Path, video_dir: str | None) -> dict[str, Path]:
    """Split -> the folder holding its videos."""
    if video_dir:
        return {s: resolve_path(root, video_dir, "MSR-VTT video folder") for s in SPLITS}
    if (root / "TrainValVideo").is_dir():
        test_dir = find_dir(root, ["TestVideo"])
        return {"train": root / "TrainValVideo", "val": root / "TrainValVideo", "test": test_dir}
    folder = find_dir(root, ["videos/all", "videos", "MSRVTT/videos/all", "all"])
    return dict.fromkeys(SPLITS, folder)
