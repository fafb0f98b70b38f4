"""Issue 32: lrcn's tokens and scores equal coco-caption's down to the last token.

The Python tokenizer is compared with the jar's stored outputs (tests/data/ptb_jar_outputs.json,
written by scripts/ptb_jar_outputs.py), so these run without Java; where Java runs, the repros
and a few thousand fresh captions are checked live too.
"""

from __future__ import annotations

import importlib.util
import json
import random
import shutil
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lrcn import metrics
from lrcn.metrics.ptb import coco_tokens, ptb_tokenize_lines
from lrcn.metrics.rouge import Rouge
from lrcn.metrics.tokenizer import jar_lines, tokenize_captions

REPO = Path(__file__).resolve().parents[1]
STORED = json.loads((REPO / "tests" / "data" / "ptb_jar_outputs.json").read_text("utf-8"))
BATCHES = STORED["batches"]
HAVE_JAVA = shutil.which("java") is not None and importlib.util.find_spec("pycocoevalcap")
needs_java = pytest.mark.skipif(not HAVE_JAVA, reason="needs `java` on PATH and pycocoevalcap")

# The repros: (references, hypotheses, metric, pycocoevalcap's value). The values were
# measured with pycocoevalcap (its PTBTokenizer on gts and res, then its scorers);
# test_repros_equal_pycocoevalcap_live re-measures them where Java runs.
REPROS = [
    ({1: ["3 dogs"]}, {1: "3 1/2"}, "ROUGE_L", 0.0),  # "3\xa01/2" is one token to ROUGE_L
    ({1: ["cannot'se dog"]}, {1: "can not dog"}, "Bleu_1", 0.3333333331111115),
    ({1: ["x S. A dog", "a cat"], 2: ["a cat"]}, {1: "x s. a dog", 2: "a cat"}, "Bleu_4", 2.1364350306013897e-08),
    ({1: [":(5 a dog runs"]}, {1: "( 5 a dog runs"}, "Bleu_4", 0.9999999994791672),
]  # fmt: skip


def _jar_tokens(batch: dict) -> list[list[str]]:
    return [coco_tokens(line) for line in batch["lines"]]


@pytest.mark.parametrize(("refs", "hyps", "key", "value"), REPROS)
def test_repros_give_pycocoevalcap_values_without_java(refs, hyps, key, value):
    result = metrics.score(refs, hyps, metrics=["bleu", "rouge"], tokenizer="python")
    assert result[key] == value


@needs_java
def test_repros_equal_pycocoevalcap_live():
    import contextlib
    import io

    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from coco_parity import _coco_scores
    finally:
        sys.path.remove(str(REPO / "scripts"))
    keys = ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"]
    for refs, hyps, key, value in REPROS:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            gts = PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in refs.items()})
            res = PTBTokenizer().tokenize({k: [{"caption": hyps[k]}] for k in hyps})
            theirs = dict(zip(keys, (score for score, _ in _coco_scores(gts, res))))
        assert theirs[key] == value
        assert metrics.score(refs, hyps, metrics=["bleu", "rouge"], tokenizer="ptb")[key] == value


def test_no_break_space_tokens_stay_one_token_for_rouge():
    # the jar's real output for a fraction and a phone number (stored, batch 0)
    jar = dict(zip(BATCHES[0]["captions"], BATCHES[0]["lines"]))
    assert jar["3 1/2"] == "3\xa01/2"
    assert jar["(555) 555-5555"] == "-lrb-555-rrb-\xa0555-5555"
    assert coco_tokens(jar["3 1/2"]) == ["3\xa01/2"]
    # pycocoevalcap's ROUGE_L splits on " ": one hypothesis token, no match with "3"
    score, _ = Rouge().compute_score({1: [["3", "dogs"]]}, {1: [["3\xa01/2"]]})
    assert score == 0.0
    # its BLEU splits on any whitespace: "3" matches, as through the Python tokenizer
    bleu = metrics.score({1: ["3 dogs"]}, {1: "3 1/2"}, metrics=["bleu"], tokenizer="python")
    assert bleu["Bleu_1"] == pytest.approx(0.5, abs=1e-8)  # 1 of 2 words; coco's 1e-9 smoothing


def test_python_path_equals_every_stored_jar_line():
    for batch in BATCHES:
        ours = [list(t) for t in ptb_tokenize_lines(batch["captions"])]
        assert ours == _jar_tokens(batch)
        assert tokenize_captions(batch["captions"], "python")[0] == _jar_tokens(batch)


def test_the_following_line_decides_a_one_letter_abbreviation():
    # "x S. The" keeps its period only at the end of the jar's input (stored, batch 0)
    jar = dict(zip(BATCHES[0]["captions"], _jar_tokens(BATCHES[0])))
    assert jar["x S. The"] == ["x", "s", "the"]
    assert ptb_tokenize_lines(["x S. The", "a dog"])[0] == ("x", "s", "the")
    assert ptb_tokenize_lines(["x S. The"])[0] == ("x", "s.", "the")
    assert ptb_tokenize_lines(["a dog S.", "", "He runs"])[0] == ("a", "dog", "s")
    assert ptb_tokenize_lines(["a dog S.", "", "Dog runs"])[0] == ("a", "dog", "s.")


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_random_windows_of_stored_batches_tokenize_as_the_jar(data):
    # a window's lines depend only on the lines after them, so the window runs to the batch end
    batch = data.draw(st.sampled_from(BATCHES[1:]))
    start = data.draw(st.integers(0, len(batch["captions"]) - 1))
    ours = ptb_tokenize_lines(batch["captions"][start:])
    assert [list(t) for t in ours] == _jar_tokens(batch)[start:]


@pytest.mark.slow
@needs_java
def test_fresh_random_captions_tokenize_as_the_jar_live():
    spec = importlib.util.spec_from_file_location(
        "coco_parity", REPO / "scripts" / "coco_parity.py"
    )
    coco_parity = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(coco_parity)
    rng = random.Random(3202)
    captions = [coco_parity.random_caption(rng) for _ in range(3000)]
    jar = [coco_tokens(line) for line in jar_lines(captions)]
    ours = [list(t) for t in ptb_tokenize_lines(captions)]
    differ = [(c, j, o) for c, j, o in zip(captions, jar, ours) if j != o]
    assert differ == []
