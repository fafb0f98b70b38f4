"""Video description end to end: one decoder, decoding and metrics module shared with images."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO

from lrcn.config import load_config

TINY_VIDEO = [
    "data.train_size=48",
    "data.val_size=8",
    "data.test_size=8",
    "data.image_size=32",
    "data.num_frames=4",
    "train.epochs=1",
    "train.batch_size=16",
    "train.progress=false",
    "encoder.feature_dim=32",
    "encoder.temporal_hidden_dim=32",
    "decoder.embed_dim=16",
    "decoder.hidden_dim=32",
    "eval.metrics=bleu,cider",
    "eval.tokenizer=python",
]


@pytest.fixture(scope="module")
def video_run(tmp_path_factory) -> Path:
    from lrcn.engine import fit

    run = tmp_path_factory.mktemp("video")
    fit(load_config(REPO / "configs" / "moving_shapes.yaml", TINY_VIDEO), run)
    return run


def test_image_and_video_captioners_share_decoder_decoding_and_metrics(video_run: Path):
    from lrcn.models.captioner import ImageCaptioner, VideoCaptioner
    from lrcn.models.decoder import LSTMDecoder
    from lrcn.predict import load_model

    model, _, _ = load_model(video_run)
    assert isinstance(model, VideoCaptioner) and not isinstance(model, ImageCaptioner)
    assert type(model.decoder) is LSTMDecoder


def test_evaluate_video_checkpoint_reports_bleu_reference_points_and_motion(
    video_run: Path, tmp_path: Path
):
    from lrcn.predict import evaluate

    metrics = evaluate(video_run, split="test", out_dir=tmp_path)
    for key in (
        "Bleu_1",
        "Bleu_4",
        "CIDEr",
        "reference_loo_Bleu_4",
        "baseline_Bleu_4",
        "motion_accuracy",
    ):
        assert isinstance(metrics[key], float), key
    assert metrics["items"] == 8


def test_caption_real_msvd_frame_folders(video_run: Path, shared_data: Path):
    from lrcn.data.readers.msvd import read_msvd
    from lrcn.predict import caption_files

    records = read_msvd(shared_data / "msvd")
    assert len(records) == 2 and all(len(r["captions"]) >= 30 for r in records)
    results = caption_files(video_run, [r["path"] for r in records])
    assert [p for p, _ in results] == [r["path"] for r in records]
    assert all(isinstance(c, str) and c for _, c in results)


def test_an_image_given_to_a_video_captioner_is_refused(video_run: Path, tmp_path: Path):
    """A video captioner would caption a PNG as a one-frame video; it names the file instead."""
    import numpy as np
    from PIL import Image

    from lrcn.predict import iter_captions

    photo = tmp_path / "photo.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(photo)
    [(path, caption, error)] = list(iter_captions(video_run, [str(photo)]))
    assert path == str(photo) and caption is None
    assert error is not None and error.startswith(f"{photo} is an image, and lrcn caption with")
    assert "takes videos or frame folders" in error
