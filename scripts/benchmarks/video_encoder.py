"""Figure 8, ``video_encoder``: training frames/s of ``configs/ucf101.yaml``'s per-frame resnet18.

The recipe's activity model (resnet18 at 112 px through ``TimeDistributed``, LSTM 256, clips of 16
frames; random weights, no download) trains on random clips, frozen and fine-tuned; each is set
against the CNN alone on the same frames: forward only (frozen) or forward and backward
(fine-tuned). The ratio is the fine-tuned model's frames/s over the CNN's own: 1.0 means the LSTM,
the loss, the optimizer and the loop cost nothing beside the CNN. Each side runs in a fresh
process (``benchmark.py --video-child``), with lrcn's CPU allocator tuning and, for contrast,
without it (``system``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from benchmarks.common import REPO, SCRIPT


def _timed(step: Any, frames: int, rounds: int) -> float:
    """Frames per second of ``step()``: its fastest of ``rounds`` calls after one warm-up call
    (the fastest, because on a shared machine the slow calls measure the neighbours)."""
    step()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return frames / best


def _steps(model: Any, batch: dict[str, Any], freeze: bool) -> tuple[Any, Any]:
    """(the model's training step, the bare CNN's step) on ``batch``."""
    import torch

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], 1e-4)

    def train_step() -> None:
        model.train()
        model.loss(batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def cnn_alone() -> None:  # the per-frame CNN through TimeDistributed
        if freeze:
            with torch.no_grad():
                model.frame_encoder(batch["frames"])
        else:
            features = model.frame_encoder(batch["frames"])
            features.backward(torch.ones_like(features))  # a dense gradient, as the LSTM's is
            model.zero_grad(set_to_none=True)

    return train_step, cnn_alone


def video_child(mode: str, clips: int, rounds: int) -> dict[str, Any]:
    """frames/s of the model's training step and of the bare CNN, frozen and fine-tuned."""
    import torch

    from lrcn.build import build_model
    from lrcn.config import load_config
    from lrcn.runtime import tune_cpu_allocator

    if mode == "tuned":
        tune_cpu_allocator()
    result: dict[str, Any] = {}
    for freeze in (True, False):
        cfg = load_config(
            REPO / "configs" / "ucf101.yaml",
            ["encoder.weights=none", f"encoder.freeze={str(freeze).lower()}"],
        )
        torch.manual_seed(0)
        model = build_model(cfg, num_classes=101)
        frames = cfg.data.num_frames
        batch = {
            "frames": torch.randn(clips, frames, 3, 112, 112),
            "label": torch.randint(0, 101, (clips,)),
        }
        train_step, cnn_alone = _steps(model, batch, freeze)
        name = "frozen" if freeze else "fine_tuned"
        result[name] = _timed(train_step, clips * frames, rounds)
        result[f"{name}_cnn_alone"] = _timed(cnn_alone, clips * frames, rounds)
    return result


def _run_child(mode: str, clips: int, rounds: int) -> dict[str, Any]:
    env = dict(os.environ, LRCN_MALLOC="system" if mode == "system" else "")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--video-child", mode, "--threads", "0",
         "--steps", f"{clips},{rounds}"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"the video child failed: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def video_encoder(size: dict[str, Any]) -> dict[str, Any]:
    """Figure 8: resnet18 clips, frozen and fine-tuned, against the CNN alone; tuned vs system."""
    clips, rounds = size["video_clips"], size["video_rounds"]
    tuned = _run_child("tuned", clips, rounds)
    system = _run_child("system", clips, rounds)
    ratio = tuned["fine_tuned"] / tuned["fine_tuned_cnn_alone"]
    return {
        "clips": clips,
        "frames_per_clip": 16,
        "tuned": tuned,
        "system": system,
        "ratio": ratio,
        "line": (
            f"video_encoder: resnet18 112 px, {clips} clips of 16 frames: frozen "
            f"{tuned['frozen']:.1f} frames/s (CNN forward alone {tuned['frozen_cnn_alone']:.1f}), "
            f"fine-tuned {tuned['fine_tuned']:.1f} (CNN forward+backward alone "
            f"{tuned['fine_tuned_cnn_alone']:.1f}; {ratio:.2f}x of it); with the system "
            f"allocator: frozen {system['frozen']:.1f}, fine-tuned {system['fine_tuned']:.1f}"
        ),
    }
