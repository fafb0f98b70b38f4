"""Dataset readers and synthetic datasets registered from outside lrcn, used through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from PIL import Image

from lrcn import build
from lrcn.cli import main
from lrcn.config import load_config
from lrcn.data.datasets import Source
from lrcn.data.manifest import prepare
from lrcn.data.readers import available_readers, get_reader, register_reader
from lrcn.data.synthetic import (
    ShapesSource,
    available_datasets,
    get_dataset,
    register_dataset,
)
from lrcn.errors import LrcnError


@register_reader("toy")
def read_toy(root: str, copies: int = 1, check_files: bool = False) -> list[dict]:
    """Every PNG under ``root``, split by its name's prefix, with ``copies`` copies of a caption."""
    return [
        {
            "id": path.stem,
            "path": str(path),
            "split": path.stem.split("-")[0],
            "captions": ["a toy picture"] * copies,
        }
        for path in sorted(Path(root).glob("*.png"))
    ]


@register_dataset("toy_shapes", task="caption")
def build_toy_shapes(split, size, seed, data, mean, std) -> Source:  # noqa: ANN001
    """Four shapes images a split, whatever data.train_size says."""
    return ShapesSource(split, 4, seed, data.image_size, mean, std)


def _pictures(root: Path) -> Path:
    root.mkdir()
    rng = np.random.default_rng(0)
    for name in ["train-0", "train-1", "train-2", "train-3", "val-0", "val-1", "test-0"]:
        pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{name}.png")
    return root


def test_a_reader_registered_in_a_test_file_prepares_and_trains(tmp_path: Path) -> None:
    root, manifest = _pictures(tmp_path / "toy"), tmp_path / "manifest"
    assert "toy" in available_readers() and get_reader("toy") is read_toy
    assert main(["prepare", "toy", "copies=2", "--root", str(root), "--out", str(manifest)]) == 0
    first = json.loads((manifest / "train.jsonl").read_text().splitlines()[0])
    assert first["captions"] == ["a toy picture"] * 2  # "2" became an int from the signature
    run = tmp_path / "run"
    overrides = ["data.dataset=manifest", f"data.manifest={manifest}", "data.image_size=32"]
    overrides += ["train.epochs=1", "train.batch_size=2", "train.progress=false"]
    overrides += ["eval.metrics=[bleu]", "eval.tokenizer=python"]
    assert (
        main(
            [
                "train",
                "-c",
                str(REPO / "configs" / "shapes.yaml"),
                "--run-dir",
                str(run),
                *overrides,
            ]
        )
        == 0
    )
    metrics = json.loads((run / "eval" / "test_metrics.json").read_text())
    assert metrics["items"] == 1 and "scene_accuracy" not in metrics


def test_unknown_reader_and_option_are_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(LrcnError, match="unknown dataset 'toy2'; choose one of .*toy"):
        prepare("toy2", tmp_path, tmp_path / "out")
    with pytest.raises(LrcnError, match="copies. must be an integer, got 'two'"):
        prepare("toy", tmp_path, tmp_path / "out", copies="two")


def test_a_synthetic_dataset_registered_in_a_test_file_is_built() -> None:
    assert available_datasets("caption") == ("shapes", "toy_shapes")
    assert available_datasets("activity") == ("moving_line",)
    with pytest.raises(LrcnError, match="choose one of moving_line"):
        get_dataset("shapes", task="activity")
    cfg = load_config(REPO / "configs" / "shapes.yaml", ["data.image_size=32"])
    cfg.data.dataset = "toy_shapes"  # past the config's own list of names (see below)
    source = build.build_source(cfg, "val")
    assert len(source) == 4 and source.example(0).pixels.shape == (3, 32, 32)
    assert set(source.task_metrics({source.item_id(0): "a red square"})) >= {"scene_accuracy"}


def test_a_synthetic_dataset_registered_in_a_test_file_trains_and_scores(tmp_path: Path) -> None:
    run = tmp_path / "run"
    overrides = ["data.dataset=toy_shapes", "data.image_size=32", "train.epochs=1"]
    overrides += ["train.batch_size=2", "train.progress=false"]
    overrides += ["eval.metrics=[bleu]", "eval.tokenizer=python"]
    assert (
        main(
            [
                "train",
                "-c",
                str(REPO / "configs" / "shapes.yaml"),
                "--run-dir",
                str(run),
                *overrides,
            ]
        )
        == 0
    )
    metrics = json.loads((run / "eval" / "test_metrics.json").read_text())
    assert metrics["items"] == 4 and "scene_accuracy" in metrics  # the source's task metric
