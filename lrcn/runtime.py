"""Small helpers every layer above may use: the device, mixed precision, data loaders, progress.

Nothing here knows about tasks, models or configs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from lrcn.errors import LrcnError

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_allocator_tuned: bool | None = None


def tune_cpu_allocator() -> bool:
    """Keep freed memory in the process for reuse instead of returning it to the system (glibc).

    glibc serves every allocation above 32 MB with a fresh ``mmap`` and returns it with ``munmap``
    when freed, so a training step that makes the same large activations every time pays a page
    fault for each 4 KB page of each of them, every step. On the seed's CNN-LSTM (1,600 frames of
    50x50 a batch) that was 75% of the step on CPU: 0.54 s a step against 0.14 s with memory
    kept (BENCHMARKS.md, figure 7); a CPU profile charges the faults to the first kernel that touches
    the memory, so it looked like oneDNN's convolution (count page faults before trusting it). The
    remedy is what jemalloc and tcmalloc do, and what PyTorch's CPU tuning guides recommend them
    for, without a preloaded library: no ``mmap`` for large blocks and no trimming of the heap.
    Memory a process has used stays counted in its resident size until it ends.

    Does nothing on other C libraries or when ``LRCN_MALLOC=system``; returns whether it tuned.
    Idempotent. Arithmetic is unchanged: only where buffers live changes.
    """
    global _allocator_tuned
    if _allocator_tuned is None:
        _allocator_tuned = _mallopt_keep_memory()
    return _allocator_tuned


def _mallopt_keep_memory() -> bool:
    if os.environ.get("LRCN_MALLOC", "").lower() == "system" or not sys.platform.startswith(
        "linux"
    ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or no libc found: nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    tuned = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    log.debug("CPU allocator keeps freed memory: %s", tuned)
    return tuned


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when visible, else CPU; a named CUDA device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LrcnError(
            f"train.device={name} but no CUDA GPU is visible; use train.device=cpu or auto."
        )
    return device


def move_batch(batch: dict, device: torch.device) -> dict:
    """Tensors to ``device`` (non-blocking from pinned memory on CUDA)."""
    non_blocking = device.type == "cuda"
    return {
        k: v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v
        for k, v in batch.items()
    }


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """The autocast dtype for ``train.amp`` on ``device``: None on CPU (exact, reproducible);
    bfloat16 on GPUs that compute it natively (compute capability 8.0+, Ampere and later);
    float16 on older GPUs (V100, T4), which then need a ``GradScaler``. Capability is checked
    directly because ``torch.cuda.is_bf16_supported()`` also says yes where bfloat16 is only
    emulated."""
    if not enabled or device.type != "cuda":
        return None
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def autocast(device: torch.device, enabled: bool) -> AbstractContextManager:
    """Autocast in :func:`amp_dtype`'s dtype, or a no-op where that is None."""
    dtype = amp_dtype(device, enabled)
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def make_grad_scaler(device: torch.device, amp: bool) -> torch.amp.GradScaler:
    """A loss scaler, enabled only when autocast runs in float16, whose small gradients would
    otherwise underflow to zero; bfloat16 has float32's range and needs none."""
    enabled = amp_dtype(device, amp) == torch.float16
    return torch.amp.GradScaler(device.type if enabled else "cpu", enabled=enabled)


def progress_bar(iterable: Iterable, enabled: bool, **kwargs: Any) -> Iterable:
    """``iterable`` under a tqdm bar when ``enabled``, else unchanged."""
    if not enabled:
        return iterable
    return tqdm(iterable, dynamic_ncols=True, leave=False, **kwargs)


def make_loader(
    dataset: Dataset,
    batch_size: int | None,
    collate: Callable[[list], Any] | None,
    sampler: Sampler | None = None,
    num_workers: int = 0,
    device: torch.device | None = None,
) -> DataLoader:
    """A DataLoader in a fixed order (the sampler decides it), pinned on CUDA, with its own RNG."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        collate_fn=collate,
        num_workers=num_workers,
        pin_memory=device is not None and device.type == "cuda",
        persistent_workers=False,
        # its own generator: creating an iterator must not draw from the global RNG, or a resumed run's
        # dropout masks would differ from an uninterrupted one's
        generator=torch.Generator().manual_seed(0),
    )


class StopRequested(Exception):
    """SIGINT/SIGTERM arrived during training and a checkpoint has been written (raised by
    `lrcn.engine.fit`). It lives here, below the engine, so the CLI can catch it for every command
    without importing the training engine for commands that never train."""
