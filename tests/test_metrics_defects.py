"""Defect 10 of issue 13: captions that cannot be scored end in one sentence, not a traceback.

(a) a lone surrogate (``"a dog \\ud83d runs"`` as a JSON escape) is not text: Java's PTB
tokenizer path ended in a raw ``UnicodeEncodeError`` and the Python path scored it silently;
(b) an item whose references are all empty scored CIDEr 0.0 and BLEU 1e-15 without a word.
Every test goes through public entry points, so it runs on the commit before the fix too.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from lrcn.cli import main
from lrcn.errors import LrcnError
from lrcn.metrics import leave_one_out_scores, per_item_scores, score

HAVE_PTB = shutil.which("java") is not None and importlib.util.find_spec("pycocoevalcap")
TOKENIZERS = [
    pytest.param(
        "ptb", marks=pytest.mark.skipif(not HAVE_PTB, reason="needs java and pycocoevalcap")
    ),
    "python",
]
LONE_SURROGATE = '"a dog \\ud83d runs"'  # JSON text: a high surrogate with no low one after it


def _coco_files(tmp_path: Path, reference: str, result: str) -> tuple[Path, Path]:
    """Write annotations and results whose first caption is the given JSON string literal."""
    annotations = tmp_path / "captions.json"
    annotations.write_text(
        '{"annotations": ['
        f'{{"image_id": 1, "id": 1, "caption": {reference}}}, '
        '{"image_id": 2, "id": 2, "caption": "a cat sleeps"}]}',
        encoding="utf-8",
    )
    results = tmp_path / "res.json"
    results.write_text(
        f'[{{"image_id": 1, "caption": {result}}}, {{"image_id": 2, "caption": "a cat"}}]',
        encoding="utf-8",
    )
    return annotations, results


def _score_cli(annotations: Path, results: Path, tokenizer: str) -> int:
    return main(
        [
            "score",
            "--annotations",
            str(annotations),
            "--results",
            str(results),
            "--metrics",
            "bleu,rouge,cider",
            "--tokenizer",
            tokenizer,
        ]
    )


def _one_sentence(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("lrcn score: error: ") and "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize("tokenizer", TOKENIZERS)
def test_lone_surrogate_in_results_is_one_sentence(tmp_path, capsys, tokenizer):
    annotations, results = _coco_files(tmp_path, '"a dog runs"', LONE_SURROGATE)
    assert _score_cli(annotations, results, tokenizer) == 2
    message = _one_sentence(capsys.readouterr().err)
    assert str(results) in message and "surrogate" in message and "\\ud83d" in message
    assert "entry 0" in message


@pytest.mark.parametrize("tokenizer", TOKENIZERS)
def test_lone_surrogate_in_annotations_is_one_sentence(tmp_path, capsys, tokenizer):
    annotations, results = _coco_files(tmp_path, LONE_SURROGATE, '"a dog runs"')
    assert _score_cli(annotations, results, tokenizer) == 2
    message = _one_sentence(capsys.readouterr().err)
    assert str(annotations) in message and "surrogate" in message
    assert "annotations[0]" in message


def test_surrogate_pairs_are_text_and_score(tmp_path, capsys):
    annotations, results = _coco_files(tmp_path, '"a dog runs"', '"a dog \\ud83d\\ude00 runs"')
    assert _score_cli(annotations, results, "python") == 0
    assert json.loads(capsys.readouterr().out)["Bleu_1"] > 0


def test_lone_surrogate_in_memory_names_the_key():
    with pytest.raises(LrcnError, match="hypothesis for key 7.*surrogate"):
        score({7: ["a dog runs"]}, {7: "a dog \ud83d runs"}, metrics=["bleu"], tokenizer="python")
    with pytest.raises(LrcnError, match="reference for key 'x'.*surrogate"):
        per_item_scores({"x": ["a \udc00 dog"]}, {"x": "a dog"}, tokenizer="none")


@pytest.mark.parametrize("tokenizer", TOKENIZERS)
def test_all_empty_references_in_a_file_are_one_sentence(tmp_path, capsys, tokenizer):
    annotations, results = _coco_files(tmp_path, '"   "', '"a dog runs"')
    assert _score_cli(annotations, results, tokenizer) == 2
    message = _one_sentence(capsys.readouterr().err)
    assert str(annotations) in message and "image_id 1" in message and "empty" in message


def test_all_empty_references_in_memory_name_the_item():
    refs = {"a": ["a dog runs", ""], "b": ["", " \t "]}
    hyps = {"a": "a dog", "b": "a cat"}
    with pytest.raises(LrcnError, match="'b'.*empty"):
        score(refs, hyps, metrics=["bleu", "cider"], tokenizer="none")
    with pytest.raises(LrcnError, match="'b'.*empty"):
        per_item_scores(refs, hyps, tokenizer="python")
    with pytest.raises(LrcnError, match="'b'.*empty"):
        leave_one_out_scores(refs, ["bleu"], tokenizer="none")
    # one empty reference among others is still scored, as coco-caption scores it
    assert (
        score({"a": ["a dog runs", ""]}, {"a": "a dog runs"}, metrics=["bleu"], tokenizer="none")[
            "Bleu_1"
        ]
        > 0
    )
