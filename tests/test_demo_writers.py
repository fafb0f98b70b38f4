"""One writer per demo folder: a second `lrcn demo` on a root another demo is writing is refused at
once with the first's PID, at whatever stage the first is, and the first ends with the result of
a run alone; a stage folder another process is writing is never set aside.

The first demo runs in a subprocess that pauses at named points (``LRCN_TEST_PAUSE_AT``, see
`lrcn.io.kill_point`): the second starts while the first provably is inside stage 1, 2 or 3, not
whenever a timer happens to fire.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_demo import TINY

from lrcn.errors import LrcnError
from lrcn.io import PAUSE_ENV

REPO = Path(__file__).resolve().parents[1]
# a point inside each stage: stage 1's encoder written, stage 2's first index of the train
# split written, stage 3's evaluation written (the first test_metrics.json is stage 1's)
PAUSES = ("encoder.pt:renamed:1", "train.json:renamed:1", "test_metrics.json:renamed:2")


def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"the first demo ended ({process.returncode}) before {path.name}")
        assert time.monotonic() < deadline, f"the first demo never reached {path.name}"
        time.sleep(0.02)


def _start_demo(root: Path, pauses: Path | None = None) -> subprocess.Popen:
    """``run_demo`` in a child process on one thread, pausing at `PAUSES` when ``pauses`` is given.

    Both demos the test compares run this way: a run's numbers are the same computation only at
    the same thread count (another count sums in another order and rounds differently), and the
    test process's own count is whatever the caller set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(PAUSE_ENV)}
    if pauses is not None:
        env |= {PAUSE_ENV: ",".join(PAUSES), PAUSE_ENV + "_DIR": str(pauses)}
    env["OMP_NUM_THREADS"] = "1"
    code = f"from lrcn.demo import run_demo; run_demo({str(root)!r}, {TINY!r}, echo=lambda _: None)"
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO)


def test_a_second_demo_on_one_root_is_refused_at_every_stage_and_the_first_ends_as_if_alone(
    tmp_path: Path,
) -> None:
    from lrcn.cli import main
    from lrcn.demo import run_demo

    root, pauses = tmp_path / "demo", tmp_path / "pauses"
    pauses.mkdir()
    first = _start_demo(root, pauses)
    try:
        for point in PAUSES:
            name = point.rpartition(":")[0]
            _wait_for(pauses / f"{name}.paused", first)
            with pytest.raises(LrcnError, match=rf"in use by another `lrcn demo` \(process {first.pid}\)"):  # fmt: skip
                run_demo(root, TINY, echo=lambda _: None)
            assert main(["demo", "--root", str(root), *TINY]) == 2  # the CLI: one sentence, exit 2
            (pauses / f"{name}.resume").touch()
        assert first.wait(timeout=300) == 0
    finally:
        first.kill()
    assert not list(root.glob("*-replaced-*"))  # nothing of the first's was moved
    alone = tmp_path / "alone"
    assert _start_demo(alone).wait(timeout=300) == 0
    for stage in ("1-pretrain", "2-caption"):
        got = json.loads((root / stage / "stage.json").read_text())["result"]
        want = json.loads((alone / stage / "stage.json").read_text())["result"]
        assert got == want  # exact: the same computation, undisturbed
    assert (root / "features" / "test.npy").read_bytes() == (alone / "features" / "test.npy").read_bytes()  # fmt: skip


def test_a_stage_folder_another_process_writes_is_refused_not_set_aside(tmp_path: Path) -> None:
    from lrcn.demo import demo_stages, run_demo

    pretrain = demo_stages(tmp_path)[0].folder
    (pretrain / "checkpoints").mkdir(parents=True)
    (pretrain / "stage.json").write_text('{"config": {"another": "config"}}')
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom lrcn.io import hold_lock\n"
         f"with hold_lock({str(pretrain / '.lock')!r}, 'x'):\n print('held', flush=True)\n"
         " time.sleep(120)"],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LrcnError, match=rf"1-pretrain is in use by .*\(process {holder.pid}\)"):
            run_demo(tmp_path, TINY, echo=lambda _: None)
    finally:
        holder.kill()
        holder.wait()
    assert (pretrain / "stage.json").is_file()  # still where its writer expects it
    assert not list(tmp_path.glob("1-pretrain-replaced-*"))
