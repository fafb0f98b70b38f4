"""What the generated captions copy and how varied they are.

A captioner that writes the same few training captions for every image can score well; these
numbers say whether it does: the share of captions found verbatim among the training captions,
the share of distinct captions, the vocabulary used (against the references'), distinct-1/2
(distinct n-grams over all n-grams) and the mean length against the references'. Captions are
compared after training's tokenization (lower case, punctuation dropped: `lrcn.text.tokenize`),
the form the model writes them in, so ``"A dog runs."`` in training and a generated
``"a dog runs"`` are the same caption.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

from lrcn.errors import LrcnError
from lrcn.text.tokenize import tokenize


def _distinct(captions: Sequence[Sequence[str]], n: int) -> float:
    """Distinct n-grams over all n-grams of ``captions`` (0 when there are none)."""
    grams = [tuple(c[i : i + n]) for c in captions for i in range(len(c) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def _mean(values: Sequence[int]) -> float:
    return sum(values) / len(values) if values else 0.0


def caption_statistics(
    references: Mapping[Hashable, Sequence[str]],
    hypotheses: Mapping[Hashable, str],
    *,
    training: Iterable[str] | None = None,
    normalise: Callable[[str], list[str]] = tokenize,
) -> dict[str, Any]:
    """Copy and diversity statistics of generated captions.

    References first, as every scoring function of lrcn and pycocoevalcap take them.

    Args:
        references: key -> reference captions (for the references' vocabulary and length).
        hypotheses: key -> generated caption.
        training: the training captions; without them ``copied_from_train`` is left out.
        normalise: caption -> tokens; captions are equal when their tokens are.

    Returns:
        ``copied_from_train`` (share of generated captions that are a training caption),
        ``distinct_captions`` (distinct generated captions / items), ``vocabulary`` and
        ``reference_vocabulary`` (distinct words), ``distinct_1``, ``distinct_2``,
        ``mean_length`` and ``reference_mean_length`` (words).
    """
    for key, caption in hypotheses.items():
        if not isinstance(caption, str):
            raise LrcnError(
                f"The hypothesis for key {key!r} is {type(caption).__name__}, not one caption; "
                "pass the references first and the hypotheses (a string each) second."
            )
    generated = [normalise(c) for c in hypotheses.values()]
    refs = [normalise(r) for k in hypotheses for r in references.get(k, ())]
    stats: dict[str, Any] = {}
    if training is not None:
        seen = {" ".join(normalise(c)) for c in training}
        copied = sum(" ".join(c) in seen for c in generated)
        stats["copied_from_train"] = copied / len(generated) if generated else 0.0
    stats.update(
        distinct_captions=len({" ".join(c) for c in generated}) / max(len(generated), 1),
        vocabulary=len({w for c in generated for w in c}),
        reference_vocabulary=len({w for r in refs for w in r}),
        distinct_1=_distinct(generated, 1),
        distinct_2=_distinct(generated, 2),
        mean_length=_mean([len(c) for c in generated]),
        reference_mean_length=_mean([len(r) for r in refs]),
    )
    return stats
