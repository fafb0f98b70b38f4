"""Feature store: a frozen encoder's features, extracted once and read back as memory-mapped arrays.

A store is a folder (``data.features``) holding, per split:

- ``<split>.npy``: the rows, float16 or float32 (``data.features_dtype``): (N, D) for images,
  (N, T, D) for videos (per-frame CNN features; the temporal encoder is trained, so it is not
  applied here).
- ``<split>.json``: the index: what made the rows (encoder name, weights, image size, frames, the
  items) and how many rows are filled. It is rewritten atomically after every batch, once the
  rows before it are flushed, so an interrupted extraction resumes where it stopped.

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
import inspect
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lrcn.data.datasets import Example, Source
from lrcn.errors import LrcnError
from lrcn.io import atomic_path, write_json_atomic

if TYPE_CHECKING:
    from lrcn.config import Config

log = logging.getLogger(__name__)

FORMAT = 1
SYNTHETIC = ("shapes", "moving_shapes", "moving_line")


def store_paths(folder: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """The (rows, index) files of one split of a store."""
    folder = Path(folder)
    return folder / f"{split}.npy", folder / f"{split}.json"


def _fix(folder: str | os.PathLike) -> str:
    return (
        f"delete {folder} or re-run `lrcn extract-features -c CONFIG` (with data.features={folder})"
    )


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        raise LrcnError(
            f"{path}: encoder weights file not found or unreadable; pass an existing file or "
            "encoder.weights=imagenet|none."
        ) from None
    return digest.hexdigest()


def store_header(cfg: Config) -> dict[str, Any]:
    """What the configuration says a store's rows must have been made with.

    Raises:
        LrcnError: ``encoder.freeze`` is false (stored features of a trained encoder go stale).
    """
    if not cfg.encoder.freeze:
        raise LrcnError(
            "encoder.freeze is false, but a feature store holds a frozen encoder's features "
            "(training would change the encoder and leave them stale); set encoder.freeze=true, "
            "or unset data.features to train the encoder on pixels."
        )
    from lrcn.models.encoders import ENCODERS

    weights = cfg.encoder.weights
    spec = ENCODERS.get(cfg.encoder.name)
    # encoder.feature_dim only shapes encoders whose builder takes it (small_cnn); for the others a
    # changed value must not invalidate an expensive store.
    sized = spec is None or "feature_dim" in inspect.signature(spec.builder).parameters
    video = cfg.task == "video_caption"
    header: dict[str, Any] = {
        "encoder": cfg.encoder.name,
        "weights": weights,
        "encoder_feature_dim": cfg.encoder.feature_dim if sized else None,
        "image_size": cfg.data.image_size,
        "num_frames": cfg.data.num_frames if video else None,
        "dtype": cfg.data.features_dtype,
        "dataset": cfg.data.dataset,
        "data_seed": cfg.data.seed if cfg.data.dataset in SYNTHETIC else None,
    }
    if weights in ("none", ""):
        # Random weights: extraction seeds the encoder's init with train.seed, as fit does.
        header["init_seed"] = cfg.train.seed
    elif weights != "imagenet":
        header["weights_sha256"] = _file_sha256(Path(weights))
    return header


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
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        raise LrcnError(f"feature store index {path} is unreadable; {_fix(folder)}.") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT or "header" not in index:
        raise LrcnError(
            f"feature store index {path} is not a lrcn store index (format {FORMAT}); {_fix(folder)}."
        )
    return index


def _npy_layout(path: Path) -> tuple[tuple[int, ...], str, int] | None:
    """Shape, dtype and data offset of a .npy file, from its header; None when unreadable or cut."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            offset = f.tell()
        if path.stat().st_size < offset + int(np.prod(shape)) * np.dtype(dtype).itemsize:
            return None  # truncated: reading it would fail later, in a worker
    except (OSError, ValueError):
        return None
    return tuple(shape), np.dtype(dtype).name, offset


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

    Rows are written into a writable memory map; ``write`` flushes them and then records them in
    the index atomically, so a crash at any point leaves a store that resumes from its last batch.

    Args:
        folder: the store folder (created).
        split: ``train``, ``val`` or ``test``.
        header: what made the rows (`store_header` plus `items_header`); a stored split with a
            different header, row shape or dtype is replaced.
        row_shape: (D,) for images, (T, D) for videos.
        dtype: ``float16`` or ``float32``.
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
        self.filled, self.missing = 0, []
        try:
            index = _read_index(self.index_path, self.folder)
        except LrcnError as exc:  # a broken index is replaced, as its message promises
            log.warning("%s", exc)
            index = {"header": {}}
        layout = _npy_layout(self.array_path)
        if index is not None and layout is not None and layout[:2] == (self.shape, self.dtype):
            if index["header"] == self.header and list(index.get("shape", [])) == list(self.shape):
                self.filled = int(index["filled"])
                self.missing = [int(i) for i in index.get("missing", [])]
                self.array = np.lib.format.open_memmap(self.array_path, mode="r+")
                return
        if index is not None:
            changed = _differences(index["header"], self.header) or ["row shape or dtype"]
            log.warning(
                "feature store %s: rebuilding split %s (%s)", self.folder, split, "; ".join(changed)
            )
        with atomic_path(self.array_path) as tmp:
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=self.dtype, shape=self.shape)
            del array  # flushed and unmapped before the rename
        self.array = np.lib.format.open_memmap(self.array_path, mode="r+")
        self._write_index({})

    @property
    def complete(self) -> bool:
        return self.filled >= self.shape[0]

    def _write_index(self, extra: dict[str, Any]) -> None:
        write_json_atomic(
            self.index_path,
            {
                "format": FORMAT,
                "split": self.split,
                "header": self.header,
                "shape": list(self.shape),
                "dtype": self.dtype,
                "filled": self.filled,
                "missing": self.missing,
                **extra,
            },
        )

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
        """
        if start != self.filled:
            raise ValueError(f"rows must be written in order: next is {self.filled}, got {start}")
        end = start + len(rows)
        if tuple(rows.shape[1:]) != self.shape[1:] or end > self.shape[0]:
            raise ValueError(
                f"rows {tuple(rows.shape)} at {start} do not fit the store's {self.shape}"
            )
        self.array[start:end] = rows.astype(self.dtype, copy=False)
        self.array.flush()  # the rows reach the file before the index says they are there
        self.filled = end
        self.missing.extend(int(i) for i in missing)
        self._write_index(extra or {})

    def close(self) -> None:
        self.array.flush()
        del self.array


class FeatureSource(Source):
    """Examples whose ``features`` come from a store; ids and captions from the raw source.

    ``example(i)`` returns ``Example(id, captions, features=(D,) or (T, D) float32)``; no pixels are
    loaded. Each process that reads rows opens the file itself, on its first read.

    Args:
        folder: the store folder (``data.features``).
        split: the split to read.
        raw: the source the store was extracted from (ids, captions, item count).
        expected: `store_header` of the current config; when given, a store made differently is
            refused. The items (count and ids) are always checked.

    Raises:
        LrcnError: the store is missing, incomplete, corrupt, or was made with another encoder,
            image size, frame count or item list.
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
        layout = _npy_layout(self.path)
        if layout is None or list(layout[0]) != list(index["shape"]):
            raise LrcnError(
                f"feature store {self.path} is missing or does not match its index {index_path}; "
                f"{_fix(self.folder)}."
            )
        if int(index["filled"]) < len(raw):
            raise LrcnError(
                f"feature store {self.path} is incomplete ({index['filled']} of {len(raw)} rows); "
                f"re-run `lrcn extract-features -c CONFIG --split {split}` to finish it."
            )
        self.index = index
        shape, dtype, self._offset = layout
        self.row_shape, self.dtype = tuple(shape[1:]), np.dtype(dtype)
        self._row_bytes = int(np.prod(self.row_shape)) * self.dtype.itemsize
        self.missing = frozenset(int(i) for i in index.get("missing", []))
        self._fd: int | None = None
        self._array: np.ndarray | None = None
        self._pid = -1  # the process that opened _fd / _array

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
        """All rows, memory-mapped read-only on first use in this process: (N, D) / (N, T, D)."""
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
        """Row ``index`` as float32: (D,) or (T, D)."""
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} of a {len(self)}-row store")
        if index in self.missing:
            raise LrcnError(
                f"item {self.raw.item_id(index)} has no features in {self.path}: it could not be "
                "read at extraction; fix the file and re-run extract-features, or set data.on_error=skip."
            )
        return torch.from_numpy(self._read_row(index).astype(np.float32))

    def example(self, index: int) -> Example:
        return Example(
            self.raw.item_id(index), self.raw.captions(index), features=self.features(index)
        )

    def inputs(self, index: int) -> Example:
        """The stored row without its captions (regenerating them can cost more than the read)."""
        return Example(self.raw.item_id(index), [], features=self.features(index))

    def captions(self, index: int) -> list[str]:
        return self.raw.captions(index)

    def item_id(self, index: int) -> str:
        return self.raw.item_id(index)

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


class _Pixels(Dataset):
    """``(index, pixels or None, error or None)`` for rows ``indices`` of a raw source."""

    def __init__(self, source: Source, indices: range) -> None:
        self.source, self.indices = source, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[int, torch.Tensor | None, str | None]:
        index = self.indices[position]
        try:
            return index, self.source.example(index).pixels, None
        except LrcnError as exc:  # reported by the main process, which knows data.on_error
            return index, None, str(exc)


def _collate(items: list[tuple[int, torch.Tensor | None, str | None]]) -> dict[str, Any]:
    readable = [pixels for _, pixels, error in items if error is None]
    return {
        "indices": [index for index, _, _ in items],
        "errors": {index: error for index, _, error in items if error is not None},
        "pixels": torch.stack(readable) if readable else None,  # (B', [T,] 3, H, W)
    }


@torch.no_grad()
def encode_pixels(encoder: nn.Module, pixels: torch.Tensor, max_images: int = 0) -> torch.Tensor:
    """Per-image CNN features; video frames are folded into the batch.

    Args:
        encoder: maps (N, 3, H, W) -> (N, D).
        pixels: (B, 3, H, W) or (B, T, 3, H, W).
        max_images: most images per forward pass (0: all at once).

    Returns:
        (B, D) or (B, T, D).
    """
    lead = pixels.shape[:-3]
    images = pixels.reshape(-1, *pixels.shape[-3:])  # (B*T, 3, H, W)
    step = max_images or images.shape[0]
    features = torch.cat([encoder(images[i : i + step]) for i in range(0, len(images), step)])
    return features.reshape(*lead, -1)  # (B, [T,] D)


def extract_features(cfg: Config, split: str) -> dict[str, Any]:
    """Run the frozen encoder once over ``split`` and fill (or finish) its feature store.

    Rows already in a store made the same way are kept; a store made with another encoder,
    weights, image size or frame count is rebuilt.

    Returns:
        ``{"rows": items in the split, "new": rows computed now, "path": the .npy file,
        "missing": unreadable items (data.on_error=skip)}``.

    Raises:
        LrcnError: no ``data.features``, the encoder is not frozen, or an item is unreadable
            with ``data.on_error=raise``.
    """
    from lrcn import build

    if cfg.task not in ("caption", "video_caption"):
        raise LrcnError(
            f"feature stores serve captioning (task caption or video_caption), not task "
            f"{cfg.task}; activity models read frames."
        )
    if not cfg.data.features:
        raise LrcnError(
            "extract-features needs data.features, the store folder to fill: pass e.g. "
            "data.features=features/NAME, and the same value to `lrcn train`."
        )
    header = store_header(cfg)
    raw = build.build_source_raw(cfg, split)
    header.update(items_header(raw))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)  # weights=none: the same random encoder fit builds
        encoder = build.build_encoder(cfg)
    encoder.eval()
    row_shape = (cfg.data.num_frames,) if raw.is_video else ()
    row_shape = (*row_shape, encoder.feature_dim)
    try:
        writer = StoreWriter(cfg.data.features, split, header, row_shape, cfg.data.features_dtype)
    except OSError as exc:
        raise _unwritable(cfg.data.features, exc) from None
    return _fill(writer, encoder, raw, cfg, split)


def _unwritable(folder: str, exc: OSError) -> LrcnError:
    return LrcnError(
        f"cannot write the feature store {folder} ({exc.strerror or exc}); free disk space or "
        "pass a writable folder as data.features."
    )


def _fill(
    writer: StoreWriter, encoder: nn.Module, raw: Source, cfg: Config, split: str
) -> dict[str, Any]:
    """Encode the rows ``writer`` still lacks, batch by batch (see `extract_features`)."""
    from lrcn.runtime import autocast, move_batch, resolve_device

    row_shape = writer.shape[1:]
    before = writer.filled
    info = {"rows": len(raw), "path": str(writer.array_path)}
    if writer.complete:
        writer.close()
        return {**info, "new": 0, "missing": len(writer.missing)}
    device = resolve_device(cfg.train.device)
    encoder.to(device)
    checksum = {"encoder_checksum": encoder_checksum(encoder)}
    frames = cfg.data.num_frames if raw.is_video else 1
    batch_size = max(1, cfg.eval.batch_size // frames)  # about eval.batch_size images per pass
    loader = DataLoader(
        _Pixels(raw, range(writer.filled, len(raw))),
        batch_size=batch_size,
        collate_fn=_collate,
        num_workers=cfg.data.num_workers,
        pin_memory=device.type == "cuda",
    )
    if cfg.train.progress:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc=f"extract {split}", dynamic_ncols=True, leave=False)
    try:
        for batch in loader:
            errors = batch["errors"]
            if errors and cfg.data.on_error == "raise":
                raise LrcnError(next(iter(errors.values())))
            for message in errors.values():
                log.warning("skipped: %s", message)
            indices = batch["indices"]
            rows = np.zeros((len(indices), *row_shape), dtype=np.float32)
            if batch["pixels"] is not None:
                pixels = move_batch({"pixels": batch["pixels"]}, device)["pixels"]
                with autocast(device, cfg.train.amp):
                    features = encode_pixels(encoder, pixels, cfg.eval.batch_size)  # (B', [T,] D)
                readable = [i for i, index in enumerate(indices) if index not in errors]
                rows[readable] = features.float().cpu().numpy()
            try:
                writer.write(indices[0], rows, sorted(errors), checksum)
            except OSError as exc:
                raise _unwritable(str(writer.folder), exc) from None
    finally:
        writer.close()
    log.info("feature store %s: %d new rows", info["path"], writer.filled - before)
    return {**info, "new": writer.filled - before, "missing": len(writer.missing)}
