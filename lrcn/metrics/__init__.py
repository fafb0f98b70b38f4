"""Captioning metrics as coco-caption computes them: BLEU-1..4, METEOR, ROUGE_L, CIDEr-D.

BLEU, ROUGE_L and CIDEr-D are our own code, written to give pycocoevalcap's numbers (within
1e-6) on the same tokens, and faster: the n-grams of all captions are counted at once with numpy
and shared by BLEU and CIDEr (`ngrams`), and ROUGE_L's longest common subsequence is
bit-parallel. METEOR runs pycocoevalcap's Java jar when Java is on PATH; SPICE is never run (it
downloads Stanford CoreNLP models on first use).

One module per concern: `tokenizer` (coco-caption's PTB tokenizer or its Python equivalent),
`ngrams`, one module per metric (`bleu`, `meteor`, `rouge`, `cider`, `spice`), `cider_corpus`
(`CiderD`, self-critical training's reward), `scoring` (`score`, `evaluate_items`),
`bootstrap` (intervals and paired tests), `per_item` (per-item score files), `diversity`
(copy and diversity statistics), `reference` (leave-one-out) and `coco` (COCO files,
`score_files`). Every metric is a scorer with pycocoevalcap's
``compute_score(gts, res)``, registered by name (`registry`): a new metric is one module with
``@register_metric("name")``, also from outside this package.
"""

from __future__ import annotations

# isort: off
# The built-in metrics register in this order, the order of their keys in METRIC_ORDER
# (tests/test_metrics_registry.py checks it).
from lrcn.metrics import bleu, meteor, rouge, cider, spice  # noqa: F401

# isort: on
from lrcn.metrics.bleu import BLEU_KEYS
from lrcn.metrics.cider_corpus import CiderD
from lrcn.metrics.coco import load_coco_references, load_coco_results, score_files
from lrcn.metrics.reference import LOO_PREFIX, leave_one_out_scores
from lrcn.metrics.registry import (
    METRIC_ORDER,
    SCORERS,
    TASK_KEYS,
    MetricUnavailable,
    Scorer,
    Tokens,
    available_metrics,
    get_metric,
    register_metric,
)
from lrcn.metrics.scoring import (
    DEFAULT_METRICS,
    ItemEvaluation,
    evaluate_items,
    per_item_scores,
    score,
)
from lrcn.metrics.spice import SPICE_REASON
from lrcn.metrics.tokenizer import TOKENIZERS, resolve_tokenizer, tokenize_captions

METRICS = available_metrics()  # the built-in names: bleu, meteor, rouge, cider, spice

__all__ = [
    "BLEU_KEYS",
    "DEFAULT_METRICS",
    "LOO_PREFIX",
    "METRICS",
    "METRIC_ORDER",
    "SCORERS",
    "SPICE_REASON",
    "TASK_KEYS",
    "TOKENIZERS",
    "CiderD",
    "ItemEvaluation",
    "MetricUnavailable",
    "Scorer",
    "Tokens",
    "available_metrics",
    "evaluate_items",
    "get_metric",
    "leave_one_out_scores",
    "load_coco_references",
    "load_coco_results",
    "per_item_scores",
    "register_metric",
    "resolve_tokenizer",
    "score",
    "score_files",
    "tokenize_captions",
]
