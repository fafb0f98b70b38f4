"""COCO: the official captions_*.json files and Karpathy's dataset_*.json split files."""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from lrcn.data.readers.files import (
    IMAGE_DIRS,
    SPLITS,
    abspath,
    candidates,
    clean,
    field,
    find_dir,
    find_file,
    json_list,
    read_json,
    resolve_path,
    verify_files,
)
from lrcn.data.readers.registry import register_reader
from lrcn.errors import LrcnError

logger = logging.getLogger(__name__)


def karpathy_splits(path: Path) -> dict[str, str]:
    """Image file name -> split from a Karpathy dataset_*.json (restval counts as train)."""
    data = read_json(path, "Karpathy split file")
    splits = {}
    for image in json_list(data, "images", path, "Karpathy split file"):
        split = field(image, "split", path, "Karpathy split file")
        splits[field(image, "filename", path, "Karpathy split file")] = karpathy_split(split, path)
    return splits


def karpathy_split(split: str, path: Path) -> str:
    """A Karpathy split name as a manifest split (``restval`` is train)."""
    mapped = {"train": "train", "restval": "train", "val": "val", "test": "test"}.get(split)
    if mapped is None:
        raise LrcnError(f"Karpathy file {path} has an unknown split {split!r}; re-download it.")
    return mapped


@register_reader("karpathy")
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
        resolve_path(root, json_file, "Karpathy file")
        if json_file
        else find_file(root, ["dataset_*.json"], "Karpathy dataset_*.json", "json_file")
    )
    data = read_json(path, "Karpathy file")
    images = json_list(data, "images", path, "Karpathy file")
    if image_dir:
        base = resolve_path(root, image_dir, "image folder")
    elif images and "filepath" in images[0]:
        base = root
    else:
        base = find_dir(root, IMAGE_DIRS)
    records = []
    for image in images:
        filename = field(image, "filename", path, "Karpathy file")
        sentences = field(image, "sentences", path, "Karpathy file")
        captions = [clean(str(s.get("raw", ""))) for s in sentences if isinstance(s, dict)]
        captions = [c for c in captions if c]
        if not captions:
            logger.info("%s: %s has no captions and was left out", path, filename)
            continue
        record_id = str(image["cocoid"]) if "cocoid" in image else Path(filename).stem
        records.append(
            {
                "id": record_id,
                "path": abspath(base / image.get("filepath", "") / filename),
                "split": karpathy_split(field(image, "split", path, "Karpathy file"), path),
                "captions": captions,
            }
        )
    return verify_files(records, check_files)


@register_reader("coco")
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
        files = [resolve_path(root, annotations, "COCO annotation file")]
    else:
        files = candidates(root, "captions_*.json")
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
            base = resolve_path(root, image_dir, "image folder")
        else:
            base = root / (match.group(1) + match.group(2)) if match else root
        records += _read_coco_file(path, file_split, base)
    return verify_files(records, check_files)


def _read_coco_file(path: Path, split: str, image_dir: Path) -> list[dict]:
    what = "COCO annotation file"
    data = read_json(path, what)
    images = json_list(data, "images", path, what)
    captions: dict[Any, list[str]] = defaultdict(list)
    for annotation in json_list(data, "annotations", path, what):
        caption = clean(str(field(annotation, "caption", path, what)))
        if caption:
            captions[field(annotation, "image_id", path, what)].append(caption)
    records, uncaptioned = [], 0
    for image in images:
        image_id = field(image, "id", path, what)
        if not captions.get(image_id):
            uncaptioned += 1
            continue
        records.append(
            {
                "id": str(image_id),
                "path": abspath(image_dir / field(image, "file_name", path, what)),
                "split": split,
                "captions": captions[image_id],
            }
        )
    if uncaptioned:
        logger.info("%s: %d images have no captions and were left out", path, uncaptioned)
    return records
