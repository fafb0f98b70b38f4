"""Figure 6, ``checkpoint_integrity``: what verifying a checkpoint's bytes costs when loading it.

``lrcn.checkpoint.load_checkpoint`` checks every zip member's CRC32 before ``torch.load`` (a file
whose bytes changed after writing is refused). The figure is the time of that load, with every
tensor read once, over the same load without the check; the load of 18371f5 (``torch.load``
without memory mapping, no check) is reported beside it.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch

from lrcn.checkpoint import load_checkpoint, save_checkpoint


def _read_all(payload: dict[str, Any]) -> float:
    """Touch every byte of the model's tensors (a memory-mapped load reads them only here)."""
    return float(sum(t.float().sum() for t in payload["model"].values()))


def _median_seconds(load: Any, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        _read_all(load())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def checkpoint_integrity(size: dict[str, Any], work: Path) -> dict[str, Any]:
    """Figure 6: load with the CRC check / the same load without it (a ratio below 1.1 is met)."""
    megabytes = size["checkpoint_mb"]
    generator = torch.Generator().manual_seed(0)
    rows = megabytes * (1 << 20) // (4 * 1024)
    model = {
        f"layer{i}.weight": torch.randn(rows // 8, 1024, generator=generator) for i in range(8)
    }
    path = work / "integrity.pt"
    save_checkpoint(path, {"task": "caption", "model": model})
    file_mb = path.stat().st_size / 1e6
    rounds = size["integrity_rounds"]
    _read_all(load_checkpoint(path))  # warm the page cache: every variant reads from memory

    def unchecked() -> dict[str, Any]:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)

    def previous() -> dict[str, Any]:
        return torch.load(path, map_location="cpu", weights_only=True)

    checked_s = _median_seconds(lambda: load_checkpoint(path), rounds)
    unchecked_s = _median_seconds(unchecked, rounds)
    previous_s = _median_seconds(previous, rounds)
    ratio = checked_s / unchecked_s
    line = (
        f"checkpoint integrity on {file_mb:.0f} MB: load + read with the CRC check "
        f"{checked_s * 1e3:.1f} ms, without {unchecked_s * 1e3:.1f} ms ({ratio:.2f}x); "
        f"18371f5's plain torch.load {previous_s * 1e3:.1f} ms"
    )
    return {
        "file_mb": file_mb,
        "checked_ms": checked_s * 1e3,
        "unchecked_ms": unchecked_s * 1e3,
        "previous_load_ms": previous_s * 1e3,
        "ratio": ratio,
        "line": line,
    }
