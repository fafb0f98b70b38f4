"""Sizes that used to be unbounded: captions per manifest item, and the leave-one-out reference's
cost in one item's reference count (2,000 references: 4 million pair references, 133 s, 9 GB)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from lrcn import build
from lrcn.cli import main
from lrcn.config import Config, load_config
from lrcn.data.manifest import MAX_CAPTIONS_PER_ITEM, prepare, read_manifest
from lrcn.errors import LrcnError
from lrcn.metrics import leave_one_out_scores, reference
from lrcn.metrics.reference import MAX_HELD_OUT, held_out_indices

COCO = REPO.parent / "shared" / "data" / "coco" / "captions_val2014_subset200.json"
LOO_METRICS = ["bleu", "rouge", "cider"]


def _coco_references() -> dict[str, list[str]]:
    if not COCO.is_file():
        pytest.skip(f"{COCO} is absent (the shared real data is not in a user's clone)")
    refs: dict[str, list[str]] = {}
    for annotation in json.loads(COCO.read_text(encoding="utf-8"))["annotations"]:
        refs.setdefault(str(annotation["image_id"]), []).append(annotation["caption"])
    return refs


def _shapes_references() -> dict[str, list[str]]:
    cfg = load_config(REPO / "configs" / "shapes.yaml", ["data.test_size=40"])
    source = build.build_source_raw(cfg, "test")
    return {source.item_id(i): source.captions(i) for i in range(len(source))}


# ---- the leave-one-out reference -------------------------------------------------------------


def _all_pairs_scores(refs: dict[str, list[str]], tokenizer: str) -> dict:
    """The leave-one-out reference as it was computed before the cap: every reference held out."""
    return leave_one_out_scores(refs, LOO_METRICS, tokenizer, max_held_out=0)


@pytest.mark.parametrize("data", ["shapes", "coco"])
def test_items_of_a_normal_size_score_exactly_as_before(data: str) -> None:
    refs = _shapes_references() if data == "shapes" else _coco_references()
    assert max(len(r) for r in refs.values()) <= MAX_HELD_OUT  # 5 (COCO: 5-7), none sampled
    now = leave_one_out_scores(refs, LOO_METRICS, "python")
    assert now == _all_pairs_scores(refs, "python")  # exact: the same pairs in the same order
    assert not any(k.startswith("reference_loo_sampled") for k in now)
    if data == "coco":  # the values the code before the cap wrote (commit 25bf567), float64 sums
        recorded = {"Bleu_1": 0.6364930259037255, "Bleu_4": 0.1896696953331441,
                    "ROUGE_L": 0.47152262204568784, "CIDEr": 0.976850828112811}  # fmt: skip
        for key, value in recorded.items():
            assert now[f"reference_loo_{key}"] == pytest.approx(value, rel=1e-12)
        assert now["reference_loo_pairs"] == 1001


def test_a_large_item_holds_out_a_seeded_sample_each_against_all_its_others(monkeypatch) -> None:
    big = [f"a picture number {i} of a red thing" for i in range(300)]
    refs = {"small": ["a dog runs", "a dog is running", "the dog runs"], "big": big}
    scored = []
    score_tokens = reference.score_tokens

    def counting(gts, res, metrics):
        scored.append(sum(len(others) for others in gts.values()))
        return score_tokens(gts, res, metrics=metrics)

    monkeypatch.setattr(reference, "score_tokens", counting)
    out = leave_one_out_scores(refs, ["bleu"], "none")
    # linear in the item's references: 20 x 299, not 300 x 299 (which grows to 4 million at 2,000)
    assert scored == [3 * 2 + MAX_HELD_OUT * 299]
    assert out["reference_loo_pairs"] == 3 + MAX_HELD_OUT
    assert out["reference_loo_sampled"] is True
    assert out["reference_loo_sampled_items"] == 1
    assert out["reference_loo_max_held_out"] == MAX_HELD_OUT
    # the sample is the item's own: the same whatever the other items and their order
    again = leave_one_out_scores({"big": big, "other": ["a cat", "the cat"]}, ["bleu"], "none")
    alone = leave_one_out_scores({"big": big}, ["bleu"], "none")
    assert held_out_indices(big, MAX_HELD_OUT) == held_out_indices(list(big), MAX_HELD_OUT)
    assert again["reference_loo_pairs"] == alone["reference_loo_pairs"] + 2 == MAX_HELD_OUT + 2
    assert leave_one_out_scores(refs, ["bleu"], "none") == out  # seeded: the same every run


def test_the_sample_estimates_the_full_leave_one_out_reference() -> None:
    rng = np.random.default_rng(0)
    words = "a the red green blue dog cat runs sits on grass near big small".split()
    big = [" ".join(rng.choice(words, size=rng.integers(4, 9))) for _ in range(120)]
    full = leave_one_out_scores({"big": big}, ["bleu"], "none", max_held_out=0)
    sampled = leave_one_out_scores({"big": big}, ["bleu"], "none", max_held_out=60)
    assert full["reference_loo_pairs"] == 120 and sampled["reference_loo_pairs"] == 60
    # a trajectory-free bound with a wide margin: half the pairs of one item agree within 0.05
    assert sampled["reference_loo_Bleu_1"] == pytest.approx(full["reference_loo_Bleu_1"], abs=0.05)


@settings(max_examples=60, deadline=None)
@given(
    refs=st.lists(st.text(alphabet="abc ", max_size=6), min_size=0, max_size=60),
    limit=st.integers(0, 30),
    seed=st.integers(0, 2**32 - 1),
)
def test_held_out_indices_are_all_or_a_sorted_sample_of_the_limit(refs, limit, seed) -> None:
    indices = held_out_indices(refs, limit, seed)
    if limit == 0 or len(refs) <= limit:
        assert indices == list(range(len(refs)))
    else:
        assert len(indices) == limit == len(set(indices))
        assert indices == sorted(indices) and 0 <= indices[0] and indices[-1] < len(refs)
    assert held_out_indices(refs, limit, seed) == indices


def test_evaluate_passes_the_configured_cap_and_its_default_is_the_functions() -> None:
    from lrcn.split_evaluation import reference_points as _reference_points

    assert Config().eval.reference_loo_max_held_out == MAX_HELD_OUT
    refs = {"big": [f"one more caption {i}" for i in range(30)], "b": ["a b c", "a b d"]}
    hyps = {k: v[0] for k, v in refs.items()}
    cfg = load_config(None, ["eval.metrics=bleu", "eval.tokenizer=python"])
    points = _reference_points(refs, hyps, cfg, "")
    assert points["reference_loo_pairs"] == 2 + MAX_HELD_OUT and points["reference_loo_sampled"]
    cfg = load_config(None, ["eval.metrics=bleu", "eval.reference_loo_max_held_out=0"])
    points = _reference_points(refs, hyps, cfg, "")
    assert points["reference_loo_pairs"] == 32 and "reference_loo_sampled" not in points


# ---- captions per item -------------------------------------------------------------------------


def _manifest(folder: Path, captions: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        {"id": "ok", "path": "ok.png", "split": "test", "captions": ["a red one"] * 5},
        {"id": "many", "path": "m.png", "split": "test", "captions": ["a"] * captions},
    ]
    path = folder / "test.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def test_a_manifest_item_with_too_many_captions_is_one_sentence(tmp_path: Path) -> None:
    assert MAX_CAPTIONS_PER_ITEM == Config().data.max_captions_per_item == 100
    path = _manifest(tmp_path / "m", 101)
    with pytest.raises(LrcnError) as err:
        read_manifest(tmp_path / "m", "test")
    assert str(err.value) == (
        f"manifest {path} line 2: item 'many' has 101 captions, more than "
        "data.max_captions_per_item=100; if they are all meant, raise it "
        "(data.max_captions_per_item=101), otherwise remove the extra captions and re-run "
        "`lrcn prepare`."
    )
    assert len(read_manifest(tmp_path / "m", "test", max_captions=101)) == 2
    assert len(read_manifest(_manifest(tmp_path / "e", 100), max_captions=100)) == 2
    # the config key reaches every split a run reads (train, evaluate, extract-features)
    overrides = ["data.dataset=manifest", f"data.manifest={tmp_path / 'm'}"]
    with pytest.raises(LrcnError, match=r"line 2: item 'many' has 101 captions.*=100;"):
        build.build_source_raw(load_config(None, overrides), "test")
    raised = load_config(None, [*overrides, "data.max_captions_per_item=101"])
    assert len(build.build_source_raw(raised, "test")) == 2


def _photos_and_captions(tmp_path: Path, captions: int) -> tuple[Path, Path]:
    root = tmp_path / "photos"
    root.mkdir()
    for name in ("one.png", "two.png"):
        Image.fromarray(np.full((12, 12, 3), 200, np.uint8)).save(root / name)
    path = tmp_path / "c.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        rows = [["image", "caption"], ["one.png", "a red square"]]
        rows += [["two.png", f"caption number {i}"] for i in range(captions)]
        csv.writer(f).writerows(rows)
    return root, path


def test_prepare_refuses_an_item_past_the_limit_and_writes_nothing(tmp_path: Path, capsys) -> None:
    root, captions = _photos_and_captions(tmp_path, 101)
    out = tmp_path / "manifest"
    with pytest.raises(LrcnError) as err:
        prepare("images", root, out, captions=str(captions))
    assert re.fullmatch(
        r"the images reader gives item 'two' \(under \S+photos\) 101 captions, more than "
        r"max_captions_per_item=100; if they are all meant, pass max_captions_per_item=101 to "
        r"`lrcn prepare` \(and data.max_captions_per_item=101 to train on the manifest\), "
        r"otherwise fix the captions file \(is one column constant\?\).",
        str(err.value),
    )
    assert not out.exists()
    args = ["prepare", "images", "--root", str(root), "--out", str(out), f"captions={captions}"]
    assert main(args) == 2
    assert "101 captions, more than max_captions_per_item=100" in capsys.readouterr().err
    assert main([*args, "max_captions_per_item=101"]) == 0
    assert sum(len(r["captions"]) for s in ("train", "val", "test") for r in read_manifest(
        out, s, max_captions=101)) == 102  # fmt: skip
    with pytest.raises(LrcnError, match="max_captions_per_item is 0; pass a count of at least 1"):
        prepare("images", root, out, captions=str(captions), max_captions_per_item="0")
