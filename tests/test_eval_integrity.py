"""Evaluation folders are whole, checked and never silently overwritten; compare knows identical
evaluations and float noise (issue 25, findings 2 and 3)."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from eval_files import reseal
from PIL import Image

from lrcn.cli import main
from lrcn.errors import LrcnError
from lrcn.predict import evaluate
from lrcn.report import write_report


@pytest.fixture(scope="module")
def evaluated(tiny_shapes_run: Path, tmp_path_factory) -> dict[str, Path]:
    """A copy of the tiny shapes run evaluated greedily (eval/) and with beam 3 (eval_beam3/)."""
    run = tmp_path_factory.mktemp("integrity") / "run"
    shutil.copytree(tiny_shapes_run, run, ignore=shutil.ignore_patterns("tensorboard"))
    evaluate(run, overrides=["eval.bootstrap=0"])
    evaluate(run, beam_size=3, overrides=["eval.bootstrap=0"], out_dir=run / "eval_beam3")
    return {"run": run, "greedy": run / "eval", "beam3": run / "eval_beam3"}


def _digests(folder: Path) -> dict[str, str]:
    """sha256 of the split's files (not the manifest: it names the checkpoint's full path)."""
    files = [p for p in folder.glob("test_*") if p.name != "test_manifest.json"]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_beam3_into_the_greedy_folder_is_refused_and_leaves_it(evaluated):
    run, greedy = evaluated["run"], evaluated["greedy"]
    before = _digests(greedy)
    with pytest.raises(LrcnError) as refused:
        evaluate(run, beam_size=3, overrides=["eval.bootstrap=0"])
    sentence = str(refused.value)
    assert str(greedy) in sentence and "eval.beam_size 1 -> 3" in sentence
    assert f"--out-dir {run / 'eval_beam3'}" in sentence and "\n" not in sentence
    assert _digests(greedy) == before  # nothing written


def test_the_same_settings_evaluated_again_replace_the_evaluation(evaluated, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(evaluated["run"], run)
    before = _digests(run / "eval")
    evaluate(run, overrides=["eval.bootstrap=0"])  # e.g. the end of `lrcn train --resume`
    assert _digests(run / "eval") == before  # deterministic: the same files again


def test_compare_refuses_a_folder_that_mixes_two_evaluations(evaluated, tmp_path, capsys):
    mixed = tmp_path / "eval"
    shutil.copytree(evaluated["greedy"], mixed)
    # what a kill between the renames of 0.2.0's writes left: another decoding's per-item
    # scores (one caption and its score here) beside the metrics and captions
    records = json.loads((mixed / "test_per_item.json").read_text())
    records[0].update(caption="a caption of another decoding", CIDEr=records[0]["CIDEr"] + 1)
    (mixed / "test_per_item.json").write_text(json.dumps(records))
    assert main(["compare", str(evaluated["beam3"]), str(mixed)]) == 2
    error = capsys.readouterr().err.strip()
    assert str(mixed / "test_per_item.json") in error and "changed after" in error
    assert "lrcn evaluate --checkpoint" in error and error.count("\n") == 0


def test_an_unfinished_evaluation_is_refused_by_every_reader(evaluated, tmp_path, capsys):
    from lrcn.evaluation_files import manifest_path, read_evaluation

    run = tmp_path / "run"
    shutil.copytree(evaluated["run"], run)
    manifest = json.loads(manifest_path(run / "eval", "test").read_text())
    manifest["finished"] = False  # what a kill between the manifest's two writes leaves
    manifest_path(run / "eval", "test").write_text(json.dumps(manifest))
    with pytest.raises(LrcnError, match="did not finish.*re-run `lrcn evaluate --checkpoint"):
        read_evaluation(run / "eval")
    with pytest.raises(LrcnError, match="did not finish"):
        write_report(run)
    assert main(["compare", str(run), str(evaluated["beam3"])]) == 2
    assert "did not finish" in capsys.readouterr().err


def test_compare_of_identical_evaluations_warns(evaluated, tmp_path, caplog):
    copy = tmp_path / "copy"
    shutil.copytree(evaluated["greedy"], copy)
    with caplog.at_level(logging.WARNING, logger="lrcn.compare"):
        assert main(["compare", str(evaluated["greedy"]), str(copy), "--resamples", "200"]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("are the same evaluation" in w for w in warnings), warnings
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lrcn.compare"):
        argv = ["compare", str(evaluated["greedy"]), str(evaluated["beam3"])]
        assert main([*argv, "--resamples", "200", "--out", str(tmp_path / "c.json")]) == 0
    assert not any("same evaluation" in r.getMessage() for r in caplog.records)


def _set_scores(folder: Path, cider: np.ndarray) -> None:
    """Give the folder's items these per-item CIDEr scores (and its BLEU-1 the same values)."""
    records = json.loads((folder / "test_per_item.json").read_text())
    for record, value in zip(records, cider):
        record["CIDEr"] = record["Bleu_1"] = float(value)
    (folder / "test_per_item.json").write_text(json.dumps(records))
    reseal(folder)


def test_float_noise_is_no_difference(evaluated, tmp_path):
    clean, noisy = tmp_path / "clean", tmp_path / "noisy"
    shutil.copytree(evaluated["greedy"], clean)
    shutil.copytree(evaluated["greedy"], noisy)
    cider = np.random.default_rng(0).uniform(0.2, 3.0, 32)  # scores of a real system's size
    _set_scores(clean, cider)
    _set_scores(noisy, cider + 5e-11)  # every item 5e-11 higher: rounding, not another system
    out = tmp_path / "cmp.json"
    argv = ["compare", str(clean), str(noisy), "--resamples", "200", "--out", str(out)]
    assert main(argv) == 0
    row = json.loads(out.read_text())["metrics"]["CIDEr"]
    assert row["a"] == pytest.approx(cider.mean())  # the scores set above are compared
    assert row["diff"] == 0.0 and row["p"] == 1.0, row
    assert row["diff_ci95"] == [0.0, 0.0], row


def _manifest_data(folder: Path) -> Path:
    """A manifest dataset of 24 small pictures (16 train, 4 val, 4 test), two captions each."""
    rng = np.random.default_rng(0)
    out = folder / "manifest"
    out.mkdir(parents=True)
    splits = ["train"] * 16 + ["val"] * 4 + ["test"] * 4
    lines: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for i, split in enumerate(splits):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
        captions = [f"a {'red' if i % 2 else 'blue'} square", "a square"]
        record = {"id": str(i), "path": str(path), "split": split, "captions": captions}
        lines[split].append(json.dumps(record) + "\n")
    for split, rows in lines.items():
        (out / f"{split}.jsonl").write_text("".join(rows), encoding="utf-8")
    return out


def test_report_refuses_references_changed_since_the_evaluation(tmp_path):
    from lrcn.config import load_config
    from lrcn.engine import fit

    manifest = _manifest_data(tmp_path / "data")
    overrides = ["data.dataset=manifest", f"data.manifest={manifest}", "data.image_size=32",
                 "train.epochs=1", "train.batch_size=8", "train.progress=false",
                 "encoder.feature_dim=16", "decoder.embed_dim=8", "decoder.hidden_dim=16",
                 "eval.metrics=bleu,cider", "eval.tokenizer=python", "eval.bootstrap=0"]  # fmt: skip
    run = tmp_path / "run"
    fit(load_config(REPO / "configs" / "shapes.yaml", overrides), run)
    evaluate(run)
    assert "a square" in write_report(run).read_text(encoding="utf-8")
    test = manifest / "test.jsonl"  # `lrcn prepare` again rewrote one test caption
    rows = [json.loads(line) for line in test.read_text().splitlines()]
    rows[0]["captions"][1] = "a rewritten caption"
    test.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(LrcnError) as refused:
        write_report(run)
    sentence = str(refused.value)
    assert "references" in sentence and "changed since the evaluation" in sentence
    assert f"item {rows[0]['id']}" in sentence and "re-run `lrcn evaluate" in sentence
