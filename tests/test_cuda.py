"""The GPU paths: training and evaluation on CUDA with mixed precision (bfloat16, and float16 with
a GradScaler), pinned-memory loading, batched beam search and feature extraction on the device.

Skipped where no CUDA GPU is visible. On a GPU machine:

    python -m pytest -q tests/test_cuda.py

``LRCN_TEST_DEVICE=cpu`` runs the same tests on the CPU (autocast off there, float16 forced
through a CPU GradScaler), which checks the tests themselves on a machine without a GPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, TINY_SHAPES

import lrcn.engine as engine
import lrcn.runtime as runtime
from lrcn.config import load_config

DEVICE = torch.device(os.environ.get("LRCN_TEST_DEVICE", "cuda"))
pytestmark = pytest.mark.skipif(
    DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="no CUDA GPU visible"
)


def _cfg(*extra: str):
    return load_config(
        REPO / "configs" / "shapes.yaml",
        [*TINY_SHAPES, f"train.device={DEVICE.type}", "train.amp=true", *extra],
    )


def _losses(summary: dict) -> list[float]:
    return [record["train_loss"] for record in summary["history"]]


def test_training_and_evaluation_on_the_device_with_autocast(tmp_path: Path) -> None:
    from lrcn.predict import evaluate

    expected = None if DEVICE.type == "cpu" else runtime.amp_dtype(DEVICE, True)
    if DEVICE.type == "cuda":  # bfloat16 from compute capability 8.0 (A100, H100), else float16
        major, _ = torch.cuda.get_device_capability(DEVICE)
        assert expected == (torch.bfloat16 if major >= 8 else torch.float16)

    summary = engine.fit(_cfg("train.epochs=3"), tmp_path / "run")

    losses = _losses(summary)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    metrics = evaluate(tmp_path / "run", split="test", out_dir=tmp_path / "eval")
    assert metrics["items"] == 32 and 0.0 <= metrics["Bleu_4"] <= 1.0
    payload = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    # the checkpoint's tensors are saved from the device but load anywhere
    assert all(t.device.type == "cpu" for t in payload["model"].values())


def test_float16_autocast_trains_through_the_grad_scaler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as on a V100 or T4: float16 autocast, whatever this GPU supports
    monkeypatch.setattr(
        runtime, "amp_dtype", lambda device, enabled: torch.float16 if enabled else None
    )
    summary = engine.fit(_cfg("train.epochs=3", "train.checkpoint_every_steps=1"), tmp_path / "run")

    losses = _losses(summary)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    payload = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert payload["grad_scaler"]["scale"] > 0  # the scaler ran and its state is checkpointed
    assert summary["steps"] == 3 * 8  # 256 items / batch 32, three epochs: no step lost


def test_loader_pins_memory_for_the_device() -> None:
    loader = runtime.make_loader(list(range(4)), 2, None, device=DEVICE)
    assert loader.pin_memory == (DEVICE.type == "cuda")


def test_batched_beam_search_on_the_device_equals_one_at_a_time() -> None:
    from lrcn.decoding import beam_search
    from lrcn.models.decoder import LSTMDecoder

    torch.manual_seed(0)
    decoder = (
        LSTMDecoder(vocab_size=40, feature_dim=32, embed_dim=32, hidden_dim=64).to(DEVICE).eval()
    )
    features = torch.randn(24, 32, device=DEVICE)
    with torch.no_grad():
        batched = beam_search(decoder, features, 1, 2, max_length=16, beam_size=5)
        single = [
            beam_search(decoder, features[i : i + 1], 1, 2, max_length=16, beam_size=5)[0]
            for i in range(24)
        ]
    assert batched == single


def test_feature_store_from_the_device_matches_the_cpu(tmp_path: Path) -> None:
    from lrcn.data.store import store_paths
    from lrcn.extract import extract_features

    overrides = [
        "data.image_size=32",
        "encoder.freeze=true",
        "eval.batch_size=8",
        "data.features_dtype=float32",
    ]
    torch.manual_seed(0)
    extract_features(_cfg(*overrides, f"data.features={tmp_path / 'device'}"), "test")
    torch.manual_seed(0)
    extract_features(
        _cfg(*overrides, f"data.features={tmp_path / 'cpu'}", "train.device=cpu"), "test"
    )

    on_device = np.load(store_paths(tmp_path / "device", "test")[0])
    on_cpu = np.load(store_paths(tmp_path / "cpu", "test")[0])
    assert on_device.shape == on_cpu.shape == (32, 64)
    # bfloat16 keeps 8 bits of mantissa: rows agree to about 1%
    np.testing.assert_allclose(on_device, on_cpu, rtol=0.05, atol=0.05)
