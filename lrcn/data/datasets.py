"""Datasets over the embedded generators and over manifests, and their collate functions.

Captioning items carry an image (or clip) with *all* its captions: the collate function stacks the
pixels once and lists every caption with the index of its image (``owner``), so the CNN runs once
per image rather than once per caption.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from lrcn.errors import LrcnError
from lrcn.text.tokenize import tokenize
from lrcn.text.vocab import Vocabulary

log = logging.getLogger(__name__)


@dataclass
class Example:
    """One image or clip: ``pixels`` (3, H, W) / (T, 3, H, W), or cached ``features``."""

    id: str
    captions: list[str]
    pixels: torch.Tensor | None = None
    features: torch.Tensor | None = None
    label: int | None = None


class Source:
    """An indexable collection of examples (synthetic generator, manifest, feature store)."""

    is_video = False

    def __len__(self) -> int:
        raise NotImplementedError

    def example(self, index: int) -> Example:
        """Item ``index`` with its inputs and captions."""
        raise NotImplementedError

    def captions(self, index: int) -> list[str]:
        """References of item ``index`` without loading pixels (override when cheaper)."""
        return self.example(index).captions

    def item_id(self, index: int) -> str:
        """Item ``index``'s id (override when cheaper than loading it)."""
        return self.example(index).id

    def inputs(self, index: int) -> Example:
        """Item ``index`` for training, whose captions may be left out (empty) where that saves
        work: the training dataset encodes every caption once, up front."""
        return self.example(index)

    def task_metrics(self, captions: dict[str, str]) -> dict[str, float]:
        """Metrics only this dataset can compute from generated captions (by item id), such as
        the shapes' scene accuracy; none by default."""
        return {}


def tokenize_source(source: Source) -> list[list[list[str]]]:
    """Every caption of every item of ``source``, tokenized: ``[item][caption] -> tokens``.

    One pass serves the vocabulary, the fixed-caption baseline and the encoded training
    captions (tokenizing is the costly part of all three); tokens are interned, so a large
    dataset's repeated words are stored once."""
    intern = sys.intern
    return [
        [[intern(t) for t in tokenize(c)] for c in source.captions(i)] for i in range(len(source))
    ]


class EncodedCaptions:
    """Token ids of every caption of a source, wrapped in ``<start>``/``<end>``, in flat int32
    arrays (a few bytes a word, cheap to copy into DataLoader workers).

    ``ids[caption_starts[c]:caption_starts[c + 1]]`` is caption ``c``; item ``i`` owns captions
    ``item_starts[i]`` to ``item_starts[i + 1] - 1``.
    """

    def __init__(
        self, tokenized: Sequence[Sequence[Sequence[str]]], vocab: Vocabulary, max_length: int
    ) -> None:
        rows = [vocab.encode(list(tokens[:max_length])) for item in tokenized for tokens in item]
        self.ids = np.fromiter((i for row in rows for i in row), dtype=np.int32)
        self.caption_starts = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(row) for row in rows], out=self.caption_starts[1:])
        self.item_starts = np.zeros(len(tokenized) + 1, dtype=np.int64)
        np.cumsum([len(item) for item in tokenized], out=self.item_starts[1:])

    def __len__(self) -> int:
        return len(self.item_starts) - 1

    def captions(self, index: int) -> list[torch.Tensor]:
        """Item ``index``'s captions as int64 tensors of token ids."""
        first, last = self.item_starts[index], self.item_starts[index + 1]
        bounds = self.caption_starts[first : last + 1]
        return [
            torch.from_numpy(self.ids[a:b].astype(np.int64)) for a, b in zip(bounds, bounds[1:])
        ]


class CaptionTrainDataset(Dataset):
    """Items for teacher forcing: pixels (or features) plus up to ``captions_per_item`` encoded captions.

    When an item has more captions than ``captions_per_item`` (MSVD clips have ~40), a different
    subset is drawn each epoch, deterministically from (seed, epoch, index).

    Captions are tokenized and encoded once, when the dataset is made (from ``tokenized``, the
    output of :func:`tokenize_source`, when the caller already has it), not again every epoch.
    """

    def __init__(
        self,
        source: Source,
        vocab: Vocabulary,
        max_caption_length: int,
        captions_per_item: int = 5,
        seed: int = 0,
        on_error: str = "raise",
        tokenized: Sequence[Sequence[Sequence[str]]] | None = None,
    ) -> None:
        self.source, self.vocab = source, vocab
        self.max_caption_length, self.captions_per_item = max_caption_length, captions_per_item
        self.seed, self.epoch, self.on_error = seed, 0, on_error
        if tokenized is None:
            tokenized = tokenize_source(source)
        if len(tokenized) != len(source):
            raise ValueError(f"{len(tokenized)} tokenized items for a source of {len(source)}")
        self.encoded = EncodedCaptions(tokenized, vocab, max_caption_length)

    def set_epoch(self, epoch: int) -> None:
        """Draw the captions of the given epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict | None:
        try:
            example = self.source.inputs(index)
        except LrcnError as exc:
            if self.on_error == "skip":
                return {"skipped": str(exc)}
            raise
        token_ids = self.encoded.captions(index)
        if len(token_ids) > self.captions_per_item:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            token_ids = [
                token_ids[i]
                for i in sorted(rng.choice(len(token_ids), self.captions_per_item, replace=False))
            ]
        return {"example": example, "token_ids": token_ids}


class CaptionEvalDataset(Dataset):
    """Items for decoding and scoring: pixels (or features) and the raw reference captions."""

    def __init__(self, source: Source, on_error: str = "raise", max_items: int = 0) -> None:
        self.source, self.on_error = source, on_error
        self.size = min(len(source), max_items) if max_items > 0 else len(source)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        try:
            return {"example": self.source.example(index)}
        except LrcnError as exc:
            if self.on_error == "skip":
                return {"skipped": str(exc)}
            raise


def _stack_inputs(examples: Sequence[Example], is_video: bool) -> dict[str, torch.Tensor]:
    if examples[0].features is not None:
        return {
            "features": torch.stack([e.features for e in examples]).float()
        }  # (B, D) or (B, T, D)
    key = "frames" if is_video else "images"
    return {key: torch.stack([e.pixels for e in examples])}  # (B, [T,] 3, H, W)


def make_caption_collate(is_video: bool, pad_id: int = 0) -> Callable[[list[dict]], dict]:
    """Collate for CaptionTrainDataset: inputs (B, ...), tokens (N, L), lengths (N,), owner (N,)."""

    def collate(items: list[dict]) -> dict:
        skipped = [it["skipped"] for it in items if "skipped" in it]
        items = [it for it in items if "skipped" not in it]
        batch: dict = {"skipped": skipped}
        if not items:  # every item unreadable (data.on_error=skip): the engine skips the batch
            batch["size"] = 0
            return batch
        examples = [it["example"] for it in items]
        batch.update(_stack_inputs(examples, is_video))
        seqs = [(i, t) for i, it in enumerate(items) for t in it["token_ids"]]
        lengths = torch.tensor([len(t) for _, t in seqs], dtype=torch.long)
        tokens = torch.full((len(seqs), int(lengths.max())), pad_id, dtype=torch.long)
        for row, (_, t) in enumerate(seqs):
            tokens[row, : len(t)] = t
        batch.update(
            tokens=tokens,
            lengths=lengths,
            owner=torch.tensor([i for i, _ in seqs], dtype=torch.long),
        )
        batch["size"] = len(examples)
        return batch

    return collate


def make_eval_collate(is_video: bool) -> Callable[[list[dict]], dict]:
    """Collate for CaptionEvalDataset: inputs, ``ids`` and ``references`` (lists of strings)."""

    def collate(items: list[dict]) -> dict:
        skipped = [it["skipped"] for it in items if "skipped" in it]
        examples = [it["example"] for it in items if "skipped" not in it]
        batch: dict = {
            "skipped": skipped,
            "ids": [e.id for e in examples],
            "references": [e.captions for e in examples],
        }
        if examples:
            batch.update(_stack_inputs(examples, is_video))
            if examples[0].label is not None:
                batch["label"] = torch.tensor([e.label for e in examples], dtype=torch.long)
        batch["size"] = len(examples)
        return batch

    return collate


def build_vocabulary(
    source: Source,
    min_count: int,
    max_caption_length: int,
    tokenized: Sequence[Sequence[Sequence[str]]] | None = None,
) -> Vocabulary:
    """Vocabulary from a training source's captions only (``tokenized``: see :func:`tokenize_source`)."""
    if tokenized is None:
        tokenized = tokenize_source(source)
    return Vocabulary.build(
        (list(tokens[:max_caption_length]) for item in tokenized for tokens in item), min_count
    )


def most_frequent_caption(
    source: Source, tokenized: Sequence[Sequence[Sequence[str]]] | None = None
) -> str:
    """The most frequent (tokenized) training caption: the fixed-caption baseline's output."""
    if tokenized is None:
        tokenized = tokenize_source(source)
    counts: dict[str, int] = {}
    for item in tokenized:
        for tokens in item:
            key = " ".join(tokens)
            counts[key] = counts.get(key, 0) + 1
    return max(sorted(counts), key=lambda k: counts[k]) if counts else ""


class EpochSampler(torch.utils.data.Sampler[int]):
    """Shuffled indices that depend only on (seed, epoch): resumable mid-epoch and rank-aware.

    The permutation is cut into global batches of ``batch_size * world_size`` items; rank ``r`` takes
    the ``r``-th slice of each, so N processes see exactly the global batches one process with
    ``batch_size * N`` would (the last global batch is padded by wrapping so ranks stay equal).
    ``start`` (in this rank's items) skips what was trained before a resume. With
    ``drop_single_last`` one process whose epoch would end in a batch of one item leaves that item
    out (another one each epoch, as the order is drawn anew): BatchNorm cannot train on one item.
    """

    def __init__(
        self,
        size: int,
        seed: int,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        batch_size: int = 1,
        drop_single_last: bool = False,
    ) -> None:
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.epoch, self.start = 0, 0
        self.drop_single_last = drop_single_last

    @property
    def drops_one(self) -> bool:
        """Whether each epoch leaves its last item out (a one-item last batch, one process)."""
        return (
            self.drop_single_last
            and self.world_size == 1
            and self.batch_size > 1
            and self.size % self.batch_size == 1
        )

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Draw the captions of the given epoch."""
        self.epoch, self.start = epoch, start

    def indices(self) -> list[int]:
        """This rank's indices for the current epoch, in order."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        if self.world_size == 1:
            return order[:-1] if self.drops_one else order
        chunk = self.batch_size * self.world_size
        padded = -(-self.size // chunk) * chunk
        order += (order * (padded // max(self.size, 1) + 1))[: padded - self.size]
        mine = []
        for begin in range(0, padded, chunk):
            lo = begin + self.rank * self.batch_size
            mine.extend(order[lo : lo + self.batch_size])
        return mine

    def __iter__(self):
        return iter(self.indices()[self.start :])

    def __len__(self) -> int:
        return len(self.indices()) - self.start
