"""Vocabulary: word <-> id, built from the training split only, saved as JSON."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from lrcn.errors import LrcnError
from lrcn.io import write_json_atomic

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)


class Vocabulary:
    """Maps tokens to ids and back. Ids 0..3 are ``<pad> <start> <end> <unk>``."""

    def __init__(self, words: Iterable[str] = ()) -> None:
        self.itos: list[str] = list(SPECIALS)
        for word in words:
            if word not in SPECIALS:
                self.itos.append(word)
        self.stoi: dict[str, int] = {word: i for i, word in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("vocabulary words must be unique")

    pad_id = 0
    start_id = 1
    end_id = 2
    unk_id = 3

    @classmethod
    def build(cls, tokenized_captions: Iterable[list[str]], min_count: int = 1) -> Vocabulary:
        """Build from tokenized training captions; words seen fewer than ``min_count`` times
        map to ``<unk>``. Words are ordered by count (then alphabetically) for stable ids."""
        counts: Counter[str] = Counter()
        for tokens in tokenized_captions:
            counts.update(tokens)
        kept = [w for w, c in counts.items() if c >= min_count and w not in SPECIALS]
        kept.sort(key=lambda w: (-counts[w], w))
        return cls(kept)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: str) -> bool:
        return word in self.stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.itos == other.itos

    def encode(self, tokens: list[str], add_specials: bool = True) -> list[int]:
        """Tokens -> ids, wrapped in ``<start> ... <end>`` when ``add_specials``."""
        ids = [self.stoi.get(tok, self.unk_id) for tok in tokens]
        return [self.start_id, *ids, self.end_id] if add_specials else ids

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Ids -> tokens, stopping at ``<end>`` and dropping ``<start>``/``<pad>``."""
        tokens = []
        for i in ids:
            i = int(i)
            if i == self.end_id:
                break
            if i in (self.start_id, self.pad_id):
                continue
            tokens.append(self.itos[i] if 0 <= i < len(self.itos) else UNK)
        return tokens

    def to_dict(self) -> dict:
        """The vocabulary as JSON-ready data."""
        return {"itos": self.itos}

    @classmethod
    def from_dict(cls, data: dict) -> Vocabulary:
        """Rebuild from :meth:`to_dict`'s data, refusing one without the specials."""
        itos = data.get("itos") if isinstance(data, dict) else None
        if not isinstance(itos, list) or list(itos[: len(SPECIALS)]) != list(SPECIALS):
            raise ValueError(
                "not an lrcn vocabulary (expected {'itos': ['<pad>', '<start>', ...]})"
            )
        return cls(itos[len(SPECIALS) :])

    def save(self, path: str | os.PathLike) -> None:
        """Write JSON atomically (temporary file, then rename)."""
        write_json_atomic(path, self.to_dict(), indent=None)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        """Read a ``vocab.json`` written by :meth:`save`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls.from_dict(data)
        except FileNotFoundError:
            raise LrcnError(f"{path}: vocabulary file not found; check the path.") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise LrcnError(
                f"{path}: not a valid vocabulary JSON ({exc}); rebuild it by training."
            ) from None
