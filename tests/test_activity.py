"""Activity recognition end to end: train, evaluate, classify a real UCF101 clip and frame folders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from lrcn.config import load_config

TINY_LINE = [
    "data.train_size=64",
    "data.val_size=16",
    "data.test_size=16",
    "data.image_size=16",
    "data.num_frames=8",
    "train.batch_size=16",
    "train.progress=false",
]


@pytest.fixture(scope="module")
def line_run(tmp_path_factory) -> Path:
    from lrcn.engine import fit

    run = tmp_path_factory.mktemp("line")
    fit(load_config(REPO / "configs" / "moving_line.yaml", TINY_LINE), run)
    return run


def test_evaluate_writes_accuracy(line_run: Path):
    from lrcn.predict import evaluate

    metrics = evaluate(line_run, split="test")
    saved = json.loads((line_run / "eval" / "test_metrics.json").read_text())
    assert 0.0 <= saved["accuracy"] <= 1.0 and saved["items"] == 16 and saved == metrics
    predictions = json.loads((line_run / "eval" / "test_predictions.json").read_text())
    assert len(predictions) == 16 and {"label", "predicted", "probability"} <= set(predictions[0])


def test_classify_real_ucf101_clip_and_msvd_frames(line_run: Path, shared_data: Path):
    from lrcn.predict import classify_files

    clip = shared_data / "ucf101" / "v_Basketball_g01_c01.avi"
    frames = shared_data / "msvd" / "0bSz70pYAP0_5_15"
    for overrides in (
        [],
        ["data.frame_sampling=clips", "classifier.clip_length=8", "classifier.clip_stride=4"],
    ):
        results = classify_files(line_run, [str(clip), str(frames)], overrides)
        assert [r[0] for r in results] == [str(clip), str(frames)]
        for _, label, probability in results:
            assert label in ("left_to_right", "right_to_left") and 0.5 <= probability <= 1.0


def test_cli_classify_prints_label_and_probability(
    line_run: Path, shared_data: Path, tmp_path: Path
):
    clip = shared_data / "ucf101" / "v_Basketball_g01_c01.avi"
    done = subprocess.run(
        [sys.executable, "-m", "lrcn.cli", "classify", str(clip), "--checkpoint", str(line_run)],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    path, label, probability = done.stdout.strip().split("\t")
    assert (
        path == str(clip)
        and label in ("left_to_right", "right_to_left")
        and float(probability) >= 0.5
    )
    (tmp_path / "empty").mkdir()
    (tmp_path / "zero.avi").write_bytes(b"")
    for bad in (tmp_path / "empty", tmp_path / "zero.avi", tmp_path / "missing.avi"):
        done = subprocess.run(
            [sys.executable, "-m", "lrcn.cli", "classify", str(bad), "--checkpoint", str(line_run)],
            capture_output=True, text=True, cwd=REPO, timeout=300,
        )  # fmt: skip
        assert done.returncode == 2 and str(bad) in done.stderr and "Traceback" not in done.stderr


def test_manifest_videos_report_clip_and_video_accuracy(shared_data: Path, tmp_path: Path):
    from lrcn.data.manifest import write_manifest
    from lrcn.engine import fit
    from lrcn.predict import evaluate

    clip = str(shared_data / "ucf101" / "v_Basketball_g01_c01.avi")
    records = [
        {
            "id": f"{split}{i}",
            "path": clip,
            "split": split,
            "label": i % 2,
            "label_name": ["Basketball", "Other"][i % 2],
        }
        for split in ("train", "val", "test")
        for i in range(2)
    ]
    write_manifest(records, tmp_path / "manifest", labels=["Basketball", "Other"])
    overrides = [
        "data.dataset=manifest",
        f"data.manifest={tmp_path / 'manifest'}",
        "data.image_size=32",
        "data.num_frames=8",
        "encoder.name=small_cnn",
        "encoder.weights=none",
        "encoder.feature_dim=16",
        "classifier.hidden_dim=16",
        "classifier.clip_length=8",
        "classifier.clip_stride=64",
        "data.frame_sampling=clips",
        "data.num_workers=0",
        "train.epochs=1",
        "train.batch_size=2",
        "train.progress=false",
    ]
    fit(load_config(REPO / "configs" / "ucf101.yaml", overrides), tmp_path / "run")
    metrics = evaluate(tmp_path / "run", split="test")
    assert metrics["items"] == 2
    # one video, the same clip labelled twice: exactly one of each pair is right
    assert metrics["video_accuracy"] == 0.5 and 0.0 <= metrics["clip_accuracy"] <= 1.0
    # decoded in two DataLoader workers, one clip per forward pass: the same figures
    parallel = evaluate(
        tmp_path / "run",
        split="test",
        overrides=["data.num_workers=2", "eval.batch_size=1"],
        out_dir=tmp_path / "parallel",
    )
    for key in ("accuracy", "clip_accuracy", "video_accuracy"):
        assert parallel[key] == metrics[key], key


def test_an_image_given_to_classify_is_refused_not_labelled(line_run: Path, tmp_path: Path):
    """A PNG would be read as a one-frame video and labelled without a word; it is refused with
    a sentence naming it, while a folder of the same frames is a video and gets its label."""
    import numpy as np
    from PIL import Image

    from lrcn.predict import iter_classifications

    frames = tmp_path / "frames"
    frames.mkdir()
    for n in range(8):
        Image.fromarray(np.full((16, 16, 3), 30 * n, np.uint8)).save(frames / f"{n:03d}.png")
    photo = frames / "003.png"
    results = list(iter_classifications(line_run, [str(photo), str(frames)]))
    (path, label, _, error), (_, folder_label, _, folder_error) = results
    assert path == str(photo) and label is None
    assert error == (
        f"{photo} is an image, and lrcn classify with a video classifier takes videos or frame "
        "folders (a folder of one video's frames); pass the video file, or the folder that "
        "holds its frames."
    )
    assert folder_error is None and folder_label in ("left_to_right", "right_to_left")
