"""The files of a feature store split: the .npy layout, block checksums, positioned writes.

`lrcn.data.store` builds its writer and reader on these; they know nothing of indexes' meaning.
"""

from __future__ import annotations

import errno
import json
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np


def row_bytes(shape: tuple[int, ...], dtype: str) -> int:
    """The bytes of one row of an array of ``shape`` (rows first) and ``dtype``."""
    return int(np.prod(shape[1:])) * np.dtype(dtype).itemsize


def write_npy_header(path: Path, shape: tuple[int, ...], dtype: str) -> tuple[int, int]:
    """Write a .npy header for a C-ordered ``shape`` array at the start of the existing file
    ``path`` and preallocate its rows (zeros), synced; returns (data offset, header CRC32).

    Raises:
        OSError: the disk is full (the preallocation fails before any row is computed).
    """
    fields = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": tuple(shape)}  # fmt: skip
    with open(path, "r+b") as f:
        np.lib.format.write_array_header_1_0(f, fields)
        offset = f.tell()
        f.flush()
        preallocate(f.fileno(), offset + shape[0] * row_bytes(shape, dtype))
        os.fsync(f.fileno())
        f.seek(0)
        return offset, zlib.crc32(f.read(offset))


def index_crc(index: dict[str, Any]) -> int:
    """The CRC32 of an index's entries other than its own checksum, in a canonical form."""
    body = {k: v for k, v in index.items() if k != "index_crc32"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return zlib.crc32(text.encode("utf-8"))


def npy_layout(path: Path) -> tuple[tuple[int, ...], str, int, int] | None:
    """Shape, dtype, data offset and header CRC32 of a .npy file, from its header; None when it is
    unreadable or not exactly as long as its header says."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            offset = f.tell()
            f.seek(0)
            header_crc = zlib.crc32(f.read(offset))
        if path.stat().st_size != offset + int(np.prod(shape)) * np.dtype(dtype).itemsize:
            return None  # truncated (reading it would fail later, in a worker) or appended to
    except Exception:  # noqa: BLE001 - a damaged header: OSError, ValueError, SyntaxError, TokenError...
        return None
    return tuple(shape), np.dtype(dtype).name, offset, header_crc


def first_bad_block(
    path: Path, offset: int, row_bytes: int, filled: int, checks: dict
) -> int | None:
    """The first block of the ``filled`` rows whose CRC32 differs from ``checks["blocks"]`` (0
    when the index lists another number of blocks); None when every block matches."""
    block_rows, blocks = int(checks["block_rows"]), list(checks["blocks"])
    if block_rows < 1 or len(blocks) != -(-filled // block_rows):
        return 0
    buffer = memoryview(bytearray(min(block_rows, filled) * row_bytes))
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        for number, recorded in enumerate(blocks):
            size = min(block_rows, filled - number * block_rows) * row_bytes
            view, done = buffer[:size], 0
            while done < size:
                got = f.readinto(view[done:])
                if not got:
                    return number  # cut short while being read
                done += got
            if zlib.crc32(view) != recorded:
                return number
    return None


def write_at(fd: int, data: memoryview, position: int) -> None:
    """Write all of ``data`` at ``position`` of ``fd`` (positioned writes: no file offset shared)."""
    while data:
        if hasattr(os, "pwrite"):
            written = os.pwrite(fd, data, position)
        else:  # Windows
            os.lseek(fd, position, os.SEEK_SET)
            written = os.write(fd, data)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        data, position = data[written:], position + written


def preallocate(fd: int, size: int) -> None:
    """Reserve ``size`` bytes for ``fd`` (a full disk fails here, before any row is computed)."""
    try:
        os.posix_fallocate(fd, 0, size)
    except (AttributeError, OSError) as exc:  # no fallocate here (Windows, macOS, some NFS)
        if isinstance(exc, OSError) and exc.errno not in (
            errno.EOPNOTSUPP,
            errno.EINVAL,
            errno.ENOSYS,
        ):
            raise
        os.ftruncate(fd, size)


def extend_crcs(
    blocks: list[int], filled: int, data: memoryview, block_rows: int, size: int
) -> None:
    """Extend ``blocks``, the CRC32s of ``filled`` rows in blocks of ``block_rows`` (the last one
    possibly partial), with ``data``, the bytes of the rows after them (``size`` bytes a row)."""
    position = filled
    while data:
        used = position % block_rows
        rows = min(block_rows - used, len(data) // size)
        chunk, data = data[: rows * size], data[rows * size :]
        if used:
            blocks[-1] = zlib.crc32(chunk, blocks[-1])
        else:
            blocks.append(zlib.crc32(chunk))
        position += rows
