"""Figure 3, ``extraction_pipeline``: feature extraction from JPEG files vs the encoder alone.

Images/s of ``extract_features`` over JPEG files on disk (decode, resize, batch in a DataLoader
worker, encode) as a fraction of the encoder's forward pass alone on ready tensors.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import base_overrides, extract_features
from lrcn.build import build_encoder
from lrcn.config import Config, load_config
from lrcn.data.synthetic.shapes import ShapesCaptions


def write_jpeg_manifest(work: Path, count: int, side: int) -> Path:
    """``count`` shapes images as JPEG files under ``work``, and a manifest folder listing them."""
    images, manifest = work / "jpeg", work / "manifest"
    images.mkdir()
    manifest.mkdir()
    shapes = ShapesCaptions("test", count, seed=3, image_size=side)
    with open(manifest / "train.jsonl", "w", encoding="utf-8") as f:
        for i in range(count):
            image, captions, _ = shapes.item(i)
            path = images / f"{i:05d}.jpg"
            image.resize((side, side * 3 // 4)).save(path, quality=90)
            record = {"id": str(i), "path": str(path), "split": "train", "captions": captions}
            f.write(json.dumps(record) + "\n")
    return manifest


def forward_alone(encoder: torch.nn.Module, batch: torch.Tensor, count: int) -> tuple[float, float]:
    """Wall and CPU seconds of the encoder's forward pass over ``count`` ready images."""
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        for done in range(0, count, len(batch)):
            encoder(batch[: min(len(batch), count - done)])
    return time.perf_counter() - wall, time.process_time() - cpu


def pipeline(cfg: Config, count: int) -> tuple[float, float]:
    """Wall and CPU seconds of ``extract_features`` over the JPEG files, from an empty store."""
    shutil.rmtree(cfg.data.features, ignore_errors=True)
    wall, cpu = time.perf_counter(), time.process_time()
    info = extract_features(cfg, "train")
    assert info["new"] == count
    return time.perf_counter() - wall, time.process_time() - cpu


def extraction_pipeline(size: dict[str, Any], work: Path) -> dict[str, Any]:
    """Figure 3, measured in alternating rounds of the encoder alone and the whole pipeline."""
    count, side = size["jpeg_items"], size["jpeg_side"]
    changes = {
        "data.dataset": "manifest",
        "data.manifest": write_jpeg_manifest(work, count, side),
        "data.num_workers": 1,  # decodes the next batch while the encoder runs
        "data.features": work / "store3",
    }
    cfg = load_config(None, base_overrides(size, **changes))
    torch.manual_seed(0)
    encoder = build_encoder(cfg).eval()  # also imports torchvision before the timed call
    batch = torch.randn(cfg.eval.batch_size, 3, cfg.data.image_size, cfg.data.image_size)

    # alone, pipeline, alone, ...: each pipeline run is compared with the runs beside it, as the
    # load of a shared machine drifts
    alone = [forward_alone(encoder, batch, count)]
    ratios, piped = [], []
    for _ in range(size["pipeline_rounds"]):
        piped.append(pipeline(cfg, count))
        alone.append(forward_alone(encoder, batch, count))
        ratios.append((alone[-2][0] + alone[-1][0]) / 2 / piped[-1][0])
    ratio = float(np.mean(ratios))
    pipeline_rate = count / float(np.mean([wall for wall, _ in piped]))
    alone_rate = count / float(np.mean([wall for wall, _ in alone]))
    # CPU time of this process only (the DataLoader worker decodes in another one)
    cpu_ratio = float(np.mean([c for _, c in alone]) / np.mean([c for _, c in piped]))
    line = (
        f"extraction pipeline (JPEG {side}x{side * 3 // 4} decode, resize to "
        f"{cfg.data.image_size}, batch, encode): {pipeline_rate:.2f} images/s; encoder forward "
        f"alone: {alone_rate:.2f} images/s; {ratio:.2f} of it (rounds: "
        f"{', '.join(f'{r:.2f}' for r in ratios)}; main-process CPU time per image: "
        f"{cpu_ratio:.2f} of the pipeline's)"
    )
    return {
        "pipeline_images_per_s": pipeline_rate,
        "encoder_images_per_s": alone_rate,
        "ratio": ratio,
        "round_ratios": ratios,
        "cpu_time_ratio": cpu_ratio,
        "items": count,
        "num_workers": 1,
        "line": line,
    }
