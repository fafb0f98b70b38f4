"""Defects 2 and 4 of issue 13: an all-unreadable training batch, and one clip arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import lrcn
from lrcn.config import load_config
from lrcn.data import media
from lrcn.engine import fit
from lrcn.models.classifier import ActivityClassifier, build_seed_cnn

SHAPES = Path(lrcn.__file__).resolve().parents[1] / "configs" / "shapes.yaml"


def _manifest(folder: Path) -> Path:
    """Two training images, both corrupt; val and test readable."""
    rng = np.random.default_rng(0)
    rows: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for i, split in enumerate(["train"] * 2 + ["val", "test"]):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
        captions = ["a red square", "a blue circle"]
        rows[split].append({"id": str(i), "path": str(path), "split": split, "captions": captions})
    for i in range(2):
        (folder / f"img{i}.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    out = folder / "manifest"
    out.mkdir()
    for split, records in rows.items():
        text = "".join(json.dumps(r) + "\n" for r in records)
        (out / f"{split}.jsonl").write_text(text, encoding="utf-8")
    return out


def test_a_training_batch_of_only_unreadable_items_is_skipped(tmp_path: Path) -> None:
    """Defect 2: one batch of two unreadable items per epoch; training goes on past it."""
    overrides = [
        "data.dataset=manifest",
        f"data.manifest={_manifest(tmp_path)}",
        "data.image_size=32",
        "data.on_error=skip",
        "train.epochs=2",
        "train.batch_size=2",
        "train.progress=false",
        "eval.metrics=[bleu]",
        "eval.tokenizer=python",
    ]
    summary = fit(load_config(SHAPES, overrides), tmp_path / "run")
    assert summary["skipped"] == 4  # both items, each epoch


def test_clips_cover_the_tail_of_the_video() -> None:
    """Defect 4: 20 frames, clips of 16 every 8: a second clip ends at the last frame."""
    assert media.clip_starts(20, 16, 8) == [0, 4]
    assert media.clip_starts(32, 16, 8) == [0, 8, 16]
    assert media.clip_starts(141, 16, 8) == [*range(0, 126, 8), 125]
    assert media.clip_starts(5, 16, 8) == [0]


def test_read_frames_and_predict_video_take_the_same_clips(tmp_path: Path) -> None:
    """Defect 4: the clips `lrcn evaluate`/`classify` read are the clips predict_video averages."""
    for i in range(20):
        Image.fromarray(np.full((8, 8, 3), i * 10, dtype=np.uint8)).save(tmp_path / f"{i:03}.png")
    clips = media.read_frames(tmp_path, 16, sampling="clips", clip_len=16, stride=8)
    assert [int(clip[0, 0, 0, 0]) // 10 for clip in clips] == [0, 4]

    torch.manual_seed(0)
    cnn, dim = build_seed_cnn(in_channels=3, height=8, width=8)
    model = ActivityClassifier(cnn, dim, 3, hidden_dim=4, prediction="mean").eval()
    video = torch.rand(20, 3, 8, 8)
    expected = torch.stack([model.predict_proba(video[s : s + 16][None])[0] for s in (0, 4)])
    torch.testing.assert_close(model.predict_video(video, 16, 8), expected.mean(dim=0))


def test_an_empty_validation_split_turns_validation_and_early_stopping_off(
    tmp_path: Path, caplog
) -> None:
    """Issue 26 (3): an empty val split was scored 0 every epoch, so early stopping fired and kept
    epoch 1's weights, silently. Now it is said once, nothing is scored, and best.pt follows the
    last epoch."""
    rng = np.random.default_rng(0)
    out = tmp_path / "manifest"
    out.mkdir()
    rows = []
    for i in range(6):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
        rows.append({"id": str(i), "path": str(path), "split": "train", "captions": ["a red square"]})  # fmt: skip
    (out / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    (out / "val.jsonl").write_text("")
    (out / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[4:]))
    overrides = [
        "data.dataset=manifest",
        f"data.manifest={out}",
        "data.image_size=32",
        "train.epochs=3",
        "train.batch_size=2",
        "train.early_stopping_patience=1",
        "train.progress=false",
        "eval.metrics=[bleu]",
        "eval.tokenizer=python",
    ]
    summary = fit(load_config(SHAPES, overrides), tmp_path / "run")
    assert summary["epochs"] == 3 and summary["best_epoch"] == 3  # no early stop at epoch 2
    assert not any(k.startswith("val_") for k in summary["history"][-1])
    assert caplog.text.count("the validation split is empty") == 1
    best = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])


def test_a_batch_that_skipping_leaves_with_one_item_is_skipped_whole(tmp_path: Path) -> None:
    """Batches of two, one of them unreadable: the readable item left alone cannot train the
    CNN's BatchNorm (a raw ValueError ended the epoch); it is counted as skipped instead."""
    rng = np.random.default_rng(0)
    out = tmp_path / "manifest"
    out.mkdir()
    rows: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for i, split in enumerate(["train"] * 4 + ["val", "test"]):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
        record = {"id": str(i), "path": str(path), "split": split, "captions": ["a red square"]}
        rows[split].append(json.dumps(record) + "\n")
    (tmp_path / "img0.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    for split, lines in rows.items():
        (out / f"{split}.jsonl").write_text("".join(lines), encoding="utf-8")
    overrides = ["data.dataset=manifest", f"data.manifest={out}", "data.image_size=32",
                 "data.on_error=skip", "train.epochs=2", "train.batch_size=2",
                 "train.progress=false", "eval.metrics=[bleu]", "eval.tokenizer=python"]  # fmt: skip
    summary = fit(load_config(SHAPES, overrides), tmp_path / "run")
    assert summary["skipped"] == 4  # each epoch: the unreadable item and its lone partner
