"""Evaluating an attribute model (encoder pretraining): per-attribute and whole-scene accuracy.

Head names are ``slot<k>_<attribute>`` (objects left to right), plus any scene-level heads
(``count``, ``relation``). Per attribute, accuracy counts the slots that hold an object (an empty
slot is easy and would inflate it); ``scene_accuracy`` is the share of images whose every slot has
the right colour and shape, empty slots included: what the captions' ``scene_accuracy`` asks of
the caption, read from the heads. ``pairs_accuracy`` is the share whose ``has_<colour>_<shape>``
heads are all right: the same question without the left-to-right order.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from lrcn.runtime import move_batch

_SLOT_HEAD = re.compile(r"slot(\d+)_(\w+)")


@torch.no_grad()
def predict_attributes(
    model: nn.Module, loader: DataLoader, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted and true classes of every item: two (N, heads) int64 tensors on the CPU."""
    model.eval()
    predicted, truth = [], []
    for batch in loader:
        batch = move_batch(batch, device)
        predicted.append(model.predict(batch["images"]).cpu())
        truth.append(batch["targets"].cpu())
    return torch.cat(predicted), torch.cat(truth)


def attribute_metrics(
    predicted: torch.Tensor, truth: torch.Tensor, heads: dict[str, int]
) -> dict[str, Any]:
    """Accuracies from (N, heads) predictions and targets (see the module).

    Returns:
        ``scene_accuracy`` (and ``scene_accuracy_<n>`` by number of objects when there is a
        ``count`` head), ``attribute_accuracy`` (mean over heads), ``<attribute>_accuracy`` over
        occupied slots, ``<head>_accuracy`` per head, and ``items``.
    """
    names = list(heads)
    hits = predicted == truth  # (N, heads)
    metrics: dict[str, Any] = {"attribute_accuracy": float(hits.float().mean())}
    by_attribute: dict[str, list[torch.Tensor]] = {}
    scene = torch.ones(len(truth), dtype=torch.bool)
    for i, name in enumerate(names):
        metrics[f"{name}_accuracy"] = float(hits[:, i].float().mean())
        match = _SLOT_HEAD.fullmatch(name)
        if match is None:
            continue
        attribute = match.group(2)
        occupied = truth[:, i] != heads[name] - 1  # the last class is `empty`
        by_attribute.setdefault(attribute, []).append(hits[occupied, i])
        if attribute in ("colour", "shape"):
            scene &= hits[:, i]
    for attribute, slot_hits in by_attribute.items():
        joined = torch.cat(slot_hits)
        if len(joined):
            metrics[f"{attribute}_accuracy"] = float(joined.float().mean())
    metrics["scene_accuracy"] = float(scene.float().mean()) if len(truth) else 0.0
    presence = [i for i, name in enumerate(names) if name.startswith("has_")]
    if presence:  # which (colour, shape) pairs are in the picture, in any order
        metrics["pairs_accuracy"] = float(hits[:, presence].all(dim=1).float().mean())
    if "count" in heads:
        counts = truth[:, names.index("count")] + 1
        for n in sorted(set(counts.tolist())):
            metrics[f"scene_accuracy_{n}"] = float(scene[counts == n].float().mean())
    metrics["items"] = len(truth)
    return metrics


def evaluate_attributes(
    model: nn.Module, loader: DataLoader, device: torch.device, heads: dict[str, int]
) -> dict[str, Any]:
    """Decode ``loader`` with the model's heads and score it (:func:`attribute_metrics`)."""
    predicted, truth = predict_attributes(model, loader, device)
    return attribute_metrics(predicted, truth, heads)
