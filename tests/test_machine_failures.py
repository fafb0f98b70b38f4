"""The machine's failures are sentences: disk full, read-only folder, permission denied, and a
second writer on a run directory. Each ends in one sentence naming the path and the fix, exit
status 2, with the previous checkpoint intact; commands check their outputs are writable before
the long work."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, TINY_SHAPES
from test_crash_checkpoints import TINY, same_checkpoint

from lrcn.cli import main

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
UNEXPECTED_POS = "[enforce fail at inline_container.cc:664] . unexpected pos 4352 vs 4246"


def _copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to, ignore=shutil.ignore_patterns("tensorboard", "eval"))
    return to


def _one_sentence(err: str, path: Path | str) -> None:
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert str(path) in err, err


@pytest.mark.parametrize(
    "failure",
    [RuntimeError(UNEXPECTED_POS), OSError(errno.ENOSPC, "No space left on device")],
    ids=["torch-unexpected-pos", "ENOSPC"],
)
def test_disk_full_during_a_checkpoint_write_is_a_sentence_and_keeps_the_last_one(
    tmp_path: Path, monkeypatch, capsys, failure: Exception
):
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.pt"
    real_save, before = torch.save, []

    def fills_up(obj, f, *args, **kwargs):
        if not last.exists():  # the first checkpoint fits
            return real_save(obj, f, *args, **kwargs)
        before.append(last.read_bytes())
        raise failure

    monkeypatch.setattr(torch, "save", fills_up)
    code = main(["train", "-c", str(REPO / "configs" / "shapes.yaml"), "--run-dir", str(run),
                 "--no-test", *TINY_SHAPES, "train.checkpoint_every_steps=1"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err
    _one_sentence(err, last)
    assert "space" in err, err
    assert last.read_bytes() == before[0]
    assert not list(run.rglob(".*.tmp"))


@contextlib.contextmanager
def _mounted(*args: str, target: Path):
    """``mount ARGS TARGET`` for the block (skips where mounting is not allowed)."""
    done = subprocess.run(["mount", *args, str(target)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount here ({done.stderr.strip()[:80]})")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


@contextlib.contextmanager
def _read_only(folder: Path):
    """``folder`` as a read-only bind mount of itself (EROFS even for root)."""
    with _mounted("--bind", str(folder), target=folder):
        done = subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True)
        if done.returncode:
            pytest.skip("cannot remount read-only here")
        yield folder


# TensorBoard's writer thread also meets the full disk; lrcn turns its close into a warning, and
# pytest would report the thread's own OSError as noise.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_disk_really_full_on_a_small_tmpfs(tiny_shapes_run: Path, tmp_path: Path, capsys):
    """A real ENOSPC: a tmpfs with room for about two and a half checkpoints."""
    disk = tmp_path / "disk"
    disk.mkdir()
    size = int((tiny_shapes_run / "checkpoints" / "last.pt").stat().st_size * 2.5) // 1024 + 64
    with _mounted("-t", "tmpfs", "-o", f"size={size}k", "tmpfs", target=disk):
        run = disk / "run"
        code = main(["train", "-c", str(REPO / "configs" / "shapes.yaml"), "--run-dir", str(run),
                     "--no-test", *TINY_SHAPES, "train.checkpoint_every_steps=1"])  # fmt: skip
        err = capsys.readouterr().err
        assert code == 2, err
        assert "space" in err and "Traceback" not in err and str(run) in err, err
        assert (
            torch.load(run / "checkpoints" / "last.pt", weights_only=True)["train_state"]["step"]
            >= 1
        )
        assert not list(run.rglob(".*.tmp"))


def test_read_only_run_folder_fails_in_the_first_second(
    tiny_shapes_run: Path, tmp_path: Path, capsys
):
    run = _copy_run(tiny_shapes_run, tmp_path / "run")
    (tmp_path / "out").mkdir()
    commands = {
        "evaluate": ["evaluate", "--checkpoint", str(run)],
        "report": ["report", str(run)],
        "resume": ["train", "--resume", str(run), "--no-test"],
        "train": ["train", "-c", str(REPO / "configs" / "shapes.yaml"), "--run-dir",
                  str(run / "new"), "--no-test", *TINY_SHAPES],
    }  # fmt: skip
    with _read_only(run):
        for name, argv in commands.items():
            start = time.perf_counter()
            code = main(argv)
            seconds = time.perf_counter() - start
            err = capsys.readouterr().err
            assert code == 2, (name, err)
            assert "read-only" in err and "Traceback" not in err, (name, err)
            assert str(run) in err, (name, err)
            assert seconds < 3, (name, seconds)  # before decoding a split or building data
        # with --out-dir elsewhere, evaluate works on the read-only run
        assert main(["evaluate", "--checkpoint", str(run), "--out-dir", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "test_metrics.json").is_file()


def _without_dac_override() -> None:
    """In the child, before exec: drop root's power to ignore file permissions (CAP_DAC_OVERRIDE,
    CAP_DAC_READ_SEARCH) from the capability bounding set, so root meets a 0o555 folder as any user
    does (tests and CI run as root, for whom chmod alone changes nothing)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0):  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_permission_denied_is_a_sentence(tiny_shapes_run: Path, tmp_path: Path):
    run = _copy_run(tiny_shapes_run, tmp_path / "run")
    run.chmod(0o555)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "lrcn.cli", "evaluate", "--checkpoint", str(run)],
            capture_output=True, text=True, cwd=REPO, env=ENV, timeout=120,
            preexec_fn=_without_dac_override if os.geteuid() == 0 else None,
        )  # fmt: skip
    except subprocess.SubprocessError as exc:
        pytest.skip(f"cannot drop the permission override here ({exc})")
    finally:
        run.chmod(0o755)
    assert done.returncode == 2, done.stderr[-2000:]
    _one_sentence(done.stderr, run / "eval")
    assert "permission denied" in done.stderr


@pytest.mark.slow
def test_two_trainings_on_one_run_dir_the_second_is_refused(tmp_path: Path):
    args = ["-m", "lrcn.cli", "train", "-c", "configs/shapes.yaml", "--no-test", *TINY]
    solo = subprocess.run([sys.executable, *args, "--run-dir", str(tmp_path / "solo")],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert solo.returncode == 0, solo.stderr[-2000:]
    run = tmp_path / "shared"
    procs = []
    for _ in range(2):
        procs.append(subprocess.Popen([sys.executable, *args, "--run-dir", str(run)], cwd=REPO,
                                      env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))  # fmt: skip
        time.sleep(0.5)
    results = [(p, *p.communicate(timeout=300)) for p in procs]
    codes = sorted(p.returncode for p, _, _ in results)
    assert codes == [0, 2], [(p.returncode, err[-1500:]) for p, _, err in results]
    (winner, _, _), (loser, _, lost_err) = sorted(results, key=lambda r: r[0].returncode)
    assert f"process {winner.pid}" in lost_err and "in use" in lost_err, lost_err
    assert "Traceback" not in lost_err and len(lost_err.strip().splitlines()) == 1, lost_err
    for name in ("last.pt", "best.pt"):
        assert same_checkpoint(tmp_path / "solo" / "checkpoints" / name, run / "checkpoints" / name)
