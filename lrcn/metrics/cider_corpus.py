"""`CiderD`: CIDEr-D with document frequencies from a fixed corpus (self-critical's reward).

Built once from training references, it scores sampled captions against their references
without recounting the corpus; its document frequencies can be saved and loaded as JSON.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from lrcn.errors import LrcnError
from lrcn.io import read_json, write_json_atomic
from lrcn.metrics.cider import CIDER_SIGMA, cider_d, idf_weights
from lrcn.metrics.ngrams import MAX_N, NgramTable, lookup, ngram_table, set_document_frequency
from lrcn.metrics.tokenizer import tokenize_captions


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
        n: int = MAX_N,
        sigma: float = CIDER_SIGMA,
    ) -> None:
        items = [list(refs) for refs in refs_corpus.values()]
        if not items:
            raise LrcnError("CiderD needs at least one item of references to count n-grams over.")
        raw = [r for refs in items for r in refs if isinstance(r, str)]
        if raw:
            tokenized = iter(tokenize_captions(raw, tokenizer)[0])
            items = [[next(tokenized) if isinstance(r, str) else r for r in refs] for refs in items]
        table = ngram_table([list(r) for refs in items for r in refs], n)
        ref_set = np.repeat(np.arange(len(items)), [len(refs) for refs in items])
        # The corpus table's codes are what a new sentence's n-grams are looked up in.
        df = set_document_frequency(table, ref_set, 0)
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

    def _corpus_index(self, table: NgramTable) -> list[np.ndarray]:
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
                index = lookup(self._codes[k], np.arange(len(self._codes[k])), code, -1)
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
        table = ngram_table([list(ngram)], len(ngram))
        index = int(self._corpus_index(table)[-1][0])
        return int(self._df[len(ngram) - 1][index]) if index >= 0 else 0

    def score(
        self, references: Sequence[Sequence[Sequence[str]]], hypotheses: Sequence[Sequence[str]]
    ) -> tuple[float, np.ndarray]:
        """Score token lists; items that share one reference list object count it once.

        References first, as every scoring function of lrcn and pycocoevalcap take them.

        Args:
            references: N lists of reference token lists.
            hypotheses: N hypothesis token lists.

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
        if _swapped(references, hypotheses):
            raise ValueError(
                "CiderD.score takes the references first (lists of token lists), then the "
                "hypotheses (token lists): swap the two arguments"
            )
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
        table = ngram_table(sentences, self.n)
        idf = []
        for k, index in enumerate(self._corpus_index(table)):
            df = np.zeros(table.num_grams(k))  # (G_k,) unseen n-grams keep df 0
            known = index >= 0
            df[table.start_ids[k][known]] = self._df[k][index[known]]
            idf.append(idf_weights(df, self.num_documents))
        per_item = cider_d(table, idf, hyp_set, ref_set, self.sigma)
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
        data = read_json(path, "pass a CiderD document-frequency file written by CiderD.save")
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


def _swapped(references: Sequence[Sequence[Any]], hypotheses: Sequence[Sequence[Any]]) -> bool:
    """True when the first item shows the two arguments exchanged: a reference set whose first
    entry is a token (text) rather than a token list, or a hypothesis made of lists."""
    first_set = references[0] if references else ()
    first_hyp = hypotheses[0] if hypotheses else ()
    set_of_tokens = bool(first_set) and isinstance(first_set[0], str)
    return set_of_tokens or any(not isinstance(token, str) for token in first_hyp)
