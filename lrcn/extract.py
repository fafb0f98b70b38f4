"""`lrcn extract-features`: run the frozen encoder once over a split and fill its feature store.

The store's format, writer and reader are `lrcn.data.store`'s; this module builds the encoder and
the raw source from the config (through `lrcn.build`) and feeds the writer batch by batch. One
process extracts into a store folder at a time: it holds ``<store>/.extract.lock`` (an OS lock
the kernel drops when its holder dies, as `lrcn train` holds ``<run>/.lock``), so a second
`lrcn extract-features` into the same folder is refused at once, naming the holder's PID.
Splits extracted one after another by one process (as `lrcn demo` does) each take it in turn.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lrcn import build
from lrcn.config import Config
from lrcn.data.datasets import Source
from lrcn.data.store import LOCK_NAME, StoreWriter, encoder_checksum, items_header
from lrcn.errors import LrcnError
from lrcn.io import check_writable, hold_lock, remove_stale_temps
from lrcn.runtime import autocast, move_batch, resolve_device
from lrcn.task import get_task

log = logging.getLogger(__name__)


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
def encode_pixels(
    encoder: nn.Module, pixels: torch.Tensor, max_images: int = 0, grid: bool = False
) -> torch.Tensor:
    """Per-image CNN features (or grids); video frames are folded into the batch.

    Args:
        encoder: maps (N, 3, H, W) -> (N, D); with ``grid``, its ``grid`` maps them to (N, C, D).
        pixels: (B, 3, H, W) or (B, T, 3, H, W).
        max_images: most images per forward pass (0: all at once).
        grid: store the spatial grid (``encoder.grid``: C cells of D) instead of the pooled vector.

    Returns:
        (B, D) or (B, T, D); with ``grid``, (B, C, D).
    """
    lead = pixels.shape[:-3]
    images = pixels.reshape(-1, *pixels.shape[-3:])  # (B*T, 3, H, W)
    step = max_images or images.shape[0]
    run = encoder.grid if grid else encoder
    features = torch.cat([run(images[i : i + step]) for i in range(0, len(images), step)])
    return features.reshape(*lead, *features.shape[1:])  # (B, [T,] D) or (B, C, D)


def row_shape(cfg: Config, encoder: nn.Module, is_video: bool) -> tuple[int, ...]:
    """One stored row's shape: (D,), (T, D) for videos, (N_cells, D) when the decoder attends over
    the image grid (its cell count found by running the encoder on one blank image)."""
    if build.attention_input(cfg) == "grid":
        size, channels = cfg.data.image_size, build.encoder_spec(cfg.encoder.name).in_channels
        with torch.no_grad():
            blank = torch.zeros(1, channels, size, size)
            return tuple(encoder.grid(blank).shape[1:])  # (N_cells, D)
    return (cfg.data.num_frames, encoder.feature_dim) if is_video else (encoder.feature_dim,)


def extract_features(cfg: Config, split: str) -> dict[str, Any]:
    """Run the frozen encoder once over ``split`` and fill (or finish) its feature store.

    Rows already in a store made the same way are kept once their checksums verify (from the
    first block that fails, rows are recomputed); a store made with another encoder, weights,
    image size, frame count or grid (``encoder.grid_size``; vectors vs grids), or without
    checksums, is rebuilt.
    When the decoder attends over the image grid (``decoder.variant`` show_attend_tell) the rows
    are ``encoder.grid(images)``, (N_cells, D) each; otherwise pooled vectors.

    Returns:
        ``{"rows": items in the split, "new": rows computed now, "path": the .npy file,
        "missing": unreadable items (data.on_error=skip)}``.

    Raises:
        LrcnError: no ``data.features``, the encoder is not frozen, another process is
            extracting into the store (its PID named), the disk is full (the rows written so far
            are kept: a re-run continues), or an item is unreadable with ``data.on_error=raise``.
    """
    if not get_task(cfg.task).captions:
        raise LrcnError(
            f"feature stores serve captioning (task caption or video_caption), not task "
            f"{cfg.task}; activity models read frames."
        )
    if not cfg.data.features:
        raise LrcnError(
            "extract-features needs data.features, the store folder to fill: pass e.g. "
            "data.features=features/NAME, and the same value to `lrcn train`."
        )
    header = build.store_header(cfg)
    folder = check_writable(cfg.data.features)
    with hold_lock(folder / LOCK_NAME, "another `lrcn extract-features`"):
        for tmp in remove_stale_temps(folder):
            log.info("removed %s, left by an extraction that was killed while writing it", tmp)
        raw = build.build_source_raw(cfg, split)
        header.update(items_header(raw))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed)  # weights=none: the same random encoder fit builds
            encoder = build.build_encoder(cfg)
        encoder.eval()
        shape = row_shape(cfg, encoder, raw.is_video)
        try:
            writer = StoreWriter(folder, split, header, shape, cfg.data.features_dtype)
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

    shape = writer.shape[1:]
    grid = bool(writer.header.get("grid"))
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
            rows = np.zeros((len(indices), *shape), dtype=np.float32)
            if batch["pixels"] is not None:
                pixels = move_batch({"pixels": batch["pixels"]}, device)["pixels"]
                with autocast(device, cfg.train.amp):  # (B', [T,] D) or grids (B', N_cells, D)
                    features = encode_pixels(encoder, pixels, cfg.eval.batch_size, grid)
                readable = [i for i, index in enumerate(indices) if index not in errors]
                rows[readable] = features.float().cpu().numpy()
            writer.write(indices[0], rows, sorted(errors), checksum)  # a full disk: LrcnError
    finally:
        writer.close()
    log.info("feature store %s: %d new rows", info["path"], writer.filled - before)
    return {**info, "new": writer.filled - before, "missing": len(writer.missing)}
