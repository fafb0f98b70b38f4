"""The training dataset encodes every caption once and gives the ids the tokenizer would."""

from __future__ import annotations

import pytest
import torch

import lrcn.data.datasets as datasets
from lrcn.data.datasets import (
    CaptionTrainDataset,
    Example,
    Source,
    build_vocabulary,
    most_frequent_caption,
    tokenize_source,
)
from lrcn.text.tokenize import tokenize
from lrcn.text.vocab import Vocabulary


class _Listed(Source):
    """Items with a fixed caption list each (MSVD-like: some have many)."""

    def __init__(self, captions: list[list[str]]) -> None:
        self.all_captions = captions

    def __len__(self) -> int:
        return len(self.all_captions)

    def example(self, index: int) -> Example:
        return Example(f"item{index}", self.all_captions[index], features=torch.zeros(2))

    def captions(self, index: int) -> list[str]:
        return self.all_captions[index]


CAPTIONS = [
    ["A red square.", "The square is red, and small!"],
    [f"a dog runs to the left number {i}" for i in range(12)],
    [],
    ["One very long caption " + "word " * 40],
]


def _expected(vocab: Vocabulary, caption: str, max_length: int) -> list[int]:
    return vocab.encode(tokenize(caption)[:max_length])


def test_token_ids_equal_tokenizing_each_caption() -> None:
    source = _Listed(CAPTIONS)
    vocab = build_vocabulary(source, 1, 10)
    data = CaptionTrainDataset(source, vocab, 10, captions_per_item=20)

    for index, captions in enumerate(CAPTIONS):
        got = [t.tolist() for t in data[index]["token_ids"]]
        assert got == [_expected(vocab, c, 10) for c in captions]
        assert all(t.dtype == torch.long for t in data[index]["token_ids"])
    assert len(data[3]["token_ids"][0]) == 12  # <start> + 10 words + <end>


def test_caption_subsets_per_epoch_are_deterministic() -> None:
    source = _Listed(CAPTIONS)
    vocab = build_vocabulary(source, 1, 24)
    data = CaptionTrainDataset(source, vocab, 24, captions_per_item=5, seed=3)
    every = {tuple(_expected(vocab, c, 24)) for c in CAPTIONS[1]}

    data.set_epoch(0)
    first = [tuple(t.tolist()) for t in data[1]["token_ids"]]
    data.set_epoch(1)
    second = [tuple(t.tolist()) for t in data[1]["token_ids"]]
    data.set_epoch(0)

    assert len(first) == 5 and set(first) <= every and set(second) <= every
    assert first != second
    assert [tuple(t.tolist()) for t in data[1]["token_ids"]] == first


def test_captions_are_tokenized_once_not_every_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def counting(text: str) -> list[str]:
        calls.append(text)
        return tokenize(text)

    monkeypatch.setattr(datasets, "tokenize", counting)
    source = _Listed(CAPTIONS)
    tokenized = tokenize_source(source)
    vocab = build_vocabulary(source, 1, 24, tokenized)
    baseline = most_frequent_caption(source, tokenized)
    data = CaptionTrainDataset(source, vocab, 24, tokenized=tokenized)
    assert len(calls) == sum(len(c) for c in CAPTIONS)  # one pass for all three

    for epoch in range(2):
        data.set_epoch(epoch)
        for index in range(len(data)):
            data[index]
    assert len(calls) == sum(len(c) for c in CAPTIONS)
    assert baseline == most_frequent_caption(source)


def test_tokenized_for_another_source_is_refused() -> None:
    source = _Listed(CAPTIONS)
    vocab = build_vocabulary(source, 1, 24)
    with pytest.raises(ValueError, match="3 tokenized items for a source of 4"):
        CaptionTrainDataset(source, vocab, 24, tokenized=tokenize_source(_Listed(CAPTIONS[:3])))
