"""One argument order for scoring: references first, hypotheses second (pycocoevalcap's
``compute_score(gts, res)``), every option keyword-only, and a swapped call refused with a sentence
instead of scored (issue 27)."""

from __future__ import annotations

import inspect

import pytest

from lrcn import metrics
from lrcn.engine import score_captions
from lrcn.errors import LrcnError
from lrcn.metrics.diversity import caption_statistics
from lrcn.split_evaluation import reference_points

REFS = {1: ["a red square", "a square"], 2: ["a blue circle"]}
HYPS = {1: "a red square", 2: "a circle"}

SCORING = {
    "score": metrics.score,
    "evaluate_items": metrics.evaluate_items,
    "per_item_scores": metrics.per_item_scores,
    "caption_statistics": caption_statistics,
    "score_captions": score_captions,
}


@pytest.mark.parametrize("name", sorted(SCORING))
def test_references_then_hypotheses_then_keywords_only(name: str) -> None:
    parameters = list(inspect.signature(SCORING[name]).parameters.values())
    assert [p.name for p in parameters[:2]] == ["references", "hypotheses"]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters[2:]), name


def test_the_other_scoring_entry_points_take_references_first() -> None:
    cider = inspect.signature(metrics.CiderD.score).parameters
    assert list(cider)[1:3] == ["references", "hypotheses"]  # after self
    assert list(inspect.signature(reference_points).parameters)[:2] == ["refs", "hyps"]


def test_an_option_passed_by_position_is_refused() -> None:
    with pytest.raises(TypeError):
        metrics.score(REFS, HYPS, ["bleu"])  # type: ignore[misc]
    with pytest.raises(TypeError):
        caption_statistics(REFS, HYPS, ["a red square"])  # type: ignore[misc]


@pytest.mark.parametrize("name", ["score", "evaluate_items", "per_item_scores"])
def test_swapped_captions_are_refused_with_the_order(name: str) -> None:
    with pytest.raises(LrcnError, match="references first"):
        SCORING[name](HYPS, REFS, tokenizer="none")


def test_swapped_statistics_are_refused_with_the_order() -> None:
    with pytest.raises(LrcnError, match="references first"):
        caption_statistics(HYPS, REFS)
    stats = caption_statistics(REFS, HYPS)
    # exact by construction: 2 generated captions of 3 and 2 words, the 3 references 3, 2, 3 words
    assert stats["mean_length"] == 2.5 and stats["reference_mean_length"] == 8 / 3


def test_swapped_cider_token_lists_are_refused() -> None:
    cider = metrics.CiderD({k: [r.split() for r in v] for k, v in REFS.items()})
    refs = [[r.split() for r in REFS[k]] for k in HYPS]
    hyps = [HYPS[k].split() for k in HYPS]
    mean, per_item = cider.score(refs, hyps)
    assert per_item.shape == (2,) and mean > 0
    with pytest.raises(ValueError, match="references first"):
        cider.score(hyps, refs)
