"""Crash-consistent checkpoints: the best.pt/last.pt pair survives a death between its writes,
leftover temporary files go, files honour the umask, and changed, empty or truncated checkpoints
are refused with one sentence."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from conftest import REPO, TINY_SHAPES

from lrcn.cli import main
from lrcn.config import load_config
from lrcn.engine import fit

TINY = [*TINY_SHAPES, "data.train_size=64", "train.batch_size=16", "data.val_size=16",
        "decoder.dropout=0.2", "train.epochs=3"]  # fmt: skip


class _Died(BaseException):
    """Stands in for SIGKILL inside one process: nothing after it runs."""


def same_checkpoint(a: Path, b: Path) -> bool:
    """Bitwise equal tensors and equal values everywhere but the wall-clock seconds of history."""

    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if k != "seconds"}
        if isinstance(obj, list | tuple):
            return [strip(v) for v in obj]
        return obj

    def equal(x, y) -> bool:
        if isinstance(x, torch.Tensor):
            return isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y)
        if isinstance(x, dict):
            return (
                isinstance(y, dict) and x.keys() == y.keys() and all(equal(x[k], y[k]) for k in x)
            )
        if isinstance(x, list):
            return isinstance(y, list) and len(x) == len(y) and all(map(equal, x, y))
        return x == y

    load = lambda p: strip(torch.load(p, map_location="cpu", weights_only=True))  # noqa: E731
    return equal(load(a), load(b))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted tiny run (three epochs, the best improving after the first)."""
    run = tmp_path_factory.mktemp("reference")
    old = os.umask(0o022)
    try:
        summary = fit(load_config(REPO / "configs" / "shapes.yaml", TINY), run)
    finally:
        os.umask(old)
    assert summary["best_epoch"] >= 2, summary["history"]  # an epoch after the first improves
    return run


def test_a_death_at_any_checkpoint_write_resumes_to_the_same_last_and_best(
    reference: Path, tmp_path: Path, monkeypatch
):
    """Die just before each epoch-end checkpoint write in turn (after last.pt and before
    best.pt was the window that left best.pt stale forever), resume, compare both files."""
    real_save = torch.save  # patched for the checkpoints' writes alone (same on the baseline)
    writes: list[str] = []
    monkeypatch.setattr(torch, "save", lambda d, p: (writes.append(str(p)), real_save(d, p)))
    fit(load_config(REPO / "configs" / "shapes.yaml", TINY), tmp_path / "count")
    total = len(writes)
    for n in range(3, total + 1):  # every write after epoch 1 (best.pt, last.pt)
        run = tmp_path / f"die{n}"
        calls = []

        def dying(d, p, n=n, calls=calls):
            calls.append(p)
            if len(calls) == n:
                raise _Died
            real_save(d, p)

        monkeypatch.setattr(torch, "save", dying)
        with pytest.raises(_Died):
            fit(load_config(REPO / "configs" / "shapes.yaml", TINY), run)
        monkeypatch.setattr(torch, "save", real_save)
        fit(None, run, resume=True)
        for name in ("last.pt", "best.pt"):
            assert same_checkpoint(reference / "checkpoints" / name, run / "checkpoints" / name), (
                n,
                name,
            )


def test_leftover_temp_files_are_removed_at_the_next_start(reference: Path, tmp_path: Path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("checkpoints/last.pt", "checkpoints/best.pt", "config.yaml", "vocab.json"):
        (run / name).write_bytes((reference / name).read_bytes())
    leftovers = [run / "checkpoints" / ".last.pt.k2j3_x.tmp", run / ".config.yaml.ab12cd.tmp"]
    for tmp in leftovers:
        tmp.write_bytes(b"half a file")
    assert main(["train", "--resume", str(run), "--no-test"]) == 0
    assert not [p for p in run.rglob(".*.tmp")]


def test_files_honour_the_umask(reference: Path):
    for name in ("checkpoints/last.pt", "checkpoints/best.pt", "config.yaml", "vocab.json"):
        assert stat.S_IMODE((reference / name).stat().st_mode) == 0o644, name


def _evaluate(path: Path, capsys) -> tuple[int, str]:
    code = main(["evaluate", "--checkpoint", str(path), "--out-dir", str(path.parent / "eval")])
    return code, capsys.readouterr().err


def test_changed_empty_and_truncated_checkpoints_are_refused_with_a_sentence(
    reference: Path, tmp_path: Path, capsys
):
    original = (reference / "checkpoints" / "best.pt").read_bytes()
    data_at = original.index(b"data/0") + 200  # inside the first tensor's bytes
    flipped = bytearray(original)
    flipped[data_at : data_at + 64] = bytes(b ^ 0xFF for b in flipped[data_at : data_at + 64])
    cases = {
        "flipped.pt": (bytes(flipped), "bytes changed after it was written"),
        "empty.pt": (b"", "empty \\(0 bytes\\)"),
        "cut.pt": (original[: len(original) // 2], "truncated"),
        "tail-cut.pt": (original[:-10], "truncated"),
    }
    for name, (content, sentence) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        code, err = _evaluate(path, capsys)
        assert code == 2, (name, err)
        assert (
            f"{path}:" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        ), err
        assert __import__("re").search(sentence, err), (name, err)
