"""The command line at its edges: a pipe whose reader went away, a stop by Ctrl-C."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from lrcn import cli


@pytest.mark.parametrize("unbuffered", ["1", ""])
def test_a_closed_pipe_ends_the_command_quietly(unbuffered: str) -> None:
    """`lrcn recipes | head -1`: the reader closes its end; no BrokenPipeError traceback, and the
    status of a writer cut short by SIGPIPE (141). Line-buffered (PYTHONUNBUFFERED) stdout fails
    at the first print, a block-buffered one at the flush on the way out: both are covered."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line: every write fails
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = unbuffered
    try:
        done = subprocess.run(
            [sys.executable, "-m", "lrcn.cli", "recipes"],
            stdout=write_end, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env, timeout=120,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert done.stderr == ""
    assert done.returncode == cli.STATUS_READER_GONE == 141


def test_a_stopped_demo_says_to_rerun_the_demo(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Ctrl-C in a demo's training stage: rerunning `lrcn demo` with the same arguments reuses the
    finished stages and resumes the stopped one; `lrcn train --resume` is not the way back."""
    from lrcn.engine import StopRequested

    def stopped(args: object) -> int:
        raise StopRequested("SIGINT")

    monkeypatch.setitem(cli.COMMANDS, "demo", stopped)
    root = tmp_path / "my demo"
    status = cli.main(["demo", "--video", "--root", str(root), "train.epochs=2"])
    err = capsys.readouterr().err
    assert status == 130
    assert "lrcn train" not in err
    assert f"rerun `lrcn demo --video --root '{root}' train.epochs=2`" in err
    assert "stopped by SIGINT" in err


def test_a_stopped_training_names_the_run_to_resume(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Ctrl-C in `lrcn train`: the sentence names the run folder that --resume takes."""
    from lrcn.engine import StopRequested

    run = tmp_path / "run"

    def stopped(args: object) -> int:
        args.run_dir = str(run)  # type: ignore[attr-defined]  # as cmd_train records it
        raise StopRequested("SIGTERM")

    monkeypatch.setitem(cli.COMMANDS, "train", stopped)
    assert cli.main(["train", "-c", "shapes"]) == 130
    assert f"continue with `lrcn train --resume {run}`" in capsys.readouterr().err
