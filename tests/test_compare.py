"""``lrcn compare``: paired comparison of two evaluations, and its refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from eval_files import reseal

from lrcn.cli import main
from lrcn.evaluation_files import manifest_path
from lrcn.predict import evaluate


@pytest.fixture(scope="module")
def evaluated(tiny_shapes_run: Path, tmp_path_factory) -> dict[str, Path]:
    """A tiny shapes run evaluated greedily (test and val) and with beam 3 (test)."""
    run = tmp_path_factory.mktemp("compare") / "run"
    shutil.copytree(tiny_shapes_run, run)
    evaluate(run, split="test", overrides=["eval.bootstrap=200"])
    evaluate(run, split="val", overrides=["eval.bootstrap=0"])
    evaluate(run, split="test", beam_size=3, out_dir=run / "eval_beam3")
    return {"run": run, "beam3": run / "eval_beam3"}


def test_evaluate_writes_per_item_scores_intervals_and_statistics(evaluated):
    run = evaluated["run"]
    metrics = json.loads((run / "eval" / "test_metrics.json").read_text())
    per_item = json.loads((run / "eval" / "test_per_item.json").read_text())
    assert len(per_item) == metrics["items"] == metrics["evaluation"]["items"]
    assert {"image_id", "caption", "Bleu_4", "CIDEr", "bleu_correct"} <= set(per_item[0])
    low, high = metrics["Bleu_1_ci95"]
    assert low <= metrics["Bleu_1"] <= high
    stats = metrics["caption_statistics"]
    assert 0 <= stats["copied_from_train"] <= 1 and 0 < stats["distinct_captions"] <= 1
    assert stats["reference_vocabulary"] > 0
    val = json.loads((run / "eval" / "val_metrics.json").read_text())
    assert "Bleu_1_ci95" not in val  # eval.bootstrap=0 turns intervals off


def test_compare_a_run_with_itself_is_exactly_zero(evaluated, capsys):
    run = evaluated["run"]
    assert main(["compare", str(run), str(run), "--resamples", "200"]) == 0
    printed = capsys.readouterr().out
    assert "Bleu_4" in printed and "1.0000" in printed
    result = json.loads((run / "eval" / "compare_run_test.json").read_text())
    for key, row in result["metrics"].items():
        assert row["diff"] == 0.0 and row["p"] == 1.0, key
        assert row["diff_ci95"] == [0.0, 0.0], key


def test_compare_greedy_with_beam3_and_several_runs(evaluated, tmp_path, capsys):
    run, beam3 = evaluated["run"], evaluated["beam3"]
    out = tmp_path / "cmp.json"
    assert main(["compare", str(run / "eval"), str(beam3), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    row = result["metrics"]["CIDEr"]
    assert row["diff"] == pytest.approx(row["a"] - row["b"])
    assert row["diff_ci95"][0] <= row["diff"] <= row["diff_ci95"][1]
    assert 0 < row["p"] <= 1
    runs = f"{run},{beam3}"
    assert main(["compare", "--a", runs, "--b", runs, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    spread = result["metrics"]["CIDEr"]["a_runs"]
    assert spread["mean"] == pytest.approx((row["a"] + row["b"]) / 2)
    assert spread["std"] == pytest.approx(abs(row["a"] - row["b"]) / 2**0.5)
    assert result["metrics"]["CIDEr"]["diff"] == 0.0  # the same runs on both sides
    assert "± " in capsys.readouterr().out


def test_compare_refuses_a_run_without_evaluation(evaluated, tmp_path, capsys):
    empty = tmp_path / "empty-run"
    (empty / "eval").mkdir(parents=True)
    assert main(["compare", str(evaluated["run"]), str(empty)]) == 2
    error = capsys.readouterr().err.strip()
    assert "test_metrics.json does not exist" in error and error.count("\n") == 0
    assert f"lrcn evaluate --checkpoint {empty} --split test" in error


def test_compare_refuses_different_splits(evaluated, capsys):
    eval_dir = evaluated["run"] / "eval"
    a, b = eval_dir / "test_metrics.json", eval_dir / "val_metrics.json"
    assert main(["compare", str(a), str(b)]) == 2
    error = capsys.readouterr().err.strip()
    assert str(a) in error and str(b) in error and "different splits" in error


def test_compare_refuses_different_tokenizers(evaluated, tmp_path, capsys):
    run = evaluated["run"]
    other = tmp_path / "eval"
    shutil.copytree(run / "eval", other)
    metrics = json.loads((other / "test_metrics.json").read_text())
    metrics["evaluation"]["tokenizer"] = "ptb"
    (other / "test_metrics.json").write_text(json.dumps(metrics))
    reseal(other)
    assert main(["compare", str(run), str(other)]) == 2
    assert "different tokenizers" in capsys.readouterr().err


def test_compare_refuses_an_evaluation_older_than_per_item_files(evaluated, tmp_path, capsys):
    old = tmp_path / "old" / "eval"
    shutil.copytree(evaluated["run"] / "eval", old)
    metrics = json.loads((old / "test_metrics.json").read_text())
    del metrics["evaluation"]
    (old / "test_metrics.json").write_text(json.dumps(metrics))
    manifest_path(old, "test").unlink()  # as lrcn 0.2.0 and earlier wrote it
    assert main(["compare", str(evaluated["run"]), str(old)]) == 2
    assert "re-run `lrcn evaluate" in capsys.readouterr().err


def test_score_writes_per_item_and_prints_intervals(tmp_path, capsys, shared_data):
    annotations = shared_data / "coco" / "captions_val2014_subset200.json"
    results = shared_data / "coco" / "fakecap_results_subset200.json"
    out = tmp_path / "per_item.json"
    argv = ["score", "--annotations", str(annotations), "--results", str(results)]
    argv += ["--metrics", "bleu,cider", "--tokenizer", "python", "--per-item", str(out)]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert isinstance(printed["Bleu_4"], float) and len(printed["Bleu_4_ci95"]) == 2
    per_item = json.loads(out.read_text())
    assert len(per_item) == 200 and "CIDEr" in per_item[0]
