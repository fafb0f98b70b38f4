"""The feature store: extraction, reading back, resume, invalidation, workers, training from it."""

from __future__ import annotations

import json
import os
import pickle
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from lrcn.build import build_encoder, build_source, build_source_raw
from lrcn.config import load_config
from lrcn.data.datasets import CaptionTrainDataset, build_vocabulary, make_caption_collate
from lrcn.data.store import FeatureSource, StoreWriter, store_paths
from lrcn.errors import LrcnError
from lrcn.extract import extract_features

# float16 keeps 11 significant bits: rounding is under 2**-11 (4.9e-4) of each value, 4 times
# inside rtol, and the float32 difference between batched extraction and one-at-a-time encoding is
# about 1e-6 of it, so these relative bounds hold on any CPU.
FP16 = {"atol": 2e-3, "rtol": 2e-3}


def tiny(tmp_path, *extra: str, config: str = "shapes.yaml"):
    """A tiny frozen small_cnn config whose store lives in ``tmp_path/store``."""
    return load_config(
        REPO / "configs" / config,
        [
            "data.train_size=12",
            "data.val_size=4",
            "data.test_size=4",
            "data.image_size=32",
            "encoder.freeze=true",
            "encoder.feature_dim=16",
            "eval.batch_size=5",
            "train.progress=false",
            f"data.features={tmp_path / 'store'}",
            *extra,
        ],
    )


def live_features(cfg, split: str) -> torch.Tensor:
    """The encoder run on the raw pixels now, one image (or clip) at a time: (N, D) / (N, T, D)."""
    torch.manual_seed(cfg.train.seed)  # what extraction and fit do before building the encoder
    encoder = build_encoder(cfg).eval()
    raw = build_source_raw(cfg, split)
    with torch.no_grad():
        rows = []
        for i in range(len(raw)):
            pixels = raw.example(i).pixels
            rows.append(encoder(pixels[None])[0] if pixels.dim() == 3 else encoder(pixels))
    return torch.stack(rows)


def stored_features(source: FeatureSource) -> torch.Tensor:
    return torch.stack([source.example(i).features for i in range(len(source))])


def test_image_store_round_trip_equals_live_encoding(tmp_path):
    cfg = tiny(tmp_path)
    info = extract_features(cfg, "train")
    array_path, index_path = store_paths(tmp_path / "store", "train")
    assert info == {"rows": 12, "new": 12, "missing": 0, "path": str(array_path)}
    rows = np.load(array_path, mmap_mode="r")
    assert rows.shape == (12, 16) and rows.dtype == np.float16
    index = json.loads(index_path.read_text())
    assert index["filled"] == 12 and index["header"]["encoder"] == "small_cnn"

    source = build_source(cfg, "train")
    raw = build_source_raw(cfg, "train")
    assert isinstance(source, FeatureSource) and not source.is_video and len(source) == 12
    example = source.example(3)
    assert example.pixels is None and example.features.dtype == torch.float32
    assert example.features.shape == (16,)
    assert (example.id, example.captions) == (raw.item_id(3), raw.captions(3))
    assert source.captions(5) == raw.captions(5) and source.item_id(5) == raw.item_id(5)
    features = stored_features(source)
    assert features.abs().max() > 0  # not an empty store passing by accident
    torch.testing.assert_close(features, live_features(cfg, "train"), **FP16)
    mapped = torch.from_numpy(np.asarray(source.array, dtype=np.float32))
    torch.testing.assert_close(mapped, features, rtol=0, atol=0)  # the same bytes: exact
    with pytest.raises(IndexError):
        source.features(12)

    again = extract_features(cfg, "train")
    assert again["new"] == 0 and again["rows"] == 12


def test_video_store_holds_per_frame_features(tmp_path):
    cfg = tiny(tmp_path, "data.num_frames=3", config="moving_shapes.yaml")
    info = extract_features(cfg, "val")
    assert (info["rows"], info["new"]) == (4, 4)
    source = build_source(cfg, "val")
    assert source.is_video and source.example(0).features.shape == (3, 16)
    # the temporal encoder is trained, so the store holds the CNN's per-frame features
    torch.testing.assert_close(stored_features(source), live_features(cfg, "val"), **FP16)

    more_frames = tiny(tmp_path, "data.num_frames=4", config="moving_shapes.yaml")
    with pytest.raises(LrcnError, match=r"val\.npy.*num_frames 3 \(config: 4\).*extract-features"):
        build_source(more_frames, "val")


def test_float32_store_is_exact_and_float16_halves_the_file(tmp_path):
    cfg32 = tiny(tmp_path / "a", "data.features_dtype=float32")
    cfg16 = tiny(tmp_path / "b", "data.features_dtype=float16")
    extract_features(cfg32, "test")
    extract_features(cfg16, "test")
    live = live_features(cfg32, "test")
    exact = stored_features(build_source(cfg32, "test"))
    rounded = stored_features(build_source(cfg16, "test"))
    # one forward at two batch sizes (other conv kernels, other summation orders): float32 rounding
    # relative to the largest feature; it was an absolute 1e-6
    torch.testing.assert_close(exact, live, atol=1e-5 * live.abs().max().item(), rtol=1e-5)
    torch.testing.assert_close(rounded, live, **FP16)
    assert not torch.equal(rounded, exact)  # float16 rounding did happen
    size32 = np.load(store_paths(tmp_path / "a" / "store", "test")[0], mmap_mode="r").nbytes
    size16 = np.load(store_paths(tmp_path / "b" / "store", "test")[0], mmap_mode="r").nbytes
    assert size16 * 2 == size32


def interrupt_after_first_batch(cfg, monkeypatch, folder) -> Path:
    """Extract the train split of ``cfg`` (12 items in batches of 5), stopped by a Ctrl-C after its
    first batch; returns the store's array file, whose index says 5 rows are filled."""
    write = StoreWriter.write

    def stop_after_first_batch(self, start, *args, **kwargs):
        if start > 0:
            raise KeyboardInterrupt
        write(self, start, *args, **kwargs)

    monkeypatch.setattr(StoreWriter, "write", stop_after_first_batch)
    with pytest.raises(KeyboardInterrupt):
        extract_features(cfg, "train")
    monkeypatch.undo()
    array_path, index_path = store_paths(folder, "train")
    assert json.loads(index_path.read_text())["filled"] == 5
    return array_path


def resume_counting_encoded_rows(cfg, monkeypatch) -> tuple[dict, int]:
    """Extract the train split of ``cfg`` again; its result and how many rows the encoder ran on
    (rows kept from before are not encoded again: their bytes pass their checksums)."""
    import lrcn.extract

    encode, encoded = lrcn.extract.encode_pixels, []

    def counting(encoder, pixels, *args, **kwargs):
        encoded.append(len(pixels))
        return encode(encoder, pixels, *args, **kwargs)

    monkeypatch.setattr(lrcn.extract, "encode_pixels", counting)
    info = extract_features(cfg, "train")
    monkeypatch.undo()
    return info, sum(encoded)


def test_interrupted_extraction_resumes_and_keeps_existing_rows(tmp_path, monkeypatch):
    cfg = tiny(tmp_path)  # 12 items in batches of 5
    array_path = interrupt_after_first_batch(cfg, monkeypatch, tmp_path / "store")
    with pytest.raises(LrcnError, match=r"incomplete \(5 of 12 rows\).*extract-features"):
        build_source(cfg, "train")

    kept = array_path.read_bytes()
    info, encoded = resume_counting_encoded_rows(cfg, monkeypatch)
    assert (info["rows"], info["new"]) == (12, 7) and encoded == 7  # the first 5 were not redone
    head = len(kept) - 7 * 16 * 2  # the header and the 5 kept rows (16 float16 values each)
    assert array_path.read_bytes()[:head] == kept[:head]
    torch.testing.assert_close(
        stored_features(build_source(cfg, "train")), live_features(cfg, "train"), **FP16
    )


@pytest.mark.parametrize(
    "override, key",
    [
        ("data.image_size=48", "image_size"),
        ("encoder.feature_dim=8", "encoder_feature_dim"),
        ("encoder.name=resnet18", "encoder"),
        ("encoder.weights=imagenet", "weights"),
        ("data.features_dtype=float32", "dtype"),
        ("data.train_size=13", "items"),
        ("data.seed=1", "data_seed"),
    ],
)
def test_store_made_differently_is_refused(tmp_path, override, key):
    extract_features(tiny(tmp_path), "train")
    changed = tiny(tmp_path, override)
    with pytest.raises(LrcnError) as err:
        build_source(changed, "train")
    message = str(err.value)
    assert str(tmp_path / "store" / "train.npy") in message
    assert f"{key} " in message and f"delete {tmp_path / 'store'}" in message
    assert "re-run `lrcn extract-features -c CONFIG`" in message


def test_store_of_other_items_is_refused(tmp_path):
    cfg = tiny(tmp_path, "data.val_size=12")
    extract_features(cfg, "train")
    for train, val in zip(
        store_paths(tmp_path / "store", "train"), store_paths(tmp_path / "store", "val")
    ):
        val.write_bytes(train.read_bytes())  # as many rows as val has items, but train's
    with pytest.raises(LrcnError, match=r"val\.npy was made differently .*: the item ids"):
        build_source(cfg, "val")


def test_re_running_extraction_rebuilds_a_stale_store(tmp_path):
    extract_features(tiny(tmp_path), "val")
    bigger = tiny(tmp_path, "data.image_size=48")
    info = extract_features(bigger, "val")
    assert (info["rows"], info["new"]) == (4, 4)
    torch.testing.assert_close(
        stored_features(build_source(bigger, "val")), live_features(bigger, "val"), **FP16
    )


def test_missing_or_corrupt_store_says_what_to_run(tmp_path):
    cfg = tiny(tmp_path)
    with pytest.raises(LrcnError, match=r"no train split.*run `lrcn extract-features -c CONFIG"):
        build_source(cfg, "train")
    extract_features(cfg, "train")
    array_path, index_path = store_paths(tmp_path / "store", "train")
    with open(array_path, "r+b") as f:
        f.truncate(array_path.stat().st_size - 10)
    with pytest.raises(LrcnError, match=r"train\.npy is missing or does not match its index"):
        build_source(cfg, "train")
    index_path.write_text("{not json")
    with pytest.raises(LrcnError, match=r"train\.json is unreadable; delete"):
        build_source(cfg, "train")
    assert extract_features(cfg, "train")["new"] == 12  # re-running repairs the store
    assert len(build_source(cfg, "train")) == 12


def test_extraction_needs_a_frozen_encoder_and_a_folder(tmp_path):
    with pytest.raises(LrcnError, match="encoder.freeze is false"):
        extract_features(tiny(tmp_path, "encoder.freeze=false"), "train")
    with pytest.raises(LrcnError, match="encoder.freeze is false"):
        build_source(tiny(tmp_path, "encoder.freeze=false"), "train")
    with pytest.raises(LrcnError, match="needs data.features"):
        extract_features(tiny(tmp_path, "data.features=null"), "train")
    (tmp_path / "a-file").write_text("")
    with pytest.raises(LrcnError, match="a-file.*a file stands where its folder should be"):
        extract_features(tiny(tmp_path, f"data.features={tmp_path / 'a-file'}"), "train")


class _Probe(Dataset):
    """Features read in a worker, with the process that opened the store and the worker's pid."""

    def __init__(self, source: FeatureSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        features = self.source.features(index)
        return features, self.source._pid, os.getpid()


def test_dataloader_workers_each_open_the_store(tmp_path):
    cfg = tiny(tmp_path)
    extract_features(cfg, "train")
    source = build_source(cfg, "train")
    assert source._fd is None  # nothing opened until a row is read
    expected = stored_features(source)  # opens the store in this process before the fork
    assert source._fd is not None and pickle.loads(pickle.dumps(source))._fd is None

    loader = DataLoader(_Probe(source), batch_size=3, num_workers=2)
    batches = list(loader)
    torch.testing.assert_close(torch.cat([b[0] for b in batches]), expected, rtol=0, atol=0)
    opened_by = torch.cat([b[1] for b in batches])
    workers = torch.cat([b[2] for b in batches])
    assert torch.equal(opened_by, workers) and os.getpid() not in workers.tolist()
    assert len(set(workers.tolist())) == 2

    vocab = build_vocabulary(source, 1, 24)
    data = CaptionTrainDataset(source, vocab, 24)
    loader = DataLoader(data, batch_size=4, num_workers=2, collate_fn=make_caption_collate(False))
    batch = next(iter(loader))
    assert batch["features"].shape == (4, 16) and batch["tokens"].shape[0] == 20
    torch.testing.assert_close(batch["features"], expected[:4], rtol=0, atol=0)


def _manifest(tmp_path, broken: int) -> str:
    folder = tmp_path / "manifest"
    folder.mkdir()
    rng = np.random.default_rng(0)
    with open(folder / "train.jsonl", "w", encoding="utf-8") as f:
        for i in range(4):
            path = tmp_path / f"image{i}.png"
            if i == broken:
                path.write_bytes(b"not an image")
            else:
                Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(path)
            record = {"id": f"im{i}", "path": str(path), "split": "train", "captions": ["a cat"]}
            f.write(json.dumps(record) + "\n")
    return str(folder)


def test_unreadable_images_raise_or_are_marked_missing(tmp_path):
    folder = _manifest(tmp_path, broken=2)
    overrides = ["data.dataset=manifest", f"data.manifest={folder}", "eval.batch_size=2"]
    with pytest.raises(LrcnError, match=r"image2\.png is not an image"):
        extract_features(tiny(tmp_path, *overrides), "train")

    # the batch before the broken image is kept; the next run starts at the broken image's batch
    assert json.loads(store_paths(tmp_path / "store", "train")[1].read_text())["filled"] == 2
    cfg = tiny(tmp_path, *overrides, "data.on_error=skip")
    info = extract_features(cfg, "train")
    assert (info["rows"], info["new"], info["missing"]) == (4, 2, 1)
    source = build_source(cfg, "train")
    with pytest.raises(LrcnError, match="im2 has no features"):
        source.example(2)
    assert source.example(3).features.abs().max() > 0
    vocab = build_vocabulary(source, 1, 24)
    assert "skipped" in CaptionTrainDataset(source, vocab, 24, on_error="skip")[2]


def test_command_line_and_script_fill_the_store(tmp_path, capsys, monkeypatch):
    from lrcn.cli import main

    args = ["-c", str(REPO / "configs" / "shapes.yaml"), "--split", "val"]
    overrides = [
        "data.val_size=4",
        "data.image_size=32",
        "encoder.freeze=true",
        "encoder.feature_dim=16",
        "train.progress=false",
        f"data.features={tmp_path / 'store'}",
    ]
    assert main(["extract-features", *args, *overrides]) == 0
    assert f"val: 4 rows (4 new) in {tmp_path / 'store' / 'val.npy'}" in capsys.readouterr().out

    monkeypatch.setattr(sys, "argv", ["extract_features.py", *args, *overrides])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(REPO / "scripts" / "extract_features.py"), run_name="__main__")
    assert done.value.code == 0 and "val: 4 rows (0 new)" in capsys.readouterr().out

    assert main(["extract-features", *args, *overrides[:-1]]) == 2
    assert "needs data.features" in capsys.readouterr().err


def test_training_from_the_store_keeps_the_encoder_that_made_it(tmp_path):
    from lrcn.engine import fit
    from lrcn.predict import evaluate, load_model

    cfg = tiny(
        tmp_path,
        "data.train_size=48",
        "data.val_size=8",
        "train.epochs=1",
        "train.batch_size=16",
        "decoder.embed_dim=16",
        "decoder.hidden_dim=32",
        "eval.metrics=bleu",
        "eval.tokenizer=python",
    )
    for split in ("train", "val"):
        extract_features(cfg, split)
    summary = fit(cfg, tmp_path / "run")
    assert summary["steps"] == 3 and np.isfinite(summary["history"][0]["train_loss"])

    # the checkpoint captions raw images with the encoder whose features it was trained on
    model, _, _ = load_model(tmp_path / "run" / "checkpoints" / "last.pt")
    source = build_source(cfg, "val")
    source.check_encoder(model.encoder)
    raw = build_source_raw(cfg, "val")
    with torch.no_grad():
        live = model.encoder.eval()(torch.stack([raw.example(i).pixels for i in range(8)]))
    torch.testing.assert_close(stored_features(source), live, **FP16)

    metrics = evaluate(tmp_path / "run", split="val", out_dir=tmp_path / "eval")
    assert metrics["items"] == 8 and isinstance(metrics["Bleu_4"], float)

    torch.manual_seed(1)
    with pytest.raises(LrcnError, match="not the one that made"):
        source.check_encoder(build_encoder(cfg))
