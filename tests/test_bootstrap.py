"""Per-item scores equal pycocoevalcap's imgToEval; bootstrap intervals; the paired tests."""

from __future__ import annotations

import numpy as np
import pytest
from test_metrics import (
    COCO_ANNOTATIONS,
    COCO_RESULTS,
    cocoevalcap_on_the_subset,
    needs_coco_data,
    needs_java,
)

from lrcn import metrics
from lrcn.errors import LrcnError
from lrcn.metrics.bleu import BleuStatistics
from lrcn.metrics.bootstrap import ItemScores, bootstrap_intervals, paired_test
from lrcn.metrics.per_item import per_item_records, read_per_item, write_per_item
from lrcn.metrics.scoring import evaluate_items

COCO_KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")


@pytest.fixture(scope="module")
def coco_evaluation():
    if not COCO_ANNOTATIONS.exists():
        pytest.skip("../shared/data/coco (reference data) is absent")
    refs = metrics.load_coco_references(COCO_ANNOTATIONS)
    hyps = metrics.load_coco_results(COCO_RESULTS)
    return (
        refs,
        hyps,
        evaluate_items(refs, hyps, metrics=["bleu", "rouge", "cider"], tokenizer="python"),
    )


@pytest.mark.slow
@needs_coco_data
@needs_java
def test_per_item_scores_equal_cocoevalcaps_img_to_eval():
    _, img_to_eval = cocoevalcap_on_the_subset()
    refs = metrics.load_coco_references(COCO_ANNOTATIONS)
    hyps = metrics.load_coco_results(COCO_RESULTS)
    # the Java tokenizer with every metric; the Python one (no METEOR: one JVM less)
    for tokenizer, keys in (("ptb", COCO_KEYS), ("python", COCO_KEYS[:4] + COCO_KEYS[5:])):
        names = ["bleu", "rouge", "cider"] + (["meteor"] if "METEOR" in keys else [])
        ours = metrics.per_item_scores(refs, hyps, tokenizer=tokenizer, metrics=names)
        assert set(ours) == set(img_to_eval)
        expected = img_to_eval
        worst = {key: max(abs(ours[i][key] - expected[i][key]) for i in ours) for key in keys}
        assert max(worst.values()) < 1e-6, (tokenizer, worst)


def test_corpus_from_item_statistics_equals_the_scorers(coco_evaluation):
    _, _, evaluation = coco_evaluation
    recomputed = evaluation.item_scores().corpus()
    for key in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"):
        assert recomputed[key][0] == pytest.approx(evaluation.corpus[key], abs=1e-12), key


def test_bootstrap_is_reproducible_and_holds_the_full_set_value(coco_evaluation):
    _, _, evaluation = coco_evaluation
    scores = evaluation.item_scores()
    first = bootstrap_intervals(scores, 1000, seed=7)
    assert first == bootstrap_intervals(scores, 1000, seed=7)  # bit for bit
    assert first != bootstrap_intervals(scores, 1000, seed=8)
    for key, value in evaluation.corpus.items():
        low, high = first[f"{key}_ci95"]
        assert low < value < high, key
        assert high - low < 0.5 * value  # 200 items: informative, not degenerate
    assert bootstrap_intervals(scores, 0) == {}


def test_score_prints_intervals_beside_plain_numbers(coco_evaluation):
    refs, hyps, _ = coco_evaluation
    result = metrics.score(refs, hyps, metrics=["bleu", "cider"], tokenizer="python", bootstrap=200)
    assert isinstance(result["Bleu_4"], float)
    low, high = result["Bleu_4_ci95"]
    assert low < result["Bleu_4"] < high
    assert "CIDEr_ci95" in result
    assert "Bleu_4_ci95" not in metrics.score(refs, hyps, metrics=["bleu"], tokenizer="python")


def test_per_item_file_round_trip(coco_evaluation, tmp_path):
    refs, hyps, evaluation = coco_evaluation
    records = per_item_records(evaluation, hyps)
    assert set(records[0]) >= {"image_id", "caption", "Bleu_4", "ROUGE_L", "CIDEr"}
    write_per_item(tmp_path / "p.json", evaluation, hyps)
    ids, captions, scores = read_per_item(tmp_path / "p.json")
    assert ids == [str(k) for k in evaluation.keys]
    assert captions[0] == hyps[evaluation.keys[0]]
    assert scores.corpus()["Bleu_4"][0] == pytest.approx(evaluation.corpus["Bleu_4"], abs=1e-12)


def test_compare_a_system_with_itself():
    rng = np.random.default_rng(0)
    scores = _system(rng, np.full(50, 0.5), 0.0)
    result = paired_test(scores, scores, resamples=200)
    for key, row in result.items():
        assert row["diff"] == 0.0, key
        assert row["diff_ci95"] == [0.0, 0.0], key
        assert row["p"] == 1.0, key


def _system(rng: np.random.Generator, skill: np.ndarray, bonus: float) -> ItemScores:
    """Synthetic per-item scores: each item's difficulty ``skill`` (shared), plus noise."""
    size = len(skill)
    length = rng.integers(8, 14, size).astype(float)  # (N,)
    p = np.clip(skill + bonus + rng.normal(0, 0.15, size), 0.01, 0.99)
    guess = np.stack([np.maximum(length - k, 0) for k in range(4)])  # (4, N)
    correct = rng.binomial(guess.astype(int), p ** np.arange(1, 5)[:, None]).astype(float)
    cider = np.clip(skill + bonus + rng.normal(0, 0.3, size), 0, None) * 2
    return ItemScores({"CIDEr": cider}, BleuStatistics(correct, guess, length, length + 1))


def test_paired_test_is_calibrated_and_finds_a_better_system():
    rng = np.random.default_rng(2024)
    trials, items = 200, 60
    false_alarms = {"Bleu_4": 0, "CIDEr": 0}
    for _ in range(trials):
        skill = rng.uniform(0.2, 0.8, items)  # the same items for both systems
        result = paired_test(
            _system(rng, skill, 0.0), _system(rng, skill, 0.0), resamples=199, seed=1
        )
        for key in false_alarms:
            false_alarms[key] += result[key]["p"] < 0.05
    rates = {key: count / trials for key, count in false_alarms.items()}
    print("false-positive rate at p < 0.05:", rates)
    assert all(rate <= 0.10 for rate in rates.values()), rates
    skill = rng.uniform(0.2, 0.8, 200)
    better = paired_test(_system(rng, skill, 0.2), _system(rng, skill, 0.0), resamples=999)
    for key in false_alarms:
        assert better[key]["diff"] > 0
        assert better[key]["p"] < 0.01, key
        assert better[key]["diff_ci95"][0] > 0, key


def test_caption_statistics_on_hand_made_captions():
    from lrcn.metrics.diversity import caption_statistics

    training = ["A dog runs.", "a cat sleeps", "Two birds fly"]
    hyps = {1: "a dog runs", 2: "a dog runs", 3: "a red cat", 4: "a cat sleeps"}
    refs = {1: ["a dog is running"], 2: ["the dog"], 3: ["a cat"], 4: ["a cat is sleeping"]}
    stats = caption_statistics(refs, hyps, training=training)
    assert (
        stats["copied_from_train"] == 0.75
    )  # "a dog runs" twice (after normalising), "a cat sleeps"
    assert stats["distinct_captions"] == 0.75  # 3 distinct of 4
    assert stats["vocabulary"] == 6  # a dog runs red cat sleeps
    assert stats["reference_vocabulary"] == 7  # a dog is running the cat sleeping
    # unigrams: 12 in all, distinct 6; bigrams: 8 in all, distinct: a-dog dog-runs a-red red-cat a-cat cat-sleeps
    assert stats["distinct_1"] == 6 / 12
    assert stats["distinct_2"] == 6 / 8
    assert stats["mean_length"] == 3.0
    assert stats["reference_mean_length"] == (4 + 2 + 2 + 4) / 4
    assert "copied_from_train" not in caption_statistics(refs, hyps)


@pytest.mark.parametrize("content", ["{}", "[]", '[{"image_id": 1, "Bleu_4": "x"}]', "not json"])
def test_a_damaged_per_item_file_is_one_sentence(tmp_path, content):
    path = tmp_path / "test_per_item.json"
    path.write_text(content)
    with pytest.raises(LrcnError) as err:
        read_per_item(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@needs_coco_data
@needs_java
def test_meteor_is_resampled_through_its_statistics_not_as_a_mean(tmp_path):
    """The jar's corpus METEOR is computed from summed segment statistics, not the mean of
    segment scores: an interval built from the mean need not even hold the corpus value."""
    refs = metrics.load_coco_references(COCO_ANNOTATIONS)
    hyps = metrics.load_coco_results(COCO_RESULTS)
    evaluation = evaluate_items(refs, hyps, metrics=["meteor"], tokenizer="python")
    corpus = evaluation.corpus["METEOR"]
    assert abs(evaluation.per_item["METEOR"].mean() - corpus) > 1e-3  # the two differ here
    scores = evaluation.item_scores()
    assert scores.corpus()["METEOR"][0] == pytest.approx(corpus, abs=1e-12)
    low, high = evaluation.results(bootstrap=200)["METEOR_ci95"]
    assert low <= corpus <= high
    # the per-item file keeps the statistics, so compare recomputes the same corpus METEOR
    write_per_item(tmp_path / "per_item.json", evaluation, hyps)
    _, _, read_back = read_per_item(tmp_path / "per_item.json")
    assert read_back.corpus()["METEOR"][0] == pytest.approx(corpus, abs=1e-12)


def test_one_item_gets_no_interval_but_a_note_saying_why(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every resample of one item is that item: a [x, x] interval would look like certainty. With
    fewer than 2 items the intervals are left out and ``bootstrap_note`` says why (in the JSON of
    `lrcn score`, under the table of `lrcn evaluate`); two items get their intervals."""
    from lrcn.cli import _print_metrics

    refs = {"a": ["a red square on the left"], "b": ["a blue circle in the middle"]}
    one = metrics.score(
        refs, {"a": "a red square"}, metrics=["bleu", "cider"], tokenizer="python", bootstrap=100
    )
    assert not [key for key in one if key.endswith("_ci95")]
    assert one["bootstrap_note"] == (
        "no 95% intervals: the bootstrap resamples items and needs at least 2, this evaluation "
        "has 1"
    )
    _print_metrics(one)
    assert capsys.readouterr().out.rstrip().endswith(f"({one['bootstrap_note']})")
    hyps = {"a": "a red square", "b": "a blue circle"}
    two = metrics.score(refs, hyps, metrics=["bleu", "cider"], tokenizer="python", bootstrap=100)
    assert "Bleu_1_ci95" in two and "bootstrap_note" not in two
    assert "bootstrap_note" not in metrics.score(
        refs, {"a": "a red"}, metrics=["bleu"], tokenizer="python"
    )
    from lrcn.report.page import _metric_table

    assert "no 95% intervals: the bootstrap resamples items" in _metric_table(one)
