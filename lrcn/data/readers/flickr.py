"""Flickr8k and Flickr30k token files and Kaggle's Flickr8k captions.txt, sharing their code."""

from __future__ import annotations

import csv
import io
import os
import re
from collections import defaultdict
from pathlib import Path

from lrcn.data.readers.coco import karpathy_splits
from lrcn.data.readers.files import (
    IMAGE_DIRS,
    caption_records,
    check_unlisted,
    clean,
    csv_rows,
    find_dir,
    find_file,
    read_lines,
    read_text,
    resolve_path,
    verify_files,
)
from lrcn.data.readers.registry import register_reader
from lrcn.errors import LrcnError

# Flickr8k.token.txt holds captions for 2258277193_586949ec62.jpg (4 under that name, 1 under
# the misspelt "...jpg.1"), but the image is not in the Flickr8k_Dataset download (8,091 images)
# nor in any official split list; Kaggle's captions.txt drops it too.
FLICKR8K_ABSENT_IMAGES = frozenset({"2258277193_586949ec62.jpg"})
_NUMBERED_IMAGE = re.compile(r"(.+\.(?:jpe?g|png))\.\d+", re.IGNORECASE)


def _read_name_list(path: Path, what: str) -> list[str]:
    return [line.strip() for _, line in read_lines(path, what)]


def _flickr8k_splits(root: Path, split_dir: str | None) -> dict[str, str] | None:
    """Image name -> split from Flickr_8k.{train,dev,test}Images.txt (dev is val), if present."""
    base = resolve_path(root, split_dir, "split folder") if split_dir else root
    files = {}
    for split, tag in (("train", "train"), ("val", "dev"), ("test", "test")):
        pattern = f"Flickr_8k.{tag}Images.txt"
        files[split] = find_file(base, [pattern], "Flickr8k split list", "split_dir", False)
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


def _read_token_file(path: Path, what: str) -> dict[str, list[str]]:
    """``IMG.jpg#N<TAB>caption`` lines -> image name -> captions (in file order)."""
    captions: dict[str, list[str]] = defaultdict(list)
    for number, line in read_lines(path, what):
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
        caption = clean(caption)
        if caption:
            captions[name].append(caption)
    return captions


@register_reader("flickr8k")
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
    check_unlisted(unlisted)
    path = (
        resolve_path(root, token_file, "Flickr8k token file")
        if token_file
        else find_file(root, ["Flickr8k.token.txt"], "Flickr8k.token.txt", "token_file")
    )
    captions = _read_token_file(path, "Flickr8k token file")
    for name in FLICKR8K_ABSENT_IMAGES & captions.keys():
        del captions[name]
    base = (
        resolve_path(root, image_dir, "image folder") if image_dir else find_dir(root, IMAGE_DIRS)
    )
    paths = {name: base / name for name in captions}
    splits = _flickr8k_splits(root, split_dir)
    records = caption_records(captions, paths, splits, unlisted, path)
    return verify_files(records, check_files)


@register_reader("flickr30k")
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
    check_unlisted(unlisted)
    path = (
        resolve_path(root, token_file, "Flickr30k token file")
        if token_file
        else find_file(
            root,
            ["results_20130124.token", "results.token", "*.token"],
            "Flickr30k token file",
            "token_file",
            exclude="lemma",
        )
    )
    captions = _read_token_file(path, "Flickr30k token file")
    if karpathy_json:
        split_file = resolve_path(root, karpathy_json, "Karpathy split file")
    else:
        split_file = find_file(
            root, ["dataset_flickr30k.json"], "Karpathy split file", "karpathy_json", False
        )
    splits = karpathy_splits(split_file) if split_file else None
    base = (
        resolve_path(root, image_dir, "image folder") if image_dir else find_dir(root, IMAGE_DIRS)
    )
    paths = {name: base / name for name in captions}
    records = caption_records(captions, paths, splits, unlisted, path)
    return verify_files(records, check_files)


@register_reader("kaggle_captions")
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
    check_unlisted(unlisted)
    what = "captions CSV"
    path = (
        resolve_path(root, captions_file, what)
        if captions_file
        else find_file(
            root, ["captions.txt", "captions.csv"], "Kaggle captions.txt", "captions_file"
        )
    )
    reader = csv.reader(io.StringIO(read_text(path, what), newline=""))
    rows = csv_rows(reader, path, what)
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
        caption = clean(",".join(row[1:]))
        if caption:
            captions[row[0].strip()].append(caption)
    base = (
        resolve_path(root, image_dir, "image folder") if image_dir else find_dir(root, IMAGE_DIRS)
    )
    paths = {name: base / name for name in captions}
    splits = _flickr8k_splits(root, split_dir)
    records = caption_records(captions, paths, splits, unlisted, path)
    return verify_files(records, check_files)
