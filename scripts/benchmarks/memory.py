"""Figure 5, ``store_memory``: resident memory while training from a large feature store.

Resident memory growth while training from a 100,000-row float16 store (D=2048, about 400 MB),
measured in a child process (``benchmark.py --memory-child``) from /proc/self/status.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from benchmarks.common import SCRIPT, StoreWriter, base_overrides, items_header, store_header
from lrcn.build import build_encoder, build_model, build_source, build_source_raw
from lrcn.config import Config, TrainConfig, load_config
from lrcn.data.datasets import CaptionTrainDataset, make_caption_collate
from lrcn.engine import TrainState, build_optimizer, build_scheduler, train_one_epoch
from lrcn.text.tokenize import tokenize
from lrcn.text.vocab import Vocabulary

MB = 1024 * 1024


def memory_overrides(size: dict[str, Any], work: Path) -> list[str]:
    """The config of figure 5: ``store_rows`` shapes items in a store under ``work``."""
    return base_overrides(
        size,
        **{
            "data.train_size": size["store_rows"],
            "encoder.name": size["store_encoder"],
            "data.features": work / "store5",
            "train.batch_size": size["memory_batch"],
        },
    )


def write_random_store(
    cfg: Config, row_shape: tuple[int, ...] | None = None
) -> tuple[int, int, int]:
    """A store of random rows, as extraction would lay it out: (rows, feature dim, file bytes).

    ``row_shape`` defaults to the encoder's pooled vector, (D,); a grid store passes (N_cells, D).
    A grid store's rows are one random chunk of about 40 MB written again and again, shifted.
    """
    row_shape = row_shape or (build_encoder(cfg).feature_dim,)
    raw = build_source_raw(cfg, "train")
    header = {**store_header(cfg), **items_header(raw)}
    writer = StoreWriter(cfg.data.features, "train", header, row_shape, cfg.data.features_dtype)
    rng = np.random.default_rng(0)
    grid = len(row_shape) > 1
    chunk = max(1, (40 << 20) // (4 * int(np.prod(row_shape)))) if grid else 10_000
    block = rng.standard_normal((chunk, *row_shape), dtype=np.float32) * 0.1 if grid else None
    for start in range(0, len(raw), chunk):  # random rows: extracting 100,000 images takes hours
        count = min(chunk, len(raw) - start)
        if grid:  # the same random rows in another order: gigabytes of random numbers take minutes
            rows = np.roll(block, start // chunk, axis=0)[:count]
        else:
            rows = rng.standard_normal((count, *row_shape), dtype=np.float32) * 0.1
        writer.write(start, rows)
    writer.close()
    return len(raw), row_shape[-1], writer.array_path.stat().st_size


def run_child(overrides: list[str], steps: int, loader_pass: bool = False) -> dict[str, Any]:
    """The report of :func:`memory_child`, run in a fresh process through the entry point."""
    child = subprocess.run(
        [sys.executable, str(SCRIPT), "--memory-child", json.dumps(overrides),
         "--threads", str(torch.get_num_threads()), "--steps", f"{steps},{int(loader_pass)}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if child.returncode != 0:
        raise RuntimeError(f"memory child failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def store_memory(size: dict[str, Any], work: Path) -> dict[str, Any]:
    """Figure 5: peak RSS growth while training, as a fraction of the store's size on disk."""
    overrides = memory_overrides(size, work)
    cfg = load_config(None, overrides)
    store_rows, dim, store_bytes = write_random_store(cfg)
    result = run_child(overrides, size["memory_steps"])
    growth = result["training_peak_kb"] * 1024 - result["before"]["VmRSS"] * 1024
    fraction = growth / store_bytes
    anon = (result["after"]["RssAnon"] - result["before"]["RssAnon"]) * 1024
    mapped = (result["after"]["RssFile"] - result["before"]["RssFile"]) * 1024  # file-backed
    line = (
        f"training {result['steps']} steps (batch {cfg.train.batch_size}) from a {store_rows}-row "
        f"float16 store ({store_bytes / MB:.0f} MB, D={dim}): peak RSS grew {growth / MB:.1f} MB = "
        f"{fraction:.3f} of the store (private RssAnon {anon / MB:+.1f} MB, file-backed RssFile "
        f"{mapped / MB:+.1f} MB); then every row read once: RssAnon "
        f"{result['full_pass_anon_kb'] / 1024:+.1f} MB, RssFile "
        f"{result['full_pass_file_kb'] / 1024:+.0f} MB; controls: every row read through "
        f"np.load(mmap_mode='r'): RssFile {result['mmap_pass_file_kb'] / 1024:+.0f} MB; the store "
        f"loaded with np.load: RssAnon {result['loaded_anon_kb'] / 1024:+.0f} MB"
    )
    return {
        "store_rows": store_rows,
        "store_mb": store_bytes / MB,
        "feature_dim": dim,
        "peak_growth_mb": growth / MB,
        "training_anon_growth_mb": anon / MB,
        "training_file_growth_mb": mapped / MB,
        "ratio": fraction,
        "child": result,
        "line": line,
    }


def proc_status() -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile of this process in kB."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            values[key] = int(rest.split()[0])
    return values


def child_vocab(source: Any) -> Vocabulary:
    """The vocabulary of the store's captions."""
    # shapes captions use a closed vocabulary: 2,000 items already hold every word
    return Vocabulary.build(
        tokenize(c)[:24] for i in range(min(2000, len(source))) for c in source.captions(i)
    )


def child_loaders(
    cfg: Config, source: Any, vocab: Vocabulary, steps: int
) -> tuple[DataLoader, DataLoader]:
    """The ``steps``-batch training loader and a warm-up loader of a few batches."""
    data = CaptionTrainDataset(source, vocab, 24)
    batch = cfg.train.batch_size
    sampler = RandomSampler(
        data, num_samples=steps * batch, generator=torch.Generator().manual_seed(0)
    )
    loader = DataLoader(
        data, batch_size=batch, sampler=sampler, collate_fn=make_caption_collate(False)
    )
    warm_up = DataLoader(
        data,
        batch_size=batch,
        sampler=range(min(5, steps) * batch),
        collate_fn=make_caption_collate(False),
    )
    return loader, warm_up


def reset_peak() -> bool:
    """Reset VmHWM so that the peak is the training's, not the model building's (False: refused)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def passes_over_rows(source: Any) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Memory after every row is read from the store, through a bare memory map, loaded whole."""
    for i in range(len(source)):  # touch every row: mapped pages are page cache, not the heap
        source.features(i)
    full = proc_status()
    mapped = source.array  # the control: the same full pass through a memory map
    for i in range(len(source)):
        np.array(mapped[i], dtype=np.float32)
    through_map = proc_status()
    del mapped
    source.close()
    loaded = np.load(source.path)  # the control: the same rows read into this process's memory
    control = proc_status()
    del loaded
    return full, through_map, control


def loader_epoch(cfg: Config, source: Any, vocab: Vocabulary) -> dict[str, int]:
    """Peak and final memory of one pass of the training DataLoader over every row (no steps)."""
    data = CaptionTrainDataset(source, vocab, 24)
    loader = DataLoader(
        data, batch_size=cfg.train.batch_size, collate_fn=make_caption_collate(False)
    )
    start = proc_status()
    reset = reset_peak()
    rows = 0
    for batch in loader:
        rows += int(batch["size"])  # batch["features"]: (B, N_cells, D) float32
    end = proc_status()
    peak = end["VmHWM"] if reset else max(end["VmHWM"], end["VmRSS"])
    return {"rows": rows, "before": start, "after": end, "peak_kb": peak}


def memory_child(overrides: list[str], steps: int, loader_pass: bool = False) -> dict[str, Any]:
    """Train ``steps`` batches from the store (in this fresh process) and report its memory;
    with ``loader_pass``, then iterate the training DataLoader once over every row."""
    cfg = load_config(None, overrides)
    source = build_source(cfg, "train")
    vocab = child_vocab(source)
    torch.manual_seed(0)
    model = build_model(cfg, vocab_size=len(vocab))
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps)
    loader, warm_up = child_loaders(cfg, source, vocab, steps)
    # a few steps first: the allocator, autograd and the optimizer's state reach their steady size
    loop = {"optimizer": optimizer, "scheduler": scheduler, "device": torch.device("cpu"),
            "train": TrainConfig(grad_clip=0.0, amp=False, progress=False)}  # fmt: skip
    train_one_epoch(model, warm_up, TrainState(), **loop)
    before = proc_status()
    reset = reset_peak()
    train_one_epoch(model, loader, TrainState(), **loop)
    after = proc_status()
    epoch = loader_epoch(cfg, source, vocab) if loader_pass else None
    full, through_map, control = passes_over_rows(source)
    ready = epoch["after"] if epoch else after  # where the full pass starts
    return {
        "steps": steps,
        "before": before,
        "after": after,
        "after_full_pass": full,
        "hwm_reset": reset,
        "training_peak_kb": after["VmHWM"] if reset else max(after["VmHWM"], after["VmRSS"]),
        "loader_epoch": epoch,
        "full_pass_anon_kb": full["RssAnon"] - ready["RssAnon"],
        "full_pass_file_kb": full["RssFile"] - ready["RssFile"],
        "mmap_pass_file_kb": through_map["RssFile"] - full["RssFile"],
        "loaded_anon_kb": control["RssAnon"] - through_map["RssAnon"],
    }
