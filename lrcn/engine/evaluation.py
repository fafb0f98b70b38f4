"""Evaluation loops: decode a loader into captions, score them, measure a classifier's accuracy;
the attention maps of an attention captioner's captions (drawn by `lrcn.attention_pictures`)."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from lrcn.attention_pictures import caption_strips, grid_shape
from lrcn.decoding import attention_weights, greedy
from lrcn.decoding_controls import Controls, decode_with
from lrcn.errors import LrcnError
from lrcn.io import atomic_path
from lrcn.metrics import score
from lrcn.runtime import move_batch, progress_bar
from lrcn.text.vocab import Vocabulary

_GRID_KEY = "__grid__"  # (h, w) of an image grid; (1, T) for frames
_ATTENDS_KEY = "__attends__"


@dataclass
class AttentionMaps:
    """The attention maps of decoded captions, by item id: what ``<split>_attention.npz`` holds.

    Attributes:
        attends: ``grid`` (image cells) or ``frames``.
        grid: (h, w) of an image's grid, row-major as ``Encoder.grid``; (1, T) for frames.
        maps: {item id: (words + 1, N) float16}, the last row ``<end>``'s.
        limit: keep the maps of at most this many items (the first decoded); 0 keeps none.
    """

    attends: str = "grid"
    grid: tuple[int, int] | None = None
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    limit: int = 5000

    @property
    def full(self) -> bool:
        """True once ``limit`` items are held."""
        return len(self.maps) >= self.limit

    def add(self, ids: Sequence[str], maps: Sequence[torch.Tensor]) -> None:
        """Keep each item's maps (as float16), up to ``limit`` items."""
        for item_id, weights in zip(ids, maps):
            if self.full:
                return
            self.maps[str(item_id)] = weights.detach().cpu().numpy().astype(np.float16)

    def save(self, path: str | os.PathLike) -> None:
        """Write one ``.npz`` atomically: an array per item id, plus ``__grid__``, ``__attends__``."""
        arrays = dict(self.maps)
        arrays[_GRID_KEY] = np.asarray(self.grid or (0, 0), dtype=np.int64)
        arrays[_ATTENDS_KEY] = np.asarray(self.attends)
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> AttentionMaps:
        """Read what `save` wrote; LrcnError naming the file when it is not such a file."""
        try:
            with np.load(path, allow_pickle=False) as data:
                maps = {k: data[k] for k in data.files if k not in (_GRID_KEY, _ATTENDS_KEY)}
                h, w = (int(v) for v in data[_GRID_KEY])
                attends = str(data[_ATTENDS_KEY])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise LrcnError(
                f"{path}: not an attention-map file of `lrcn evaluate` ({exc}); delete it and "
                "re-run `lrcn evaluate` for this split."
            ) from None
        return cls(attends, (h, w) if h and w else None, maps, max(len(maps), 1))


@torch.no_grad()
def generate_captions(
    model: nn.Module,
    loader: DataLoader,
    vocab: Vocabulary,
    device: torch.device,
    beam_size: int = 1,
    max_length: int = 24,
    length_penalty: float = 0.0,
    progress: bool = False,
    attention: AttentionMaps | None = None,
    controls: Controls | None = None,
) -> tuple[dict[str, str], dict[str, list[str]], int]:
    """Decode every item of an eval loader.

    Args:
        controls: n-gram blocking, repetition penalty, diverse beams
            (`lrcn.decoding_controls`); None or all off decodes as `lrcn.decoding.decode`.
        attention: for an attention captioner, filled with the maps of the decoded captions
            (`lrcn.decoding.attention_weights`, one more teacher-forced pass per batch) until
            it holds ``attention.limit`` items.

    Returns:
        (hypotheses {id: caption}, references {id: [captions]}, number of skipped items).
    """
    model.eval()
    hypotheses: dict[str, str] = {}
    references: dict[str, list[str]] = {}
    skipped = 0
    for batch in progress_bar(loader, progress, desc="decoding"):
        skipped += len(batch.pop("skipped", []))
        if batch["size"] == 0:
            continue
        ids, refs = batch.pop("ids"), batch.pop("references")
        batch = move_batch(batch, device)
        features = model.encode(batch)
        token_ids = decode_with(
            model.decoder,
            features,
            vocab.start_id,
            vocab.end_id,
            max_length=max_length,
            beam_size=beam_size,
            length_penalty=length_penalty,
            controls=controls,
        )
        for item_id, tokens, item_refs in zip(ids, token_ids, refs):
            hypotheses[item_id] = " ".join(vocab.decode(tokens))
            references[item_id] = item_refs
        if attention is not None and not attention.full:
            _collect_attention(attention, model, batch, features, token_ids, ids, vocab)
    return hypotheses, references, skipped


def _collect_attention(
    attention: AttentionMaps,
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    features: torch.Tensor,
    token_ids: list[list[int]],
    ids: Sequence[str],
    vocab: Vocabulary,
) -> None:
    """Add one batch's maps to ``attention``; its grid shape from the first batch."""
    maps = attention_weights(model.decoder, features, token_ids, vocab.start_id, vocab.end_id)
    attention.attends = model.attends
    if attention.grid is None:
        attention.grid = grid_shape(model, batch, features.shape[1])
    attention.add(ids, maps)


@torch.no_grad()
def attention_strips(
    model: nn.Module,
    vocab: Vocabulary,
    pictures: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    max_length: int = 24,
) -> list[np.ndarray]:
    """Greedy captions of a few pictures and where each word looked, as `attention_strip` pictures.

    Args:
        pictures: images (B, 3, H, W) or clips (B, T, 3, H, W) in [0, 1] (what the validation
            grid shows); normalised with ``mean`` and ``std`` for the model.
    """
    model.eval()
    device = next(model.parameters()).device
    mean_t = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    pixels = ((pictures.float() - mean_t) / std_t).to(device)
    batch = {"frames" if pixels.dim() == 5 else "images": pixels}
    features = model.encode(batch)  # (B, N, D)
    tokens = greedy(model.decoder, features, vocab.start_id, vocab.end_id, max_length=max_length)
    return caption_strips(model, vocab, batch, features, tokens, pictures)


def score_captions(
    references: dict[str, list[str]],
    hypotheses: dict[str, str],
    *,
    metrics: list[str],
    tokenizer: str,
) -> dict[str, Any]:
    """The configured caption metrics of ``hypotheses`` against ``references`` (references first,
    as `lrcn.metrics.score` and pycocoevalcap take them)."""
    return score(references, hypotheses, metrics=metrics, tokenizer=tokenizer)


@torch.no_grad()
def evaluate_classifier(
    model: nn.Module, loader: DataLoader, device: torch.device, class_names: list[str]
) -> dict[str, Any]:
    """Clip accuracy (one prediction per item) and per-item predictions."""
    model.eval()
    correct, total = 0, 0
    predictions = []
    for batch in loader:
        batch.pop("skipped", None)
        batch = move_batch(batch, device)
        proba = model.predict_proba(batch["frames"])  # (B, C)
        pred = proba.argmax(dim=1)
        correct += int((pred == batch["label"]).sum())
        total += int(batch["label"].numel())
        for p, y, pr in zip(
            pred.tolist(), batch["label"].tolist(), proba.max(dim=1).values.tolist()
        ):
            predictions.append(
                {"label": class_names[y], "predicted": class_names[p], "probability": pr}
            )
    return {"accuracy": correct / max(total, 1), "items": total, "predictions": predictions}
