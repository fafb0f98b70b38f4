"""Checkpoints: state_dicts + config + vocabulary/labels + training state, never pickled modules.

Saving is atomic (temporary file, then rename). Loading uses ``torch.load(weights_only=True)``, so
a file carrying pickled code is refused before any of it runs.

Integrity: torch.save writes a zip archive whose central directory records each member's CRC32,
but torch never checks them, so a file whose bytes changed after writing would load silently.
:func:`load_checkpoint` verifies every CRC over a memory map of the file, on a few threads, and
then loads the tensors from that same file memory-mapped (``mmap=True``) rather than copied,
so the check replaces the copy a plain load makes. Figure 6 of ``scripts/benchmark.py`` measures
it on a 105 MB checkpoint (2-core EPYC, warm page cache, ISA-L's CRC32 at about 7.5 GB/s a core):
load and read every tensor 19.7 ms with the check, 9.8 ms memory-mapped without it, 98 ms for the
plain ``torch.load`` lrcn used before. The check costs what reading the bytes once costs.
"""

from __future__ import annotations

import mmap
import os
import pickle
import random
import struct
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lrcn.errors import LrcnError

try:  # Intel ISA-L's CRC32: the zip checksum at several GB/s (about 4x zlib's here)
    from isal.isal_zlib import crc32
except ImportError:  # a platform without isal wheels: the standard library's, same values
    from zlib import crc32
from lrcn.io import atomic_path, kill_point
from lrcn.model_folder import fetch_hub_model, is_model_folder, load_model_folder
from lrcn.state_dicts import load_state_dict_checked, short_list, state_dict_mismatch

__all__ = [
    "FORMAT",
    "load_checkpoint",
    "load_state_dict_checked",
    "resolve_checkpoint_path",
    "restore_rng_state",
    "rng_state",
    "save_checkpoint",
    "short_list",
    "state_dict_mismatch",
]

FORMAT = "lrcn-checkpoint/1"


def rng_state() -> dict[str, Any]:
    """Every RNG the training loop draws from, in a form ``weights_only`` loading accepts."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [
            np_state[0],
            np_state[1].tolist(),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "python": list(random.getstate()[1]) + [random.getstate()[0]],
        "python_gauss": random.getstate()[2],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back every RNG state saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    *py_state, version = state["python"]
    random.setstate((version, tuple(py_state), state.get("python_gauss")))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (state_dicts, plain containers) atomically, stamped with the format."""
    payload = {"format": FORMAT, **_to_cpu(payload)}
    path = Path(path)
    with atomic_path(path) as tmp:
        kill_point(f"{path.name}:before-save")
        try:
            torch.save(payload, tmp)
        except RuntimeError as exc:  # torch's writer reports a full disk as "unexpected pos" etc.
            raise LrcnError(
                f"{path}: could not be written ({str(exc).splitlines()[-1].strip()[:100]}); the "
                "disk is probably full: free some space (or write elsewhere) and run the command "
                f"again (the previous {path.name} was not overwritten)."
            ) from None


def _to_cpu(value: Any) -> Any:
    """Tensors moved to the CPU, containers rebuilt: a checkpoint written on a GPU loads on any
    machine with plain ``torch.load`` (found on an H200: model and optimizer tensors were saved on
    ``cuda:0``)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(v) for v in value)
    return value


def load_checkpoint(path: str | Path, task: str | None = None) -> dict[str, Any]:
    """Load an lrcn checkpoint safely.

    Args:
        path: the ``.pt`` file (or a run directory: its ``checkpoints/best.pt``, else ``last.pt``;
            or a model folder of ``lrcn export``, or its Hub id: `lrcn.model_folder`).
        task: when given, the checkpoint must be for this task.

    Raises:
        LrcnError: missing, truncated or foreign file; pickled code; a checkpoint of another task.
    """
    path = resolve_checkpoint_path(path)
    if path.is_dir():  # a model folder (safetensors + JSON: nothing to unpickle)
        return load_model_folder(path, task)
    is_zip = _check_torch_file(path)
    if is_zip:
        _verify_crcs(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        reason = (
            str(exc).splitlines()[0][:160]
            if "Weights only load failed" not in str(exc)
            else "pickled objects"
        )
        raise LrcnError(
            f"{path}: refused to load: the file holds {reason} that could run code when unpickled; "
            "only lrcn checkpoints (plain state_dicts) are accepted."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise LrcnError(
            f"{path}: not a readable checkpoint ({exc.__class__.__name__}: {str(exc).splitlines()[0][:120]}); "
            "it may be truncated — use another checkpoint (checkpoints/last.pt or best.pt)."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise LrcnError(
            f"{path}: not an lrcn checkpoint (no '{FORMAT}' stamp); pass a file written by `lrcn train`."
        )
    if task is not None and payload.get("task") != task:
        raise LrcnError(
            f"{path}: this checkpoint is for task `{payload.get('task')}`, not `{task}`; use a {task} checkpoint."
        )
    return payload


_USE_ANOTHER = "use another checkpoint (checkpoints/last.pt or best.pt) or copy the file again"


def _check_torch_file(path: Path) -> bool:
    """Refuse, by its first bytes, a file torch.save did not write (a text file, an image) or an
    empty one; True for torch's zip format (False: the legacy pickle format)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise LrcnError(
            f"{path}: cannot be read ({exc.strerror}); check the path and its permissions."
        ) from None
    if not head:
        raise LrcnError(
            f"{path}: the file is empty (0 bytes), so it is truncated, not a checkpoint; {_USE_ANOTHER}."
        )
    if head[:4] != b"PK\x03\x04" and head[:1] != b"\x80":
        raise LrcnError(
            f"{path}: not a checkpoint (not a file written by torch.save); pass a .pt file written "
            "by `lrcn train` or its run directory."
        )
    return head[:4] == b"PK\x03\x04"


def _verify_crcs(path: Path) -> None:
    """Check every zip member's CRC32 against the central directory (torch never does).

    Raises:
        LrcnError: a truncated archive or bytes changed after writing, naming the file.
    """
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            with zipfile.ZipFile(f) as archive:
                bad = _first_bad_member(archive, mm)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, struct.error, ValueError, OSError,
            EOFError, OverflowError, UnicodeDecodeError, KeyError, NotImplementedError) as exc:  # fmt: skip
        raise LrcnError(
            f"{path}: not a readable checkpoint (the archive is damaged: {str(exc)[:80]}); it may be "
            f"truncated or corrupt — {_USE_ANOTHER}."
        ) from None
    if bad is not None:
        raise LrcnError(
            f"{path}: its bytes changed after it was written (CRC mismatch in `{bad}`), so the file "
            f"is corrupt; {_USE_ANOTHER}."
        )


def _first_bad_member(archive: zipfile.ZipFile, mm: mmap.mmap) -> str | None:
    """The first member whose bytes do not match their recorded CRC32 (None: all match).

    The CRCs run on a few threads (both CRC implementations release the GIL), member by member.
    """
    spans = []  # (name, start, size, crc) of each stored member
    for info in archive.infolist():
        if info.compress_type != zipfile.ZIP_STORED:  # torch stores; read anything else
            with archive.open(info) as member:  # raises BadZipFile on a bad CRC
                while member.read(1 << 20):
                    pass
            continue
        offset = info.header_offset
        if mm[offset : offset + 4] != b"PK\x03\x04":
            return info.filename
        name_len, extra_len = struct.unpack("<HH", mm[offset + 26 : offset + 30])
        start = offset + 30 + name_len + extra_len
        if start + info.compress_size > len(mm):
            raise zipfile.BadZipFile(f"{info.filename} runs past the end of the file")
        spans.append((info.filename, start, info.compress_size, info.CRC))
    view = memoryview(mm)
    try:
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            matches = list(pool.map(lambda s: crc32(view[s[1] : s[1] + s[2]]) == s[3], spans))
    finally:
        view.release()
    return next((span[0] for span, ok in zip(spans, matches, strict=True) if not ok), None)


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A ``.pt`` file, a run folder's best (else last) checkpoint, or a model folder (a Hub id:
    its downloaded folder)."""
    path = fetch_hub_model(str(path)) or Path(path)
    if is_model_folder(path):
        return path
    if path.is_dir():
        for name in ("checkpoints/best.pt", "checkpoints/last.pt", "best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise LrcnError(
            f"{path}: no checkpoints/best.pt or checkpoints/last.pt in this folder; pass a .pt file "
            "(or a model folder of `lrcn export`)."
        )
    if not path.is_file():
        raise LrcnError(f"{path}: checkpoint not found; pass a .pt file or a run directory.")
    return path
