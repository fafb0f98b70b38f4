"""Feature stores checked like checkpoints (issue 25, findings 4 and 5): every byte of a split is
covered by a CRC32 in its index (the .npy header, each block of rows, the index itself), checked
when the split is opened and before extraction keeps rows; rows are written with positioned
writes into a preallocated file, so a full disk is one sentence, never a bus error, and the store
resumes to the uninterrupted result."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from test_features import resume_counting_encoded_rows, tiny
from test_grid_store import _Items
from test_machine_failures import _mounted

import lrcn.data.store as store
import lrcn.data.store_files as store_files
from lrcn.build import build_source
from lrcn.cli import main
from lrcn.data.store import FeatureSource, StoreWriter, items_header, store_paths
from lrcn.errors import LrcnError
from lrcn.extract import extract_features

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def same_store(a: Path, b: Path, split: str = "train") -> bool:
    """Whether two store folders hold byte-for-byte the same split (rows and index)."""
    return all(x.read_bytes() == y.read_bytes() for x, y in zip(store_paths(a, split), store_paths(b, split)))  # fmt: skip


def one_sentence(message: str, *names: str) -> None:
    assert "Traceback" not in message and len(message.strip().splitlines()) == 1, message
    assert message.count(". ") == 0 and message.strip().endswith("."), message
    for name in names:
        assert name in message, (name, message)


def small_store(folder: Path, monkeypatch, rows: int = 10, block_rows: int = 4) -> Path:
    """A float16 store of ``rows`` random (rows, 3) vectors in blocks of ``block_rows`` rows."""
    monkeypatch.setattr(store, "BLOCK_BYTES", block_rows * 3 * 2, raising=False)
    writer = StoreWriter(folder, "train", items_header(_Items(rows)), (3,), "float16")
    values = np.random.default_rng(0).standard_normal((rows, 3))
    writer.write(0, values[:3])  # two writes: a block continued across them
    writer.write(3, values[3:])
    writer.close()
    return store_paths(folder, "train")[0]


def test_any_changed_byte_of_a_store_is_refused_on_open(tmp_path, monkeypatch):
    """Every byte of the .npy (header, padding, every row of every block) flipped in turn; and one
    byte appended or cut: each is refused, naming the file, the split or index, and the fix."""
    path = small_store(tmp_path, monkeypatch)
    FeatureSource(tmp_path, "train", _Items(10))  # the store as written opens
    good = path.read_bytes()
    assert len(good) == 128 + 10 * 3 * 2  # a 128-byte .npy header, then 10 rows of 3 float16
    spoilt = [good[:i] + bytes([good[i] ^ 0xFF]) + good[i + 1 :] for i in range(len(good))]
    for i, bad in enumerate([*spoilt, good + b"\0", good[:-1]]):
        path.write_bytes(bad)
        with pytest.raises(LrcnError) as err:
            FeatureSource(tmp_path, "train", _Items(10))
        one_sentence(
            str(err.value), str(path), "re-run `lrcn extract-features", f"delete {tmp_path}"
        )
        if 128 <= i < len(good):  # a row's byte: the rows of its block are named
            first = (i - 128) // 6 // 4 * 4
            assert f"rows {first}-{min(9, first + 3)} of split train" in str(err.value), i
    path.write_bytes(good)
    assert len(FeatureSource(tmp_path, "train", _Items(10))) == 10
    index = json.loads(store_paths(tmp_path, "train")[1].read_text())
    assert len(index["checksums"]["blocks"]) == 3  # blocks of 4, 4 and 2 rows


def test_a_header_whose_dtype_was_changed_is_refused(tmp_path, monkeypatch):
    path = small_store(tmp_path, monkeypatch)
    good = path.read_bytes()
    assert good.count(b"'<f2'") == 1
    path.write_bytes(good.replace(b"'<f2'", b"'<i2'"))  # as long: read silently as int16 before
    with pytest.raises(LrcnError, match=r"train\.npy is missing or does not match its index"):
        FeatureSource(tmp_path, "train", _Items(10))


@pytest.mark.parametrize(
    "edit",
    [
        lambda index: index.update(filled=index["filled"] - 1),
        lambda index: index.update(missing=[3]),
        lambda index: index["checksums"]["blocks"].__setitem__(0, index["checksums"]["blocks"][0] ^ 1),
        lambda index: index.update(encoder_checksum="0" * 64),
        lambda index: index["header"].update(items=9),
    ],
    ids=["filled", "missing", "block-crc", "encoder", "header"],
)  # fmt: skip
def test_an_edited_index_is_refused(tmp_path, monkeypatch, edit):
    small_store(tmp_path, monkeypatch)
    index_path = store_paths(tmp_path, "train")[1]
    index = json.loads(index_path.read_text())
    edit(index)
    index_path.write_text(json.dumps(index, indent=2))
    with pytest.raises(LrcnError) as err:
        FeatureSource(tmp_path, "train", _Items(10))
    one_sentence(str(err.value), f"{index_path} was edited or is corrupt", f"delete {tmp_path}")


def test_flipped_kilobytes_are_refused_and_re_extraction_repairs_them(tmp_path, caplog):
    """Finding 4: 4 KB of flipped bytes in a store read silently (scores fell, training met nan),
    and extract-features said "0 new rows" over them."""
    sizes = ("encoder.feature_dim=256", "data.test_size=12")  # 12 rows of 512 bytes: one block
    cfg, reference = tiny(tmp_path, *sizes), tiny(tmp_path / "reference", *sizes)
    for split in ("train", "test"):
        extract_features(cfg, split)
        extract_features(reference, split)
    for split in ("train", "test"):
        path = store_paths(tmp_path / "store", split)[0]
        data = bytearray(path.read_bytes())
        data[1000:5096] = bytes(b ^ 0x5A for b in data[1000:5096])
        path.write_bytes(bytes(data))
        with pytest.raises(LrcnError) as err:
            build_source(cfg, split)
        one_sentence(str(err.value), str(path), f"rows 0-11 of split {split} do not match",
                     "re-run `lrcn extract-features -c CONFIG`", f"delete {tmp_path / 'store'}")  # fmt: skip
        with caplog.at_level(logging.WARNING, logger="lrcn.data.store"):
            assert extract_features(cfg, split)["new"] == 12  # not "0 new"
        assert f"{path}: rows 0-11 of split {split} do not match their checksums" in caplog.text
        assert same_store(tmp_path / "store", tmp_path / "reference" / "store", split)
        assert len(build_source(cfg, split)) == 12


def test_extraction_recomputes_from_the_first_corrupt_block(tmp_path, monkeypatch, caplog):
    """Blocks of 5 rows (the batches' size, so the recomputed rows meet the encoder in the same
    batches and equal the uninterrupted extraction's bytes); a byte of block 1 changed."""
    monkeypatch.setattr(store, "BLOCK_BYTES", 5 * 16 * 2, raising=False)  # 16 float16 values a row
    cfg = tiny(tmp_path)
    extract_features(cfg, "train")
    extract_features(tiny(tmp_path / "reference"), "train")
    path = store_paths(tmp_path / "store", "train")[0]
    data = bytearray(path.read_bytes())
    data[-7 * 32 + 3] ^= 1  # a byte of row 5
    path.write_bytes(bytes(data))
    with pytest.raises(LrcnError, match="rows 5-9 of split train do not match their checksums"):
        build_source(cfg, "train")
    with caplog.at_level(logging.WARNING, logger="lrcn.data.store"):
        info, encoded = resume_counting_encoded_rows(cfg, monkeypatch)
    assert (info["new"], encoded) == (7, 7) and "rows 5-9 of split train" in caplog.text
    assert same_store(tmp_path / "store", tmp_path / "reference" / "store")


def test_a_store_without_checksums_is_refused_then_rebuilt(tmp_path, caplog):
    """An index of format 1 (before checksums): nothing says its rows are good, so readers refuse
    it and extraction recomputes it."""
    cfg = tiny(tmp_path)
    extract_features(cfg, "val")
    extract_features(tiny(tmp_path / "reference"), "val")
    index_path = store_paths(tmp_path / "store", "val")[1]
    index = json.loads(index_path.read_text())
    for key in ("checksums", "index_crc32"):
        del index[key]
    index_path.write_text(json.dumps({**index, "format": 1}, indent=2))
    with pytest.raises(LrcnError) as err:
        build_source(cfg, "val")
    one_sentence(str(err.value), f"{index_path} has no checksums",
                 "re-run `lrcn extract-features -c CONFIG --split val`", f"delete {tmp_path / 'store'}")  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="lrcn.data.store"):
        assert extract_features(cfg, "val")["new"] == 4
    assert "rebuilding split val (it has no checksums" in caplog.text
    assert same_store(tmp_path / "store", tmp_path / "reference" / "store", "val")


def _extract_cli(capsys, store_folder: Path) -> tuple[int, str]:
    argv = ["extract-features", "-c", str(REPO / "configs" / "shapes.yaml"), "--split", "train",
            "data.train_size=12", "data.image_size=32", "encoder.freeze=true",
            "encoder.feature_dim=16", "eval.batch_size=5", "train.progress=false",
            f"data.features={store_folder}"]  # fmt: skip
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("failing", ["rows-1", "rows-2", "rows-3", "sync-2", "preallocate"])
def test_a_full_disk_is_one_sentence_and_the_store_resumes(tmp_path, monkeypatch, capsys, failing):
    """ENOSPC from the n-th positioned write of rows (3 batches), from a sync, or from the
    preallocation: exit 2 with one sentence naming the file; after "freeing space" the re-run
    ends equal to an uninterrupted extraction."""
    assert _extract_cli(capsys, tmp_path / "reference")[0] == 0
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    kind, _, count = failing.partition("-")
    calls = []

    def failing_at(real):
        def call(*args):
            calls.append(1)
            if not count or len(calls) == int(count):
                raise full
            return real(*args)

        return call

    if kind == "rows":
        monkeypatch.setattr(store, "write_at", failing_at(store_files.write_at), raising=False)
    elif kind == "sync":
        monkeypatch.setattr(os, "fdatasync", failing_at(os.fdatasync))
    else:
        monkeypatch.setattr(store_files, "preallocate", failing_at(store_files.preallocate))
    code, err = _extract_cli(capsys, tmp_path / "store")
    assert code == 2, err
    name = "train.npy"
    one_sentence(
        err, f"{tmp_path / 'store' / name}: no space left on the device", "run the command again"
    )
    assert not list((tmp_path / "store").glob(".*.tmp"))
    monkeypatch.undo()
    assert _extract_cli(capsys, tmp_path / "store")[0] == 0
    assert same_store(tmp_path / "store", tmp_path / "reference")


SHAPES = [
    "data.train_size=64",
    "data.image_size=32",
    "encoder.freeze=true",
    "encoder.feature_dim=2048",
    "data.features_dtype=float32",
    "eval.batch_size=16",
    "train.progress=false",
]  # fmt: skip  (rows of 8 KB: 512 KB and a 128-byte header)


def _extract_child(folder: Path) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "lrcn.cli", "extract-features", "-c", "configs/shapes.yaml",
            "--split", "train", *SHAPES, f"data.features={folder}"]  # fmt: skip
    return subprocess.run(argv, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("room_kb", [128, 524])
def test_a_really_full_disk_is_a_sentence_not_a_bus_error(tmp_path, room_kb):
    """A tmpfs too small for the rows (128 KB), or with room for the lock file, the preallocated
    rows (129 pages of 4 KB) and one index, so that the index rewritten after the first batch
    meets the full disk (524 KB): before, rows went through a writable memory map and the full
    disk killed the process with SIGBUS (exit 135, nothing said)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    reference = tmp_path / "reference"
    with _mounted("-t", "tmpfs", "-o", f"size={room_kb}k", "tmpfs", target=disk):
        done = _extract_child(disk / "store")
        assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
        one_sentence(done.stderr, f"{disk / 'store'}", "no space left on the device")
        done = subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], capture_output=True)
        assert done.returncode == 0, done.stderr
        done = _extract_child(disk / "store")
        assert done.returncode == 0, done.stderr[-2000:]
        assert _extract_child(reference).returncode == 0
        assert same_store(disk / "store", reference)
