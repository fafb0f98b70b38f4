"""Captioning metrics as coco-caption computes them: BLEU-1..4, METEOR, ROUGE_L, CIDEr-D.

BLEU, ROUGE_L and CIDEr-D are our own code, written to give pycocoevalcap's numbers (within 1e-6)
on the same tokens, and faster: the n-grams of all captions are counted at once with numpy and
shared by BLEU and CIDEr, and ROUGE_L's longest common subsequence is bit-parallel. METEOR runs pycocoevalcap's Java jar
when Java is on PATH; SPICE is never run (it downloads Stanford CoreNLP models on first use).

Captions are tokenized before scoring, as coco-caption does: ``"ptb"`` is coco-caption's Java
PTBTokenizer, ``"python"`` its pure-Python equivalent `lrcn.text.tokenize.tokenize`, ``"none"``
splits on whitespace, and ``"auto"`` picks ``"ptb"`` when Java and pycocoevalcap are present.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lrcn.errors import LrcnError
from lrcn.io import write_json_atomic
from lrcn.text.tokenize import tokenize as python_tokenize

METRICS = ("bleu", "meteor", "rouge", "cider", "spice")
DEFAULT_METRICS = ("bleu", "meteor", "rouge", "cider")
TOKENIZERS = ("auto", "ptb", "python", "none")
BLEU_KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4")
LOO_PREFIX = "reference_loo_"

SPICE_REASON = (
    "SPICE needs Stanford CoreNLP models that pycocoevalcap downloads on first use, "
    "and lrcn scores offline"
)

Tokens = list[str]

_MAX_N = 4
_CIDER_SIGMA = 6.0
# Characters the Java PTBTokenizer treats as line ends (checked with its jar); with
# -preserveLines a caption holding one would become two output lines and shift every caption
# after it. pycocoevalcap only replaces "\n".
_LINE_BREAKS = str.maketrans({ch: " " for ch in "\r\n\x0b\x0c\u2028\u2029"})


# ----------------------------------------------------------------------------- tokenization


def _java_available() -> bool:
    return shutil.which("java") is not None


def _pycocoevalcap_available() -> bool:
    return importlib.util.find_spec("pycocoevalcap") is not None


def resolve_tokenizer(tokenizer: str) -> str:
    """Return the tokenizer that will run: ``"auto"`` becomes ``"ptb"`` or ``"python"``.

    Raises:
        LrcnError: unknown name, or ``"ptb"`` asked for without Java or pycocoevalcap.
    """
    if tokenizer not in TOKENIZERS:
        raise LrcnError(f"Unknown tokenizer {tokenizer!r}; choose one of {', '.join(TOKENIZERS)}.")
    ptb_ready = _java_available() and _pycocoevalcap_available()
    if tokenizer == "auto":
        return "ptb" if ptb_ready else "python"
    if tokenizer == "ptb" and not ptb_ready:
        raise LrcnError(
            "tokenizer='ptb' needs `java` on PATH and pycocoevalcap installed "
            "(pip install 'lrcn[coco]'); install them or use tokenizer='python'."
        )
    return tokenizer


def _ptb_tokenize(captions: Sequence[str]) -> list[Tokens]:
    """coco-caption's PTBTokenizer: the same jar, command and punctuation filter.

    We run the command ourselves, rather than through ``PTBTokenizer.tokenize``, to check its
    exit status, keep its progress line off the user's terminal and write the input file to
    a temporary folder instead of the installed package.
    """
    from pycocoevalcap.tokenizer import ptbtokenizer

    if not captions:
        return []
    punctuation = set(ptbtokenizer.PUNCTUATIONS)
    text = "\n".join(c.translate(_LINE_BREAKS) for c in captions)
    with tempfile.TemporaryDirectory(prefix="lrcn-ptb-") as folder:
        source = Path(folder) / "captions.txt"
        source.write_bytes(text.encode())
        command = [
            "java", "-cp", ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR,
            "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase", str(source),
        ]  # fmt: skip
        try:
            done = subprocess.run(
                command, cwd=Path(ptbtokenizer.__file__).resolve().parent, capture_output=True
            )
        except OSError as err:
            raise LrcnError(
                f"coco-caption's Java PTBTokenizer could not start ({err}); "
                "check `java -version` or use tokenizer='python'."
            ) from err
    lines = done.stdout.decode().split("\n")
    if done.returncode != 0 or len(lines) < len(captions):
        reason = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise LrcnError(
            f"coco-caption's Java PTBTokenizer failed ({reason[0]}); "
            "check `java -version` or use tokenizer='python'."
        )
    return [[w for w in line.split() if w not in punctuation] for line in lines[: len(captions)]]


def tokenize_captions(captions: Sequence[str], tokenizer: str = "auto") -> tuple[list[Tokens], str]:
    """Tokenize captions for scoring, all in one call (one JVM start for ``"ptb"``).

    Args:
        captions: raw caption strings.
        tokenizer: ``"auto"``, ``"ptb"``, ``"python"`` or ``"none"`` (whitespace split).

    Returns:
        (token lists in input order, the tokenizer that ran).
    """
    used = resolve_tokenizer(tokenizer)
    if used == "ptb":
        return _ptb_tokenize(captions), used
    if used == "python":
        return [python_tokenize(c) for c in captions], used
    return [c.split() for c in captions], used


# ----------------------------------------------------------------------------- input checks


def _check_metrics(metrics: Sequence[str] | str) -> list[str]:
    if isinstance(metrics, str):
        metrics = [m for m in metrics.split(",") if m]
    wanted = [m.strip().lower() for m in metrics]
    unknown = [m for m in wanted if m not in METRICS]
    if unknown or not wanted:
        raise LrcnError(
            f"Unknown or empty metrics {unknown or list(metrics)!r}; "
            f"choose from {', '.join(METRICS)}."
        )
    return wanted


def _check_caption(caption: Any, what: str, key: Hashable) -> str:
    if not isinstance(caption, str):
        raise LrcnError(
            f"The {what} for key {key!r} is {type(caption).__name__}, not a string; "
            "pass captions as text."
        )
    return caption


def _check_references(references: Mapping, keys: Sequence[Hashable]) -> list[list[str]]:
    out = []
    for key in keys:
        refs = references[key]
        if isinstance(refs, str) or not isinstance(refs, Sequence):
            raise LrcnError(
                f"The references for key {key!r} must be a list of caption strings, "
                f"got {type(refs).__name__}; wrap a single caption in a list."
            )
        if not refs:
            raise LrcnError(
                f"Key {key!r} has no reference captions; coco-caption needs at least one, "
                "so drop that item or add its references."
            )
        out.append([_check_caption(r, "reference", key) for r in refs])
    return out


def _check_keys(references: Mapping, hypotheses: Mapping) -> list[Hashable]:
    keys = list(hypotheses)
    if not keys:
        raise LrcnError("There are no hypotheses to score; pass at least one caption.")
    missing = [k for k in keys if k not in references]
    if missing:
        raise LrcnError(
            f"{len(missing)} hypothesis key(s) have no references (first: {missing[0]!r}); "
            "every hypothesis key must be a key of the references."
        )
    return keys


def _tokenize_items(
    references: Sequence[Sequence[str]], hypotheses: Sequence[str], tokenizer: str
) -> tuple[list[list[Tokens]], list[Tokens], str]:
    flat = list(hypotheses) + [r for refs in references for r in refs]
    tokens, used = tokenize_captions(flat, tokenizer)
    hyps, pos = tokens[: len(hypotheses)], len(hypotheses)
    refs = []
    for item in references:
        refs.append(tokens[pos : pos + len(item)])
        pos += len(item)
    return refs, hyps, used


# ----------------------------------------------------------------------------- n-grams


@dataclass
class _NgramTable:
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
        return max(len(self.vocab), 1)

    def num_grams(self, order: int) -> int:
        return len(self.codes[order])


def _ngram_table(sentences: Sequence[Sequence[str]], n: int = _MAX_N) -> _NgramTable:
    """Count the 1..n-grams of every sentence at once."""
    lengths = np.fromiter(map(len, sentences), dtype=np.int64, count=len(sentences))  # (S,)
    total = int(lengths.sum())
    vocab: dict[str, int] = {}
    words = np.fromiter(
        (vocab.setdefault(w, len(vocab)) for s in sentences for w in s), np.int64, count=total
    )  # (T,)
    table = _NgramTable(vocab, words, lengths)
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


def _set_document_frequency(
    table: _NgramTable, ref_set: np.ndarray, first_ref: int
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


def _sum_by(index: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """Float sums of ``values`` per ``index`` (bincount gives ints when ``values`` is empty)."""
    return np.bincount(index, weights=values, minlength=size).astype(float, copy=False)


def _lookup(
    sorted_keys: np.ndarray, values: np.ndarray, queries: np.ndarray, missing: int
) -> np.ndarray:
    """``values[i]`` where ``sorted_keys[i] == query``, else ``missing``, (Q,)."""
    if not len(sorted_keys):
        return np.full(len(queries), missing, dtype=values.dtype)
    at = np.minimum(np.searchsorted(sorted_keys, queries), len(sorted_keys) - 1)
    return np.where(sorted_keys[at] == queries, values[at], missing)


def _group_starts(group: np.ndarray, num_groups: int) -> np.ndarray:
    """First index of each group in a sorted group array, (num_groups,)."""
    return np.searchsorted(group, np.arange(num_groups))


# ----------------------------------------------------------------------------- BLEU


def _coco_bleu(
    table: _NgramTable, num_hyps: int, ref_item: np.ndarray
) -> tuple[list[float], np.ndarray]:
    """coco-caption's ``BleuScorer.compute_score(option="closest")``.

    Sentences ``0..num_hyps-1`` of ``table`` are the hypotheses, the rest references, grouped by
    item (``ref_item`` non-decreasing, every item has one).

    Returns:
        (corpus BLEU-1..n, per-item BLEU-1..n of shape (n, N)).
    """
    tiny, small = 1e-15, 1e-9  # coco-caption's: no zero division, and 0 matches score 0
    n = len(table.sent)
    test_len = table.lengths[:num_hyps]  # (N,)
    ref_len = table.lengths[num_hyps:]  # (R,)
    # closest reference length, the shorter on ties: min of (distance, length) per item
    scale = int(ref_len.max(initial=0)) + 1
    closeness = np.abs(ref_len - test_len[ref_item]) * scale + ref_len  # (R,)
    closest = np.minimum.reduceat(closeness, _group_starts(ref_item, num_hyps)) % scale  # (N,)
    correct = np.zeros((n, num_hyps))  # (n, N)
    guess = np.zeros((n, num_hyps))  # (n, N)
    for k in range(n):
        sent, gram, count = table.sent[k], table.gram[k], table.count[k]
        is_ref = sent >= num_hyps
        # the most times each (item, n-gram) occurs in any one of the item's references
        ref_keys = ref_item[sent[is_ref] - num_hyps] * table.num_grams(k) + gram[is_ref]
        order = np.argsort(ref_keys, kind="stable")
        ref_keys, ref_counts = ref_keys[order], count[is_ref][order]
        if len(ref_keys):
            bounds = np.flatnonzero(np.r_[True, ref_keys[1:] != ref_keys[:-1]])
            ref_keys, ref_counts = ref_keys[bounds], np.maximum.reduceat(ref_counts, bounds)
        hyp_keys = sent[~is_ref] * table.num_grams(k) + gram[~is_ref]
        clipped = np.minimum(count[~is_ref], _lookup(ref_keys, ref_counts, hyp_keys, 0))
        correct[k] = _sum_by(sent[~is_ref], clipped, num_hyps)
        guess[k] = np.maximum(0, test_len - k)
    # cumulative products in coco-caption's order, so the floats match
    per_item = np.cumprod((correct + tiny) / (guess + small), axis=0)  # (n, N)
    per_item **= 1.0 / np.arange(1, n + 1)[:, None]
    ratio = (test_len + tiny) / (closest + small)  # (N,)
    short = ratio < 1
    per_item[:, short] *= np.exp(1 - 1 / ratio[short])
    scores, bleu = [], 1.0
    for k in range(n):
        bleu *= (float(correct[k].sum()) + tiny) / (float(guess[k].sum()) + small)
        scores.append(bleu ** (1.0 / (k + 1)))
    ratio = (int(test_len.sum()) + tiny) / (int(closest.sum()) + small)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores, per_item


def _counts(tokens: Sequence[str], n: int) -> list[Counter]:
    return [Counter(zip(*[tokens[i:] for i in range(k)])) for k in range(1, n + 1)]


def corpus_bleu(
    list_of_references: Sequence[Sequence[Sequence[str]]],
    hypotheses: Sequence[Sequence[str]],
    weights: Sequence[float] = (0.25, 0.25, 0.25, 0.25),
) -> float:
    """Corpus BLEU equal to ``nltk.translate.bleu_score.corpus_bleu`` without smoothing.

    Same conventions as nltk (not coco-caption): clipped counts summed over the corpus, each
    hypothesis shorter than n adds 1 to the n-gram denominator, closest reference length (the
    shorter on ties), brevity penalty ``exp(1 - r/c)`` when ``c <= r``, 0 when no unigram
    matches, and a zero higher-order precision counted as ``sys.float_info.min`` (so the score
    is ~0, as nltk returns with its warning, which this function does not emit).

    Args:
        list_of_references: per hypothesis, its reference token lists.
        hypotheses: hypothesis token lists.
        weights: one weight per n-gram order.

    Returns:
        The BLEU score.
    """
    if len(list_of_references) != len(hypotheses):
        raise ValueError("corpus_bleu needs one list of references per hypothesis")
    if not hypotheses:
        raise ValueError("corpus_bleu needs at least one hypothesis")
    orders = len(weights)
    numerators, denominators = [0] * orders, [0] * orders
    hyp_total, ref_total = 0, 0
    for refs, hyp in zip(list_of_references, hypotheses):
        hyp_counts = _counts(list(hyp), orders)
        ref_counts = [_counts(list(ref), orders) for ref in refs]
        for k in range(orders):
            numerators[k] += sum(
                min(count, max((ref[k].get(gram, 0) for ref in ref_counts), default=0))
                for gram, count in hyp_counts[k].items()
            )
            denominators[k] += max(1, sum(hyp_counts[k].values()))
        hyp_total += len(hyp)
        ref_total += min((len(ref) for ref in refs), key=lambda r: (abs(r - len(hyp)), r))
    if numerators[0] == 0:
        return 0.0
    if hyp_total > ref_total:
        penalty = 1.0
    elif hyp_total == 0:
        penalty = 0.0
    else:
        penalty = math.exp(1 - ref_total / hyp_total)
    precisions = [
        num / den if num else sys.float_info.min for num, den in zip(numerators, denominators)
    ]
    return penalty * math.exp(math.fsum(w * math.log(p) for w, p in zip(weights, precisions)))


# ----------------------------------------------------------------------------- CIDEr-D


def _cider_d(
    table: _NgramTable,
    idf: Sequence[np.ndarray],
    hyp_set: np.ndarray,
    ref_set: np.ndarray,
    sigma: float = _CIDER_SIGMA,
) -> np.ndarray:
    """coco-caption's CIDEr (CIDEr-D: clipped, Gaussian length penalty, x10), per hypothesis.

    Sentences ``0..N-1`` of ``table`` are hypotheses; the rest are references in sets
    (``ref_set``, non-decreasing). Hypothesis i is scored against set ``hyp_set[i]``, so
    hypotheses sampled for one image share one set. ``idf[k]`` holds each n-gram id's weight.

    Returns:
        (N,) CIDEr-D per hypothesis.
    """
    num_hyps = len(hyp_set)
    num_sets = int(ref_set.max(initial=-1)) + 1
    set_start = _group_starts(ref_set, num_sets)  # (U,)
    set_size = np.bincount(ref_set, minlength=num_sets)  # (U,)
    # one "pair" per (hypothesis, reference of its set); hypothesis i's pairs are contiguous
    pairs_per_hyp = set_size[hyp_set]  # (N,)
    pair_start = np.cumsum(pairs_per_hyp) - pairs_per_hyp  # (N,)
    num_pairs = int(pairs_per_hyp.sum())
    pair_hyp = np.repeat(np.arange(num_hyps), pairs_per_hyp)  # (P,)
    pair_ref = set_start[hyp_set][pair_hyp] + np.arange(num_pairs) - pair_start[pair_hyp]  # (P,)
    # coco-caption's "length" is the bigram count (it counts where its 0-based order is 1)
    length = np.maximum(table.lengths - 1, 0)  # (S,)
    delta = length[pair_hyp] - length[num_hyps + pair_ref]  # (P,)
    penalty = np.exp(-(delta.astype(float) ** 2) / (2 * sigma**2))  # (P,)
    total = np.zeros(num_pairs)  # (P,)
    for k in range(len(table.sent)):
        sent, gram = table.sent[k], table.gram[k]
        vec = table.count[k] * idf[k][gram]  # (E,) tf-idf of each entry
        norm = np.sqrt(_sum_by(sent, vec**2, len(table.lengths)))  # (S,)
        is_ref = sent >= num_hyps
        h_sent, h_vec = sent[~is_ref], vec[~is_ref]
        r_ref, r_vec = sent[is_ref] - num_hyps, vec[is_ref]
        # join each hypothesis entry with the entries of the same n-gram in its reference set
        r_keys = ref_set[r_ref] * table.num_grams(k) + gram[is_ref]
        order = np.argsort(r_keys, kind="stable")
        r_keys = r_keys[order]
        h_keys = hyp_set[h_sent] * table.num_grams(k) + gram[~is_ref]
        lo = np.searchsorted(r_keys, h_keys, "left")
        matches = np.searchsorted(r_keys, h_keys, "right") - lo  # (E_h,)
        h_entry = np.repeat(np.arange(len(h_keys)), matches)  # (M,)
        # the j-th match of a hypothesis entry sits at lo + j in the sorted reference keys
        r_entry = order[
            np.repeat(lo, matches)
            + np.arange(len(h_entry))
            - np.repeat(np.cumsum(matches) - matches, matches)
        ]
        hyp_i, ref_r, r_val = h_sent[h_entry], r_ref[r_entry], r_vec[r_entry]
        clipped = np.minimum(h_vec[h_entry], r_val) * r_val  # (M,) clipping is CIDEr-D's "D"
        pair = pair_start[hyp_i] + ref_r - set_start[hyp_set[hyp_i]]
        val = _sum_by(pair, clipped, num_pairs)  # (P,)
        denom = norm[pair_hyp] * norm[num_hyps + pair_ref]  # (P,)
        val = np.divide(val, denom, out=val, where=denom != 0)
        total += val * penalty
    per_hyp = _sum_by(pair_hyp, total, num_hyps)  # (N,)
    return per_hyp / len(table.sent) / np.maximum(pairs_per_hyp, 1) * 10.0


def _idf(df: np.ndarray, num_documents: int) -> np.ndarray:
    """coco-caption's idf: log(#documents) - log(max(1, df)); unseen n-grams get the maximum."""
    return math.log(float(num_documents)) - np.log(np.maximum(1.0, df))


class CiderD:
    """CIDEr-D with document frequencies from a fixed corpus (self-critical training's reward).

    Built once from training references, it scores sampled captions against their references
    without recounting the corpus. Built from the evaluated set's own references it equals
    coco-caption's CIDEr.

    Args:
        refs_corpus: key -> references, each a raw caption string or a token list.
        tokenizer: how raw strings are tokenized (see `tokenize_captions`); token lists are
            used as they are.
        n: largest n-gram order.
        sigma: width of the Gaussian length penalty.
    """

    def __init__(
        self,
        refs_corpus: Mapping[Hashable, Sequence[str | Sequence[str]]],
        tokenizer: str = "python",
        n: int = _MAX_N,
        sigma: float = _CIDER_SIGMA,
    ) -> None:
        items = [list(refs) for refs in refs_corpus.values()]
        if not items:
            raise LrcnError("CiderD needs at least one item of references to count n-grams over.")
        raw = [r for refs in items for r in refs if isinstance(r, str)]
        if raw:
            tokenized = iter(tokenize_captions(raw, tokenizer)[0])
            items = [[next(tokenized) if isinstance(r, str) else r for r in refs] for refs in items]
        table = _ngram_table([list(r) for refs in items for r in refs], n)
        ref_set = np.repeat(np.arange(len(items)), [len(refs) for refs in items])
        # The corpus table's codes are what a new sentence's n-grams are looked up in.
        df = _set_document_frequency(table, ref_set, 0)
        self._setup(list(table.vocab), table.codes, df, len(items), sigma)

    def _setup(
        self,
        words: list[str],
        codes: list[np.ndarray],
        df: list[np.ndarray],
        num_documents: int,
        sigma: float,
    ) -> None:
        self.n = len(codes)
        self.sigma = sigma
        self.num_documents = num_documents
        self._vocab = {w: i for i, w in enumerate(words)}
        self._codes = [np.asarray(c, dtype=np.int64) for c in codes]
        self._df = [np.asarray(d, dtype=np.int64) for d in df]

    def _corpus_index(self, table: _NgramTable) -> list[np.ndarray]:
        """Per order, the corpus index of the n-gram starting at each of ``table.starts``, or -1."""
        to_corpus = np.array([self._vocab.get(w, -1) for w in table.vocab], dtype=np.int64)
        corpus_words = to_corpus[table.words] if len(table.words) else table.words  # (T,)
        base = max(len(self._vocab), 1)
        found: list[np.ndarray] = []
        prefix = corpus_words  # (T,) corpus index of the (k-1)-gram starting at each position
        for k, where in enumerate(table.starts):
            if k == 0:
                index = corpus_words[where]
            else:
                last = corpus_words[where + k]
                code = prefix[where] * base + last
                index = _lookup(self._codes[k], np.arange(len(self._codes[k])), code, -1)
                # a -1 (unknown) prefix or word can still form a valid code: mask it
                index[(prefix[where] < 0) | (last < 0)] = -1
            found.append(index)
            prefix = np.full(len(table.words), -1, dtype=np.int64)
            prefix[where] = index
        return found

    def document_frequency(self, ngram: Sequence[str]) -> int:
        """In how many corpus items' references ``ngram`` (1..n tokens) occurs."""
        if not 1 <= len(ngram) <= self.n:
            return 0
        table = _ngram_table([list(ngram)], len(ngram))
        index = int(self._corpus_index(table)[-1][0])
        return int(self._df[len(ngram) - 1][index]) if index >= 0 else 0

    def score(
        self, hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]]
    ) -> tuple[float, np.ndarray]:
        """Score token lists; items that share one reference list object count it once.

        Args:
            hypotheses: N hypothesis token lists.
            references: N lists of reference token lists.

        Returns:
            (mean CIDEr-D, per-item CIDEr-D of shape (N,)).
        """
        if len(hypotheses) != len(references):
            raise ValueError(
                f"CiderD.score got {len(hypotheses)} hypotheses "
                f"but {len(references)} reference sets"
            )
        if any(len(refs) == 0 for refs in references):
            raise ValueError("CiderD.score needs at least one reference per hypothesis")
        if not hypotheses:
            return 0.0, np.zeros(0)
        # The list objects are alive for the whole call, so their ids are safe keys.
        set_of: dict[int, int] = {}
        sets: list[Sequence[Sequence[str]]] = []
        for refs in references:
            if id(refs) not in set_of:
                set_of[id(refs)] = len(sets)
                sets.append(refs)
        hyp_set = np.array([set_of[id(refs)] for refs in references])  # (N,)
        ref_set = np.repeat(np.arange(len(sets)), [len(refs) for refs in sets])  # (R,)
        sentences = [list(h) for h in hypotheses] + [list(r) for refs in sets for r in refs]
        table = _ngram_table(sentences, self.n)
        idf = []
        for k, index in enumerate(self._corpus_index(table)):
            df = np.zeros(table.num_grams(k))  # (G_k,) unseen n-grams keep df 0
            known = index >= 0
            df[table.start_ids[k][known]] = self._df[k][index[known]]
            idf.append(_idf(df, self.num_documents))
        per_item = _cider_d(table, idf, hyp_set, ref_set, self.sigma)
        return float(per_item.mean()), per_item

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary, n-gram codes and document frequencies as JSON, atomically."""
        write_json_atomic(
            path,
            {
                "format": "lrcn.CiderD",
                "version": 1,
                "sigma": self.sigma,
                "num_documents": self.num_documents,
                "vocab": list(self._vocab),
                "codes": [c.tolist() for c in self._codes],
                "document_frequency": [d.tolist() for d in self._df],
            },
            indent=None,
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> CiderD:
        """Read a file written by `save`."""
        data = _read_json(path, "a CiderD document-frequency file written by CiderD.save")
        try:
            if data.get("format") != "lrcn.CiderD" or data.get("version") != 1:
                raise ValueError("format is not lrcn.CiderD version 1")
            words = [str(w) for w in data["vocab"]]
            codes = [np.array(c, dtype=np.int64) for c in data["codes"]]
            df = [np.array(d, dtype=np.int64) for d in data["document_frequency"]]
            num_documents, sigma = int(data["num_documents"]), float(data["sigma"])
            if len(codes) != len(df) or any(len(c) != len(d) for c, d in zip(codes, df)):
                raise ValueError("codes and document_frequency do not line up")
            if not codes or len(codes[0]) != len(words) or len(set(words)) != len(words):
                raise ValueError("vocab does not match the unigram codes")
            if any(np.any(np.diff(c) <= 0) for c in codes) or num_documents < 1:
                raise ValueError("codes are not sorted or num_documents < 1")
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise LrcnError(
                f"{path} is not a CiderD document-frequency file ({err}); "
                "rebuild it with CiderD(train_references).save(path)."
            ) from err
        cider = cls.__new__(cls)
        cider._setup(words, codes, df, num_documents, sigma)
        return cider


# ----------------------------------------------------------------------------- ROUGE_L


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence, bit-parallel over ``a`` (Allison-Dix)."""
    masks: dict[str, int] = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(a)) - 1
    row = full
    for tok in b:
        matches = row & masks.get(tok, 0)
        row = ((row + matches) | (row - matches)) & full
    return len(a) - row.bit_count()


def _rouge_l(hyp: Tokens, refs: Sequence[Tokens], beta: float = 1.2) -> float:
    """coco-caption's ROUGE_L for one item: LCS F-measure from the best precision and recall."""
    # coco-caption splits the joined caption on " ", so an empty caption is one empty token.
    hyp = hyp or [""]
    prec_max, rec_max = 0.0, 0.0
    for ref in refs:
        ref = ref or [""]
        lcs = _lcs_length(ref, hyp)
        prec_max = max(prec_max, lcs / len(hyp))
        rec_max = max(rec_max, lcs / len(ref))
    if prec_max == 0 or rec_max == 0:
        return 0.0
    return ((1 + beta**2) * prec_max * rec_max) / float(rec_max + beta**2 * prec_max)


# ----------------------------------------------------------------------------- METEOR


def _meteor(hyps: Sequence[Tokens], refs: Sequence[Sequence[Tokens]]) -> float | str:
    """pycocoevalcap's METEOR 1.5 (Java) on joined tokens; a reason string when it cannot run."""
    if not _java_available():
        return "METEOR needs `java` on PATH (coco-caption's meteor-1.5.jar)"
    if not _pycocoevalcap_available():
        return "METEOR needs pycocoevalcap (pip install 'lrcn[coco]')"
    from pycocoevalcap.meteor.meteor import Meteor

    # "|||" separates fields in Meteor's stdio protocol; pycocoevalcap strips it from hypotheses.
    gts = {i: [" ".join(r).replace("|||", "") for r in item] for i, item in enumerate(refs)}
    res = {i: [" ".join(h)] for i, h in enumerate(hyps)}
    try:
        meteor = Meteor()
    except OSError as err:
        return f"METEOR's Java process did not start ({err})"
    try:
        score, _ = meteor.compute_score(gts, res)
    except (OSError, ValueError) as err:
        return f"METEOR's Java process failed ({err}); check `java -version` and free memory (2 GB)"
    finally:
        _close_meteor(meteor)
    return float(score)


def _close_meteor(meteor: Any) -> None:
    """End Meteor's JVM now rather than whenever the garbage collector runs ``__del__``."""
    proc = meteor.meteor_p
    if meteor.lock.locked():  # compute_score failed holding it; __del__ would wait forever
        meteor.lock.release()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        try:
            stream.close()
        except OSError:
            pass  # a broken pipe means the JVM is gone already
    proc.kill()
    proc.wait()


# ----------------------------------------------------------------------------- scoring


def _eval_table(
    hyps: Sequence[Tokens], refs: Sequence[Sequence[Tokens]]
) -> tuple[_NgramTable, np.ndarray]:
    """N-gram table of hypotheses then references, and each reference's item, (R,)."""
    table = _ngram_table(list(hyps) + [r for item in refs for r in item])
    return table, np.repeat(np.arange(len(refs)), [len(item) for item in refs])


def _eval_cider(table: _NgramTable, ref_item: np.ndarray) -> np.ndarray:
    """coco-caption's CIDEr per item, df counted over the evaluated items' references, (N,)."""
    num_items = len(table.lengths) - len(ref_item)
    df = _set_document_frequency(table, ref_item, num_items)
    idf = [_idf(d, num_items) for d in df]
    return _cider_d(table, idf, np.arange(num_items), ref_item)


def _score_tokens(
    hyps: Sequence[Tokens], refs: Sequence[Sequence[Tokens]], wanted: Sequence[str]
) -> tuple[dict[str, float], dict[str, str]]:
    results: dict[str, float] = {}
    unavailable: dict[str, str] = {}
    if "bleu" in wanted or "cider" in wanted:
        table, ref_item = _eval_table(hyps, refs)
    if "bleu" in wanted:
        bleu, _ = _coco_bleu(table, len(hyps), ref_item)
        results.update({key: float(value) for key, value in zip(BLEU_KEYS, bleu)})
    if "meteor" in wanted:
        meteor = _meteor(hyps, refs)
        if isinstance(meteor, str):
            unavailable["METEOR"] = meteor
        else:
            results["METEOR"] = meteor
    if "rouge" in wanted:
        results["ROUGE_L"] = float(np.mean([_rouge_l(h, r) for h, r in zip(hyps, refs)]))
    if "cider" in wanted:
        results["CIDEr"] = float(np.mean(_eval_cider(table, ref_item)))
    if "spice" in wanted:
        unavailable["SPICE"] = SPICE_REASON
    return results, unavailable


def score(
    references: Mapping[Hashable, Sequence[str]],
    hypotheses: Mapping[Hashable, str],
    metrics: Sequence[str] = DEFAULT_METRICS,
    tokenizer: str = "auto",
) -> dict[str, Any]:
    """Score captions as coco-caption does, over the keys of ``hypotheses``.

    Args:
        references: key -> reference captions (raw text).
        hypotheses: key -> one generated caption; its keys must be keys of ``references``.
        metrics: any of ``bleu, meteor, rouge, cider, spice`` (a list, or one comma-separated
            string as the command line takes it).
        tokenizer: ``auto``, ``ptb``, ``python`` or ``none`` (see `tokenize_captions`).

    Returns:
        ``Bleu_1``..``Bleu_4``, ``METEOR``, ``ROUGE_L``, ``CIDEr`` (those asked for and
        available), ``tokenizer`` (the one used) and, when a metric could not run,
        ``unavailable`` (metric -> reason).
    """
    wanted = _check_metrics(metrics)
    keys = _check_keys(references, hypotheses)
    raw_refs = _check_references(references, keys)
    raw_hyps = [_check_caption(hypotheses[k], "hypothesis", k) for k in keys]
    refs, hyps, used = _tokenize_items(raw_refs, raw_hyps, tokenizer)
    results, unavailable = _score_tokens(hyps, refs, wanted)
    out: dict[str, Any] = {
        k: results[k] for k in (*BLEU_KEYS, "METEOR", "ROUGE_L", "CIDEr") if k in results
    }
    out["tokenizer"] = used
    if unavailable:
        out["unavailable"] = unavailable
    return out


def per_item_scores(
    references: Mapping[Hashable, Sequence[str]],
    hypotheses: Mapping[Hashable, str],
    tokenizer: str = "auto",
) -> dict[Hashable, dict[str, float]]:
    """Per-item ``Bleu_4`` (coco-caption's sentence BLEU) and ``CIDEr`` (df over the whole set).

    Returns:
        key -> {"Bleu_4": ..., "CIDEr": ...} for every key of ``hypotheses``.
    """
    keys = _check_keys(references, hypotheses)
    raw_refs = _check_references(references, keys)
    raw_hyps = [_check_caption(hypotheses[k], "hypothesis", k) for k in keys]
    refs, hyps, _ = _tokenize_items(raw_refs, raw_hyps, tokenizer)
    table, ref_item = _eval_table(hyps, refs)
    _, bleu = _coco_bleu(table, len(hyps), ref_item)  # (4, N)
    cider = _eval_cider(table, ref_item)  # (N,)
    return {
        key: {"Bleu_4": float(bleu[3, i]), "CIDEr": float(cider[i])} for i, key in enumerate(keys)
    }


def leave_one_out_scores(
    references: Mapping[Hashable, Sequence[str]],
    metrics: Sequence[str] = DEFAULT_METRICS,
    tokenizer: str = "auto",
) -> dict[str, Any]:
    """Human-style ceiling: each reference scored against the item's other references.

    Every item with at least two references gives one pair per reference; all pairs are scored
    as one corpus (CIDEr's document frequency counts the pairs' reference sets).

    Returns:
        Every key of `score`'s result prefixed with ``reference_loo_`` (e.g.
        ``reference_loo_Bleu_4``, ``reference_loo_tokenizer``), plus ``reference_loo_pairs``;
        an empty dict when no item has two references.
    """
    wanted = _check_metrics(metrics)
    keys = [k for k, refs in references.items() if not isinstance(refs, str) and len(refs) >= 2]
    if not keys:
        return {}
    raw_refs = _check_references(references, keys)
    flat = [r for refs in raw_refs for r in refs]
    tokens, used = tokenize_captions(flat, tokenizer)  # once for all pairs
    hyps: list[Tokens] = []
    others: list[list[Tokens]] = []
    pos = 0
    for item in raw_refs:
        item_tokens = tokens[pos : pos + len(item)]
        pos += len(item)
        for i, held_out in enumerate(item_tokens):
            hyps.append(held_out)
            others.append(item_tokens[:i] + item_tokens[i + 1 :])
    results, unavailable = _score_tokens(hyps, others, wanted)
    out: dict[str, Any] = {LOO_PREFIX + k: v for k, v in results.items()}
    out[LOO_PREFIX + "tokenizer"] = used
    out[LOO_PREFIX + "pairs"] = len(hyps)
    if unavailable:
        out[LOO_PREFIX + "unavailable"] = unavailable
    return out


# ----------------------------------------------------------------------------- COCO files


def _read_json(path: str | os.PathLike, what: str) -> Any:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise LrcnError(f"{path}: no such file; pass {what}.") from err
    except (OSError, UnicodeDecodeError) as err:
        raise LrcnError(f"{path} could not be read ({err}); pass {what}.") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise LrcnError(
            f"{path} line {err.lineno}: not valid JSON ({err.msg}); pass {what}."
        ) from err


def load_coco_references(path: str | os.PathLike) -> dict[Hashable, list[str]]:
    """Read a COCO captions file (``annotations[].image_id/caption``) as image id -> captions."""
    what = "a COCO captions file such as captions_val2014.json"
    data = _read_json(path, what)
    annotations = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(annotations, list):
        raise LrcnError(f"{path} has no 'annotations' list; pass {what}.")
    references: dict[Hashable, list[str]] = {}
    for i, ann in enumerate(annotations):
        if not (
            isinstance(ann, dict) and isinstance(ann.get("caption"), str) and "image_id" in ann
        ):
            raise LrcnError(
                f"{path}: annotations[{i}] lacks an 'image_id' or a string 'caption'; pass {what}."
            )
        if not isinstance(ann["image_id"], Hashable):
            raise LrcnError(f"{path}: annotations[{i}] has a non-scalar image_id; pass {what}.")
        references.setdefault(ann["image_id"], []).append(ann["caption"])
    if not references:
        raise LrcnError(f"{path} holds no captions; pass {what}.")
    return references


def load_coco_results(path: str | os.PathLike) -> dict[Hashable, str]:
    """Read a COCO results file (``[{"image_id", "caption"}]``) as image id -> caption.

    Like coco-caption (whose BLEU scorer asserts one hypothesis per image), an image id given
    twice is an error.
    """
    what = 'a COCO results file: a JSON list of {"image_id": ..., "caption": ...}'
    data = _read_json(path, what)
    if not isinstance(data, list) or not data:
        raise LrcnError(f"{path} is not a non-empty JSON list; pass {what}.")
    hypotheses: dict[Hashable, str] = {}
    for i, entry in enumerate(data):
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("caption"), str)
            and "image_id" in entry
        ):
            raise LrcnError(
                f"{path}: entry {i} lacks an 'image_id' or a string 'caption'; pass {what}."
            )
        image_id = entry["image_id"]
        if not isinstance(image_id, Hashable):
            raise LrcnError(
                f"{path}: entry {i} has an image_id of type {type(image_id).__name__}; use ids."
            )
        if image_id in hypotheses:
            raise LrcnError(
                f"{path}: image_id {image_id!r} has more than one caption (entry {i}); "
                "coco-caption scores exactly one caption per image, so keep one."
            )
        hypotheses[image_id] = entry["caption"]
    return hypotheses


def score_files(
    annotations_path: str | os.PathLike,
    results_path: str | os.PathLike,
    metrics: Sequence[str] = DEFAULT_METRICS,
    tokenizer: str = "auto",
) -> dict[str, Any]:
    """Score a COCO results file against COCO caption annotations (the ``lrcn score`` command).

    Only the image ids in the results are scored, as coco-caption does with
    ``cocoEval.params["image_id"] = cocoRes.getImgIds()``.

    Returns:
        The same keys as `score`.
    """
    references = load_coco_references(annotations_path)
    hypotheses = load_coco_results(results_path)
    missing = [k for k in hypotheses if k not in references]
    if missing:
        raise LrcnError(
            f"{results_path}: {len(missing)} image_id(s) have no captions in {annotations_path} "
            f"(first: {missing[0]!r}); score results against the annotations of the same split."
        )
    return score(references, hypotheses, metrics, tokenizer)
