"""Evaluation loops: decode a loader into captions, score them, measure a classifier's accuracy."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from lrcn.decoding import decode
from lrcn.metrics import score
from lrcn.runtime import move_batch, progress_bar
from lrcn.text.vocab import Vocabulary


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
) -> tuple[dict[str, str], dict[str, list[str]], int]:
    """Decode every item of an eval loader.

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
        token_ids = decode(
            model.decoder,
            features,
            max_length,
            vocab.start_id,
            vocab.end_id,
            beam_size,
            length_penalty,
        )
        for item_id, tokens, item_refs in zip(ids, token_ids, refs):
            hypotheses[item_id] = " ".join(vocab.decode(tokens))
            references[item_id] = item_refs
    return hypotheses, references, skipped


def score_captions(
    hypotheses: dict[str, str],
    references: dict[str, list[str]],
    metrics: list[str],
    tokenizer: str,
) -> dict[str, Any]:
    """The configured caption metrics of ``hypotheses`` against ``references``."""
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
