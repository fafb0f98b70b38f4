"""Figure 1, ``train_store_vs_live``: a training epoch from the feature store vs the live CNN.

Images/s of one training epoch from the feature store vs the same epoch with the frozen CNN
(resnet18, random weights, 224x224 shapes images) run live, with each half of the live epoch
measured alone to give the ratio's ceiling.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import base_overrides, extract_features
from lrcn.config import Config, load_config
from lrcn.engine import Run, TrainState, build_optimizer, build_scheduler, train_one_epoch

# (encoder, decoder embed, decoder hidden, share of train_items); the first row is the figure, the
# last is the published COCO/Flickr recipe (configs/coco.yaml) with random weights
TRAIN_ROWS = (("resnet18", 256, 512, 1.0), ("resnet18", 128, 256, 1.0), ("recipe", 512, 512, 0.5))


def train_epoch(cfg: Config, run_dir: Path) -> tuple[float, Run]:
    """Images/s of one training epoch as ``lrcn.engine`` runs it, and the ``Run``."""
    torch.manual_seed(cfg.train.seed)
    run = Run(cfg, run_dir, torch.device("cpu"))
    run.optimizer = build_optimizer(run.model, cfg)
    run.scheduler = build_scheduler(run.optimizer, cfg, 10_000)
    run.sampler.set_epoch(0)
    stats = train_one_epoch(
        run.model, run.train_loader(), TrainState(), optimizer=run.optimizer,
        scheduler=run.scheduler, device=torch.device("cpu"),
        train=replace(cfg.train, amp=False, grad_accum_steps=1, progress=False),
    )  # fmt: skip
    return stats["items"] / stats["seconds"], run


def component_rates(live_run: Run, store_run: Run, encoder_batches: int) -> tuple[float, float]:
    """Images/s of each half of a live epoch measured alone.

    The decoder's training steps on feature batches already in memory (no data loading), and the
    frozen CNN's forward pass on ready tensors (``encoder_batches`` batches). A store epoch cannot
    beat the first; a live epoch costs at least both, so ``1 + decoder / encoder`` bounds the
    ratio of figure 1 from above.
    """
    cfg = store_run.cfg
    store_run.sampler.set_epoch(0)
    batches = [
        {k: v for k, v in batch.items() if k != "skipped"} for batch in store_run.train_loader()
    ]
    items = sum(int(batch["size"]) for batch in batches)
    model, optimizer = store_run.model.train(), store_run.optimizer
    start = time.perf_counter()
    for batch in batches:
        model.loss(batch).backward()
        if cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    decoder_rate = items / (time.perf_counter() - start)

    encoder = live_run.model.encoder.eval()
    size = cfg.data.image_size
    pixels = torch.randn(cfg.train.batch_size, 3, size, size)
    with torch.no_grad():
        encoder(pixels[:2])  # warm-up
        start = time.perf_counter()
        for _ in range(encoder_batches):
            encoder(pixels)
        encoder_rate = encoder_batches * len(pixels) / (time.perf_counter() - start)
    return decoder_rate, encoder_rate


def measure_row(size: dict[str, Any], work: Path, row: tuple, index: int) -> tuple[dict, Run]:
    """One row of :data:`TRAIN_ROWS` measured: its rates and ratios, and the store-trained Run."""
    encoder, embed, hidden, share = row
    encoder = size["recipe_encoder"] if encoder == "recipe" else encoder
    items = max(4, int(size["train_items"] * share))
    changes = {
        "encoder.name": encoder,
        "decoder.embed_dim": embed,
        "decoder.hidden_dim": hidden,
        "data.train_size": items,
    }
    store = {"data.features": work / f"store1-{encoder}-{items}"}
    store_cfg = load_config(None, base_overrides(size, **changes, **store))
    start = time.perf_counter()
    extract_features(store_cfg, "train")  # a no-op when an earlier row made this store
    extract_seconds = time.perf_counter() - start
    extract_features(store_cfg, "val")
    live_cfg = load_config(None, base_overrides(size, **changes))
    live, live_run = train_epoch(live_cfg, work / f"run-live-{index}")
    from_store, run = train_epoch(store_cfg, work / f"run-store-{index}")
    decoder_alone, encoder_alone = component_rates(live_run, run, size["encoder_batches"])
    measured = {
        "encoder": encoder,
        "decoder_embed": embed,
        "decoder_hidden": hidden,
        "items": items,
        "store_images_per_s": from_store,
        "live_images_per_s": live,
        "ratio": from_store / live,
        "decoder_alone_images_per_s": decoder_alone,
        "encoder_alone_images_per_s": encoder_alone,
        # (CNN + decoder) / decoder per image: what a store that cost nothing would give
        "ceiling": 1 + decoder_alone / encoder_alone,
        "store_vs_decoder_alone": from_store / decoder_alone,
        "extract_seconds": extract_seconds,
    }
    return measured, run


def summary_line(size: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The printed line of figure 1: the first row in full, the others in brief."""
    main = rows[0]
    others = "; ".join(
        f"{r['encoder']} + hidden {r['decoder_hidden']}: {r['store_images_per_s']:.1f} vs "
        f"{r['live_images_per_s']:.2f} images/s, {r['ratio']:.1f}x of at most {r['ceiling']:.1f}x"
        for r in rows[1:]
    )
    return (
        f"train epoch from store: {main['store_images_per_s']:.1f} images/s; live frozen "
        f"{main['encoder']} at {size['image_size']}px: {main['live_images_per_s']:.2f} images/s; "
        f"{main['ratio']:.1f}x with the hidden-{main['decoder_hidden']} decoder, of at most "
        f"{main['ceiling']:.1f}x (decoder steps alone {main['decoder_alone_images_per_s']:.1f}, "
        f"CNN forward alone {main['encoder_alone_images_per_s']:.1f} images/s; the store epoch "
        f"runs at {main['store_vs_decoder_alone']:.2f} of the decoder-alone rate) ({others})"
    )


def train_store_vs_live(size: dict[str, Any], work: Path) -> tuple[dict[str, Any], Run]:
    """Figure 1 and the first row's store-trained ``Run`` (figure 2 decodes with its decoder)."""
    rows, first_run = [], None
    for row in TRAIN_ROWS:
        measured, run = measure_row(size, work, row, len(rows))
        first_run = first_run or run
        rows.append(measured)
    figure = {
        **rows[0],
        "rows": rows,
        "image_size": size["image_size"],
        "weights": "random (encoder.weights=none), frozen",
        "batch_size": 32,
        "captions_per_image": 5,
    }
    return {**figure, "line": summary_line(size, rows)}, first_run
