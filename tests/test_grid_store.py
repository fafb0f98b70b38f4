"""Grids in the feature store (issue 18): extraction, reading row by row, refusals, training.

Stored grids are compared with live ones under test_features.FP16 (float16 rounding, relative to
each value) and read back exactly (the same bytes)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import REPO
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from test_features import FP16, interrupt_after_first_batch, resume_counting_encoded_rows, tiny

from lrcn.build import build_encoder, build_source, build_source_raw
from lrcn.data.datasets import (
    CaptionTrainDataset,
    Source,
    build_vocabulary,
    make_caption_collate,
)
from lrcn.data.store import FeatureSource, StoreWriter, items_header, store_paths
from lrcn.errors import LrcnError
from lrcn.extract import extract_features

ATTEND = "decoder.variant=show_attend_tell"


def grid_cfg(tmp_path, *extra: str, store: str = "store"):
    """The tiny frozen small_cnn shapes config of test_features, attending over the grid."""
    return tiny(tmp_path, ATTEND, *extra, f"data.features={tmp_path / store}")


def live_grids(cfg, split: str) -> torch.Tensor:
    """``encoder.grid`` run on the raw pixels now, one image at a time: (N, N_cells, D)."""
    torch.manual_seed(cfg.train.seed)  # what extraction and fit do before building the encoder
    encoder = build_encoder(cfg).eval()
    raw = build_source_raw(cfg, split)
    with torch.no_grad():
        return torch.cat([encoder.grid(raw.example(i).pixels[None]) for i in range(len(raw))])


def stored(source: FeatureSource) -> torch.Tensor:
    return torch.stack([source.features(i) for i in range(len(source))])


def test_grid_store_holds_the_encoders_grid_row_by_row(tmp_path):
    cfg = grid_cfg(tmp_path)  # small_cnn at 32 px: a 2 x 2 grid of 64 channels
    info = extract_features(cfg, "train")
    array_path, index_path = store_paths(tmp_path / "store", "train")
    assert (info["rows"], info["new"]) == (12, 12)
    rows = np.load(array_path, mmap_mode="r")
    assert rows.shape == (12, 4, 64) and rows.dtype == np.float16
    header = json.loads(index_path.read_text())["header"]
    assert header["grid"] is True and header["grid_size"] == 0

    source = build_source(cfg, "train")
    assert isinstance(source, FeatureSource) and source.row_shape == (4, 64)
    example = source.example(7)
    assert example.features.shape == (4, 64) and example.features.dtype == torch.float32
    grids = stored(source)
    assert grids.abs().max() > 0
    torch.testing.assert_close(grids, live_grids(cfg, "train"), **FP16)
    # read by positioned reads: nothing was mapped
    assert source._array is None and source._fd is not None

    # the collate batches grids as (B, N_cells, D) float32, captions as for vectors
    vocab = build_vocabulary(source, 1, 24)
    data = CaptionTrainDataset(source, vocab, 24)
    batch = make_caption_collate(False)([data[i] for i in range(3)])
    assert batch["features"].shape == (3, 4, 64) and batch["features"].dtype == torch.float32
    torch.testing.assert_close(batch["features"], grids[:3], rtol=0, atol=0)


def test_grid_size_pools_the_stored_grid(tmp_path):
    cfg = grid_cfg(tmp_path, "data.image_size=64", "encoder.grid_size=2")  # 4 x 4 pooled to 2 x 2
    extract_features(cfg, "val")
    source = build_source(cfg, "val")
    assert source.row_shape == (4, 64)
    torch.testing.assert_close(stored(source), live_grids(cfg, "val"), **FP16)


def test_vector_store_for_an_attention_decoder_is_refused(tmp_path):
    extract_features(tiny(tmp_path), "train")  # show_tell: pooled vectors
    with pytest.raises(LrcnError) as err:
        build_source(grid_cfg(tmp_path), "train")
    message = str(err.value)
    assert f"data.features {tmp_path / 'store'} holds pooled vectors" in message
    assert "decoder.variant show_attend_tell attends over the grid" in message
    assert "re-run `lrcn extract-features` with this config" in message
    assert message.count(". ") == 0 and message.endswith(".")


def test_grid_store_for_a_vector_decoder_is_refused(tmp_path):
    extract_features(grid_cfg(tmp_path), "train")
    with pytest.raises(LrcnError) as err:
        build_source(tiny(tmp_path), "train")
    message = str(err.value)
    assert f"data.features {tmp_path / 'store'} holds grids" in message
    assert "decoder.variant show_tell reads one pooled vector" in message
    assert "show_attend_tell" in message and message.count(". ") == 0


def test_grid_store_of_another_grid_size_is_refused(tmp_path):
    extract_features(grid_cfg(tmp_path, "data.image_size=64"), "train")
    with pytest.raises(LrcnError) as err:
        build_source(grid_cfg(tmp_path, "data.image_size=64", "encoder.grid_size=2"), "train")
    message = str(err.value)
    assert "encoder.grid_size=0 but the config sets encoder.grid_size=2" in message
    assert "set encoder.grid_size=0, or re-run `lrcn extract-features`" in message


def test_refusals_exit_2_from_the_command_line(tmp_path, capsys):
    from lrcn.cli import main

    overrides = [
        "data.train_size=12",
        "data.val_size=4",
        "data.image_size=32",
        "encoder.freeze=true",
        "encoder.feature_dim=16",
        "train.progress=false",
        "train.epochs=1",
        f"data.features={tmp_path / 'store'}",
    ]
    args = ["-c", str(REPO / "configs" / "shapes.yaml")]
    assert main(["extract-features", *args, "--split", "train", *overrides]) == 0
    capsys.readouterr()
    code = main(["train", *args, "--run-dir", str(tmp_path / "run"), *overrides, ATTEND])
    err = capsys.readouterr().err
    assert code == 2 and "holds pooled vectors" in err and "Traceback" not in err


def test_re_extraction_turns_a_vector_store_into_a_grid_store(tmp_path):
    extract_features(tiny(tmp_path), "val")
    info = extract_features(grid_cfg(tmp_path), "val")
    assert (info["rows"], info["new"]) == (4, 4)
    torch.testing.assert_close(
        stored(build_source(grid_cfg(tmp_path), "val")),
        live_grids(grid_cfg(tmp_path), "val"),
        **FP16,
    )


def test_interrupted_grid_extraction_resumes(tmp_path, monkeypatch):
    cfg = grid_cfg(tmp_path)  # 12 items in batches of 5
    array_path = interrupt_after_first_batch(cfg, monkeypatch, tmp_path / "store")
    assert np.load(array_path, mmap_mode="r").shape == (12, 4, 64)
    info, encoded = resume_counting_encoded_rows(cfg, monkeypatch)
    assert (info["rows"], info["new"]) == (12, 7) and encoded == 7  # the first 5 were not redone
    torch.testing.assert_close(stored(build_source(cfg, "train")), live_grids(cfg, "train"), **FP16)


SHORT_TRAINING = (
    "data.train_size=32",
    "data.val_size=4",
    "train.epochs=1",
    "train.batch_size=16",
    "decoder.embed_dim=16",
    "decoder.hidden_dim=32",
    "eval.metrics=bleu",
    "eval.tokenizer=python",
    "eval.beam_size=2",
)


def test_attention_captioner_trains_and_evaluates_from_a_grid_store(tmp_path):
    from lrcn.engine import fit
    from lrcn.predict import evaluate, iter_captions, load_model

    cfg = grid_cfg(tmp_path, *SHORT_TRAINING)
    for split in ("train", "val"):
        extract_features(cfg, split)
    summary = fit(cfg, tmp_path / "run")
    assert summary["steps"] == 2 and np.isfinite(summary["history"][0]["train_loss"])
    model, _, _ = load_model(tmp_path / "run" / "checkpoints" / "last.pt")
    assert model.attends == "grid"
    build_source(cfg, "val").check_encoder(model.encoder)  # captions raw images like training
    metrics = evaluate(tmp_path / "run", split="val", out_dir=tmp_path / "eval")
    assert metrics["items"] == 4 and isinstance(metrics["Bleu_4"], float)

    # `lrcn caption` runs the checkpoint's encoder on a raw image: its grid, not the store
    raw = build_source_raw(cfg, "val").example(0).pixels  # (3, 32, 32) normalised by 0.5 / 0.5
    image = tmp_path / "shape.png"
    Image.fromarray((raw.permute(1, 2, 0).numpy() * 127.5 + 127.5).astype(np.uint8)).save(image)
    [(path, caption, error)] = list(iter_captions(tmp_path / "run", [str(image)]))
    assert path == str(image) and error is None and isinstance(caption, str)


def test_video_store_of_frame_vectors_trains_temporal_attention(tmp_path):
    from lrcn.engine import fit

    video = ("data.num_frames=3", "decoder.variant=temporal_attention", *SHORT_TRAINING)
    cfg = tiny(tmp_path, *video, config="moving_shapes.yaml")
    for split in ("train", "val"):
        extract_features(cfg, split)
    source = build_source(cfg, "train")
    assert source.is_video and source.row_shape == (3, 16)  # per-frame vectors, as for show_tell
    header = json.loads(store_paths(tmp_path / "store", "train")[1].read_text())["header"]
    assert "grid" not in header
    # the same store serves the pooled video captioner: frames are not a grid
    pooled = tiny(tmp_path, *video[2:], "data.num_frames=3", config="moving_shapes.yaml")
    assert pooled.decoder.variant == "lrcn2f" and len(build_source(pooled, "train")) == 32
    summary = fit(cfg, tmp_path / "run")
    assert summary["steps"] == 2 and np.isfinite(summary["history"][0]["train_loss"])


class _Items(Source):
    """A raw source of ``n`` items with ids only (what a store checks)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def item_id(self, index: int) -> str:
        return f"item{index}"

    def captions(self, index: int) -> list[str]:
        return ["a grid"]


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 6),
    cells=st.integers(1, 9),
    dim=st.integers(1, 17),
    dtype=st.sampled_from(["float16", "float32"]),
    seed=st.integers(0, 2**16),
)
def test_positioned_reads_of_any_grid_shape_equal_the_written_rows(
    tmp_path_factory, rows, cells, dim, dtype, seed
):
    folder = tmp_path_factory.mktemp("store")
    raw = _Items(rows)
    grids = np.random.default_rng(seed).standard_normal((rows, cells, dim)).astype(dtype)
    writer = StoreWriter(folder, "train", {"grid": True, **items_header(raw)}, (cells, dim), dtype)
    writer.write(0, grids)
    writer.close()
    source = FeatureSource(folder, "train", raw)
    read = np.stack([source.features(i).numpy() for i in range(rows)])
    assert read.dtype == np.float32 and read.shape == (rows, cells, dim)
    np.testing.assert_array_equal(read, grids.astype(np.float32))
    assert source._array is None  # positioned reads: no memory map
    source.close()
