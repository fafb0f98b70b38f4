"""Attention pictures: each decoded caption's `lrcn.visualize.attention_strip` over its picture.

`lrcn caption --attention` (`lrcn.predict`), the validation grid and the evaluation maps
(`lrcn.engine.evaluation`) draw them. The module sits below the engine in the layers, so a command
that never trains draws them without going through the training engine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from lrcn.decoding import attention_weights
from lrcn.text.vocab import Vocabulary
from lrcn.visualize import attention_strip, denormalise


def grid_shape(model: nn.Module, batch: dict[str, torch.Tensor], cells: int) -> tuple[int, int]:
    """(h, w) of the N = ``cells`` attention weights of one item of ``batch``.

    Frames: (1, T). Images: the encoder's ``grid_map`` height and width (one image through the
    CNN); stored grid features: ``encoder.grid_size`` squared, else the square grid of N cells,
    else one row.
    """
    if model.attends == "frames":
        return 1, cells
    if "images" in batch:
        return tuple(model.encoder.grid_map(batch["images"][:1]).shape[-2:])
    side = getattr(model.encoder, "grid_size", 0) or round(cells**0.5)
    return (side, side) if side * side == cells else (1, cells)


def caption_strips(
    model: nn.Module,
    vocab: Vocabulary,
    batch: dict[str, torch.Tensor],
    features: torch.Tensor,
    tokens: list[list[int]],
    pictures: torch.Tensor,
) -> list[np.ndarray]:
    """Each decoded caption's `attention_strip` over its picture, however it was decoded.

    Args:
        batch: the model's input (``images`` or ``frames``), for the grid's shape.
        features: ``model.encode(batch)``, (B, N, D).
        tokens: the B decoded captions (token ids).
        pictures: what to draw the maps over, in [0, 1]: (B, 3, H, W) or (B, T, 3, H, W).
    """
    maps = attention_weights(model.decoder, features, tokens, vocab.start_id, vocab.end_id)
    shape = grid_shape(model, batch, features.shape[1]) if pictures.dim() == 4 else None
    return [
        attention_strip(picture, vocab.decode(t), m.cpu(), shape)
        for picture, t, m in zip(pictures, tokens, maps)
    ]


def input_strips(
    model: nn.Module,
    vocab: Vocabulary,
    batch: dict[str, torch.Tensor],
    features: torch.Tensor,
    tokens: list[list[int]],
    normalisation: tuple[Sequence[float], Sequence[float]],
) -> list[np.ndarray]:
    """`caption_strips` over the model's own input pictures (or frames), un-normalised with the
    ``(mean, std)`` they were normalised with: what ``lrcn caption --attention`` saves."""
    key = "frames" if "frames" in batch else "images"
    pictures = denormalise(batch[key].cpu(), *normalisation)  # (B, 3, H, W) or (B, T, 3, H, W)
    return caption_strips(model, vocab, batch, features, tokens, pictures)
