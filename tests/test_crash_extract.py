"""The kill harness of feature extraction, and one extraction per store (issue 25).

A tiny extraction (12 shapes images in 3 batches of 5; checksum blocks of 3 rows, so blocks
straddle batches) is SIGKILLed at each of its kill points in turn (``lrcn.io.kill_point``: the
.npy created and renamed, rows written, rows synced, the index written and renamed), from an empty
folder and over a complete store of another config that it rebuilds, and then in chains of
killed resumes. After every kill a reader either refuses the store or opens one equal to a whole
extraction (never a mix); every re-run ends byte for byte equal to the uninterrupted store, with no
temporary file left.

Then two extractions into one store: the first is paused (a test hook in its forked child) in
its loader, between two batches, or has finished, and a real ``lrcn extract-features`` is started
beside it: while the first runs it is refused at once, naming the first's PID, and leaves the store
untouched; the first ends equal to a lone run.

The children are forked from a driver that imported torch once; the driver runs as its own process
(``python tests/test_crash_extract.py BASE``) so that forking never meets pytest's threads.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ARGS = ["data.train_size=12", "data.val_size=4", "data.test_size=4", "data.image_size=32",
        "encoder.freeze=true", "encoder.feature_dim=16", "eval.batch_size=5",
        "train.progress=false"]  # fmt: skip
OTHER = ["data.image_size=48"]  # the config of the store that a rebuild replaces
BLOCK_BYTES = 3 * 16 * 2  # 3 rows of 16 float16 values a block
REFUSED, EQUAL, MIXED = 10, 11, 12  # a reader child's exit statuses


def _config(folder: Path, extra: tuple[str, ...] = ()):
    from lrcn.config import load_config

    return load_config(REPO / "configs" / "shapes.yaml", [*ARGS, *extra, f"data.features={folder}"])


def _fork(work: Callable[[], int]) -> str | int:
    """Run ``work`` in a forked child: 'killed' (SIGKILL) or its exit status (1: it raised)."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            code = work()
        except BaseException:  # noqa: BLE001 - reported by the exit status
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return "killed"
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)


def _extract(folder: Path, kill_at: str | None, trace: Path, extra: tuple[str, ...] = ()) -> str:
    """Extract the train split into ``folder`` in a child: 'killed', 'done' or 'failed'."""

    def work() -> int:
        from lrcn.extract import extract_features
        from lrcn.io import KILL_ENV

        if kill_at:
            os.environ[KILL_ENV], os.environ[KILL_ENV + "_TRACE"] = kill_at, str(trace)
        extract_features(_config(folder, extra), "train")
        return 0

    outcome = _fork(work)
    return outcome if outcome == "killed" else ("done" if outcome == 0 else "failed")


def _read(folder: Path, reference: Path, extra: tuple[str, ...] = ()) -> int:
    """Open the store as training would, in a child: REFUSED, EQUAL (every row equals the
    reference's bytes, read row by row and mapped) or MIXED."""

    def work() -> int:
        import numpy as np

        from lrcn.build import build_source
        from lrcn.errors import LrcnError

        try:
            source = build_source(_config(folder, extra), "train")
        except LrcnError:
            return REFUSED
        expected = np.load(reference / "train.npy").astype(np.float32)
        rows = np.stack([source.features(i).numpy() for i in range(len(source))])
        whole = np.array_equal(rows, expected) and np.array_equal(source.array, expected)
        return EQUAL if whole else MIXED

    return _fork(work)


def _same(a: Path, b: Path) -> bool:
    return all((a / n).read_bytes() == (b / n).read_bytes() for n in ("train.npy", "train.json"))


def _finish(folder: Path, reference: Path, trace: Path, result: dict, extra=()) -> None:
    """Re-run the killed extraction to its end and record whether it equals the reference."""
    result["outcomes"].append(_extract(folder, None, trace, extra))
    result["reads_after"].append(_read(folder, reference, extra))
    result["equal"].append(_same(folder, reference))


def kill_everywhere(base: Path, seed: int = 0) -> dict:
    """Every kill point from an empty folder and over another config's store; random chains."""
    import lrcn.data.store
    import lrcn.extract  # noqa: F401 - imported once, before forking

    lrcn.data.store.BLOCK_BYTES = BLOCK_BYTES
    trace, reference, other = base / "trace.txt", base / "reference", base / "other"
    assert _extract(reference, None, trace) == "done"
    assert _extract(other, None, trace, tuple(OTHER)) == "done"
    result: dict = {"outcomes": [], "reads": [], "reads_after": [], "equal": []}
    for start in ("fresh", "rebuild"):
        n = 0
        while True:
            n += 1
            folder = base / f"{start}{n}"
            if start == "rebuild":
                shutil.copytree(other, folder)
            outcome = _extract(folder, f"*:{n}", trace)
            if outcome != "killed":  # past the last kill point
                result[f"{start}_points"] = n - 1
                break
            result["reads"].append(_read(folder, reference))
            if start == "rebuild":  # the old config's reader: the old store or a refusal
                result["reads"].append(_read(folder, other, tuple(OTHER)))
            _finish(folder, reference, trace, result)
    rng = random.Random(seed)
    for chain in range(3):  # killed again and again while resuming, then run to the end
        folder = base / f"chain{chain}"
        for _ in range(8):
            if _extract(folder, f"*:{rng.randint(1, 6)}", trace) != "killed":
                break
            result["reads"].append(_read(folder, reference))
        _finish(folder, reference, trace, result)
    result["points"] = trace.read_text().split()
    result["temps"] = [str(p) for p in base.rglob(".*.tmp")]
    return result


def _paused_extraction(folder: Path, base: Path, at_item: int) -> int:
    """Fork an extraction that stops before reading item ``at_item`` (in its loader: item 0 is
    before the first batch, 5 after it) until ``base/go`` exists; its PID."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            import lrcn.extract

            getitem = lrcn.extract._Pixels.__getitem__

            def pausing(self, position):
                if self.indices[position] == at_item and not (base / "go").exists():
                    (base / "paused").touch()
                    for _ in range(6000):  # a minute at most
                        if (base / "go").exists():
                            break
                        time.sleep(0.01)
                return getitem(self, position)

            lrcn.extract._Pixels.__getitem__ = pausing
            lrcn.extract.extract_features(_config(folder), "train")
            code = 0
        except BaseException:  # noqa: BLE001 - reported by the exit status
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def _cli_extraction(folder: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "lrcn.cli", "extract-features", "-c", "configs/shapes.yaml",
            "--split", "train", *ARGS, f"data.features={folder}"]  # fmt: skip
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def two_writers(base: Path) -> dict:
    """A second `lrcn extract-features` started while the first is paused at several places, and
    after it finished."""
    import lrcn.extract  # noqa: F401 - imported once, before forking

    trace, alone = base / "trace.txt", base / "alone"
    assert _extract(alone, None, trace) == "done"
    result: dict = {}
    for lag, at_item in (("in-loader", 0), ("between-batches", 5), ("after", None)):
        folder = base / lag
        for flag in ("go", "paused"):
            (base / flag).unlink(missing_ok=True)
        if at_item is None:
            first, status = None, _extract(folder, None, trace)
        else:
            first = _paused_extraction(folder, base, at_item)
            while not (base / "paused").exists():
                time.sleep(0.01)
            before = {p.name: p.read_bytes() for p in folder.iterdir() if p.name != ".extract.lock"}
        second = _cli_extraction(folder)
        entry = {"code": second.returncode, "err": second.stderr, "out": second.stdout,
                 "first_pid": first}  # fmt: skip
        if first is not None:
            after = {p.name: p.read_bytes() for p in folder.iterdir() if p.name != ".extract.lock"}
            entry["untouched"] = before == after
            (base / "go").touch()
            _, code = os.waitpid(first, 0)
            status = "done" if os.WIFEXITED(code) and os.WEXITSTATUS(code) == 0 else "failed"
        entry.update(first=status, equal=_same(folder, alone))
        result[lag] = entry
    return result


def _driver(base: Path, mode: str) -> dict:
    base.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(Path(__file__)), str(base), mode], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_extraction_killed_anywhere_resumes_to_the_uninterrupted_store(tmp_path: Path):
    result = _driver(tmp_path, "kills")
    # 4 points to create the split (.npy and index, each written then renamed), 4 per batch
    assert result["fresh_points"] == 4 + 3 * 4, result
    assert result["rebuild_points"] == result["fresh_points"], result
    assert set(result["points"]) == {"train.npy:written", "train.npy:renamed", "train.npy:rows",
                                     "train.npy:synced", "train.json:written", "train.json:renamed"}  # fmt: skip
    assert set(result["outcomes"]) == {"done"}, result
    assert set(result["reads"]) <= {REFUSED, EQUAL}, result  # never a mixed store
    assert REFUSED in result["reads"] and EQUAL in result["reads"], result
    assert set(result["reads_after"]) == {EQUAL} and all(result["equal"]), result
    assert result["temps"] == [], result


@pytest.mark.slow
def test_a_second_extraction_into_a_store_is_refused_while_the_first_runs(tmp_path: Path):
    result = _driver(tmp_path, "lock")
    for lag in ("in-loader", "between-batches"):
        entry = result[lag]
        err = entry["err"]
        assert entry["code"] == 2, entry
        assert f"{tmp_path / lag} is in use by another `lrcn extract-features` (process {entry['first_pid']})" in err, err  # fmt: skip
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert entry["untouched"] and entry["first"] == "done" and entry["equal"], entry
    after = result["after"]
    assert after["code"] == 0 and "train: 12 rows (0 new)" in after["out"], after
    assert after["first"] == "done" and after["equal"], after


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    base, mode = Path(sys.argv[1]), sys.argv[2]
    print(json.dumps(kill_everywhere(base) if mode == "kills" else two_writers(base)))
