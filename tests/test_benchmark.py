"""scripts/benchmark.py --quick still runs every figure (its numbers are not checked: toy sizes).

About 60-110 s on the shared 2-core machine (figures 7-9 start child processes); run by CI.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

from conftest import REPO

FIGURES = (
    "train_store_vs_live",
    "beam_batched_vs_single",
    "extraction_pipeline",
    "scoring",
    "store_memory",
    "checkpoint_integrity",
    "seed_vs_keras",
    "video_encoder",
    "grid_store_memory",
    "store_check",
)


def test_quick_benchmark_measures_every_figure(tmp_path):
    out = tmp_path / "benchmark.json"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "benchmark.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["mode"] == "quick" and list(report["figures"]) == list(FIGURES)
    for name, figure in report["figures"].items():
        assert math.isfinite(figure["ratio"]) and figure["ratio"] > 0, name
        assert len(figure["load_average"]) == 3, name
    assert report["figures"]["beam_batched_vs_single"]["identical"] is True
    assert report["figures"]["scoring"]["max_score_difference"] < 1e-6
    assert report["machine"]["cores"] >= 1 and report["machine"]["torch"]
    lines = done.stdout.splitlines()
    assert sum("[target" in line for line in lines) == len(FIGURES)


def test_every_figure_is_registered_with_a_target_in_order(monkeypatch):
    spec = importlib.util.spec_from_file_location("benchmark", REPO / "scripts" / "benchmark.py")
    benchmark = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "benchmark", benchmark)  # dataclasses look their module up
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script adds scripts/ to it
    spec.loader.exec_module(benchmark)
    assert tuple(benchmark.FIGURES) == FIGURES == tuple(benchmark.TARGETS)
    assert set(benchmark.NEEDS) <= set(FIGURES)
