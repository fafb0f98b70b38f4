"""Linear classification heads on an encoder's last hidden layer: encoder pretraining.

Show and Tell's CNN was trained to classify images before the LSTM ever saw its last hidden layer.
``AttributeClassifier`` trains an encoder that way on labelled attributes (for the embedded shapes:
every object's colour, shape, size and place; see `lrcn.data.synthetic.attributes`). The heads are
linear on purpose: what they read, the caption decoder can read from the same vector.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lrcn.models.encoders import Encoder


class AttributeClassifier(nn.Module):
    """An encoder and one linear softmax head per attribute; the loss sums their cross-entropies.

    Args:
        encoder: images (B, 3, H, W) -> features (B, D).
        heads: head name -> number of classes, in the order of a batch's ``targets`` columns.

    Batches are dicts with ``images`` (B, 3, H, W) and ``targets`` (B, len(heads)) class indices.
    """

    def __init__(self, encoder: Encoder, heads: dict[str, int]) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = dict(heads)
        self.classifier = nn.Linear(encoder.feature_dim, sum(self.heads.values()))

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Images (B, 3, H, W) -> one logit tensor (B, classes) per head, in ``heads`` order."""
        logits = self.classifier(self.encoder(images))  # (B, D) -> (B, sum of classes)
        return list(logits.split(list(self.heads.values()), dim=1))

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The sum over heads of each head's mean cross-entropy."""
        targets = batch["targets"]  # (B, heads)
        return sum(
            F.cross_entropy(logits.float(), targets[:, i])
            for i, logits in enumerate(self(batch["images"]))
        )

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """The most probable class of every head: (B, heads) int64."""
        return torch.stack([logits.argmax(dim=1) for logits in self(images)], dim=1)
