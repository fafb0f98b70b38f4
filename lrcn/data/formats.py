"""Readers for datasets' native files, turning them into manifest records, and manifest I/O.

A reader returns one record per image or video:

- captioning: ``{"id", "path", "split", "captions": [str, ...]}``
- activity: ``{"id", "path", "split", "label": int (0-based), "label_name"}``

``path`` is absolute (an image, a video file or a folder of frames) and ``split`` is one of
``train``, ``val``, ``test``. Readers do not stat every image or video (datasets are large); pass
``check_files=True`` to have them verified. `prepare` runs a reader by name and writes the
manifest: ``<out_dir>/<split>.jsonl`` per split and, for activity datasets, ``labels.json``.

Each reader finds its files under ``root`` by their usual names (in ``root`` or one folder
below); every file can also be given explicitly, relative to ``root`` or absolute.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import logging
import os
import random
import re
import types
import typing
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from lrcn.data.media import VIDEO_EXTENSIONS
from lrcn.errors import LrcnError
from lrcn.io import atomic_path, write_json_atomic

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
LABELS_FILE = "labels.json"

# Flickr8k.token.txt holds captions for 2258277193_586949ec62.jpg (4 under that name, 1 under
# the misspelt "...jpg.1"), but the image is not in the Flickr8k_Dataset download (8,091 images)
# nor in any official split list; Kaggle's captions.txt drops it too.
FLICKR8K_ABSENT_IMAGES = frozenset({"2258277193_586949ec62.jpg"})
# Standard MSVD split (Venugopalan et al. 2015; Yao et al. 2015) by youtube_mapping.txt number.
MSVD_SPLIT_BOUNDS = (("train", 1, 1200), ("val", 1201, 1300), ("test", 1301, 1970))

_IMAGE_DIRS = ("Images", "images", "Flicker8k_Dataset", "Flickr8k_Dataset/Flicker8k_Dataset",
               "Flickr8k_Dataset", "flickr30k_images", "flickr30k-images",
               "flickr30k_images/flickr30k_images")  # fmt: skip
_NUMBERED_IMAGE = re.compile(r"(.+\.(?:jpe?g|png))\.\d+", re.IGNORECASE)
_MSVD_CLIP = re.compile(r"(.+)_(\d+)_(\d+)")
_MSVD_VID = re.compile(r"vid(\d+)")
_UCF_NAME = re.compile(r"v_(.+)_g(\d+)_c(\d+)")


# ----------------------------------------------------------------------------- file helpers


def _resolve(root: Path, given: str | os.PathLike, what: str) -> Path:
    """A path given by the user: absolute, relative to the working folder, or to ``root``."""
    path = Path(given)
    if not path.is_absolute() and not path.exists():
        path = root / path
    if not path.exists():
        raise LrcnError(f"{what} {given} was not found (also looked under {root}); fix the path.")
    return path


def _candidates(root: Path, pattern: str) -> list[Path]:
    """Files matching ``pattern`` in ``root``, or else in its immediate subfolders."""
    found = sorted(p for p in root.glob(pattern) if p.is_file())
    if found:
        return found
    return sorted(p for p in root.glob(f"*/{pattern}") if p.is_file())


def _find_file(
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
        found = [p for p in _candidates(root, pattern) if not (exclude and exclude in p.name)]
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


def _find_dir(root: Path, names: Iterable[str]) -> Path:
    """The first of ``names`` that is a folder under ``root``, else ``root`` itself."""
    for name in names:
        if (root / name).is_dir():
            return root / name
    return root


def _read_text(path: Path, what: str) -> str:
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


def _read_lines(path: Path, what: str) -> list[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers; CRLF and trailing blanks are stripped."""
    # split("\n"), not splitlines(): captions may hold U+2028 or form feeds that are not breaks.
    lines = _read_text(path, what).split("\n")
    return [(number, line.rstrip()) for number, line in enumerate(lines, 1) if line.strip()]


def _read_json(path: Path, what: str) -> Any:
    text = _read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise LrcnError(
            f"{what} {path} line {err.lineno} is not valid JSON ({err.msg}); re-download it."
        ) from None


def _json_list(data: Any, key: str, path: Path, what: str) -> list[dict]:
    items = data.get(key) if isinstance(data, dict) else None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise LrcnError(
            f"{what} {path} has no list of objects under {key!r}; is it the right file?"
        )
    return items


def _field(item: dict, key: str, path: Path, what: str) -> Any:
    if key not in item:
        raise LrcnError(f"{what} {path}: an entry lacks {key!r} ({item!r:.120}); re-download it.")
    return item[key]


def _clean(caption: str) -> str:
    """Collapse runs of whitespace (COCO captions carry newlines and trailing spaces)."""
    return " ".join(caption.split())


def _csv_rows(reader: Any, path: Path, what: str) -> Iterator[Any]:
    """Rows of a csv reader, turning the csv module's errors into one naming file and line."""
    try:
        yield from reader
    except csv.Error as err:
        raise LrcnError(
            f"{what} {path} line {reader.line_num} is not valid CSV ({err}); fix that line."
        ) from None


def _abspath(path: Path) -> str:
    return os.path.abspath(path)


def _check_files(records: list[dict], check_files: bool) -> list[dict]:
    if check_files:
        missing = [record["path"] for record in records if not os.path.exists(record["path"])]
        if missing:
            raise LrcnError(
                f"{len(missing)} of {len(records)} images/videos are missing, the first being "
                f"{missing[0]}; point the reader at the folder that holds them."
            )
    return records


def _split_of(name: str, splits: dict[str, str], unlisted: str) -> str | None:
    split = splits.get(name)
    if split is None and unlisted == "train":
        return "train"
    return split


def _check_unlisted(unlisted: str) -> None:
    if unlisted not in ("drop", "train"):
        raise LrcnError(f"unlisted={unlisted!r} is not an option; use 'drop' or 'train'.")


def _caption_records(
    captions: dict[str, list[str]],
    paths: dict[str, Path],
    splits: dict[str, str] | None,
    unlisted: str,
    source: Path,
) -> list[dict]:
    """Records for image names with captions; images in no split list are dropped or trained on."""
    records, dropped = [], 0
    for name, texts in captions.items():
        split = "train" if splits is None else _split_of(name, splits, unlisted)
        if split is None:
            dropped += 1
            continue
        record_id = Path(name).stem
        records.append(
            {"id": record_id, "path": _abspath(paths[name]), "split": split, "captions": texts}
        )
    if dropped:
        logger.info("%s: %d images are in no split list and were left out", source, dropped)
    return records


# ----------------------------------------------------------------------------- split lists


def _read_name_list(path: Path, what: str) -> list[str]:
    return [line.strip() for _, line in _read_lines(path, what)]


def _flickr8k_splits(root: Path, split_dir: str | None) -> dict[str, str] | None:
    """Image name -> split from Flickr_8k.{train,dev,test}Images.txt (dev is val), if present."""
    base = _resolve(root, split_dir, "split folder") if split_dir else root
    files = {}
    for split, tag in (("train", "train"), ("val", "dev"), ("test", "test")):
        pattern = f"Flickr_8k.{tag}Images.txt"
        files[split] = _find_file(base, [pattern], "Flickr8k split list", "split_dir", False)
    if not any(files.values()):
        if split_dir:
            raise LrcnError(f"no Flickr_8k.*Images.txt split lists in {base}; fix split_dir.")
        return None
    absent = [split for split, path in files.items() if path is None]
    if absent:
        raise LrcnError(
            f"Flickr8k split lists for {', '.join(absent)} are missing beside "
            f"{next(p for p in files.values() if p)}; put all three lists there."
        )
    splits: dict[str, str] = {}
    for split, path in files.items():
        for name in _read_name_list(path, "Flickr8k split list"):
            if splits.setdefault(name, split) != split:
                raise LrcnError(f"{name} is in two Flickr8k split lists ({path}); fix the lists.")
    return splits


def _karpathy_splits(path: Path) -> dict[str, str]:
    """Image file name -> split from a Karpathy dataset_*.json (restval counts as train)."""
    data = _read_json(path, "Karpathy split file")
    splits = {}
    for image in _json_list(data, "images", path, "Karpathy split file"):
        split = _field(image, "split", path, "Karpathy split file")
        splits[_field(image, "filename", path, "Karpathy split file")] = _karpathy_split(
            split, path
        )
    return splits


def _karpathy_split(split: str, path: Path) -> str:
    mapped = {"train": "train", "restval": "train", "val": "val", "test": "test"}.get(split)
    if mapped is None:
        raise LrcnError(f"Karpathy file {path} has an unknown split {split!r}; re-download it.")
    return mapped


# ----------------------------------------------------------------------------- image captioning


def read_karpathy(
    root: str | os.PathLike,
    json_file: str | None = None,
    image_dir: str | None = None,
    check_files: bool = False,
) -> list[dict]:
    """Karpathy's dataset_{coco,flickr8k,flickr30k}.json: ``images[].filepath?/filename/split/
    sentences[].raw``. ``restval`` counts as train. Image paths are ``image_dir/filepath/filename``
    (``image_dir`` defaults to ``root`` for COCO, the usual Flickr image folder otherwise); ids
    are COCO ids where given, else file name stems."""
    root = Path(root)
    path = (
        _resolve(root, json_file, "Karpathy file")
        if json_file
        else _find_file(root, ["dataset_*.json"], "Karpathy dataset_*.json", "json_file")
    )
    data = _read_json(path, "Karpathy file")
    images = _json_list(data, "images", path, "Karpathy file")
    if image_dir:
        base = _resolve(root, image_dir, "image folder")
    elif images and "filepath" in images[0]:
        base = root
    else:
        base = _find_dir(root, _IMAGE_DIRS)
    records = []
    for image in images:
        filename = _field(image, "filename", path, "Karpathy file")
        sentences = _field(image, "sentences", path, "Karpathy file")
        captions = [_clean(str(s.get("raw", ""))) for s in sentences if isinstance(s, dict)]
        captions = [c for c in captions if c]
        if not captions:
            logger.info("%s: %s has no captions and was left out", path, filename)
            continue
        record_id = str(image["cocoid"]) if "cocoid" in image else Path(filename).stem
        records.append(
            {
                "id": record_id,
                "path": _abspath(base / image.get("filepath", "") / filename),
                "split": _karpathy_split(_field(image, "split", path, "Karpathy file"), path),
                "captions": captions,
            }
        )
    return _check_files(records, check_files)


def read_coco(
    root: str | os.PathLike,
    annotations: str | None = None,
    split: str | None = None,
    image_dir: str | None = None,
    check_files: bool = False,
) -> list[dict]:
    """COCO captions_*.json (``images`` + ``annotations``); ids are COCO image ids.

    Without ``annotations``, every captions_*.json under ``root`` (or ``root/annotations``) is
    read; each file's split comes from its name (captions_val2014 -> val) unless ``split`` is
    given, and its images from ``root/<train2014|val2014|...>`` unless ``image_dir`` is given.
    Images without captions are left out.
    """
    root = Path(root)
    if split is not None and split not in SPLITS:
        raise LrcnError(f"split={split!r} is not a split; use one of {', '.join(SPLITS)}.")
    if annotations:
        files = [_resolve(root, annotations, "COCO annotation file")]
    else:
        files = _candidates(root, "captions_*.json")
        if not files:
            raise LrcnError(
                f"no COCO captions_*.json under {root} or its subfolders; pass --root the COCO "
                "folder or give the file with annotations=PATH."
            )
    records, seen = [], {}
    for path in files:
        match = re.match(r"captions_(train|val|test)(\d{4})", path.name)
        file_split = split or (match and match.group(1))
        if file_split is None:
            raise LrcnError(f"cannot tell the split of {path} from its name; pass split=NAME.")
        if file_split in seen:
            raise LrcnError(
                f"both {seen[file_split]} and {path} would be the {file_split} split; choose one "
                "with annotations=PATH split=NAME."
            )
        seen[file_split] = path
        if image_dir:
            base = _resolve(root, image_dir, "image folder")
        else:
            base = root / (match.group(1) + match.group(2)) if match else root
        records += _read_coco_file(path, file_split, base)
    return _check_files(records, check_files)


def _read_coco_file(path: Path, split: str, image_dir: Path) -> list[dict]:
    what = "COCO annotation file"
    data = _read_json(path, what)
    images = _json_list(data, "images", path, what)
    captions: dict[Any, list[str]] = defaultdict(list)
    for annotation in _json_list(data, "annotations", path, what):
        caption = _clean(str(_field(annotation, "caption", path, what)))
        if caption:
            captions[_field(annotation, "image_id", path, what)].append(caption)
    records, uncaptioned = [], 0
    for image in images:
        image_id = _field(image, "id", path, what)
        if not captions.get(image_id):
            uncaptioned += 1
            continue
        records.append(
            {
                "id": str(image_id),
                "path": _abspath(image_dir / _field(image, "file_name", path, what)),
                "split": split,
                "captions": captions[image_id],
            }
        )
    if uncaptioned:
        logger.info("%s: %d images have no captions and were left out", path, uncaptioned)
    return records


def _read_token_file(path: Path, what: str) -> dict[str, list[str]]:
    """``IMG.jpg#N<TAB>caption`` lines -> image name -> captions (in file order)."""
    captions: dict[str, list[str]] = defaultdict(list)
    for number, line in _read_lines(path, what):
        key, tab, caption = line.partition("\t")
        if not tab:
            raise LrcnError(
                f"{what} {path} line {number} has no tab between the image#number and the "
                "caption; fix that line (format: IMAGE.jpg#0<TAB>caption)."
            )
        name = key.strip().rpartition("#")[0] or key.strip()
        # Flickr8k has one caption under "X.jpg.1": it belongs to X.jpg.
        numbered = _NUMBERED_IMAGE.fullmatch(name)
        if numbered:
            name = numbered.group(1)
        caption = _clean(caption)
        if caption:
            captions[name].append(caption)
    return captions


def read_flickr8k(
    root: str | os.PathLike,
    token_file: str | None = None,
    split_dir: str | None = None,
    image_dir: str | None = None,
    unlisted: str = "drop",
    check_files: bool = False,
) -> list[dict]:
    """Flickr8k.token.txt with the official Flickr_8k.{train,dev,test}Images.txt (dev -> val).

    Without split lists every image is train. Images in no split list (91 of the 8,091) are
    dropped, or trained on with ``unlisted="train"``. The one image the token file holds but the
    download lacks (`FLICKR8K_ABSENT_IMAGES`) is left out. Ids are file name stems.
    """
    root = Path(root)
    _check_unlisted(unlisted)
    path = (
        _resolve(root, token_file, "Flickr8k token file")
        if token_file
        else _find_file(root, ["Flickr8k.token.txt"], "Flickr8k.token.txt", "token_file")
    )
    captions = _read_token_file(path, "Flickr8k token file")
    for name in FLICKR8K_ABSENT_IMAGES & captions.keys():
        del captions[name]
    base = _resolve(root, image_dir, "image folder") if image_dir else _find_dir(root, _IMAGE_DIRS)
    paths = {name: base / name for name in captions}
    splits = _flickr8k_splits(root, split_dir)
    records = _caption_records(captions, paths, splits, unlisted, path)
    return _check_files(records, check_files)


def read_flickr30k(
    root: str | os.PathLike,
    token_file: str | None = None,
    karpathy_json: str | None = None,
    image_dir: str | None = None,
    unlisted: str = "drop",
    check_files: bool = False,
) -> list[dict]:
    """Flickr30k's results_20130124.token (``IMG.jpg#N<TAB>caption``).

    The split comes from Karpathy's dataset_flickr30k.json when given or found under ``root``
    (images not in it are dropped, or trained on with ``unlisted="train"``); otherwise every
    image is train. Ids are file name stems.
    """
    root = Path(root)
    _check_unlisted(unlisted)
    path = (
        _resolve(root, token_file, "Flickr30k token file")
        if token_file
        else _find_file(
            root,
            ["results_20130124.token", "results.token", "*.token"],
            "Flickr30k token file",
            "token_file",
            exclude="lemma",
        )
    )
    captions = _read_token_file(path, "Flickr30k token file")
    if karpathy_json:
        split_file = _resolve(root, karpathy_json, "Karpathy split file")
    else:
        split_file = _find_file(
            root, ["dataset_flickr30k.json"], "Karpathy split file", "karpathy_json", False
        )
    splits = _karpathy_splits(split_file) if split_file else None
    base = _resolve(root, image_dir, "image folder") if image_dir else _find_dir(root, _IMAGE_DIRS)
    paths = {name: base / name for name in captions}
    records = _caption_records(captions, paths, splits, unlisted, path)
    return _check_files(records, check_files)


def read_kaggle_captions(
    root: str | os.PathLike,
    captions_file: str | None = None,
    split_dir: str | None = None,
    image_dir: str | None = None,
    unlisted: str = "drop",
    check_files: bool = False,
) -> list[dict]:
    """Kaggle's Flickr8k captions.txt: CSV with an ``image,caption`` header.

    Captions may hold commas and quotes (read with the csv module; an unquoted comma inside a
    caption is kept). The split comes from the official Flickr_8k.*Images.txt lists when they are
    given or found under ``root``; otherwise every image is train.
    """
    root = Path(root)
    _check_unlisted(unlisted)
    what = "captions CSV"
    path = (
        _resolve(root, captions_file, what)
        if captions_file
        else _find_file(
            root, ["captions.txt", "captions.csv"], "Kaggle captions.txt", "captions_file"
        )
    )
    reader = csv.reader(io.StringIO(_read_text(path, what), newline=""))
    rows = _csv_rows(reader, path, what)
    header = [cell.strip().lower() for cell in next(rows)]
    if header[:2] != ["image", "caption"]:
        raise LrcnError(
            f"{what} {path} line 1 is {','.join(header)!r}, not the 'image,caption' header; "
            "is it Kaggle's Flickr8k captions.txt?"
        )
    captions: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < 2:
            raise LrcnError(
                f"{what} {path} line {reader.line_num} has no comma between image and caption; "
                "fix that line (format: IMAGE.jpg,caption)."
            )
        caption = _clean(",".join(row[1:]))
        if caption:
            captions[row[0].strip()].append(caption)
    base = _resolve(root, image_dir, "image folder") if image_dir else _find_dir(root, _IMAGE_DIRS)
    paths = {name: base / name for name in captions}
    splits = _flickr8k_splits(root, split_dir)
    records = _caption_records(captions, paths, splits, unlisted, path)
    return _check_files(records, check_files)


# ----------------------------------------------------------------------------- video captioning


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
    for number, line in _read_lines(path, what):
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
    reader = csv.DictReader(io.StringIO(_read_text(path, what), newline=""))
    needed = {"VideoID", "Start", "End", "Language", "Description"}
    if not needed <= set(reader.fieldnames or ()):
        raise LrcnError(
            f"{what} {path} line 1 lacks the columns {', '.join(sorted(needed))}; is it "
            "'MSR Video Description Corpus.csv'?"
        )
    captions: dict[str, list[str]] = defaultdict(list)
    for row in _csv_rows(reader, path, what):
        if (row["Language"] or "").strip() != language:
            continue
        caption = _clean(row["Description"] or "")
        if caption:
            captions[f"{row['VideoID']}_{row['Start']}_{row['End']}"].append(caption)
    return captions


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
        mapping_path = _resolve(root, mapping_file, "MSVD mapping file")
    else:
        mapping_path = _find_file(
            root, ["youtube_mapping.txt"], "youtube_mapping.txt", "mapping_file", False
        )
    clip_to_vid = _read_msvd_mapping(mapping_path) if mapping_path else {}
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
        captions[clip] = [_clean(line) for _, line in _read_lines(path, "MSVD captions file")]
    if captions_csv:
        csv_path = _resolve(root, captions_csv, "MSVD captions CSV")
    else:
        csv_path = _find_file(
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

    if media_dir:
        folders = [_resolve(root, media_dir, "MSVD media folder")]
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
        number = int(vid_match.group(1))
        split = next((s for s, low, high in MSVD_SPLIT_BOUNDS if low <= number <= high), None)
        if split is None:
            raise LrcnError(
                f"MSVD clip {clip} is {vid_name}, outside vid1-vid1970; check {mapping_path}."
            )
        records.append({"id": clip, "path": _abspath(path), "split": split, "captions": texts})
    if no_media:
        logger.warning("MSVD: %d clips with captions have no video or frame folder", no_media)
    if not records:
        raise LrcnError(
            f"none of the {len(captions)} MSVD clips with captions has a video or frame folder "
            f"in {', '.join(map(str, folders))}; point media_dir at them."
        )
    return _check_files(records, check_files)


def _read_jsfusion(path: Path) -> dict[str, list[str]]:
    """MSR-VTT 1k-A test CSV (``key;vid_key;video_id;sentence``) -> video id -> captions."""
    what = "MSR-VTT 1k-A CSV"
    lines = _read_lines(path, what)
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
        caption = _clean(cells[3])
        if caption:
            captions[cells[2].strip()].append(caption)
    return captions


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
    if info_json:
        json_files = [_resolve(root, name, "MSR-VTT info file") for name in info_json.split(",")]
    else:
        json_files = _candidates(root, "*videodatainfo*.json")
    if test_csv:
        csv_path = _resolve(root, test_csv, "MSR-VTT 1k-A CSV")
    else:
        csv_path = _find_file(
            root, ["MSRVTT_JSFUSION_test.csv", "msrvtt_test*.csv"], "1k-A CSV", "test_csv", False
        )
    if not json_files and csv_path is None:
        raise LrcnError(
            f"no MSR-VTT videodatainfo.json or MSRVTT_JSFUSION_test.csv under {root}; pass --root "
            "the MSR-VTT folder or give the files with info_json=PATH / test_csv=PATH."
        )
    scheme = split_scheme or ("official" if json_files else "1k-A")
    if scheme not in ("official", "1k-A"):
        raise LrcnError(f"split_scheme={scheme!r} is not an option; use 'official' or '1k-A'.")
    if scheme == "1k-A" and csv_path is None:
        raise LrcnError(f"split_scheme='1k-A' needs MSRVTT_JSFUSION_test.csv under {root}.")
    if scheme == "official" and not json_files:
        raise LrcnError(f"split_scheme='official' needs videodatainfo.json under {root}.")

    splits: dict[str, str] = {}
    captions: dict[str, list[str]] = {}
    for path in json_files:
        what = "MSR-VTT info file"
        data = _read_json(path, what)
        for video in _json_list(data, "videos", path, what):
            split = str(_field(video, "split", path, what))
            splits[_field(video, "video_id", path, what)] = "val" if split == "validate" else split
        file_captions: dict[str, list[str]] = defaultdict(list)
        for sentence in _json_list(data, "sentences", path, what):
            caption = _clean(str(_field(sentence, "caption", path, what)))
            if caption:
                file_captions[_field(sentence, "video_id", path, what)].append(caption)
        # videodatainfo.json and train_val_videodatainfo.json overlap: first file wins.
        for video_id, texts in file_captions.items():
            captions.setdefault(video_id, texts)
    if scheme == "1k-A":
        test = _read_jsfusion(csv_path)
        splits = {video_id: "train" for video_id in splits}
        for video_id, texts in test.items():
            splits[video_id] = "test"
            captions.setdefault(video_id, texts)

    if video_dir:
        folders = {s: _resolve(root, video_dir, "MSR-VTT video folder") for s in SPLITS}
    elif (root / "TrainValVideo").is_dir():
        test_dir = _find_dir(root, ["TestVideo"])
        folders = {"train": root / "TrainValVideo", "val": root / "TrainValVideo", "test": test_dir}
    else:
        folder = _find_dir(root, ["videos/all", "videos", "MSRVTT/videos/all", "all"])
        folders = dict.fromkeys(SPLITS, folder)
    records, uncaptioned = [], 0
    for video_id, split in splits.items():
        if split not in SPLITS:
            raise LrcnError(f"MSR-VTT video {video_id} has an unknown split {split!r}.")
        if not captions.get(video_id):
            uncaptioned += 1
            continue
        path = folders[split] / f"{video_id}{extension}"
        records.append(
            {"id": video_id, "path": _abspath(path), "split": split, "captions": captions[video_id]}
        )
    if uncaptioned:
        logger.info("MSR-VTT: %d videos have no captions and were left out", uncaptioned)
    return _check_files(records, check_files)


# ----------------------------------------------------------------------------- activity


def read_ucf101_classes(path: str | os.PathLike) -> list[str]:
    """classInd.txt (``1 ApplyEyeMakeup``, CRLF as shipped) -> class names, index = label."""
    path = Path(path)
    what = "UCF101 class index"
    numbered = {}
    for number, line in _read_lines(path, what):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise LrcnError(f"{what} {path} line {number} is not 'NUMBER ClassName'; fix it.")
        numbered[int(parts[0])] = parts[1]
    if sorted(numbered) != list(range(1, len(numbered) + 1)):
        raise LrcnError(f"{what} {path} does not number its classes 1..{len(numbered)}; fix it.")
    return [numbered[i] for i in range(1, len(numbered) + 1)]


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
    base = _resolve(root, list_dir, "UCF101 list folder") if list_dir else root
    option = "list_dir"
    class_file = _find_file(base, ["classInd.txt"], "UCF101 classInd.txt", option)
    train_file = _find_file(base, [f"trainlist0{split}.txt"], "UCF101 train list", option)
    test_file = _find_file(base, [f"testlist0{split}.txt"], "UCF101 test list", option)
    classes = read_ucf101_classes(class_file)
    labels = {name: index for index, name in enumerate(classes)}
    if video_dir:
        videos = _resolve(root, video_dir, "UCF101 video folder")
    else:
        videos = _find_dir(root, ["UCF-101", "UCF101", "videos"])
    nested = any((videos / name).is_dir() for name in classes)

    records = []
    for path, split_name in ((train_file, "train"), (test_file, "test")):
        for number, line in _read_lines(path, "UCF101 list"):
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
                    "path": _abspath(video),
                    "split": split_name,
                    "label": label,
                    "label_name": class_name,
                }
            )
    if val_fraction > 0:
        _hold_out_groups(records, val_fraction, seed)
    return _check_files(records, check_files)


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


# ----------------------------------------------------------------------------- manifests


def write_manifest(
    records: Sequence[dict], out_dir: str | os.PathLike, labels: list[str] | None = None
) -> dict[str, int]:
    """Write ``<out_dir>/{train,val,test}.jsonl`` (every split, empty ones too, so no stale file
    survives) and, for activity records, ``labels.json``. Returns the count per split.

    Args:
        records: manifest records (see the module docstring).
        out_dir: folder to write into (created).
        labels: class names by label; derived from the records' ``label_name`` when omitted.
    """
    out_dir = Path(out_dir)
    by_split: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for number, record in enumerate(records):
        _validate_record(record, f"record {number} ({str(record)[:80]})")
        by_split[record["split"]].append(record)
    activity = any("label" in record for record in records)
    if activity and not all("label" in record for record in records):
        raise LrcnError("the records mix captioning and activity records; write them apart.")
    if activity:
        labels = labels if labels is not None else _labels_from_records(records)
        for record in records:
            if not 0 <= record["label"] < len(labels):
                raise LrcnError(
                    f"record {record['id']!r} has label {record['label']} but there are "
                    f"{len(labels)} classes; fix the reader's labels."
                )
    for split, split_records in by_split.items():
        with atomic_path(out_dir / f"{split}.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as f:
            for record in split_records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
    if activity:
        write_json_atomic(out_dir / LABELS_FILE, list(labels))
    return {split: len(split_records) for split, split_records in by_split.items()}


def _labels_from_records(records: Sequence[dict]) -> list[str]:
    names: dict[int, str] = {}
    for record in records:
        if names.setdefault(record["label"], record["label_name"]) != record["label_name"]:
            raise LrcnError(
                f"label {record['label']} is both {names[record['label']]!r} and "
                f"{record['label_name']!r}; fix the reader."
            )
    if sorted(names) != list(range(len(names))):
        raise LrcnError(
            "the records' labels are not 0..N-1 without gaps; pass the class names as labels=."
        )
    return [names[i] for i in range(len(names))]


def _validate_record(record: Any, where: str) -> None:
    """Raise LrcnError (naming ``where``) unless ``record`` is a valid manifest record."""
    problem = None
    if not isinstance(record, dict):
        problem = "is not a JSON object"
    elif not all(isinstance(record.get(key), str) for key in ("id", "path", "split")):
        problem = "lacks a string id, path or split"
    elif record["split"] not in SPLITS:
        problem = f"has split {record['split']!r}, not one of {', '.join(SPLITS)}"
    elif "captions" in record:
        captions = record["captions"]
        if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            problem = "has captions that are not a list of strings"
    elif "label" in record:
        if not isinstance(record["label"], int) or isinstance(record["label"], bool):
            problem = "has a label that is not an integer"
        elif not isinstance(record.get("label_name"), str):
            problem = "lacks a label_name"
    else:
        problem = "has neither captions nor label"
    if problem:
        raise LrcnError(f"{where} {problem}; re-run `lrcn prepare` to rebuild the manifest.")


def read_manifest(out_dir_or_file: str | os.PathLike, split: str | None = None) -> list[dict]:
    """Read one split of a manifest: ``<dir>/<split>.jsonl``, or a .jsonl file given directly.

    Raises:
        LrcnError: the file is missing, or a line is not a valid record (naming file and line).
    """
    path = Path(out_dir_or_file)
    if path.is_dir() or path.suffix != ".jsonl":
        if split is None:
            raise LrcnError(f"{path} is a manifest folder; say which split to read.")
        path = path / f"{split}.jsonl"
    if not path.is_file():
        raise LrcnError(
            f"manifest {path} does not exist; run `lrcn prepare DATASET --root DIR --out "
            f"{path.parent}` first."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise LrcnError(f"manifest {path} is not UTF-8; re-run `lrcn prepare`.") from None
    records = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        where = f"manifest {path} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise LrcnError(
                f"{where} is not valid JSON ({err.msg}); re-run `lrcn prepare`."
            ) from None
        _validate_record(record, where)
        records.append(record)
    return records


def read_labels(out_dir: str | os.PathLike) -> list[str]:
    """Class names by label from ``<out_dir>/labels.json`` (activity manifests)."""
    path = Path(out_dir) / LABELS_FILE
    if not path.is_file():
        raise LrcnError(f"{path} does not exist; run `lrcn prepare` for an activity dataset.")
    labels = _read_json(path, "labels file")
    if not isinstance(labels, list) or not all(isinstance(name, str) for name in labels):
        raise LrcnError(f"labels file {path} is not a JSON list of names; re-run `lrcn prepare`.")
    return labels


# ----------------------------------------------------------------------------- registry


READERS: dict[str, Callable[..., list[dict]]] = {
    "karpathy": read_karpathy,
    "coco": read_coco,
    "flickr8k": read_flickr8k,
    "flickr30k": read_flickr30k,
    "kaggle_captions": read_kaggle_captions,
    "msvd": read_msvd,
    "msrvtt": read_msrvtt,
    "ucf101": read_ucf101,
}


def prepare(
    dataset: str, root: str | os.PathLike, out_dir: str | os.PathLike, **options: Any
) -> dict[str, int]:
    """Read a dataset's native files with the reader named ``dataset`` and write its manifest.

    Options are the reader's keyword arguments; strings (from the command line) are converted
    to the reader's int/float/bool parameters.

    Returns:
        the number of records per split.
    """
    reader = READERS.get(dataset)
    if reader is None:
        raise LrcnError(f"unknown dataset {dataset!r}; choose one of {', '.join(sorted(READERS))}.")
    options = _coerce_options(reader, dataset, options)
    records = reader(root, **options)
    if not records:
        raise LrcnError(f"the {dataset} reader found no records under {root}; check --root.")
    counts = write_manifest(records, out_dir)
    logger.info("wrote %s manifest to %s: %s", dataset, out_dir, counts)
    return counts


def _coerce_options(reader: Callable, dataset: str, options: dict[str, Any]) -> dict[str, Any]:
    parameters = inspect.signature(reader).parameters
    hints = typing.get_type_hints(reader)
    valid = [name for name in parameters if name != "root"]
    coerced = {}
    for name, value in options.items():
        if name not in valid:
            raise LrcnError(f"{dataset} has no option {name!r}; valid options: {', '.join(valid)}.")
        coerced[name] = _coerce(value, hints.get(name), name) if isinstance(value, str) else value
    return coerced


def _coerce(value: str, hint: Any, name: str) -> Any:
    """Convert a command-line string to the parameter's int, float or bool type."""
    kinds = set(typing.get_args(hint)) if isinstance(hint, types.UnionType) else {hint}
    if str in kinds:
        return value
    try:
        if bool in kinds:
            lowered = value.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return lowered in ("true", "1", "yes")
        if int in kinds:
            return int(value)
        if float in kinds:
            return float(value)
    except ValueError:
        raise LrcnError(f"option {name}={value!r} is not a valid {hint}; fix its value.") from None
    return value
