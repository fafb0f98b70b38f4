"""Runs that survive (DDP equivalence: test_ddp.py): exact resume after SIGKILL, SIGTERM checkpoints, refusing
pickled code, NaN losses and unreadable files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, TINY_SHAPES

from lrcn.checkpoint import FORMAT
from lrcn.config import load_config

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _lrcn(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lrcn.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=ENV,
        timeout=timeout,
    )


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(tmp_path: Path):
    args = ["-c", "configs/shapes.yaml", "--no-test", *TINY_SHAPES, "data.train_size=192", "train.batch_size=16",
            "train.checkpoint_every_steps=2", "decoder.dropout=0.2"]  # fmt: skip
    straight = _lrcn("train", "--run-dir", str(tmp_path / "straight"), *args)
    assert straight.returncode == 0, straight.stderr
    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lrcn.cli", "train", "--run-dir", str(killed_dir), *args],
        cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    last = killed_dir / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if last.exists():
            try:
                state = torch.load(last, weights_only=True)["train_state"]
            except Exception:  # being renamed into place
                state = None
            if state and state["step"] >= 4:
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    state = torch.load(last, weights_only=True)["train_state"]
    assert state["step"] < 24  # 2 epochs x 12 steps: killed before the end
    resumed = _lrcn("train", "--resume", str(killed_dir), "--no-test")
    assert resumed.returncode == 0, resumed.stderr
    a, b = _weights(tmp_path / "straight"), _weights(killed_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_says_how_to_resume(tmp_path: Path):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lrcn.cli", "train", "-c", "configs/shapes.yaml", "--run-dir", str(run), "--no-test",
         *TINY_SHAPES, "train.epochs=50"],
        cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 240
    while not (run / "tensorboard").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["train_state"]
    assert state["step"] >= 1 and state["epoch"] < 50


class _WritesAFile:
    """Unpickling this runs open(path, 'w'): what a malicious checkpoint could do."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_checkpoints_with_pickled_code_are_refused_everywhere(tmp_path: Path):
    marker = tmp_path / "pwned"
    run = tmp_path / "run" / "checkpoints"
    run.mkdir(parents=True)
    evil = run / "last.pt"
    torch.save({"format": FORMAT, "task": "caption", "model": _WritesAFile(marker)}, evil)
    (tmp_path / "img.png").write_bytes(b"")
    commands = [
        ("evaluate", "--checkpoint", str(evil)),
        ("caption", str(tmp_path / "img.png"), "--checkpoint", str(evil)),
        ("classify", str(tmp_path / "img.png"), "--checkpoint", str(evil)),
        ("train", "--resume", str(tmp_path / "run")),
        (
            "train",
            "-c",
            "configs/shapes.yaml",
            "--run-dir",
            str(tmp_path / "x"),
            "encoder.name=resnet18",
            f"encoder.weights={evil}",
        ),
    ]
    for command in commands:
        done = _lrcn(*command)
        assert done.returncode == 2, (command, done.stderr)
        assert "Traceback" not in done.stderr and str(evil) in done.stderr, done.stderr
        assert not marker.exists(), f"{command[0]} ran the pickled code"


def test_checkpoint_of_another_task_or_shape_is_refused(tiny_shapes_run: Path, tmp_path: Path):
    from lrcn.errors import LrcnError
    from lrcn.predict import classify_files, load_model

    with pytest.raises(LrcnError, match="task `caption`, which does not label clips"):
        classify_files(tiny_shapes_run, ["x.avi"])
    with pytest.raises(LrcnError, match="`decoder.hidden_dim` cannot change from 64 to 32"):
        load_model(tiny_shapes_run, overrides=["decoder.hidden_dim=32"])
    # weights that do not fit their own saved config (an edited checkpoint): named by tensor
    from lrcn.checkpoint import load_checkpoint, save_checkpoint

    payload = load_checkpoint(tiny_shapes_run / "checkpoints" / "best.pt")
    payload["config"]["decoder"]["hidden_dim"] = 32
    save_checkpoint(tmp_path / "edited.pt", payload)
    with pytest.raises(LrcnError, match="do not fit this model"):
        load_model(tmp_path / "edited.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((tiny_shapes_run / "checkpoints" / "last.pt").read_bytes()[:5000])
    with pytest.raises(LrcnError, match="truncated"):
        load_model(truncated)
    for name, content in [("notes.txt", b"# my run\n"), ("photo.png", b"\x89PNG\r\n\x1a\n")]:
        foreign = tmp_path / name
        foreign.write_bytes(content)
        with pytest.raises(LrcnError, match=f"{name}: not a checkpoint .*`lrcn train`"):
            load_model(foreign)


def test_nan_loss_stops_with_the_step_named_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch
):
    from lrcn.engine import fit
    from lrcn.errors import LrcnError
    from lrcn.models.captioner import Captioner

    real_loss, calls = Captioner.loss, {"n": 0}

    def loss(self, batch):
        calls["n"] += 1
        value = real_loss(self, batch)
        return value * float("nan") if calls["n"] == 5 else value

    monkeypatch.setattr(Captioner, "loss", loss)
    cfg = load_config(
        REPO / "configs" / "shapes.yaml", TINY_SHAPES + ["train.checkpoint_every_steps=1"]
    )
    with pytest.raises(LrcnError, match="at step 5 .*last good checkpoint"):
        fit(cfg, tmp_path)
    assert (
        torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["train_state"]["step"]
        == 4
    )


def _image_manifest(tmp_path: Path, corrupt: bool) -> Path:
    from lrcn.data.manifest import write_manifest
    from lrcn.data.synthetic.shapes import ShapesCaptions

    data, records = ShapesCaptions("train", 12, image_size=32), []
    for i in range(12):
        image, captions, _ = data.item(i)
        path = tmp_path / f"img{i}.png"
        image.save(path)
        records.append(
            {
                "id": str(i),
                "path": str(path),
                "split": ["train", "val", "test"][i % 3],
                "captions": captions,
            }
        )
    if corrupt:
        (tmp_path / "img0.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    write_manifest(records, tmp_path / "manifest")
    return tmp_path / "manifest"


def test_unreadable_image_is_named_or_skipped_and_counted(tmp_path: Path):
    from lrcn.engine import fit
    from lrcn.errors import LrcnError

    manifest = _image_manifest(tmp_path, corrupt=True)
    base = TINY_SHAPES + [
        "data.dataset=manifest",
        f"data.manifest={manifest}",
        "data.image_size=32",
        "train.epochs=1",
    ]
    with pytest.raises(LrcnError, match="img0.png"):
        fit(load_config(REPO / "configs" / "shapes.yaml", base), tmp_path / "strict")
    summary = fit(
        load_config(REPO / "configs" / "shapes.yaml", base + ["data.on_error=skip"]),
        tmp_path / "skip",
    )
    assert summary["skipped"] == 1


def test_unreadable_image_in_a_dataloader_worker_is_one_sentence(tmp_path: Path):
    manifest = _image_manifest(tmp_path, corrupt=True)
    done = _lrcn(
        "train", "-c", "configs/shapes.yaml", "--run-dir", str(tmp_path / "run"),
        *TINY_SHAPES, "data.dataset=manifest", f"data.manifest={manifest}",
        "data.image_size=32", "train.epochs=1", "data.num_workers=2",
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    message = done.stderr.strip().splitlines()
    assert len(message) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "img0.png" in message[0] and "DataLoader" not in message[0], message[0]
