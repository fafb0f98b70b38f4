"""The metric registry: a metric registered from this file alone works through every entry point.

No file under lrcn/ names the toy metric: `score`, ``lrcn score`` and ``lrcn evaluate`` with
``eval.metrics=bleu,toy`` find it in the registry, and its key takes its place in the one
metric order the CLI, the report and the metrics file use.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lrcn.cli import main
from lrcn.errors import LrcnError
from lrcn.metrics import (
    BLEU_KEYS,
    METRIC_ORDER,
    MetricUnavailable,
    available_metrics,
    get_metric,
    register_metric,
    score,
)


@register_metric("toy")
class FirstWord:
    """Share of hypotheses whose first word starts one of their references."""

    keys = ("Toy",)

    def compute_score(self, gts, res):
        per_item = np.array(
            [float(bool(res[k][0]) and any(r[:1] == res[k][0][:1] for r in gts[k])) for k in res]
        )
        return float(per_item.mean()), per_item


@register_metric("toy_unavailable")
class NeverHere:
    """No ``keys``: the registered name is its key; it always says why it cannot run."""

    def compute_score(self, gts, res):
        raise MetricUnavailable("the toy service is offline")


REFS = {1: ["A dog runs.", "The dog is running."], 2: ["A cat sleeps."], 3: ["Two men ride."]}
HYPS = {1: "the dog runs", 2: "a cat", 3: "one man rides"}


def test_toy_metric_scores_next_to_bleu():
    result = score(REFS, HYPS, metrics=["bleu", "toy"], tokenizer="python")
    assert list(result) == [*BLEU_KEYS, "Toy", "tokenizer"]
    assert result["Toy"] == pytest.approx(2 / 3)
    assert result["Bleu_1"] == score(REFS, HYPS, metrics=["bleu"], tokenizer="python")["Bleu_1"]
    assert (
        score(REFS, HYPS, metrics="toy,bleu", tokenizer="none")["Toy"] == 0.0
    )  # "The" is not "the"


def test_unavailable_metric_is_reported_by_name():
    result = score(REFS, HYPS, metrics=["toy_unavailable", "cider"], tokenizer="none")
    assert result["unavailable"] == {"toy_unavailable": "the toy service is offline"}
    assert "CIDEr" in result


def test_registry_lookups_and_order():
    assert {"bleu", "meteor", "rouge", "cider", "spice", "toy"} <= set(available_metrics())
    assert available_metrics()[:5] == ("bleu", "meteor", "rouge", "cider", "spice")
    assert get_metric("TOY") is FirstWord
    with pytest.raises(LrcnError, match="unknown metric 'wer'; choose from bleu, .*toy"):
        get_metric("wer")
    with pytest.raises(LrcnError, match="Unknown or empty metrics.*toy"):
        score(REFS, HYPS, metrics=["wer"], tokenizer="none")
    order = list(METRIC_ORDER)
    assert order[:7] == [*BLEU_KEYS, "METEOR", "ROUGE_L", "CIDEr"]
    assert order.index("CIDEr") < order.index("Toy") < order.index("accuracy")
    assert order[-3:] == ["scene_accuracy_3", "relation_accuracy", "relation_stated"]
    assert "toy_unavailable" in order


def test_registering_a_taken_name_is_refused():
    with pytest.raises(LrcnError, match="'bleu' is registered already"):

        @register_metric("bleu")
        class OtherBleu:
            def compute_score(self, gts, res):
                return 0.0, []

    with pytest.raises(LrcnError, match="compute_score"):
        register_metric("no_interface")(type("NoInterface", (), {}))


def test_toy_metric_through_lrcn_score(tmp_path: Path, capsys):
    annotations = tmp_path / "captions.json"
    annotations.write_text(
        json.dumps(
            {
                "annotations": [
                    {"image_id": k, "id": i, "caption": c}
                    for i, (k, c) in enumerate((k, c) for k, refs in REFS.items() for c in refs)
                ]
            }
        ),
        encoding="utf-8",
    )
    results = tmp_path / "res.json"
    results.write_text(
        json.dumps([{"image_id": k, "caption": c} for k, c in HYPS.items()]), encoding="utf-8"
    )
    argv = ["score", "--annotations", str(annotations), "--results", str(results)]
    assert main([*argv, "--metrics", "bleu,toy", "--tokenizer", "python"]) == 0
    printed = json.loads(capsys.readouterr().out)
    # the plain numbers, and (lrcn score resamples 1,000 times by default) their intervals
    assert printed == score(REFS, HYPS, metrics=["bleu", "toy"], tokenizer="python", bootstrap=1000)
    assert main([*argv, "--metrics", "bleu,wer", "--tokenizer", "python"]) == 2
    assert (
        "choose from bleu, meteor, rouge, cider, spice, " in capsys.readouterr().err
    )  # then any registered by tests


@pytest.mark.slow
def test_toy_metric_through_lrcn_evaluate(tiny_shapes_run: Path, tmp_path: Path, capsys):
    out = tmp_path / "eval"
    argv = ["evaluate", "--checkpoint", str(tiny_shapes_run), "--out-dir", str(out)]
    assert main([*argv, "eval.metrics=bleu,toy"]) == 0
    printed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    saved = json.loads((out / "test_metrics.json").read_text(encoding="utf-8"))
    assert 0 <= saved["Toy"] <= 1 and "CIDEr" not in saved
    assert list(saved)[:5] == [*BLEU_KEYS, "Toy"]
    assert printed[:5] == [*BLEU_KEYS, "Toy"]
    assert printed[5] == "scene_accuracy"
