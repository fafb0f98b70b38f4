"""MSVD (YouTube2Text): per-clip caption files and/or the MSR Video Description Corpus CSV."""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from lrcn.data.media import VIDEO_EXTENSIONS
from lrcn.data.readers.files import (
    abspath,
    clean,
    csv_rows,
    find_file,
    read_lines,
    read_text,
    resolve_path,
    verify_files,
)
from lrcn.data.readers.registry import register_reader
from lrcn.errors import LrcnError

logger = logging.getLogger(__name__)

# Standard MSVD split (Venugopalan et al. 2015; Yao et al. 2015) by youtube_mapping.txt number.
MSVD_SPLIT_BOUNDS = (("train", 1, 1200), ("val", 1201, 1300), ("test", 1301, 1970))
_MSVD_CLIP = re.compile(r"(.+)_(\d+)_(\d+)")
_MSVD_VID = re.compile(r"vid(\d+)")


def _index_media(folders: Iterable[Path]) -> dict[str, Path]:
    """Name -> path of frame folders and video files directly inside ``folders``.

    One directory listing per folder, no stat per file; a frame folder wins over a video file of
    the same name (its frames are already decoded).
    """
    index: dict[str, Path] = {}
    for folder in folders:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    index[entry.name] = Path(entry.path)
                elif Path(entry.name).suffix.lower() in VIDEO_EXTENSIONS:
                    index.setdefault(Path(entry.name).stem, Path(entry.path))
    return index


def _read_msvd_mapping(path: Path) -> dict[str, int]:
    what = "MSVD mapping file"
    mapping = {}
    for number, line in read_lines(path, what):
        parts = line.split()
        vid = _MSVD_VID.fullmatch(parts[-1]) if len(parts) == 2 else None
        if vid is None:
            raise LrcnError(
                f"{what} {path} line {number} is not 'CLIP vidN' ({line!r:.80}); re-download "
                "youtube_mapping.txt."
            )
        mapping[parts[0]] = int(vid.group(1))
    return mapping


def _read_msvd_csv(path: Path, language: str) -> dict[str, list[str]]:
    """MSR Video Description Corpus.csv -> clip name (VideoID_Start_End) -> captions."""
    what = "MSVD captions CSV"
    reader = csv.DictReader(io.StringIO(read_text(path, what), newline=""))
    needed = {"VideoID", "Start", "End", "Language", "Description"}
    if not needed <= set(reader.fieldnames or ()):
        raise LrcnError(
            f"{what} {path} line 1 lacks the columns {', '.join(sorted(needed))}; is it "
            "'MSR Video Description Corpus.csv'?"
        )
    captions: dict[str, list[str]] = defaultdict(list)
    for row in csv_rows(reader, path, what):
        if (row["Language"] or "").strip() != language:
            continue
        caption = clean(row["Description"] or "")
        if caption:
            captions[f"{row['VideoID']}_{row['Start']}_{row['End']}"].append(caption)
    return captions


@register_reader("msvd")
def read_msvd(
    root: str | os.PathLike,
    mapping_file: str | None = None,
    captions_csv: str | None = None,
    media_dir: str | None = None,
    language: str = "English",
    check_files: bool = False,
) -> list[dict]:
    """MSVD (YouTube2Text): clips as videos or frame folders, split by their vid number.

    Captions come from per-clip ``<clip>.txt`` files (one caption a line) in ``root`` and/or the
    MSR Video Description Corpus CSV (``language`` rows only); a clip's .txt file wins over the
    CSV. Clips and their media may be named ``VIDEOID_START_END`` or ``vidN``; youtube_mapping.txt
    maps one to the other. Split: vid1-1200 train, 1201-1300 val, 1301-1970 test. Media are looked
    for in ``media_dir`` (default: ``root``, YouTubeClips/, frames/, videos/); clips with captions
    but no media are left out (logged). Ids are clip names where known.
    """
    root = Path(root)
    if mapping_file:
        mapping_path = resolve_path(root, mapping_file, "MSVD mapping file")
    else:
        mapping_path = find_file(
            root, ["youtube_mapping.txt"], "youtube_mapping.txt", "mapping_file", False
        )
    clip_to_vid = _read_msvd_mapping(mapping_path) if mapping_path else {}
    captions = _msvd_captions(root, clip_to_vid, captions_csv, language)
    if media_dir:
        folders = [resolve_path(root, media_dir, "MSVD media folder")]
    else:
        folders = [root] + [
            root / n for n in ("YouTubeClips", "frames", "videos") if (root / n).is_dir()
        ]
    media = _index_media(folders)
    records, no_media = [], 0
    for clip, texts in sorted(captions.items()):
        vid_name = f"vid{clip_to_vid[clip]}" if clip in clip_to_vid else clip
        vid_match = _MSVD_VID.fullmatch(vid_name)
        if vid_match is None:
            raise LrcnError(
                f"MSVD clip {clip} has no vid number, so its split is unknown; put "
                f"youtube_mapping.txt in {root} or give it with mapping_file=PATH."
            )
        path = media.get(clip) or media.get(vid_name)
        if path is None:
            no_media += 1
            continue
        split = _msvd_split(int(vid_match.group(1)), clip, vid_name, mapping_path)
        records.append({"id": clip, "path": abspath(path), "split": split, "captions": texts})
    if no_media:
        logger.warning("MSVD: %d clips with captions have no video or frame folder", no_media)
    if not records:
        raise LrcnError(
            f"none of the {len(captions)} MSVD clips with captions has a video or frame folder "
            f"in {', '.join(map(str, folders))}; point media_dir at them."
        )
    return verify_files(records, check_files)


def _msvd_captions(
    root: Path, clip_to_vid: dict[str, int], captions_csv: str | None, language: str
) -> dict[str, list[str]]:
    """Clip name -> captions: per-clip .txt files first, then the corpus CSV's ``language`` rows."""
    vid_to_clip = {f"vid{number}": clip for clip, number in clip_to_vid.items()}
    captions: dict[str, list[str]] = {}
    with os.scandir(root) as entries:
        caption_files = sorted(
            Path(entry.path)
            for entry in entries
            if entry.is_file()
            and entry.name.endswith(".txt")
            and (_MSVD_CLIP.fullmatch(entry.name[:-4]) or _MSVD_VID.fullmatch(entry.name[:-4]))
        )
    for path in caption_files:
        clip = vid_to_clip.get(path.stem, path.stem)
        captions[clip] = [clean(line) for _, line in read_lines(path, "MSVD captions file")]
    if captions_csv:
        csv_path = resolve_path(root, captions_csv, "MSVD captions CSV")
    else:
        csv_path = find_file(
            root,
            ["MSR Video Description Corpus.csv", "video_corpus.csv"],
            "MSVD captions CSV",
            "captions_csv",
            False,
        )
    if csv_path:
        for clip, texts in _read_msvd_csv(csv_path, language).items():
            captions.setdefault(clip, texts)
    if not captions:
        raise LrcnError(
            f"no MSVD captions under {root} (neither <clip>.txt files nor "
            "'MSR Video Description Corpus.csv'); pass --root the MSVD folder."
        )
    return captions


def _msvd_split(number: int, clip: str, vid_name: str, mapping_path: Path | None) -> str:
    """The standard split of vid ``number``."""
    split = next((s for s, low, high in MSVD_SPLIT_BOUNDS if low <= number <= high), None)
    if split is None:
        raise LrcnError(
            f"MSVD clip {clip} is {vid_name}, outside vid1-vid1970; check {mapping_path}."
        )
    return split
