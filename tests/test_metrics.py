"""lrcn.metrics: coco-caption's numbers, known answers, and the errors a user can cause.

Scores are float64 arithmetic on n-gram counts (Python and NumPy, no torch kernels): the 1e-9 and
1e-12 tolerances are thousands of float64 ulps of scores below 10, so they hold on any CPU."""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import random
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from bleu_reference import corpus_bleu

from lrcn import metrics
from lrcn.errors import LrcnError
from lrcn.metrics import java, reference
from lrcn.metrics.rouge import lcs_length

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
COCO_ANNOTATIONS = DATA / "coco" / "captions_val2014_subset200.json"
COCO_RESULTS = DATA / "coco" / "fakecap_results_subset200.json"
NLG_EVAL = DATA / "nlg_eval"

HAVE_PYCOCOEVALCAP = importlib.util.find_spec("pycocoevalcap") is not None
HAVE_JAVA = shutil.which("java") is not None

needs_coco_data = pytest.mark.skipif(
    not COCO_ANNOTATIONS.exists(), reason="../shared/data/coco (reference data) is absent"
)
needs_nlg_data = pytest.mark.skipif(
    not NLG_EVAL.exists(), reason="../shared/data/nlg_eval (reference data) is absent"
)
needs_pycocoevalcap = pytest.mark.skipif(
    not HAVE_PYCOCOEVALCAP, reason="pycocoevalcap (the reference implementation) is not installed"
)
needs_java = pytest.mark.skipif(
    not (HAVE_JAVA and HAVE_PYCOCOEVALCAP), reason="needs `java` on PATH and pycocoevalcap"
)

# pycocoevalcap 1.2's COCOEvalCap on the subset-200 files (SPICE stubbed out, it needs a
# download), as `test_score_files_ptb_equals_cocoevalcap` recomputes when Java is present.
COCOEVALCAP_SUBSET200 = {
    "Bleu_1": 0.5769030913620385,
    "Bleu_2": 0.4008715457705532,
    "Bleu_3": 0.279761976807296,
    "Bleu_4": 0.19454294489054944,
    "METEOR": 0.19355396123540453,
    "ROUGE_L": 0.3959482809984635,
    "CIDEr": 0.6288012976652301,
}
# Maluuba/nlg-eval's published scores for examples/{hyp,ref1,ref2}.txt (whitespace tokens).
NLG_EVAL_PUBLISHED = {
    "Bleu_1": 0.550000,
    "Bleu_2": 0.428174,
    "Bleu_3": 0.284043,
    "Bleu_4": 0.201143,
    "METEOR": 0.295797,
    "ROUGE_L": 0.522104,
    "CIDEr": 1.242192,
}


def _nlg_eval_inputs() -> tuple[dict[int, list[str]], dict[int, str]]:
    hyps = NLG_EVAL.joinpath("hyp.txt").read_text(encoding="utf-8").splitlines()
    ref1 = NLG_EVAL.joinpath("ref1.txt").read_text(encoding="utf-8").splitlines()
    ref2 = NLG_EVAL.joinpath("ref2.txt").read_text(encoding="utf-8").splitlines()
    return {i: [a, b] for i, (a, b) in enumerate(zip(ref1, ref2))}, dict(enumerate(hyps))


def _random_corpus(rng: random.Random, vocab_size: int, items: int, max_refs: int = 4):
    """Whitespace-joined captions over a tiny vocabulary, so n-grams collide often."""
    words = [f"w{i}" for i in range(vocab_size)]

    def caption() -> str:
        return " ".join(rng.choices(words, k=rng.choice([0, 1, 2, 3, 4, 5, 9])))

    refs = {i: [caption() for _ in range(rng.randint(1, max_refs))] for i in range(items)}
    return refs, {i: caption() for i in range(items)}


def _coco_scorers(refs: dict, hyps: dict) -> dict:
    """pycocoevalcap's BLEU, ROUGE_L and CIDEr on already tokenized, space-joined captions."""
    import contextlib
    import io

    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    res = {k: [h] for k, h in hyps.items()}
    with contextlib.redirect_stdout(io.StringIO()):
        bleu, bleu_items = Bleu(4).compute_score(refs, res, verbose=0)
    rouge, _ = Rouge().compute_score(refs, res)
    out = dict(zip(metrics.BLEU_KEYS, bleu), ROUGE_L=rouge, bleu4_items=bleu_items[3])
    if any(r.strip() for item in refs.values() for r in item):  # coco's CIDEr needs one n-gram
        out["CIDEr"], out["cider_items"] = Cider().compute_score(refs, res)
    return out


# ----------------------------------------------------------------------------- BLEU


def test_bleu_hand_computed_coco_conventions():
    refs = {"x": ["a b c e"]}
    result = metrics.score(refs, {"x": "a b c d"}, metrics=["bleu"], tokenizer="none")
    # unigram 3/4, bigram 2/3, trigram 1/2, 4-gram 0/1; equal lengths, no brevity penalty
    assert result["Bleu_1"] == pytest.approx(0.75, abs=1e-9)
    assert result["Bleu_2"] == pytest.approx(math.sqrt(0.75 * 2 / 3), abs=1e-9)
    assert result["Bleu_3"] == pytest.approx((0.75 * 2 / 3 * 0.5) ** (1 / 3), abs=1e-9)
    assert result["Bleu_4"] < 1e-3  # coco-caption's tiny epsilon, not exactly 0

    short = metrics.score(
        {"x": ["a b c d", "a b c d e f"]}, {"x": "a b"}, metrics=["bleu"], tokenizer="none"
    )
    # closest reference has 4 tokens: brevity penalty exp(1 - 4/2)
    assert short["Bleu_1"] == pytest.approx(math.exp(-1), abs=1e-9)
    assert short["Bleu_2"] == pytest.approx(math.exp(-1), abs=1e-9)


def test_corpus_bleu_hand_computed():
    refs, hyp = [["a", "b", "c", "e"]], ["a", "b", "c", "d"]
    third = (1 / 3, 1 / 3, 1 / 3)
    assert corpus_bleu([refs], [hyp], third) == pytest.approx(0.25 ** (1 / 3))
    assert corpus_bleu([[["a", "b", "c", "d"]]], [["a", "b"]], (0.5, 0.5)) == (
        pytest.approx(math.exp(1 - 4 / 2))
    )
    assert corpus_bleu([[["x", "y"]]], [["a", "b"]]) == 0.0
    assert corpus_bleu([[list("abcdef")]], [list("abcdef")]) == pytest.approx(1.0)


def test_corpus_bleu_equals_nltk():
    from nltk.translate.bleu_score import corpus_bleu as nltk_corpus_bleu

    rng = random.Random(3)
    for _ in range(150):
        refs, hyps = _random_corpus(rng, rng.choice([3, 6, 15]), rng.randint(1, 5))
        list_of_refs = [[r.split() for r in refs[k]] for k in hyps]
        hyp_tokens = [hyps[k].split() for k in hyps]
        weights = rng.choice([(0.25,) * 4, (0.5, 0.5), (0.1, 0.3, 0.5, 0.1)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nltk warns on zero n-gram overlaps
            expected = nltk_corpus_bleu(list_of_refs, hyp_tokens, weights)
        assert corpus_bleu(list_of_refs, hyp_tokens, weights) == pytest.approx(
            expected, rel=1e-12, abs=1e-300
        )


# ----------------------------------------------------------------------------- vs pycocoevalcap


@needs_pycocoevalcap
def test_bleu_rouge_cider_equal_pycocoevalcap_on_same_tokens():
    rng = random.Random(1)
    for _ in range(60):
        refs, hyps = _random_corpus(rng, rng.choice([3, 5, 20]), rng.randint(1, 8))
        wordless = [k for k, item in refs.items() if not any(r.split() for r in item)]
        if wordless:  # coco-caption scores such an item silently; lrcn names it (defect 10)
            with pytest.raises(LrcnError, match=f"key {wordless[0]!r} is empty"):
                metrics.score(refs, hyps, metrics=["bleu"], tokenizer="none")
            refs = {k: [*item, "w0"] if k in wordless else item for k, item in refs.items()}
        expected = _coco_scorers(refs, hyps)
        ours = metrics.score(refs, hyps, metrics=["bleu", "rouge", "cider"], tokenizer="none")
        per_item = metrics.per_item_scores(refs, hyps, tokenizer="none")
        for key in (*metrics.BLEU_KEYS, "ROUGE_L"):
            assert ours[key] == pytest.approx(expected[key], abs=1e-9), key
        bleu4 = [per_item[k]["Bleu_4"] for k in hyps]
        np.testing.assert_allclose(bleu4, expected["bleu4_items"], atol=1e-9)
        if "CIDEr" in expected:
            assert ours["CIDEr"] == pytest.approx(expected["CIDEr"], abs=1e-9)
            cider = [per_item[k]["CIDEr"] for k in hyps]
            np.testing.assert_allclose(cider, expected["cider_items"], atol=1e-9)


def test_rouge_lcs_matches_dynamic_programming():
    rng = random.Random(5)
    for _ in range(300):
        a = rng.choices("abcd", k=rng.randint(0, 12))
        b = rng.choices("abcd", k=rng.randint(0, 12))
        table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i in range(1, len(a) + 1):
            for j in range(1, len(b) + 1):
                same = a[i - 1] == b[j - 1]
                table[i][j] = (
                    table[i - 1][j - 1] + 1 if same else max(table[i - 1][j], table[i][j - 1])
                )
        assert lcs_length(a, b) == table[len(a)][len(b)]


# ----------------------------------------------------------------------------- known answers


@needs_nlg_data
def test_nlg_eval_published_scores_without_java():
    refs, hyps = _nlg_eval_inputs()
    result = metrics.score(refs, hyps, metrics=["bleu", "rouge", "cider"], tokenizer="none")
    assert result["tokenizer"] == "none"
    for key in (*metrics.BLEU_KEYS, "ROUGE_L", "CIDEr"):
        assert round(result[key], 6) == NLG_EVAL_PUBLISHED[key], key


@pytest.mark.slow
@needs_nlg_data
@needs_java
def test_nlg_eval_published_meteor():
    refs, hyps = _nlg_eval_inputs()
    result = metrics.score(refs, hyps, tokenizer="none")
    assert set(result) == {*metrics.BLEU_KEYS, "METEOR", "ROUGE_L", "CIDEr", "tokenizer"}
    for key, value in NLG_EVAL_PUBLISHED.items():
        assert round(result[key], 6) == value, key


@needs_coco_data
def test_score_files_python_tokenizer_equals_cocoevalcap():
    result = metrics.score_files(
        COCO_ANNOTATIONS, COCO_RESULTS, ["bleu", "rouge", "cider"], tokenizer="python"
    )
    assert result["tokenizer"] == "python"
    for key in (*metrics.BLEU_KEYS, "ROUGE_L", "CIDEr"):
        assert result[key] == pytest.approx(COCOEVALCAP_SUBSET200[key], abs=1e-9), key


@functools.lru_cache(maxsize=1)
def cocoevalcap_on_the_subset() -> tuple[dict[str, float], dict]:
    """pycocoevalcap's own evaluation of the COCO subset, run once per test session (it takes
    about 15 s, METEOR's JVM included): (its corpus scores, its per-image ``imgToEval``)."""
    pytest.importorskip("pycocotools")
    import contextlib
    import io

    import pycocoevalcap.eval as coco_eval
    from pycocotools.coco import COCO

    class NoSpice:  # SPICE downloads Stanford CoreNLP models on first use
        def compute_score(self, gts, res):
            return 0.0, [0.0] * len(gts)

        def method(self):
            return "SPICE"

    spice, coco_eval.Spice = coco_eval.Spice, NoSpice
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(COCO_ANNOTATIONS))
            coco_results = coco.loadRes(str(COCO_RESULTS))
            evaluator = coco_eval.COCOEvalCap(coco, coco_results)
            evaluator.params["image_id"] = coco_results.getImgIds()
            evaluator.evaluate()
    finally:
        coco_eval.Spice = spice
    corpus = {k: float(v) for k, v in evaluator.eval.items() if k != "SPICE"}
    return corpus, evaluator.imgToEval


@pytest.mark.slow
@needs_coco_data
@needs_java
def test_score_files_ptb_equals_cocoevalcap():
    expected, _ = cocoevalcap_on_the_subset()
    for key, value in COCOEVALCAP_SUBSET200.items():  # the constants above are not stale
        assert expected[key] == pytest.approx(value, abs=1e-9), key

    result = metrics.score_files(COCO_ANNOTATIONS, COCO_RESULTS, tokenizer="ptb")
    assert result["tokenizer"] == "ptb"
    for key in (*metrics.BLEU_KEYS, "ROUGE_L", "CIDEr"):
        assert result[key] == pytest.approx(expected[key], abs=1e-6), key
    assert result["METEOR"] == pytest.approx(expected["METEOR"], abs=1e-4)


# ----------------------------------------------------------------------------- tokenizers


@needs_java
def test_ptb_tokenizer_equals_pycocoevalcap_tokenizer():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    captions = [
        "A dog's ball (red) -- isn't it?",
        "",
        "two\nlines here",
        "U.S.A. 3.5 km, $5!",
        "Café “quoted” text…",
    ]
    tokens, used = metrics.tokenize_captions(captions, "ptb")
    expected = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
    assert used == "ptb"
    assert tokens == [expected[i][0].split() for i in range(len(captions))]


def test_tokenizer_choice(monkeypatch):
    caption = ["A Dog,  running."]
    assert metrics.tokenize_captions(caption, "none") == ([["A", "Dog,", "running."]], "none")
    assert metrics.tokenize_captions(caption, "python") == ([["a", "dog", "running"]], "python")
    monkeypatch.setattr(java, "java_available", lambda: False)
    assert metrics.resolve_tokenizer("auto") == "python"
    with pytest.raises(LrcnError, match="tokenizer='python'"):
        metrics.resolve_tokenizer("ptb")
    with pytest.raises(LrcnError, match="Unknown tokenizer"):
        metrics.resolve_tokenizer("spacy")


def test_score_reports_what_is_unavailable(monkeypatch):
    monkeypatch.setattr(java, "java_available", lambda: False)
    result = metrics.score(
        {1: ["a dog runs"]}, {1: "a dog"}, metrics=[*metrics.METRICS], tokenizer="auto"
    )
    assert result["tokenizer"] == "python"
    assert set(result) == {*metrics.BLEU_KEYS, "ROUGE_L", "CIDEr", "tokenizer", "unavailable"}
    assert set(result["unavailable"]) == {"METEOR", "SPICE"}
    assert "java" in result["unavailable"]["METEOR"]
    assert "CoreNLP" in result["unavailable"]["SPICE"]
    only = metrics.score({1: ["a dog runs"]}, {1: "a dog"}, metrics=["cider"], tokenizer="none")
    assert set(only) == {"CIDEr", "tokenizer"}


# ----------------------------------------------------------------------------- input errors


def test_score_rejects_bad_input():
    refs = {1: ["a dog"], 2: ["a cat"]}
    with pytest.raises(LrcnError, match="have no references"):
        metrics.score(refs, {3: "a bird"}, tokenizer="none")
    with pytest.raises(LrcnError, match="no reference captions"):
        metrics.score({1: []}, {1: "a dog"}, tokenizer="none")
    with pytest.raises(LrcnError, match="list of caption strings"):
        metrics.score({1: "a dog"}, {1: "a dog"}, tokenizer="none")
    with pytest.raises(LrcnError, match="not a string"):
        metrics.score(refs, {1: ["a", "dog"]}, tokenizer="none")
    with pytest.raises(LrcnError, match="no hypotheses"):
        metrics.score(refs, {}, tokenizer="none")
    with pytest.raises(LrcnError, match="Unknown or empty metrics"):
        metrics.score(refs, {1: "a dog"}, metrics=["bleu", "wer"], tokenizer="none")


# ----------------------------------------------------------------------------- per item, LOO


def test_per_item_scores_keys_and_values():
    refs = {"a": ["a dog runs on the grass"], "b": ["a cat sleeps"]}
    hyps = {"a": "a dog runs on the grass", "b": "a bird flies"}
    per_item = metrics.per_item_scores(refs, hyps, tokenizer="none")
    assert list(per_item) == ["a", "b"]
    # imgToEval's keys (METEOR only when asked for)
    assert set(per_item["a"]) == {*metrics.BLEU_KEYS, "ROUGE_L", "CIDEr"}
    assert per_item["a"]["Bleu_4"] == pytest.approx(1.0)
    assert per_item["b"]["Bleu_4"] < 1e-3
    assert per_item["a"]["CIDEr"] > per_item["b"]["CIDEr"]


def test_leave_one_out_scores_every_reference_against_the_others(monkeypatch):
    refs = {
        1: ["a dog runs", "a dog is running", "the dog runs fast"],
        2: ["a cat sleeps", "a cat is asleep"],
        3: ["only one reference"],
    }
    calls = []
    tokenize = metrics.tokenize_captions
    monkeypatch.setattr(
        reference, "tokenize_captions", lambda c, t: calls.append(len(c)) or tokenize(c, t)
    )
    loo = metrics.leave_one_out_scores(refs, ["bleu", "rouge", "cider"], tokenizer="none")
    assert calls == [5]  # tokenized once; item 3 has no second reference
    assert loo["reference_loo_pairs"] == 5
    assert loo["reference_loo_tokenizer"] == "none"

    pairs_refs, pairs_hyps = {}, {}
    for key in (1, 2):
        for i, held_out in enumerate(refs[key]):
            pairs_hyps[(key, i)] = held_out
            pairs_refs[(key, i)] = refs[key][:i] + refs[key][i + 1 :]
    expected = metrics.score(
        pairs_refs, pairs_hyps, metrics=["bleu", "rouge", "cider"], tokenizer="none"
    )
    for key in (*metrics.BLEU_KEYS, "ROUGE_L", "CIDEr"):
        assert loo["reference_loo_" + key] == pytest.approx(expected[key], abs=1e-12)

    assert metrics.leave_one_out_scores({1: ["one"]}, ["bleu"], "none") == {}
    same = metrics.leave_one_out_scores({1: ["a b c d e"] * 3}, ["bleu"], "none")
    assert same["reference_loo_Bleu_4"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- CiderD


def test_ciderd_with_evaluation_df_equals_coco_cider():
    rng = random.Random(7)
    refs, hyps = _random_corpus(rng, 8, 40, max_refs=5)
    refs = {k: [r or "w0" for r in v] for k, v in refs.items()}  # coco needs one n-gram
    expected = metrics.per_item_scores(refs, hyps, tokenizer="none")
    cider = metrics.CiderD({k: [r.split() for r in v] for k, v in refs.items()})
    mean, per_item = cider.score(
        [[r.split() for r in refs[k]] for k in hyps], [hyps[k].split() for k in hyps]
    )
    assert per_item.shape == (len(hyps),)
    np.testing.assert_allclose(per_item, [expected[k]["CIDEr"] for k in hyps], atol=1e-12)
    assert mean == pytest.approx(
        metrics.score(refs, hyps, metrics=["cider"], tokenizer="none")["CIDEr"], abs=1e-12
    )
    if HAVE_PYCOCOEVALCAP:
        assert mean == pytest.approx(_coco_scorers(refs, hyps)["CIDEr"], abs=1e-9)


def test_ciderd_raw_strings_shared_references_and_save_load(tmp_path):
    corpus = {
        1: ["A dog runs on the grass.", "A brown dog is running."],
        2: ["A cat sleeps on a sofa.", "The cat is asleep."],
        3: ["Two men ride bicycles.", "People cycling down a road."],
    }
    from_text = metrics.CiderD(corpus, tokenizer="python")
    tokenized = {k: metrics.tokenize_captions(v, "python")[0] for k, v in corpus.items()}
    from_tokens = metrics.CiderD(tokenized)
    assert from_text.document_frequency(["a", "dog"]) == 1
    assert from_text.document_frequency(["a"]) == 3
    assert from_text.document_frequency(["unicorn"]) == 0

    dog_refs = tokenized[1]
    hyps = [["a", "dog", "runs"], ["a", "unicorn", "flies"], ["a", "dog", "is", "running"]]
    shared = [dog_refs, dog_refs, dog_refs]  # one object, as self-critical sampling passes it
    copies = [[list(r) for r in dog_refs] for _ in hyps]
    mean, per_item = from_text.score(shared, hyps)
    np.testing.assert_allclose(per_item, from_tokens.score(copies, hyps)[1], atol=1e-12)
    assert per_item[0] > per_item[1] and per_item[2] > per_item[1]

    path = tmp_path / "cider_df.json"
    from_text.save(path)
    loaded = metrics.CiderD.load(path)
    np.testing.assert_allclose(loaded.score(shared, hyps)[1], per_item, atol=1e-12)
    assert loaded.num_documents == 3
    assert list(tmp_path.iterdir()) == [path]  # atomic write leaves no temporary file


def test_ciderd_load_errors(tmp_path):
    with pytest.raises(LrcnError, match="no such file"):
        metrics.CiderD.load(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "lrcn.CiderD",', encoding="utf-8")
    with pytest.raises(LrcnError, match="broken.json line 1"):
        metrics.CiderD.load(broken)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"format": "something else"}), encoding="utf-8")
    with pytest.raises(LrcnError, match="CiderD.*save"):
        metrics.CiderD.load(wrong)
    with pytest.raises(LrcnError, match="at least one item"):
        metrics.CiderD({})


def test_ciderd_scores_thousands_of_captions_per_second():
    rng = random.Random(0)
    words = [f"w{i}" for i in range(500)]
    weights = [1 / (i + 1) for i in range(500)]

    def caption() -> list[str]:
        return rng.choices(words, weights, k=rng.randint(8, 14))

    refs = {i: [caption() for _ in range(5)] for i in range(600)}
    cider = metrics.CiderD(refs)
    # self-critical batches: several samples per image share the image's references
    hyps = [caption() for _ in range(3000)]
    batch_refs = [refs[i // 5] for i in range(3000)]
    start = time.perf_counter()
    cider.score(batch_refs, hyps)
    rate = len(hyps) / (time.perf_counter() - start)
    assert rate > 1000, f"{rate:.0f} captions/s"


# ----------------------------------------------------------------------------- COCO files


def _write(path: Path, data) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture
def coco_files(tmp_path):
    annotations = {
        "images": [{"id": i} for i in (1, 2, 3)],
        "annotations": [
            {"image_id": 1, "id": 1, "caption": "A dog runs on the grass."},
            {"image_id": 1, "id": 2, "caption": "A brown dog is running."},
            {"image_id": 2, "id": 3, "caption": "A cat sleeps on a sofa."},
            {"image_id": 3, "id": 4, "caption": "Two men ride bicycles."},
        ],
    }
    results = [{"image_id": 1, "caption": "a dog running"}, {"image_id": 2, "caption": "a cat"}]
    return _write(tmp_path / "captions.json", annotations), _write(tmp_path / "res.json", results)


def test_score_files_scores_only_result_images(coco_files):
    annotations, results = coco_files
    result = metrics.score_files(annotations, results, ["bleu", "cider"], tokenizer="python")
    expected = metrics.score(
        {
            1: ["A dog runs on the grass.", "A brown dog is running."],
            2: ["A cat sleeps on a sofa."],
        },
        {1: "a dog running", 2: "a cat"},
        metrics=["bleu", "cider"],
        tokenizer="python",
    )
    assert result == expected


@pytest.mark.parametrize(
    ("which", "content", "message"),
    [
        ("annotations", None, "captions.json: no such file"),
        ("annotations", '{"annotations": [', "captions.json line 1: not valid JSON"),
        ("annotations", {"images": []}, "no 'annotations' list"),
        ("annotations", {"annotations": [{"image_id": 1}]}, r"annotations\[0\] lacks"),
        ("results", None, "res.json: no such file"),
        ("results", {"image_id": 1, "caption": "x"}, "not a non-empty JSON list"),
        ("results", [], "not a non-empty JSON list"),
        ("results", [{"caption": "x"}], "entry 0 lacks"),
        ("results", [{"image_id": 9, "caption": "x"}], "have no captions in"),
        (
            "results",
            [{"image_id": 1, "caption": "x"}, {"image_id": 1, "caption": "y"}],
            "more than one caption",
        ),
    ],
)
def test_score_files_errors_name_the_file(coco_files, which, content, message):
    annotations, results = coco_files
    path = annotations if which == "annotations" else results
    if content is None:
        path.unlink()
    else:
        _write(path, content)
    with pytest.raises(LrcnError, match=message) as error:
        metrics.score_files(annotations, results, ["bleu"], tokenizer="none")
    assert path.name in str(error.value)


# ----------------------------------------------------------------------------- METEOR


@pytest.mark.slow
@needs_java
def test_meteor_closes_its_java_process(monkeypatch):
    from pycocoevalcap.meteor import meteor as meteor_module

    started = []
    original = meteor_module.Meteor

    class RecordingMeteor(original):
        def __init__(self):
            super().__init__()
            started.append(self)

    monkeypatch.setattr(meteor_module, "Meteor", RecordingMeteor)
    result = metrics.score(
        {1: ["a dog runs", "the dog"], 2: ["a cat sits"]},
        {1: "", 2: "a cat sits"},
        metrics=["meteor"],
        tokenizer="none",
    )
    assert 0 < result["METEOR"] <= 1
    assert len(started) == 1 and started[0].meteor_p.poll() is not None


@needs_pycocoevalcap
def test_meteor_failure_is_reported_and_its_process_ended(monkeypatch):
    import subprocess
    import sys
    import threading

    from pycocoevalcap.meteor import meteor as meteor_module

    started = []

    class BrokenMeteor:  # a JVM that dies mid-answer, as with too little memory for -Xmx2G
        def __init__(self):
            self.meteor_p = subprocess.Popen(  # reads the first request, then dies unanswered
                [sys.executable, "-c", "import sys; sys.stdin.readline()"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            self.lock = threading.Lock()
            started.append(self)

        def _stat(self, hypothesis, references):  # pycocoevalcap's, on the dying process
            self.meteor_p.stdin.write(f"SCORE ||| {hypothesis}\n".encode())
            self.meteor_p.stdin.flush()
            return self.meteor_p.stdout.readline().decode().strip()

    monkeypatch.setattr(java, "java_available", lambda: True)
    monkeypatch.setattr(meteor_module, "Meteor", BrokenMeteor)
    result = metrics.score(
        {1: ["a dog"]}, {1: "a dog"}, metrics=["bleu", "meteor"], tokenizer="none"
    )
    assert "METEOR" not in result and "Bleu_4" in result
    assert "METEOR's Java process failed" in result["unavailable"]["METEOR"]
    assert started[0].meteor_p.poll() is not None
    assert not started[0].lock.locked()
