"""The docs' result tables are rendered from docs/results/*.json (scripts/results.py), never typed.

Exact by construction: rendering reads committed files and formats them; nothing is trained.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lrcn.results import RESULTS_DIR, load_result, standing, summarize

REPO = Path(__file__).resolve().parents[1]


def _script():
    if "results_script" in sys.modules:
        return sys.modules["results_script"]
    spec = importlib.util.spec_from_file_location("results_script", REPO / "scripts" / "results.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["results_script"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_tables_in_the_docs_are_what_the_result_files_render():
    script = _script()
    blocks = 0
    for doc in script.DOCS:
        text = (REPO / doc).read_text(encoding="utf-8")
        blocks += len(script._BLOCK.findall(text))
        assert script.rendered(text) == text, f"{doc}: run `python scripts/results.py render`"
    assert blocks >= len(script.TABLES)  # every table is in a doc somewhere


def test_a_number_edited_by_hand_is_caught(tmp_path, monkeypatch):
    script = _script()
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = script._BLOCK.search(readme)
    assert block, "README.md has a results block"
    digits = next(m for m in re.finditer(r"0\.\d{3}", block.group(3)))
    edited = readme[: block.start(3) + digits.start()] + "0.999" + readme[block.start(3) + digits.end() :]  # fmt: skip
    assert edited != readme
    (tmp_path / "README.md").write_text(edited, encoding="utf-8")
    (tmp_path / "BENCHMARKS.md").write_text((REPO / "BENCHMARKS.md").read_text(), encoding="utf-8")
    monkeypatch.setattr(script, "REPO", tmp_path)
    assert script.main(["check"]) == 1
    assert script.main(["render"]) == 0 and script.main(["check"]) == 0
    assert (tmp_path / "README.md").read_text(encoding="utf-8") == readme


@pytest.mark.parametrize(
    "name", ["demo", "shapes_attention", "video_demo", "moving_shapes_attention", "moving_line"]
)
def test_a_result_file_holds_each_metric_with_its_spread_and_where_it_came_from(name):
    record = load_result(name)
    assert record is not None, f"{RESULTS_DIR / name}.json"
    assert {"command", "commit", "machines", "each_run"} <= record.keys()
    runs = record["each_run"]
    assert len({run["seed"] for run in runs}) >= 5  # five seeds at least
    assert any(m["capability"] != runs[0]["capability"] for m in record["machines"])
    assert sum(m["runs"] for m in record["machines"]) == len(runs)
    key = {"moving_line": "accuracy", "video_demo": "motion_accuracy"}.get(name, "scene_accuracy")
    key = "motion_accuracy" if name == "moving_shapes_attention" else key
    stats = record[key]
    assert stats["runs"] == len(runs)
    values = [run["metrics"][key] for run in runs]
    assert (stats["min"], stats["max"]) == (min(values), max(values))
    assert math.isclose(stats["mean"], sum(values) / len(values), rel_tol=1e-12)
    assert json.loads(json.dumps(record)) == record  # plain JSON, readable by anyone


numbers = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@given(st.lists(st.dictionaries(st.sampled_from(["a", "b", "c"]), numbers), max_size=8))
def test_summarize_counts_each_metric_over_the_runs_that_have_it(runs):
    summary = summarize(runs)
    for name, stats in summary.items():
        values = [run[name] for run in runs if name in run]
        assert stats["runs"] == len(values)
        assert stats["min"] == min(values) and stats["max"] == max(values)
        slack = 1e-9 * max(abs(v) for v in values)  # the mean of floats rounds
        assert stats["min"] - slack <= stats["mean"] <= stats["max"] + slack
    assert set(summary) == {k for run in runs for k in run}


def test_summarize_leaves_out_what_is_not_a_number():
    summary = summarize([{"a": 1.0, "b": "x", "c": True, "d": float("nan")}, {"a": 3}])
    assert summary == {"a": {"mean": 2.0, "min": 1.0, "max": 3.0, "runs": 2}}


def test_standing_says_inside_below_or_above():
    record = summarize([{"m": 0.5}, {"m": 0.7}])
    lines = standing({"m": 0.6, "n": 1.0}, record, ["m", "n"])
    assert lines == ["  m 0.600: inside the recorded range 0.500-0.700 (mean 0.600 over 2 runs)"]
    assert "above" in standing({"m": 0.8}, record, ["m"])[0]
    assert "below" in standing({"m": 0.1}, record, ["m"])[0]


def test_a_missing_or_broken_result_file_reads_as_none(tmp_path):
    assert load_result("nothing", tmp_path) is None
    (tmp_path / "bad.json").write_text("{not json")
    assert load_result("bad", tmp_path) is None
