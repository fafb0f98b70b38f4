"""Manifests: one JSON record a line per split, written by `prepare` from a registered reader."""

from __future__ import annotations

import inspect
import json
import logging
import os
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lrcn.config import DataConfig, coerce_value, parse_override
from lrcn.data.readers import get_reader
from lrcn.data.readers.files import SPLITS, read_json
from lrcn.errors import LrcnError
from lrcn.io import atomic_path, write_json_atomic, write_text_atomic

logger = logging.getLogger(__name__)

LABELS_FILE = "labels.json"
CHECKS_FILE = "checks.txt"
# `prepare`'s option and `data.max_captions_per_item`'s default (see DataConfig for the why)
MAX_CAPTIONS_PER_ITEM = DataConfig.max_captions_per_item


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
        validate_record(record, f"record {number} ({str(record)[:80]})")
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


def validate_record(record: Any, where: str) -> None:
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


def read_manifest(
    out_dir_or_file: str | os.PathLike,
    split: str | None = None,
    max_captions: int | None = MAX_CAPTIONS_PER_ITEM,
) -> list[dict]:
    """Read one split of a manifest: ``<dir>/<split>.jsonl``, or a .jsonl file given directly.

    Args:
        out_dir_or_file: the manifest folder, or one split's .jsonl file.
        split: which split to read from a folder.
        max_captions: an item with more captions is refused (``data.max_captions_per_item``);
            None: no limit.

    Raises:
        LrcnError: the file is missing, a line is not a valid record, or an item has more than
            ``max_captions`` captions (naming file and line).
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
        validate_record(record, where)
        captions = len(record.get("captions", ()))
        if max_captions is not None and captions > max_captions:
            raise LrcnError(
                f"{where}: item {record['id']!r} has {captions} captions, more than "
                f"data.max_captions_per_item={max_captions}; if they are all meant, raise it "
                f"(data.max_captions_per_item={captions}), otherwise remove the extra captions "
                "and re-run `lrcn prepare`."
            )
        records.append(record)
    return records


def read_labels(out_dir: str | os.PathLike) -> list[str]:
    """Class names by label from ``<out_dir>/labels.json`` (activity manifests)."""
    path = Path(out_dir) / LABELS_FILE
    if not path.is_file():
        raise LrcnError(f"{path} does not exist; run `lrcn prepare` for an activity dataset.")
    labels = read_json(path, "labels file")
    if not isinstance(labels, list) or not all(isinstance(name, str) for name in labels):
        raise LrcnError(f"labels file {path} is not a JSON list of names; re-run `lrcn prepare`.")
    return labels


def prepare(
    dataset: str, root: str | os.PathLike, out_dir: str | os.PathLike, **options: Any
) -> dict[str, int]:
    """Read a dataset's native files with the reader named ``dataset`` and write its manifest.

    The reader is looked up in the registry (`lrcn.data.readers.register_reader`). Options are
    the reader's keyword arguments; strings (from the command line) are converted
    to the reader's int/float/bool parameters. One more option is `prepare`'s own:
    ``max_captions_per_item`` (default `MAX_CAPTIONS_PER_ITEM`), past which an item is refused.

    Returns:
        the number of records per split.
    """
    return prepare_with_checks(dataset, root, out_dir, **options)[0]


def prepare_with_checks(
    dataset: str, root: str | os.PathLike, out_dir: str | os.PathLike, **options: Any
) -> tuple[dict[str, int], str | None]:
    """`prepare`, also returning the reader's check table (None for readers without a check pass).

    The table, followed by every file each check touched, is saved as ``<out_dir>/checks.txt``.

    Raises:
        LrcnError: as the reader; an item with more than ``max_captions_per_item`` captions is
            named, and nothing is written.
    """
    reader = get_reader(dataset)
    limit = _caption_limit(dataset, options.pop("max_captions_per_item", MAX_CAPTIONS_PER_ITEM))
    options = coerce_options(reader, dataset, options)
    records = reader(root, **options)
    if not records:
        raise LrcnError(f"the {dataset} reader found no records under {root}; check --root.")
    _check_caption_counts(records, dataset, root, limit)
    counts = write_manifest(records, out_dir)
    logger.info("wrote %s manifest to %s: %s", dataset, out_dir, counts)
    checks = getattr(records, "checks", None)  # lrcn.data.readers.checks.Records
    checks_file = Path(out_dir) / CHECKS_FILE
    if checks is None:
        checks_file.unlink(missing_ok=True)  # a stale table would describe other data
        return counts, None
    write_text_atomic(checks_file, checks.details())
    return counts, checks.table()


def _caption_limit(dataset: str, value: Any) -> int:
    """``max_captions_per_item`` as a count of at least one (a string from a library call too)."""
    if isinstance(value, str):
        value = parse_override(f"max_captions_per_item={value}")[1]
    value = coerce_value(value, int, "max_captions_per_item", f"{dataset} option")
    if value < 1:
        raise LrcnError(
            f"{dataset} option max_captions_per_item is {value}; pass a count of at least 1."
        )
    return value


def _check_caption_counts(records: Sequence[dict], dataset: str, root: Any, limit: int) -> None:
    """Refuse the first record with more than ``limit`` captions, before anything is written."""
    for record in records:
        captions = record.get("captions") if isinstance(record, dict) else None
        if isinstance(captions, list) and len(captions) > limit:
            raise LrcnError(
                f"the {dataset} reader gives item {record.get('id')!r} (under {root}) "
                f"{len(captions)} captions, more than max_captions_per_item={limit}; if they are "
                f"all meant, pass max_captions_per_item={len(captions)} to `lrcn prepare` (and "
                f"data.max_captions_per_item={len(captions)} to train on the manifest), otherwise "
                "fix the captions file (is one column constant?)."
            )


def coerce_options(reader: Callable, dataset: str, options: dict[str, Any]) -> dict[str, Any]:
    """Check ``options`` against the reader's parameters and their type hints (the config's coercer).

    Raises:
        LrcnError: an option the reader does not take, or a value that does not convert.
    """
    parameters = inspect.signature(reader).parameters
    hints = typing.get_type_hints(reader)
    valid = [name for name in parameters if name != "root"]
    coerced = {}
    for name, value in options.items():
        if name not in valid:
            raise LrcnError(f"{dataset} has no option {name!r}; valid options: {', '.join(valid)}.")
        if isinstance(value, str):  # from a library call; the CLI parses YAML scalars already
            value = parse_override(f"{name}={value}")[1]
        hint = hints.get(name)
        coerced[name] = (
            value if hint is None else coerce_value(value, hint, name, f"{dataset} option")
        )
    return coerced
