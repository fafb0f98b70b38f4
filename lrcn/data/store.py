"""Feature store: a frozen encoder's features, written once and read back row by row.

This module reads and writes stores and knows nothing of configs; `lrcn.extract` fills them.

A store is a folder (``data.features``) holding, per split:

- ``<split>.npy``: the rows, float16 or float32 (``data.features_dtype``): (N, D) for images,
  (N, T, D) for videos (per-frame CNN features; the temporal encoder is trained, so it is not
  applied here), or (N, N_cells, D) grids for a decoder that attends over the image (its header
  says ``grid: true``; 123,000 COCO images of 7x7x2048 float16 cells are 24.7 GB, read row by
  row like the others).
- ``<split>.json``: the index: what made the rows (encoder name, weights, image size, frames, the
  items), how many rows are filled, and their checksums. It is rewritten atomically after every
  batch, once the rows before it are on disk, so an interrupted extraction resumes where it
  stopped.

Stores are checked like checkpoints: the index records a CRC32 of the .npy header and of every
block of about ``BLOCK_BYTES`` of filled rows (zlib's CRC32 hashed 5.8 GB/s here, sha256 0.9 and
blake2b 0.4), and a CRC32 of itself. Opening a split for reading (`FeatureSource`) compares the
header with the index and every block with its CRC, so a store with any byte changed, or an
index edited to disagree, is refused with one sentence; `StoreWriter` re-verifies the rows it
keeps and recomputes from the first block that fails. Indexes written before checksums (format 1)
are refused by readers and rebuilt by extraction (nothing says their rows are good).

Rows are written with positioned writes (``os.pwrite``) into a file preallocated with
``os.posix_fallocate``, never through a writable memory map: a full disk is an ``OSError``
(one sentence naming the store) rather than a ``SIGBUS``, and the rows written before it stay.
One process writes a store folder at a time (``lrcn.extract`` holds ``LOCK_NAME`` in it).

Readers open the file lazily in each process (never sharing a handle across ``fork``) and read
each row with a positioned read (``os.pread``): rows come on demand from the page cache, which
DataLoader workers share, and no process holds a private copy of the store. Rows are not read
through a memory map because mapped page-cache pages count as the reader's resident memory (on
Linux 6.x one random row maps up to a whole large folio): 3,200 random rows of a 391 MB store
raised VmRSS by 377 MB through ``np.load(mmap_mode="r")`` and by nothing through ``os.pread``,
which was as fast (8 vs 11 us a row). ``FeatureSource.array`` still maps the whole store for bulk
use, and where ``os.pread`` is missing (Windows) rows are read through that map.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lrcn.data.datasets import Example, Source
from lrcn.data.store_files import (
    extend_crcs,
    first_bad_block,
    index_crc,
    npy_layout,
    row_bytes,
    write_at,
    write_npy_header,
)
from lrcn.errors import LrcnError
from lrcn.io import atomic_path, kill_point, machine_error, write_json_atomic

log = logging.getLogger(__name__)

FORMAT = 2  # 1: no checksums
BLOCK_BYTES = 8 << 20  # rows are checksummed in blocks of about this size (at least one row)
LOCK_NAME = ".extract.lock"  # held in the store folder by the one process writing it


def store_paths(folder: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """The (rows, index) files of one split of a store."""
    folder = Path(folder)
    return folder / f"{split}.npy", folder / f"{split}.json"


def _fix(folder: str | os.PathLike) -> str:
    return (
        f"delete {folder} or re-run `lrcn extract-features -c CONFIG` (with data.features={folder})"
    )


def items_header(source: Source) -> dict[str, Any]:
    """The items a store's rows belong to: their number and a hash of their ids, in order."""
    digest = hashlib.sha256()
    for i in range(len(source)):
        digest.update(source.item_id(i).encode("utf-8") + b"\n")
    return {"items": len(source), "ids_sha256": digest.hexdigest()}


def encoder_checksum(encoder: nn.Module) -> str:
    """A hash of a module's parameters and buffers (to tell the encoder that made a store)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        digest.update(name.encode("utf-8"))
        digest.update(
            tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        )
    return digest.hexdigest()


def _read_index(path: Path, folder: Path) -> dict[str, Any] | None:
    """A split's index (format 1 or 2); None when there is none.

    Raises:
        LrcnError: unreadable, not a store index, or (format 2) its checksum disagrees.
    """
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        raise LrcnError(f"feature store index {path} is unreadable; {_fix(folder)}.") from None
    if (
        not isinstance(index, dict)
        or index.get("format") not in (1, FORMAT)
        or "header" not in index
    ):
        raise LrcnError(
            f"feature store index {path} is not a lrcn store index (format {FORMAT}); {_fix(folder)}."
        )
    if index["format"] == FORMAT and index.get("index_crc32") != index_crc(index):
        raise LrcnError(
            f"feature store index {path} was edited or is corrupt (its checksum does not match its "
            f"contents); {_fix(folder)}."
        )
    return index


def read_store_header(folder: str | os.PathLike, split: str) -> dict[str, Any] | None:
    """The header one split of a store was made with; None when it has no readable index."""
    folder = Path(folder)
    try:
        index = _read_index(store_paths(folder, split)[1], folder)
    except LrcnError:  # FeatureSource says how to repair it
        return None
    return None if index is None else dict(index["header"])


def _differences(found: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    keys = [k for k in expected if found.get(k) != expected[k]]
    keys += [k for k in found if k not in expected]
    return [
        "the item ids (another dataset or manifest)"
        if k == "ids_sha256"
        else f"{k} {found.get(k)!r} (config: {expected.get(k)!r})"
        for k in keys
    ]


class StoreWriter:
    """Create or continue one split of a store.

    Rows are written with positioned writes into a preallocated file and synced; ``write`` then
    records them, with their blocks' CRC32s, in the index atomically, so a crash at any point
    leaves a store that resumes from its last batch. Opening a split already there re-verifies
    the rows it keeps: from the first block that fails its checksum on, rows are recomputed.

    Args:
        folder: the store folder (created).
        split: ``train``, ``val`` or ``test``.
        header: what made the rows (`store_header` plus `items_header`); a stored split with a
            different header, row shape or dtype, or without checksums, is replaced.
        row_shape: (D,) for images, (T, D) for videos, (N_cells, D) for image grids.
        dtype: ``float16`` or ``float32``.

    Raises:
        LrcnError: the store cannot be written (disk full, read-only, permissions), naming it.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        split: str,
        header: dict[str, Any],
        row_shape: Sequence[int],
        dtype: str,
    ) -> None:
        self.folder = Path(folder)
        self.array_path, self.index_path = store_paths(self.folder, split)
        self.split, self.header, self.dtype = split, dict(header), np.dtype(dtype).name
        self.shape = (int(header["items"]), *(int(s) for s in row_shape))
        self.row_bytes = row_bytes(self.shape, self.dtype)
        self.filled, self.missing = 0, []
        self.block_rows = max(1, BLOCK_BYTES // max(1, self.row_bytes))
        self.blocks: list[int] = []  # CRC32 of each block of filled rows (the last may be partial)
        self.fd: int | None = None
        try:
            index = _read_index(self.index_path, self.folder)
        except LrcnError as exc:  # a broken index is replaced, as its message promises
            log.warning("%s", exc)
            index = {"header": {}}
        layout = npy_layout(self.array_path)
        reason = self._kept_reason(index, layout)
        if reason is None:
            self._resume(index, layout)
            return
        if index is not None:
            log.warning("feature store %s: rebuilding split %s (%s)", self.folder, split, reason)
        self._create()

    def _kept_reason(self, index: dict[str, Any] | None, layout: tuple | None) -> str | None:
        """None when the stored split can be continued; else why it is rebuilt."""
        if index is None or layout is None or layout[:2] != (self.shape, self.dtype):
            return "row shape or dtype"
        changed = _differences(index["header"], self.header)
        if changed or list(index.get("shape", [])) != list(self.shape):
            return "; ".join(changed) or "row shape or dtype"
        if index["format"] != FORMAT:
            return "it has no checksums: it was written by an earlier lrcn"
        checks = index.get("checksums", {})
        if [checks.get("offset"), checks.get("npy_header")] != list(layout[2:]):
            return "its .npy header does not match the index"
        return None

    def _resume(self, index: dict[str, Any], layout: tuple) -> None:
        """Keep the verified rows of a split made the same way: up to the first bad block."""
        self.offset, self._header_crc = layout[2:]
        filled, checks = int(index["filled"]), index["checksums"]
        bad = first_bad_block(self.array_path, self.offset, self.row_bytes, filled, checks)
        if bad is None:
            self.filled, self.block_rows = filled, int(checks["block_rows"])
            self.blocks = [int(b) for b in checks["blocks"]]
        else:
            first = bad * int(checks["block_rows"])
            log.warning(
                "feature store %s: rows %d-%d of split %s do not match their checksums; "
                "recomputing them and the rows after them",
                self.array_path, first, min(filled, first + int(checks["block_rows"])) - 1, self.split,
            )  # fmt: skip
            if bad > 0:  # (block 0: a fresh start, in blocks of this writer's size)
                self.filled, self.block_rows = first, int(checks["block_rows"])
                self.blocks = [int(b) for b in checks["blocks"][:bad]]
        self.missing = [int(i) for i in index.get("missing", []) if int(i) < self.filled]
        self.fd = os.open(self.array_path, os.O_RDWR | getattr(os, "O_BINARY", 0))

    def _create(self) -> None:
        """Write the .npy header and preallocate the rows (zeros), atomically; an empty index."""
        with atomic_path(self.array_path) as tmp:
            self.offset, self._header_crc = write_npy_header(tmp, self.shape, self.dtype)
        self.fd = os.open(self.array_path, os.O_RDWR | getattr(os, "O_BINARY", 0))
        self._write_index({})

    @property
    def complete(self) -> bool:
        """Whether every row is filled."""
        return self.filled >= self.shape[0]

    def _write_index(self, extra: dict[str, Any]) -> None:
        index = {
            "format": FORMAT,
            "split": self.split,
            "header": self.header,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "filled": self.filled,
            "missing": self.missing,
            **extra,
            "checksums": {
                "algorithm": "crc32",
                "offset": self.offset,
                "npy_header": self._header_crc,
                "block_rows": self.block_rows,
                "blocks": self.blocks,
            },
        }
        write_json_atomic(self.index_path, {**index, "index_crc32": index_crc(index)})

    def write(
        self,
        start: int,
        rows: np.ndarray,
        missing: Sequence[int] = (),
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Store ``rows`` at ``start..start+len(rows)`` and mark everything before their end filled.

        Args:
            start: the first row; must be ``self.filled`` (rows are filled in order).
            rows: (n, *row_shape); rows listed in ``missing`` are ignored (left zero).
            missing: absolute indices among these rows whose item could not be read.
            extra: more index entries (e.g. the encoder's checksum).

        Raises:
            LrcnError: the disk is full (or the file unwritable); the rows before ``start`` stay.
        """
        if start != self.filled:
            raise ValueError(f"rows must be written in order: next is {self.filled}, got {start}")
        end = start + len(rows)
        if tuple(rows.shape[1:]) != self.shape[1:] or end > self.shape[0]:
            raise ValueError(
                f"rows {tuple(rows.shape)} at {start} do not fit the store's {self.shape}"
            )
        data = memoryview(np.ascontiguousarray(rows, dtype=self.dtype)).cast("B")
        try:
            write_at(self.fd, data, self.offset + start * self.row_bytes)
            kill_point(f"{self.array_path.name}:rows")
            (os.fdatasync if hasattr(os, "fdatasync") else os.fsync)(self.fd)  # before the index
        except OSError as exc:
            raise machine_error(self.array_path, exc) from None
        kill_point(f"{self.array_path.name}:synced")
        extend_crcs(self.blocks, self.filled, data, self.block_rows, self.row_bytes)
        self.filled = end
        self.missing.extend(int(i) for i in missing)
        self._write_index(extra or {})

    def close(self) -> None:
        """Close the file (the rows are already synced)."""
        if getattr(self, "fd", None) is not None:
            os.close(self.fd)
            self.fd = None


class FeatureSource(Source):
    """Examples whose ``features`` come from a store; ids and captions from the raw source.

    ``example(i)`` returns ``Example(id, captions, features=(D,), (T, D) or (N_cells, D) float32)``;
    no pixels are loaded. Each process that reads rows opens the file itself, on its first read.

    Args:
        folder: the store folder (``data.features``).
        split: the split to read.
        raw: the source the store was extracted from (ids, captions, item count).
        expected: `store_header` of the current config; when given, a store made differently is
            refused. The items (count and ids) are always checked.

    Raises:
        LrcnError: the store is missing or incomplete, has no checksums (format 1), any byte of
            its .npy or index differs from what its checksums recorded, or it was made with
            another encoder, image size, frame count or item list.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        split: str,
        raw: Source,
        expected: dict[str, Any] | None = None,
    ) -> None:
        self.folder, self.split, self.raw = Path(folder), split, raw
        self.is_video = raw.is_video
        self.path, index_path = store_paths(self.folder, split)
        index = _read_index(index_path, self.folder)
        if index is None:
            raise LrcnError(
                f"feature store {self.folder} has no {split} split ({index_path} not found); run "
                f"`lrcn extract-features -c CONFIG --split {split}` with data.features={self.folder} first."
            )
        wanted = {**(expected or {}), **items_header(raw)}
        if expected is None:  # only the items can be checked
            found = {k: index["header"].get(k) for k in wanted}
        else:
            found = index["header"]
        changed = _differences(found, wanted)
        if changed:
            raise LrcnError(
                f"feature store {self.path} was made differently from this config: "
                f"{'; '.join(changed)}; {_fix(self.folder)}."
            )
        if index["format"] != FORMAT:
            raise LrcnError(
                f"feature store {index_path} has no checksums (it was written by an earlier lrcn); "
                f"re-run `lrcn extract-features -c CONFIG --split {split}` (with data.features="
                f"{self.folder}) to rebuild it with checksums, or delete {self.folder}."
            )
        layout = npy_layout(self.path)
        checks = index.get("checksums", {})
        if layout is None or [list(layout[0]), *layout[1:]] != [
            index["shape"],
            index["dtype"],
            checks.get("offset"),
            checks.get("npy_header"),
        ]:
            raise LrcnError(
                f"feature store {self.path} is missing or does not match its index {index_path} "
                f"(its size or .npy header differs); {_fix(self.folder)}."
            )
        if int(index["filled"]) < len(raw):
            raise LrcnError(
                f"feature store {self.path} is incomplete ({index['filled']} of {len(raw)} rows); "
                f"re-run `lrcn extract-features -c CONFIG --split {split}` to finish it."
            )
        self._check_rows(layout, int(index["filled"]), checks)
        self.index = index
        shape, dtype, self._offset, _ = layout
        self.row_shape, self.dtype = tuple(shape[1:]), np.dtype(dtype)
        self._row_bytes = int(np.prod(self.row_shape)) * self.dtype.itemsize
        self.missing = frozenset(int(i) for i in index.get("missing", []))
        self._fd: int | None = None
        self._array: np.ndarray | None = None
        self._pid = -1  # the process that opened _fd / _array

    def _check_rows(self, layout: tuple, filled: int, checks: dict[str, Any]) -> None:
        """Refuse the split when a block of its rows differs from the CRC32 its index recorded."""
        bad = first_bad_block(self.path, layout[2], row_bytes(*layout[:2]), filled, checks)
        if bad is not None:
            first = bad * max(1, int(checks["block_rows"]))
            last = min(filled, first + int(checks["block_rows"])) - 1
            raise LrcnError(
                f"feature store {self.path}: rows {first}-{last} of split {self.split} do not match "
                f"their checksums (the file changed after it was written); {_fix(self.folder)}."
            )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_fd=None, _array=None, _pid=-1)  # a handle never goes to another process
        return state

    def _own_handles(self) -> None:
        """Forget handles opened by another process (the parent of a forked DataLoader worker)."""
        if self._pid != os.getpid():
            self._fd, self._array, self._pid = None, None, os.getpid()

    @property
    def array(self) -> np.ndarray:
        """All rows, memory-mapped read-only on first use in this process: (N, D) / (N, T, D) /
        (N, N_cells, D)."""
        self._own_handles()
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def _read_row(self, index: int) -> np.ndarray:
        if not hasattr(os, "pread"):
            return self.array[index]
        self._own_handles()
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        data = os.pread(self._fd, self._row_bytes, self._offset + index * self._row_bytes)
        return np.frombuffer(data, dtype=self.dtype).reshape(self.row_shape)

    def close(self) -> None:
        """Close this process's handle on the store (reads reopen it)."""
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd, self._array = None, None

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None and getattr(self, "_pid", -1) == os.getpid():
            os.close(fd)

    def __len__(self) -> int:
        return len(self.raw)

    def features(self, index: int) -> torch.Tensor:
        """Row ``index`` as float32: (D,), (T, D) or (N_cells, D)."""
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} of a {len(self)}-row store")
        if index in self.missing:
            raise LrcnError(
                f"item {self.raw.item_id(index)} has no features in {self.path}: it could not be "
                "read at extraction; fix the file and re-run extract-features, or set data.on_error=skip."
            )
        return torch.from_numpy(self._read_row(index).astype(np.float32))

    def example(self, index: int) -> Example:
        """Row ``index`` as features, with its id and captions."""
        return Example(
            self.raw.item_id(index), self.raw.captions(index), features=self.features(index)
        )

    def inputs(self, index: int) -> Example:
        """The stored row without its captions (regenerating them can cost more than the read)."""
        return Example(self.raw.item_id(index), [], features=self.features(index))

    def captions(self, index: int) -> list[str]:
        """Item ``index``'s captions (the raw source's)."""
        return self.raw.captions(index)

    def item_id(self, index: int) -> str:
        """Item ``index``'s id (the raw source's)."""
        return self.raw.item_id(index)

    def task_metrics(self, captions: dict[str, str]) -> dict[str, float]:
        """The raw source's task metrics: the store changes the inputs, not the dataset."""
        return self.raw.task_metrics(captions)

    def check_encoder(self, encoder: nn.Module) -> None:
        """Refuse an encoder that is not the one that made the store (its captions would differ).

        Raises:
            LrcnError: the parameters differ from those recorded at extraction.
        """
        recorded = self.index.get("encoder_checksum")
        if recorded is not None and encoder_checksum(encoder) != recorded:
            raise LrcnError(
                f"the model's encoder is not the one that made {self.path} (its weights differ), "
                "so captions of raw images would not match training; load the same encoder.weights "
                f"(and keep train.init=pytorch) or {_fix(self.folder)}."
            )
