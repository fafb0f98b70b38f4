"""`scripts/golden.py`: the short runs' digests are reproducible, and compare names a change.

Two `golden.py run`s of the same code in this process's environment are exact by construction:
the same kernel set (the same machine and ``ATEN_CPU_CAPABILITY``) and the same thread count
(``--threads 1``, pinned for the child runs), so every digest must match; a digest changed by hand
must make `compare` fail and name the recipe and the artifact.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

SCRIPT = REPO / "scripts" / "golden.py"
RECIPES = "moving_line,shapes"


def _golden(*args: str) -> list[str]:
    return [sys.executable, str(SCRIPT), *args]


def _compare(a: Path, b: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        _golden("compare", str(a), str(b)), cwd=REPO, capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    """The same two small recipes digested twice, the two runs side by side (seconds each)."""
    root = tmp_path_factory.mktemp("golden")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    outs = [root / "a.json", root / "b.json"]
    runs = [
        subprocess.Popen(
            _golden("run", "--recipes", RECIPES, "--out", str(out), "--work", str(root / out.stem)),
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for out in outs
    ]
    for run in runs:
        output, _ = run.communicate(timeout=600)
        assert run.returncode == 0, output
    return outs[0], outs[1]


def test_two_runs_of_the_same_code_give_the_same_digests(two_runs) -> None:
    a, b = two_runs
    entry = next(iter(json.loads(a.read_text())["digests"].values()))
    assert entry["threads"] == 1 and not entry["failed"]
    assert set(entry["recipes"]) == {"moving_line", "shapes"}
    shapes = entry["recipes"]["shapes"]
    for artifact in ("last.pt:model", "best.pt:optimizer", "eval/test_captions.json",
                     "eval/test_per_item.json", "eval/test_metrics.json"):  # fmt: skip
        assert len(shapes[artifact]) == 64
    done = _compare(a, b)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "DIFFERS" not in done.stdout
    assert "moving_line" in done.stdout and "all same" in done.stdout


def test_a_changed_digest_makes_compare_fail_naming_the_recipe_and_artifact(
    two_runs, tmp_path: Path
) -> None:
    a, b = two_runs
    data = json.loads(b.read_text())
    entry = next(iter(data["digests"].values()))
    entry["recipes"]["shapes"]["eval/test_captions.json"] = "0" * 64
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(data))
    done = _compare(a, changed)
    assert done.returncode == 1, done.stdout + done.stderr
    differs = [line.split() for line in done.stdout.splitlines() if "DIFFERS" in line]
    assert differs == [["shapes", "eval/test_captions.json", "DIFFERS"]]


def test_files_of_other_kernel_sets_or_threads_are_not_compared(two_runs, tmp_path: Path) -> None:
    a, b = two_runs
    data = json.loads(b.read_text())
    data["digests"] = {k.replace("/t1", "/t2"): v for k, v in data["digests"].items()}
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    done = _compare(a, other)
    assert done.returncode == 2
    assert "nothing to compare" in done.stdout and "same kernel set and thread count" in done.stdout
