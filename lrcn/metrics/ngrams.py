"""N-gram tables shared by BLEU and CIDEr-D: every caption's 1..4-gram counts as numpy arrays.

The n-grams of all captions are counted at once, and one table serves both BLEU and CIDEr
when `lrcn.metrics.score` asks for both (see `shared_tables`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np

from lrcn.metrics.registry import TokenizedItems, Tokens

MAX_N = 4


@dataclass
class NgramTable:
    """Each sentence's n-gram counts as flat arrays, one set per order (index 0 = unigrams).

    An entry is one (sentence, distinct n-gram) with its count; entries are sorted by sentence,
    then n-gram id. Unigram ids are word ids (``vocab``); a k-gram's id is the rank of
    ``prefix_id * len(vocab) + last_word_id`` among the table's k-grams (``codes``), so ids stay
    small whatever the vocabulary, and a fixed corpus can be searched the same way.
    """

    vocab: dict[str, int]
    words: np.ndarray  # (T,) word id of every token, sentences concatenated
    lengths: np.ndarray  # (S,) tokens per sentence
    starts: list[np.ndarray] = field(default_factory=list)  # per order: token positions of k-grams
    start_ids: list[np.ndarray] = field(default_factory=list)  # per order: their n-gram ids
    codes: list[np.ndarray] = field(default_factory=list)  # per order: (G_k,) sorted codes
    sent: list[np.ndarray] = field(default_factory=list)  # per order: (E_k,) sentence index
    gram: list[np.ndarray] = field(default_factory=list)  # per order: (E_k,) n-gram id
    count: list[np.ndarray] = field(default_factory=list)  # per order: (E_k,) term frequency

    @property
    def base(self) -> int:
        """The radix of k-gram codes: the vocabulary size (at least 1)."""
        return max(len(self.vocab), 1)

    def num_grams(self, order: int) -> int:
        """How many distinct n-grams of 0-based ``order`` the table holds."""
        return len(self.codes[order])


def ngram_table(sentences: Sequence[Sequence[str]], n: int = MAX_N) -> NgramTable:
    """Count the 1..n-grams of every sentence at once, its tokens split as coco-caption does.

    A token holding whitespace (the jar writes the fraction "3 1/2" as one token with a no-break
    space) becomes several words, and an empty token none, as in pycocoevalcap's ``precook``
    (``" ".join(tokens).split()``).
    """
    lengths = np.fromiter(map(len, sentences), dtype=np.int64, count=len(sentences))  # (S,)
    total = int(lengths.sum())
    vocab: dict[str, int] = {}
    words = np.fromiter(
        (vocab.setdefault(w, len(vocab)) for s in sentences for w in s), np.int64, count=total
    )  # (T,)
    if any(w.split() != [w] for w in vocab):
        # coco-caption's BLEU and CIDEr split the joined caption on any whitespace
        return ngram_table([" ".join(s).split() for s in sentences], n)
    table = NgramTable(vocab, words, lengths)
    sent_of_pos = np.repeat(np.arange(len(sentences)), lengths)  # (T,)
    first = np.cumsum(lengths) - lengths  # (S,)
    left = lengths[sent_of_pos] - (np.arange(total) - first[sent_of_pos])  # (T,) tokens from here
    for k in range(1, n + 1):
        where = np.flatnonzero(left >= k)  # positions where a k-gram starts
        if k == 1:
            codes, ids = np.arange(len(vocab)), words  # ids: (T,) k-gram id at each start
        else:
            codes, inverse = np.unique(
                ids[where] * table.base + words[where + k - 1], return_inverse=True
            )
            ids = np.zeros(total, dtype=np.int64)
            ids[where] = inverse
        size = max(len(codes), 1)
        keys, counts = np.unique(sent_of_pos[where] * size + ids[where], return_counts=True)
        table.starts.append(where)
        table.start_ids.append(ids[where])
        table.codes.append(codes)
        table.sent.append(keys // size)
        table.gram.append(keys % size)
        table.count.append(counts)
    return table


def _unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (numpy's hash-based unique is slower on these int arrays)."""
    values = np.sort(values)
    return values[np.r_[True, values[1:] != values[:-1]]] if len(values) else values


def set_document_frequency(
    table: NgramTable, ref_set: np.ndarray, first_ref: int
) -> list[np.ndarray]:
    """Per order, in how many reference sets each n-gram id occurs, (G_k,) each.

    References are the sentences from ``first_ref`` on; ``ref_set`` gives each one's set.
    """
    df = []
    for k in range(len(table.sent)):
        size = max(table.num_grams(k), 1)
        is_ref = table.sent[k] >= first_ref
        sets = ref_set[table.sent[k][is_ref] - first_ref]
        pairs = _unique(sets * size + table.gram[k][is_ref])  # each (set, n-gram) once
        df.append(np.bincount(pairs % size, minlength=table.num_grams(k)))
    return df


def sum_by(index: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """Float sums of ``values`` per ``index`` (bincount gives ints when ``values`` is empty)."""
    return np.bincount(index, weights=values, minlength=size).astype(float, copy=False)


def lookup(
    sorted_keys: np.ndarray, values: np.ndarray, queries: np.ndarray, missing: int
) -> np.ndarray:
    """``values[i]`` where ``sorted_keys[i] == query``, else ``missing``, (Q,)."""
    if not len(sorted_keys):
        return np.full(len(queries), missing, dtype=values.dtype)
    at = np.minimum(np.searchsorted(sorted_keys, queries), len(sorted_keys) - 1)
    return np.where(sorted_keys[at] == queries, values[at], missing)


def group_starts(group: np.ndarray, num_groups: int) -> np.ndarray:
    """First index of each group in a sorted group array, (num_groups,)."""
    return np.searchsorted(group, np.arange(num_groups))


def split_items(
    gts: TokenizedItems, res: TokenizedItems
) -> tuple[list[Tokens], list[Sequence[Tokens]]]:
    """Hypotheses (``res[k][0]``) and reference lists (``gts[k]``), in the order of ``res``."""
    return [res[k][0] for k in res], [gts[k] for k in res]


_SHARED: ContextVar[dict | None] = ContextVar("lrcn_metrics_shared_tables", default=None)


@contextmanager
def shared_tables() -> Iterator[None]:
    """Inside this block, scorers given the same ``gts`` and ``res`` objects share one table.

    The caller promises not to change those mappings inside the block (`score` builds them,
    hands them to each scorer and drops them).
    """
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


def eval_table(gts: TokenizedItems, res: TokenizedItems) -> tuple[NgramTable, np.ndarray]:
    """N-gram table of hypotheses then references, and each reference's item, (R,)."""
    cache = _SHARED.get()
    key = (id(gts), id(res))
    if cache is not None and key in cache:
        return cache[key][2]
    hyps, refs = split_items(gts, res)
    table = ngram_table(list(hyps) + [r for item in refs for r in item])
    out = table, np.repeat(np.arange(len(refs)), [len(item) for item in refs])
    if cache is not None:
        cache[key] = (gts, res, out)  # holding gts and res keeps their ids from being reused
    return out
