"""Sizes, targets, the machine's description and the config every figure starts from.

The feature store's and the extraction's lrcn imports live here alone, so that a move of those
functions inside lrcn is repointed with one line.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

from lrcn.build import store_header
from lrcn.data.store import StoreWriter, items_header
from lrcn.extract import extract_features, row_shape

__all__ = [
    "REPO",
    "SCRIPT",
    "SHARED_DATA",
    "BELOW",
    "SIZES",
    "TARGETS",
    "StoreWriter",
    "base_overrides",
    "extract_features",
    "items_header",
    "load_average",
    "machine",
    "row_shape",
    "store_header",
]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "benchmark.py"  # the entry point; figure 5 runs it as its child
SHARED_DATA = REPO.parent / "shared" / "data"

SIZES = {
    "full": {
        "train_items": 256,
        "image_size": 224,
        "beam_items": 100,
        "beam_epochs": 8,
        "jpeg_items": 192,
        "jpeg_side": 320,
        "pipeline_rounds": 2,
        "score_items": 5000,
        "store_rows": 100_000,
        "store_encoder": "resnet50",  # 2048-d rows
        "memory_steps": 50,
        "checkpoint_mb": 100,
        "integrity_rounds": 5,
        "memory_batch": 64,
        "recipe_encoder": "resnet50",
        "encoder_batches": 3,
        "seed_steps": 154,  # the recipe's epoch: 157 steps, 3 of them warm-up
        "seed_threads": (1, 2),
        "seed_sides": ("lrcn", "keras", "keras_tuned"),
        "video_clips": 4,  # 64 frames a step
        "video_rounds": 3,
        # 7x7x2048 float16 grids: 1.6 GB (COCO's 123,287 would be 24.7 GB), then a tenth of it
        "grid_rows": (8000, 800),
        "grid_encoder": "resnet50",
        "grid_steps": 20,
        "grid_batch": 32,
    },
    "quick": {
        "train_items": 8,
        "image_size": 64,
        "beam_items": 6,
        "beam_epochs": 1,
        "jpeg_items": 6,
        "jpeg_side": 80,
        "pipeline_rounds": 1,
        "score_items": 50,
        "store_rows": 500,
        "store_encoder": "small_cnn",  # 256-d rows; no torchvision import in the child
        "memory_steps": 2,
        "checkpoint_mb": 4,
        "integrity_rounds": 2,
        "memory_batch": 8,
        "recipe_encoder": "resnet18",  # resnet50 takes seconds to build
        "encoder_batches": 1,
        "seed_steps": 2,
        "seed_threads": (1,),
        "seed_sides": ("lrcn", "keras"),
        "video_clips": 1,
        "video_rounds": 1,
        "grid_rows": (40, 20),
        "grid_encoder": "small_cnn",  # 4x4x64 grids at 64 px
        "grid_steps": 2,
        "grid_batch": 8,
    },
}
TARGETS = {
    "train_store_vs_live": 20.0,
    "beam_batched_vs_single": 8.0,
    "extraction_pipeline": 0.85,
    "scoring": 1.0,
    "store_memory": 1.0,
    "checkpoint_integrity": 1.1,
    "seed_vs_keras": 2.0,
    "video_encoder": 0.8,
    "grid_store_memory": 1.0,
    "store_check": 0.5,  # a checked open costs under half an epoch's reads
}
# figures whose ratio must stay below the target (the others must reach it)
BELOW = ("store_memory", "checkpoint_integrity", "grid_store_memory", "store_check")


def base_overrides(size: dict[str, Any], **changes: Any) -> list[str]:
    """A frozen resnet18 (random weights, no download) on shapes images, Show-and-Tell 256/512."""
    values: dict[str, Any] = {
        "task": "caption",
        "data.dataset": "shapes",
        "data.image_size": size["image_size"],
        "data.train_size": size["train_items"],
        "data.val_size": 4,
        "data.test_size": 4,
        "data.num_workers": 0,
        "encoder.name": "resnet18",
        "encoder.weights": "none",
        "encoder.freeze": "true",
        "decoder.embed_dim": 256,
        "decoder.hidden_dim": 512,
        "train.batch_size": 32,
        "train.device": "cpu",
        "train.progress": "false",
        "eval.batch_size": 32,
        "eval.beam_size": 5,
        "eval.max_length": 24,
        "eval.reference_points": "false",
    }
    values.update(changes)
    return [f"{key}={value}" for key, value in values.items()]


def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages, rounded to two decimals."""
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, kernel and the torch/Python versions of this machine."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "kernel": platform.release(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
