"""Figure 9, ``grid_store_memory``: resident memory while training from a store of grids.

An attention decoder (``show_attend_tell``) reads (N_cells, D) grids from the feature store: 7x7
cells of resnet50's 2048 channels, float16, are 200,704 bytes an image, so COCO's 123,287 images
make a 24.7 GB store that no one loads. The child process of figure 5 (``--memory-child``) trains
``grid_steps`` batches from an 8,000-row grid store (1.6 GB) and then iterates the training
DataLoader once over every row; the figure is the training's peak RSS growth against the store's
size. The same run on a store a tenth the size tells the decoder's working memory (which does not
depend on the store) from anything the store adds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.common import base_overrides, row_shape
from benchmarks.memory import MB, run_child, write_random_store
from lrcn.build import build_encoder
from lrcn.config import load_config

COCO_IMAGES = 123_287  # train2014 + val2014, Karpathy's split included


def grid_overrides(size: dict[str, Any], work: Path, rows: int) -> list[str]:
    """The config of figure 9: ``rows`` shapes items in a grid store under ``work``."""
    return base_overrides(
        size,
        **{
            "data.train_size": rows,
            "encoder.name": size["grid_encoder"],
            "decoder.variant": "show_attend_tell",
            "data.features": work / f"store9-{rows}",
            "train.batch_size": size["grid_batch"],
        },
    )


def measure_store(size: dict[str, Any], work: Path, rows: int) -> dict[str, Any]:
    """Write a ``rows``-row grid store, train from it in a child process, delete it: MB figures."""
    overrides = grid_overrides(size, work, rows)
    cfg = load_config(None, overrides)
    shape = row_shape(cfg, build_encoder(cfg).eval(), is_video=False)  # (N_cells, D)
    _, _, store_bytes = write_random_store(cfg, shape)
    try:
        child = run_child(overrides, size["grid_steps"], loader_pass=True)
    finally:
        for path in Path(cfg.data.features).iterdir():  # gigabytes: not left for other figures
            path.unlink()
    epoch = child["loader_epoch"]
    return {
        "rows": rows,
        "row_shape": list(shape),
        "store_mb": store_bytes / MB,
        "steps": child["steps"],
        "batch": cfg.train.batch_size,
        # the training's peak over the RSS it started from (after 5 warm-up steps)
        "training_peak_growth_mb": (child["training_peak_kb"] - child["before"]["VmRSS"]) / 1024,
        "training_anon_growth_mb": (child["after"]["RssAnon"] - child["before"]["RssAnon"]) / 1024,
        "training_file_growth_mb": (child["after"]["RssFile"] - child["before"]["RssFile"]) / 1024,
        # one DataLoader pass over every row, from where the training left RSS
        "loader_rows": epoch["rows"],
        "loader_peak_growth_mb": (epoch["peak_kb"] - epoch["before"]["VmRSS"]) / 1024,
        "full_pass_anon_mb": child["full_pass_anon_kb"] / 1024,
        "full_pass_file_mb": child["full_pass_file_kb"] / 1024,
        "mmap_pass_file_mb": child["mmap_pass_file_kb"] / 1024,
        "loaded_anon_mb": child["loaded_anon_kb"] / 1024,
        "child": child,
    }


def grid_store_memory(size: dict[str, Any], work: Path) -> dict[str, Any]:
    """Figure 9: peak RSS growth while training from a grid store, as a share of its size."""
    big, small = (measure_store(size, work, rows) for rows in size["grid_rows"])
    cells, dim = big["row_shape"]
    coco_gb = COCO_IMAGES * big["store_mb"] * MB / big["rows"] / 1e9
    ratio = big["training_peak_growth_mb"] / big["store_mb"]
    line = (
        f"show_attend_tell trained {big['steps']} steps (batch {big['batch']}) from a "
        f"{big['rows']}-row store of {cells}x{dim} float16 grids ({big['store_mb']:.0f} MB; "
        f"{COCO_IMAGES} COCO images would be {coco_gb:.1f} GB): peak RSS grew "
        f"{big['training_peak_growth_mb']:.1f} MB = {ratio:.3f} of the store (from a "
        f"{small['rows']}-row store, {small['store_mb']:.0f} MB: "
        f"{small['training_peak_growth_mb']:.1f} MB); RssFile {big['training_file_growth_mb']:+.0f}"
        f" MB; then one DataLoader pass over all {big['loader_rows']} rows: peak "
        f"{big['loader_peak_growth_mb']:+.1f} MB, and every row read again: RssAnon "
        f"{big['full_pass_anon_mb']:+.1f} MB, RssFile {big['full_pass_file_mb']:+.0f} MB; "
        f"controls: through np.load(mmap_mode='r') RssFile {big['mmap_pass_file_mb']:+.0f} MB, "
        f"np.load RssAnon {big['loaded_anon_mb']:+.0f} MB"
    )
    return {**big, "coco_store_gb": coco_gb, "ratio": ratio, "smaller": small, "line": line}
