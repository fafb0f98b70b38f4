"""Every registry is one `lrcn.registry.Registry`: the same answer to an unknown name (one sentence
listing the registered names) and to a taken one (refused), whatever it registers; and each
setting the registries and the commands share is defined once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from lrcn import build  # noqa: F401  (imports every registry and its built-in entries)
from lrcn.cli import _parser
from lrcn.config import DEFAULT_METRICS, TOKENIZERS, EvalConfig, load_config
from lrcn.data.readers import READERS, get_reader, register_reader
from lrcn.data.synthetic import DATASETS, get_dataset, register_dataset
from lrcn.errors import LrcnError
from lrcn.metrics import SCORERS, get_metric, register_metric
from lrcn.metrics.registry import SUMMED_SCORES, register_summed_score, summed_score
from lrcn.models import ENCODERS, WIRINGS, Wiring, encoder_spec, register_encoder, register_wiring
from lrcn.models.decoder import VARIANTS
from lrcn.registry import REGISTRIES, Registry
from lrcn.task import TASKS, Task, get_task, register_task


def _builder(*_: Any, **__: Any) -> Any:
    """Stands for any builder, reader or score function: never called."""


class _Scorer:
    def compute_score(self, gts, res):  # noqa: ANN001
        return 0.0, np.zeros(len(res))


# registry -> (its public lookup, its public registration of a new object under a name)
Case = tuple[Registry, Callable[[str], Any], Callable[[str], Any]]
CASES: dict[str, Case] = {
    "encoder": (ENCODERS, encoder_spec, lambda name: register_encoder(name)(_builder)),
    "wiring": (
        WIRINGS,
        lambda name: WIRINGS.get(name),
        lambda name: register_wiring(name)(type("Other", (Wiring,), {})),
    ),
    "metric": (SCORERS, get_metric, lambda name: register_metric(name)(_Scorer)),
    "reader": (READERS, get_reader, lambda name: register_reader(name)(_builder)),
    "summed score": (
        SUMMED_SCORES,
        SUMMED_SCORES.get,
        lambda name: register_summed_score(name, _builder),
    ),
    "task": (
        TASKS,
        get_task,
        lambda name: register_task(type("Other", (Task,), {"name": name})()),
    ),
    **{
        f"{task} dataset": (
            registry,
            lambda name, task=task: get_dataset(name, task),
            lambda name, task=task: register_dataset(name, task)(_builder),
        )
        for task, registry in DATASETS.items()
    },
}


def test_every_registry_is_a_case_here() -> None:
    # other test modules may register datasets for tasks of their own: one registry per task
    tasks = {id(registry) for registry in DATASETS.values()}
    assert {id(registry) for registry, _, _ in CASES.values()} | tasks == {
        id(r) for r in REGISTRIES
    }


@pytest.mark.parametrize("kind", sorted(CASES))
def test_an_unknown_name_is_one_sentence_listing_every_registered_name(kind: str) -> None:
    registry, lookup, _ = CASES[kind]
    with pytest.raises(LrcnError) as caught:
        lookup("no_such_name")
    message = str(caught.value)
    assert message.startswith(f"unknown {registry.kind} 'no_such_name'; ") and "\n" not in message
    assert message.endswith(f" {', '.join(registry.names())}.") or not registry.names()


@pytest.mark.parametrize("kind", sorted(CASES))
def test_a_taken_name_is_refused_and_keeps_its_entry(kind: str) -> None:
    registry, lookup, register = CASES[kind]
    if not registry.names():  # a task without built-in datasets: take a name first
        register(f"taken_{kind.replace(' ', '_')}")
    name, names = registry.names()[0], registry.names()
    before = registry.find(name)
    with pytest.raises(LrcnError, match=f"{registry.kind} '{name}' is registered already"):
        register(name)
    assert registry.find(name) is before and registry.names() == names
    assert lookup(name) is not None


def test_the_same_object_registered_again_stays_where_it_was() -> None:
    name = "bleu"
    names, cls = SCORERS.names(), SCORERS.get(name)
    register_metric(name)(cls)  # a module imported a second time registers its classes again
    assert SCORERS.names() == names and SCORERS.get(name) is cls


def test_metric_names_are_case_insensitive_in_lookups_and_in_configs() -> None:
    assert get_metric("BLEU") is get_metric(" bleu") and "CIDEr" in SCORERS
    with pytest.raises(LrcnError, match="metric 'bleu' is registered already"):
        register_metric("Bleu")(_Scorer)
    cfg = load_config(None, ["eval.metrics=[Bleu,CIDEr]", "eval.tokenizer=python"])
    build.check_config(cfg)  # the registry's spelling rule, not a list of lower-case names


def test_summed_score_finds_or_returns_none() -> None:
    assert summed_score("METEOR") is not None and summed_score("CIDEr") is None


def test_variants_are_every_built_in_wiring() -> None:
    assert set(VARIANTS) == {
        "show_tell",
        "lrcn1u",
        "lrcn2f",
        "show_attend_tell",
        "temporal_attention",
        "transformer",
        "temporal_transformer",
        "transformer_vector",
    }
    assert VARIANTS == WIRINGS.names()[: len(VARIANTS)]


def _score_option(name: str) -> Any:
    score = next(a for a in _parser()._actions if a.dest == "command").choices["score"]
    return next(a for a in score._actions if a.dest == name)


def test_default_metrics_and_tokenizers_are_defined_once() -> None:
    assert EvalConfig().metrics == list(DEFAULT_METRICS)
    assert _score_option("metrics").default == ",".join(DEFAULT_METRICS)
    assert tuple(_score_option("tokenizer").choices) == TOKENIZERS
    assert load_config(None, ["eval.tokenizer=none"]).eval.tokenizer == "none"
