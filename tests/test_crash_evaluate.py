"""The kill harness for ``lrcn evaluate``: SIGKILL at every kill point of an evaluation (the lock,
the unfinished manifest, each file's write and rename, the finished manifest), into an empty
folder and over an earlier evaluation of another checkpoint file content (a resumed run's new
best.pt: same settings, so it may be replaced). After each kill every reader (``read_evaluation``,
``lrcn compare``'s loader, ``lrcn report``) refuses with a sentence or shows the old whole or the
new whole, never a mix; evaluating again gives the uninterrupted result's files. Then two
``lrcn evaluate`` into one folder, the first paused (SIGSTOP, deterministic) at several of its
points: the second is refused naming the first's PID, the first finishes as if alone.

Like tests/test_crash_harness.py, the driver runs as its own process and forks each evaluation
from it (torch imported once), so that forking never meets pytest's threads.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ARGS = ["data.train_size=128", "data.val_size=8", "data.test_size=12", "train.batch_size=32",
        "train.epochs=2", "train.progress=false", "encoder.feature_dim=32",
        "decoder.embed_dim=16", "decoder.hidden_dim=32", "eval.metrics=bleu,cider",
        "eval.tokenizer=python", "eval.bootstrap=50"]  # fmt: skip
TWO_WRITER_PAUSES = (1, 3, 6, 9, 12)  # the first writer's n-th point: lock, manifest, files


def _fork(job, *args) -> tuple[int, str]:
    """Run ``job(*args)`` in a forked child: (pid, 'killed' | 'done' | 'failed')."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            job(*args)
            code = 0
        except BaseException:  # noqa: BLE001 - reported by the exit status
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return pid, "killed"
    return pid, "done" if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else "failed"


def _train(run: Path, seed: int) -> None:
    from lrcn.config import load_config
    from lrcn.engine import fit

    fit(load_config(REPO / "configs" / "shapes.yaml", [*ARGS, f"train.seed={seed}"]), run)


def _evaluate(run: Path, kill_at: str | None = None) -> None:
    from lrcn.io import KILL_ENV
    from lrcn.predict import evaluate

    os.environ.pop(KILL_ENV, None)
    if kill_at:
        os.environ[KILL_ENV] = kill_at
    evaluate(run)


def _files(folder: Path) -> dict[str, bytes]:
    """The evaluation's files (the manifest less the checkpoint's full path, which differs)."""
    files = {p.name: p.read_bytes() for p in folder.glob("test_*") if p.suffix != ".html"}
    if "test_manifest.json" in files:
        manifest = json.loads(files["test_manifest.json"])
        manifest.pop("checkpoint_path", None)
        files["test_manifest.json"] = json.dumps(manifest, sort_keys=True).encode()
    return files


def _readers(run: Path, wholes: dict[str, dict[str, bytes]]) -> dict[str, str]:
    """What each reader made of ``run/eval``: 'refused', 'nothing', a whole's name, or 'MIX'."""
    from lrcn.compare import load_evaluation
    from lrcn.errors import LrcnError
    from lrcn.evaluation_files import read_evaluation
    from lrcn.report import write_report

    eval_dir = run / "eval"
    now = _files(eval_dir)
    shown = [name for name, files in wholes.items() if files == now]
    seen: dict[str, str] = {}
    if not (eval_dir / "test_metrics.json").is_file() and not now:
        return {"all": "nothing"}  # killed before any file: every reader says "no evaluation"
    for reader, read in (
        ("read_evaluation", lambda: read_evaluation(eval_dir, "test")),
        ("compare", lambda: load_evaluation(str(run), "test")),
        ("report", lambda: write_report(run, out=run / "page.html")),
    ):
        try:
            read()
        except LrcnError as err:
            seen[reader] = "refused" if "did not finish" in str(err) else f"other: {err}"
            continue
        seen[reader] = shown[0] if shown else "MIX"
    if seen["report"] in wholes:  # the page shows that whole's captions
        captions = json.loads(wholes[seen["report"]]["test_captions.json"])
        page = (run / "page.html").read_text(encoding="utf-8")
        import html

        if not all(html.escape(c["caption"]) in page for c in captions):
            seen["report"] = "MIX"
    return seen


def _setup(base: Path) -> dict[str, Path]:
    """Two tiny runs (seeds 0, 1) and their uninterrupted evaluations."""
    runs = {}
    for name, seed in (("old", 0), ("new", 1)):
        runs[name] = base / name
        assert _fork(_train, runs[name], seed)[1] == "done"
        assert _fork(_evaluate, runs[name])[1] == "done"
    return runs


def _case(base: Path, runs: dict[str, Path], name: str, with_old: bool) -> Path:
    """The new run's checkpoint in a fresh folder, holding the old evaluation or none."""
    case = base / name
    shutil.rmtree(case, ignore_errors=True)
    shutil.copytree(runs["new"], case, ignore=shutil.ignore_patterns("eval", "tensorboard"))
    if with_old:
        shutil.copytree(runs["old"] / "eval", case / "eval")
    return case


def drive_kills(base: Path, runs: dict[str, Path]) -> dict:
    wholes = {name: _files(run / "eval") for name, run in runs.items()}
    assert wholes["old"] != wholes["new"], "the two runs' evaluations must differ to tell a mix"
    cases = []
    for with_old in (False, True):
        n = 0
        while n < 40:
            n += 1
            case = _case(base, runs, f"case-{with_old}-{n}", with_old)
            _, outcome = _fork(_evaluate, case, f"*:{n}")
            if outcome == "done":
                break
            seen = _readers(case, wholes) if outcome == "killed" else {}
            _, again = _fork(_evaluate, case)
            cases.append({"old": with_old, "n": n, "outcome": outcome, "seen": seen,
                          "again": again, "equal": _files(case / "eval") == wholes["new"]})  # fmt: skip
            shutil.rmtree(case)
    return {"cases": cases, "temps": [str(p) for p in base.rglob(".*.tmp")]}


def _paused_evaluate(run: Path, pause: int) -> None:
    """Evaluate, stopping this process (SIGSTOP) at its ``pause``-th kill point."""
    import lrcn.evaluation_files
    import lrcn.io

    count = [0]

    def stop_at(name: str) -> None:
        count[0] += 1
        if count[0] == pause:
            os.kill(os.getpid(), signal.SIGSTOP)

    lrcn.io.kill_point = lrcn.evaluation_files.kill_point = stop_at
    _evaluate(run)


def _refused_evaluate(run: Path, answer: Path) -> None:
    from lrcn.errors import LrcnError

    try:
        _evaluate(run)
        answer.write_text("not refused")
    except LrcnError as err:
        answer.write_text(str(err))


def drive_two_writers(base: Path, runs: dict[str, Path]) -> list[dict]:
    new = _files(runs["new"] / "eval")
    results = []
    for pause in TWO_WRITER_PAUSES:
        case = _case(base, runs, f"two-{pause}", with_old=True)
        first = os.fork()
        if first == 0:
            code = 1
            try:
                _paused_evaluate(case, pause)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(first, os.WUNTRACED)
        stopped = os.WIFSTOPPED(status)
        answer = base / f"answer-{pause}.txt"
        _, second = _fork(_refused_evaluate, case, answer)
        os.kill(first, signal.SIGCONT)
        _, status = os.waitpid(first, 0)
        results.append({"pause": pause, "stopped": stopped, "second": second,
                        "refusal": answer.read_text(), "first_pid": first,
                        "first_ok": os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0,
                        "equal": _files(case / "eval") == new})  # fmt: skip
    return results


def _driver(tmp_path: Path) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(Path(__file__)), str(tmp_path)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_kill_anywhere_in_evaluate_never_shows_a_mix_and_reruns_equal(tmp_path: Path):
    summary = _driver(tmp_path)
    cases = summary["kills"]["cases"]
    for with_old in (False, True):
        killed = [c for c in cases if c["old"] == with_old]
        assert len(killed) >= 12, killed  # the lock, 2 manifest writes, 4 files: 2 points each
        assert all(c["outcome"] == "killed" for c in killed), killed
    for case in cases:
        for reader, verdict in case["seen"].items():
            assert verdict in ("refused", "nothing", "old", "new"), (reader, case)
        assert case["again"] == "done" and case["equal"], case
    # over an old evaluation, a kill before the unfinished manifest's rename leaves the old whole
    assert {"old", "refused", "new"} <= {v for c in cases if c["old"] for v in c["seen"].values()}
    assert summary["kills"]["temps"] == []

    for run in summary["two_writers"]:
        assert run["stopped"] and run["second"] == "done", run
        assert "another `lrcn evaluate`" in run["refusal"], run
        assert f"process {run['first_pid']}" in run["refusal"], run
        assert run["first_ok"] and run["equal"], run


if __name__ == "__main__":
    import logging

    import torch

    import lrcn.predict  # noqa: F401 - imported once, before forking

    torch.set_num_threads(1)
    logging.disable(logging.CRITICAL)
    base = Path(sys.argv[1])
    runs = _setup(base)
    summary = {"kills": drive_kills(base, runs), "two_writers": drive_two_writers(base, runs)}
    print(json.dumps(summary))
