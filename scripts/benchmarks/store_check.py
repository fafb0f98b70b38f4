"""Figure 10, ``store_check``: what verifying a feature store costs when a split is opened.

``FeatureSource`` compares every block of rows (about 8 MiB each) with the CRC32 its index
recorded before it serves a row (``lrcn/data/store.py``). The figure is that open on the largest
store the benchmark builds (figure 9's 8,000-row store of 7x7x2048 float16 grids, 1.6 GB) over one
pass reading every row as training does (a positioned read per row, as float32), both from the page
cache; the same two from the disk, after this file's cached pages are dropped
(``posix_fadvise(DONTNEED)``, which touches no other file), are reported beside it.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import row_shape
from benchmarks.grid_memory import grid_overrides
from benchmarks.memory import MB, write_random_store
from lrcn.build import build_encoder, build_source
from lrcn.config import load_config


def _drop_cached(path: Path) -> None:
    """Evict ``path``'s pages from the page cache (nothing else's)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _seconds(work: Any, rounds: int, before: Any = None) -> float:
    times = []
    for _ in range(rounds):
        if before is not None:
            before()
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def store_check(size: dict[str, Any], work: Path) -> dict[str, Any]:
    """Figure 10: a checked open / one read of every row (a ratio below 0.5 is met)."""
    rows = size["grid_rows"][0]
    overrides = grid_overrides(size, work, rows)
    cfg = load_config(None, overrides)
    shape = row_shape(cfg, build_encoder(cfg).eval(), is_video=False)  # (N_cells, D)
    _, _, store_bytes = write_random_store(cfg, shape)
    path = Path(cfg.data.features) / "train.npy"
    source = build_source(cfg, "train")

    def read_all() -> None:
        for i in range(len(source)):
            source.features(i)

    try:
        read_all()  # warm: every variant below reads from memory
        rounds = size["integrity_rounds"]
        open_s = _seconds(lambda: build_source(cfg, "train"), rounds)
        read_s = _seconds(read_all, rounds)
        cold_open_s = _seconds(lambda: build_source(cfg, "train"), 1, lambda: _drop_cached(path))
        cold_read_s = _seconds(read_all, 1, lambda: _drop_cached(path))
    finally:
        source.close()
        for file in Path(cfg.data.features).iterdir():  # gigabytes: not left for other figures
            file.unlink()
    ratio = open_s / read_s
    store_mb = store_bytes / MB
    line = (
        f"store check on {rows} rows of {shape[0]}x{shape[1]} float16 grids ({store_mb:.0f} MB): "
        f"opening with every block's CRC32 verified {open_s:.2f} s ({store_mb / open_s:.0f} MB/s) "
        f"vs reading every row once {read_s:.2f} s ({ratio:.2f}x); from the disk "
        f"{cold_open_s:.2f} s vs {cold_read_s:.2f} s"
    )
    return {
        "rows": rows,
        "row_shape": list(shape),
        "store_mb": store_mb,
        "open_s": open_s,
        "read_all_s": read_s,
        "cold_open_s": cold_open_s,
        "cold_read_all_s": cold_read_s,
        "ratio": ratio,
        "line": line,
    }
