"""Captioners: a CNN (per image, or per frame through TimeDistributed) in front of the LSTM decoder.

``ImageCaptioner`` and ``VideoCaptioner`` differ only in how pixels become one visual feature;
the decoder, decoding functions and metrics are the same objects for both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lrcn.models.decoder import LSTMDecoder
from lrcn.models.encoders import Encoder
from lrcn.models.time_distributed import TimeDistributed


class MeanPool(nn.Module):
    """Average frame features (Venugopalan et al., "Translating Videos to Natural Language")."""

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.output_dim = feature_dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Frame features (B, T, D) -> their mean (B, D)."""
        return features.mean(dim=1)  # (B, T, D) -> (B, D)


class TemporalLSTM(nn.Module):
    """An LSTM over frame features whose last output summarises the clip (S2VT-style encoder).

    With ``every_frame`` it returns its output at every frame (B, T, H) instead: what a
    ``temporal_attention`` decoder attends over with ``encoder.temporal: lstm``, each frame's
    state carrying what came before it (the order and motion a weighted mean of raw frames lose).
    """

    def __init__(self, feature_dim: int, hidden_dim: int, every_frame: bool = False) -> None:
        super().__init__()
        self.lstm = nn.LSTM(feature_dim, hidden_dim, batch_first=True)
        self.output_dim = hidden_dim
        self.every_frame = every_frame

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Frame features (B, T, D) -> the LSTM's last output (B, H) (every output: (B, T, H))."""
        out, _ = self.lstm(features)  # (B, T, D) -> (B, T, H)
        return out if self.every_frame else out[:, -1]


class Captioner(nn.Module):
    """Encoder + decoder with the loss and decoding hooks the engine and ``lrcn.decoding`` use.

    Batches are dicts: ``images`` (B, 3, H, W) or ``frames`` (B, T, 3, H, W) or ``features``
    (B, D) / (B, T, D) from a feature store; ``tokens`` (N, L); ``lengths`` (N,); ``owner`` (N,)
    mapping each caption to its image (an image's captions share one CNN pass).
    """

    is_video = False
    # probability of feeding the model's own previous word while training (scheduled sampling);
    # the engine sets it per epoch, 0 is plain teacher forcing
    scheduled_sampling_prob: float = 0.0
    # lambda of an attention decoder's doubly stochastic regularisation (decoder.attention_reg;
    # Xu et al. eq. 14); 0 leaves the loss the plain cross-entropy
    attention_reg: float = 0.0

    def __init__(
        self, encoder: Encoder, decoder: LSTMDecoder, temporal: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.temporal = temporal
        self.decoder = decoder

    @property
    def attends(self) -> str | None:
        """What the decoder attends over: ``grid`` (image cells), ``frames``, or None."""
        return self.decoder.attends

    def encode_features(self, features: torch.Tensor) -> torch.Tensor:
        """CNN features -> the decoder's visual feature: (B, D) for images, (B, T, D) -> (B, D') for video.

        An attention decoder takes grid cells (B, N, D) as they are, and frames (B, T, D) as they
        are or through a temporal LSTM's output at every frame (B, T, H).
        """
        return features if self.temporal is None else self.temporal(features)

    def cnn_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels -> CNN features: (B, 3, H, W) -> (B, D), or (B, T, 3, H, W) -> (B, T, D).

        For a decoder attending over the image grid: (B, 3, H, W) -> (B, N, D) grid cells.
        """
        if pixels.dim() == 5:
            return TimeDistributed(self.encoder)(
                pixels
            )  # (B*T, 3, H, W) through the CNN, then (B, T, D)
        if self.attends == "grid":
            return self.encoder.grid(pixels)  # (B, N, D)
        return self.encoder(pixels)

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The visual feature (B, D') from whichever input the batch holds."""
        if "features" in batch:
            return self.encode_features(batch["features"])
        pixels = batch["frames"] if "frames" in batch else batch["images"]
        return self.encode_features(self.cnn_features(pixels))

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy per target token, plus the wiring's regulariser when weighted.

        Teacher forcing (`LSTMDecoder.teacher_forcing`), except while training with
        ``scheduled_sampling_prob > 0`` (set per epoch by the engine from
        ``train.scheduled_sampling_max``): then each input word after ``<start>`` is, with that
        probability, the model's own sample from the step before. With ``attention_reg`` > 0 the
        wiring's own loss term on what its steps traced (an attention wiring's doubly stochastic
        penalty of the weights its real steps used) is added, times ``attention_reg``.
        """
        visual = self.encode(batch)  # (B, D)
        if "owner" in batch:
            visual = visual.index_select(0, batch["owner"])  # (N, D): one row per caption
        tokens, lengths = batch["tokens"], batch["lengths"]
        sample_prob = self.scheduled_sampling_prob if self.training else 0.0
        forced = self.decoder.teacher_forcing(visual, tokens, lengths, sample_prob=sample_prob)
        targets = tokens[:, 1:]  # (N, L-1)
        mask = targets != self.decoder.embed.padding_idx
        logits = self.decoder.out(forced.hidden[mask])  # (tokens, V): no logits for padding
        loss = F.cross_entropy(logits.float(), targets[mask])
        penalty = self.decoder.wiring.regulariser(forced.trace) if self.attention_reg > 0 else None
        return loss if penalty is None else loss + self.attention_reg * penalty


class ImageCaptioner(Captioner):
    """Show and Tell: CNN last hidden layer -> LSTM first input."""


class VideoCaptioner(Captioner):
    """LRCN video description: TimeDistributed(CNN) over frames -> mean pool or LSTM -> decoder."""

    is_video = True
