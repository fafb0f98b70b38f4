"""The kill harness: a tiny training SIGKILLed at 30+ points (mid-epoch, in validation, inside every
write: before and after torch.save of the temporary file, after its rename, between best.pt and
last.pt, inside config.yaml and vocab.json) and resumed each time; at the end its last.pt and
best.pt equal an uninterrupted run's and no temporary file is left.

The kills come from ``lrcn.io.kill_point``: ``LRCN_TEST_KILL_AT=*:n`` makes a process SIGKILL
itself at its n-th kill point. One chain of processes (killed, resumed, killed again ...) covers
the points cheaply: each is forked from a driver that imported torch once, and each resumes where
the previous one died. The driver runs as its own process (``python tests/test_crash_harness.py``)
so that forking never meets pytest's threads.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ARGS = ["data.train_size=48", "data.val_size=8", "data.test_size=8", "train.batch_size=16",
        "train.epochs=3", "train.checkpoint_every_steps=1", "train.progress=false",
        "encoder.feature_dim=32", "decoder.embed_dim=16", "decoder.hidden_dim=32",
        "decoder.dropout=0.3", "eval.metrics=bleu,cider", "eval.tokenizer=python"]  # fmt: skip
KILLS = 34


def _child(run: Path, kill_at: str | None, trace: Path, extra: tuple[str, ...] = ()) -> str:
    """Train (or resume) ``run`` in a forked child; 'killed', 'done' or 'failed'."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            import logging

            import torch

            from lrcn.config import load_config
            from lrcn.engine import fit
            from lrcn.io import KILL_ENV

            torch.set_num_threads(1)
            logging.disable(logging.CRITICAL)
            os.environ.pop(KILL_ENV, None)
            if kill_at:
                os.environ[KILL_ENV], os.environ[KILL_ENV + "_TRACE"] = kill_at, str(trace)
            if (run / "checkpoints" / "last.pt").is_file():
                fit(None, run, resume=True)
            else:
                fit(load_config(REPO / "configs" / "shapes.yaml", [*ARGS, *extra]), run)
            code = 0
        except BaseException:  # noqa: BLE001 - reported by the exit status
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return "killed"
    return "done" if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else "failed"


def drive(base: Path, seed: int = 0, extra: tuple[str, ...] = (), kills: int = KILLS) -> dict:
    """The uninterrupted run, then chains of killed-and-resumed runs until KILLS kills; a summary.

    How many kill points one run has depends on its trajectory (each validation that improves
    writes best.pt: three more points), and so on the CPU's rounding: on the default kernels one
    chain ended after 24 kills. Another chain (a fresh run folder) follows until KILLS kills are
    done, so the coverage does not depend on the CPU; every chain must end equal to the reference.
    """
    from test_crash_checkpoints import same_checkpoint

    import lrcn.engine  # noqa: F401 - imported once, before forking

    reference, trace = base / "reference", base / "trace.txt"
    assert _child(reference, None, trace, extra) == "done"
    rng = random.Random(seed)
    # first the points inside epoch 1's writes (its validation always improves on "no best yet"),
    # each killed run resuming from the last step's checkpoint; then random points: the n-th of
    # the child's kill points (4 at each start: config.yaml, vocab.json; 4 per step; 7 at an
    # epoch's end), until KILLS points are done; then one run to the end
    named = [
        "best.pt:before-save:1",
        "best.pt:written:1",
        "best.pt:renamed:1",
        "validate:1",
        "step:2",
    ]
    outcomes: list[str] = []
    equal: dict[str, bool] = {"last.pt": True, "best.pt": True}
    chains = 0
    while sum(o == "killed" for o in outcomes) < kills and chains < 4:
        chained, chains = base / f"chained{chains}", chains + 1
        while sum(o == "killed" for o in outcomes) < kills:
            killed = sum(o == "killed" for o in outcomes)
            kill_at = named[killed] if killed < len(named) else f"*:{rng.randint(1, 11)}"
            outcomes.append(_child(chained, kill_at, trace, extra))
            if outcomes[-1] != "killed":
                break
        if outcomes[-1] == "killed":
            outcomes.append(_child(chained, None, trace, extra))
        for name in equal:
            equal[name] &= same_checkpoint(reference / "checkpoints" / name, chained / "checkpoints" / name)  # fmt: skip
    points = trace.read_text().split() if trace.exists() else []
    return {
        "outcomes": outcomes,
        "chains": chains,
        "kills": len(points),
        "points": points,
        "equal": equal,
        "temps": [str(p) for p in base.rglob(".*.tmp")],
    }


def _harness(tmp_path: Path, *extra: str) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(Path(__file__)), str(tmp_path), *extra], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["outcomes"][-1] == "done", summary
    assert "failed" not in summary["outcomes"], summary  # each chain ends "done"
    assert summary["kills"] >= KILLS, summary
    assert summary["equal"] == {"last.pt": True, "best.pt": True}, summary
    assert summary["temps"] == [], summary
    return summary


@pytest.mark.slow
def test_kill_anywhere_then_resume_ends_bitwise_equal(tmp_path: Path):
    summary = _harness(tmp_path)
    where = set(summary["points"])
    for point in ("step", "validate", "last.pt:before-save", "last.pt:written", "last.pt:renamed",
                  "best.pt:before-save", "best.pt:written", "best.pt:renamed"):  # fmt: skip
        assert point in where, (point, summary["points"])
    print(f"{summary['kills']} kills at: {sorted((p, summary['points'].count(p)) for p in where)}")


@pytest.mark.slow
def test_kill_anywhere_inside_accumulation_cycles_then_resume_ends_bitwise_equal(tmp_path: Path):
    """Cycles of two batches (three in an epoch: one whole cycle, one of a single batch at the
    epoch's end). A step checkpoint is only written where a cycle closes, so a kill after a cycle's
    first micro-batch resumes from the cycle's start and redoes it whole."""
    summary = _harness(tmp_path, "train.grad_accum_steps=2")
    steps = [p for p in summary["points"] if p == "step"]
    assert len(steps) >= 5, summary[
        "points"
    ]  # killed after many micro-batches, in and at cycle ends


def _manifest_with_unreadable_items(folder: Path) -> Path:
    """12 training images, 4 of them truncated PNGs; val and test readable."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    out = folder / "manifest"
    out.mkdir(parents=True)
    rows: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    splits = ["train"] * 12 + ["val"] * 4 + ["test"] * 4
    for i, split in enumerate(splits):
        path = folder / f"img{i}.png"
        if split == "train" and i % 3 == 1:
            path.write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
        else:
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
        record = {"id": str(i), "path": str(path), "split": split, "captions": ["a red square"]}
        rows[split].append(json.dumps(record) + "\n")
    for split, lines in rows.items():
        (out / f"{split}.jsonl").write_text("".join(lines), encoding="utf-8")
    return out


@pytest.mark.slow
def test_kill_anywhere_with_unreadable_items_in_accumulation_cycles_resumes_bitwise(
    tmp_path: Path,
):
    """Batches of one item, a third of them unreadable (skipped: empty batches), in cycles of
    three, so over the shuffled epochs an empty batch falls at every position of a cycle; kills
    anywhere, each resumed, end equal to the uninterrupted run (the encoder frozen: BatchNorm
    cannot train on one item)."""
    manifest = _manifest_with_unreadable_items(tmp_path / "data")
    summary = _harness(tmp_path / "runs", "data.dataset=manifest", f"data.manifest={manifest}",
                       "data.image_size=32", "data.on_error=skip", "train.batch_size=1",
                       "train.grad_accum_steps=3", "encoder.freeze=true")  # fmt: skip
    assert summary["points"].count("step") >= 5, summary["points"]


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    print(json.dumps(drive(Path(sys.argv[1]), extra=tuple(sys.argv[2:]))))
