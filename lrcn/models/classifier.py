"""Activity recognition: TimeDistributed(CNN) -> LSTM -> linear (LRCN, and the Keras seed).

The seed this module reproduces exactly (Keras, channels-last; 20,261 parameters at 10x10 input)::

    Sequential([TimeDistributed(Conv2D(2, (2, 2), activation="relu", padding="same")),
                TimeDistributed(MaxPooling2D((2, 2))), TimeDistributed(Flatten()),
                LSTM(50), Dense(1, activation="sigmoid")])

`build_seed_model` builds it channels-first; `load_keras_seed_weights` copies a Keras model's
weights into it (tests/test_keras_parity.py shows equal outputs for both ways of wrapping).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lrcn.clips import clip_starts
from lrcn.models.fused import FusedSequential
from lrcn.models.init import keras_init_
from lrcn.models.pooling import MaxPool2d
from lrcn.models.time_distributed import TimeDistributed

Prediction = Literal["last", "mean"]
Wrap = Literal["whole", "per_layer"]


class ActivityClassifier(nn.Module):
    """A per-frame CNN, an LSTM over the frame features and a linear classifier.

    `num_outputs == 1` is a binary classifier with a sigmoid (the Keras seed); otherwise the
    outputs are logits for a softmax over `num_outputs` classes.

    Args:
        cnn: per-frame module mapping (N, C, H, W) to (N, feature_dim).
        feature_dim: size of the CNN's per-frame feature.
        num_outputs: 1 for binary (sigmoid), else the number of classes (softmax).
        hidden_dim: LSTM hidden size.
        num_layers: LSTM layers.
        dropout: dropout between LSTM layers and before the classifier.
        prediction: "last" classifies from the last step's hidden state (the seed); "mean"
            classifies every step and averages (LRCN): `forward` averages the per-step logits,
            `predict_proba` averages the per-step probabilities, and `loss` is the mean of the
            per-step losses, each step trained on the video's label as in LRCN.
        wrap: "whole" wraps the CNN in one TimeDistributed; "per_layer" wraps each layer of an
            `nn.Sequential` CNN separately, as Keras seeds often do. Both compute the same, but
            their state_dict keys differ.
    """

    def __init__(
        self,
        cnn: nn.Module,
        feature_dim: int,
        num_outputs: int,
        hidden_dim: int = 256,
        num_layers: int = 1,
        dropout: float = 0.0,
        prediction: Prediction = "mean",
        wrap: Wrap = "whole",
        single_bias: bool = False,
    ) -> None:
        super().__init__()
        if prediction not in ("last", "mean"):
            raise ValueError(f"prediction must be 'last' or 'mean', got {prediction!r}.")
        if num_outputs < 1:
            raise ValueError(f"num_outputs must be at least 1, got {num_outputs}.")
        if wrap == "whole":
            self.frame_encoder: nn.Module = TimeDistributed(cnn)
        elif wrap == "per_layer":
            if not isinstance(cnn, nn.Sequential):
                raise ValueError(
                    f"wrap='per_layer' needs an nn.Sequential CNN, got {type(cnn).__name__}; "
                    "use wrap='whole'."
                )
            self.frame_encoder = nn.Sequential(*(TimeDistributed(layer) for layer in cnn))
        else:
            raise ValueError(f"wrap must be 'whole' or 'per_layer', got {wrap!r}.")
        self.feature_dim = feature_dim
        self.num_outputs = num_outputs
        self.num_classes = 2 if num_outputs == 1 else num_outputs
        self.prediction = prediction
        self.lstm = nn.LSTM(
            feature_dim,
            hidden_dim,
            num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        if single_bias:
            single_lstm_bias_(self.lstm)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_dim, num_outputs)

    def _hidden_states(self, frames: torch.Tensor) -> torch.Tensor:
        features = self.frame_encoder(frames)  # (B, T, feature_dim)
        if features.dim() != 3 or features.shape[-1] != self.feature_dim:
            raise ValueError(
                f"The CNN turned frames of shape {tuple(frames.shape)} into features of shape "
                f"{tuple(features.shape)}, but the classifier expects (B, T, {self.feature_dim}); "
                "check feature_dim and that the CNN ends by flattening or pooling."
            )
        hidden, _ = self.lstm(features)  # (B, T, hidden_dim)
        return self.dropout(hidden)

    def step_logits(self, frames: torch.Tensor) -> torch.Tensor:
        """Logits at every time step: (B, T, C, H, W) -> (B, T, num_outputs)."""
        return self.head(self._hidden_states(frames))  # (B, T, num_outputs)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Video logits (B, num_outputs): the last step's, or the mean of the per-step logits."""
        if self.prediction == "last":
            return self.head(self._hidden_states(frames)[:, -1])  # (B, num_outputs)
        return self.step_logits(frames).mean(dim=1)  # (B, num_outputs)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean loss of a batch `{"frames": (B, T, C, H, W), "label": (B,) long}`.

        BCE-with-logits for one output, cross-entropy otherwise; with prediction="mean", the
        mean over all steps of the per-step loss.
        """
        labels = batch["label"]
        if self.prediction == "last":
            logits = self(batch["frames"])  # (B, O)
        else:
            logits = self.step_logits(batch["frames"])  # (B, T, O)
            labels = labels[:, None].expand(logits.shape[:2])  # (B, T)
        if self.num_outputs == 1:
            return F.binary_cross_entropy_with_logits(logits.squeeze(-1), labels.float())
        return F.cross_entropy(logits.reshape(-1, self.num_outputs), labels.reshape(-1))

    @torch.no_grad()
    def predict_proba(self, frames: torch.Tensor) -> torch.Tensor:
        """Class probabilities (B, num_classes); for one output, [1 - p, p].

        With prediction="mean", the per-step probabilities are averaged (LRCN). The caller
        chooses train or eval mode (call `.eval()` first to switch dropout off).
        """
        if self.prediction == "last":
            return self._probabilities(self(frames))  # (B, num_classes)
        return self._probabilities(self.step_logits(frames)).mean(dim=1)  # (B, num_classes)

    def _probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        if self.num_outputs == 1:
            positive = torch.sigmoid(logits)  # (..., 1)
            return torch.cat([1 - positive, positive], dim=-1)  # (..., 2)
        return torch.softmax(logits, dim=-1)

    @torch.no_grad()
    def predict_video(
        self, frames: torch.Tensor, clip_len: int = 16, stride: int = 8, batch_size: int = 16
    ) -> torch.Tensor:
        """Probabilities (num_classes,) for a whole video, averaged over strided clips (LRCN).

        The clips are `lrcn.clips.clip_starts`'s, those `lrcn evaluate` and `lrcn classify` read:
        one every `stride` frames and, when they stop short of the end, one more ending at the
        last frame, so every frame is seen. A video shorter than `clip_len` is one clip.

        Args:
            frames: (T, C, H, W) frames of one video.
            clip_len: frames per clip (LRCN: 16).
            stride: frames between clip starts (LRCN: 8).
            batch_size: clips per forward pass, to bound memory on long videos.
        """
        if frames.dim() != 4:
            raise ValueError(
                f"predict_video expects the frames of one video as (T, C, H, W), got shape "
                f"{tuple(frames.shape)}."
            )
        if clip_len < 1 or stride < 1:
            raise ValueError(f"clip_len and stride must be positive, got {clip_len}, {stride}.")
        num_frames = frames.shape[0]
        if num_frames == 0:
            raise ValueError("predict_video got a video with no frames.")
        starts = clip_starts(num_frames, clip_len, stride)  # as `lrcn evaluate` reads them
        probabilities = []
        for first in range(0, len(starts), batch_size):
            clips = torch.stack(
                [frames[start : start + clip_len] for start in starts[first : first + batch_size]]
            )  # (N, clip_len, C, H, W)
            probabilities.append(self.predict_proba(clips))  # (N, num_classes)
        return torch.cat(probabilities).mean(dim=0)  # (num_classes,)


def single_lstm_bias_(lstm: nn.LSTM) -> nn.LSTM:
    """Give an ``nn.LSTM`` one bias per gate, as Keras' LSTM has, instead of PyTorch's two.

    PyTorch adds ``bias_ih + bias_hh``, a redundant pair; here ``bias_hh`` becomes a zero buffer (same
    state_dict keys, no gradient), so parameter counts equal Keras' (the seed: 20,261) and Keras
    weights map one to one.
    """
    for name in [n for n in lstm._flat_weights_names if n.startswith("bias_hh")]:
        zeros = torch.zeros_like(getattr(lstm, name)).detach()
        del lstm._parameters[name]
        lstm.register_buffer(name, zeros)
    lstm._init_flat_weights()
    return lstm


def keras_same_padding(kernel_size: int) -> nn.ZeroPad2d:
    """Zero padding that makes a stride-1 conv match Keras' padding="same".

    Keras (like TensorFlow) puts the odd pixel of an even kernel's padding at the right and
    bottom; PyTorch's padding="same" puts it at the left and top.
    """
    before = (kernel_size - 1) // 2
    after = kernel_size - 1 - before
    return nn.ZeroPad2d((before, after, before, after))


def build_seed_cnn(
    in_channels: int = 1,
    filters: int = 2,
    kernel_size: int = 2,
    pool: int = 2,
    height: int = 50,
    width: int = 50,
) -> tuple[nn.Sequential, int]:
    """The seed's per-frame CNN, channels-first: Keras-"same" pad, conv, ReLU, max pool, flatten.

    Returns:
        The CNN, mapping (N, in_channels, height, width) to (N, feature_dim), and feature_dim.
    """
    # an nn.Sequential whose first block runs fused on CPU (lrcn.models.fused): same modules
    cnn = FusedSequential(
        keras_same_padding(kernel_size),
        nn.Conv2d(in_channels, filters, kernel_size),  # (N, filters, H, W)
        nn.ReLU(),
        MaxPool2d(pool),  # (N, filters, H // pool, W // pool)
        nn.Flatten(),  # (N, filters * (H // pool) * (W // pool))
    )
    return cnn, filters * (height // pool) * (width // pool)


def build_seed_model(
    height: int = 50,
    width: int = 50,
    in_channels: int = 1,
    filters: int = 2,
    kernel_size: int = 2,
    pool: int = 2,
    hidden_dim: int = 50,
    num_outputs: int = 1,
    wrap: Wrap = "whole",
    keras_init: bool = True,
) -> ActivityClassifier:
    """The whole Keras seed: seed CNN -> LSTM(50) -> one sigmoid output from the last step.

    Args:
        wrap: "whole" for TimeDistributed(cnn), "per_layer" for one TimeDistributed per layer.
        keras_init: initialise as Keras does; the seed's recipe needs it to converge
            (with PyTorch's default init it stays at chance; also use Adam eps 1e-7).
    """
    cnn, feature_dim = build_seed_cnn(in_channels, filters, kernel_size, pool, height, width)
    model = ActivityClassifier(
        cnn,
        feature_dim,
        num_outputs,
        hidden_dim=hidden_dim,
        prediction="last",
        wrap=wrap,
        single_bias=True,
    )
    return keras_init_(model) if keras_init else model


@torch.no_grad()
def load_keras_seed_weights(model: ActivityClassifier, weights: Sequence[np.ndarray]) -> None:
    """Copy a channels-last Keras seed's weights (`keras_model.get_weights()`) into `model`.

    Supports the seed's shape: Conv2D layers with biases, one LSTM layer and one Dense layer, in
    that order, wrapped either way. Keras flattens (H, W, C) and lrcn flattens (C, H, W), so the
    LSTM input kernel's rows are permuted here; the model itself stays channels-first. Keras'
    single LSTM bias goes to bias_ih and bias_hh is zeroed (PyTorch adds the two).

    Args:
        model: e.g. from `build_seed_model` with the Keras model's sizes.
        weights: the Keras model's weights in layer order.
    """
    convs = [module for module in model.frame_encoder.modules() if isinstance(module, nn.Conv2d)]
    expected = 2 * len(convs) + 5
    if not convs or len(weights) != expected or model.lstm.num_layers != 1:
        raise ValueError(
            f"load_keras_seed_weights expects Conv2D weights and biases, then one LSTM and one "
            f"Dense layer ({expected} arrays for {len(convs)} convs and a one-layer LSTM), got "
            f"{len(weights)} arrays and a {model.lstm.num_layers}-layer LSTM."
        )
    arrays = [torch.from_numpy(np.asarray(array, dtype=np.float32)) for array in weights]
    for index, conv in enumerate(convs):
        _copy(conv.weight, arrays[2 * index].permute(3, 2, 0, 1), f"Conv2D {index} kernel")  # OIHW
        _copy(conv.bias, arrays[2 * index + 1], f"Conv2D {index} bias")
    kernel, recurrent_kernel, bias, dense_kernel, dense_bias = arrays[2 * len(convs) :]
    channels = convs[-1].out_channels
    if kernel.shape[0] % channels:
        raise ValueError(
            f"The Keras LSTM kernel has {kernel.shape[0]} input rows, not a multiple of the last "
            f"conv's {channels} channels."
        )
    # Keras row s * C + c (channels-last flatten) becomes lrcn row c * S + s.
    kernel = kernel.reshape(-1, channels, kernel.shape[1]).transpose(0, 1).reshape(kernel.shape)
    _copy(model.lstm.weight_ih_l0, kernel.T, "LSTM kernel")
    _copy(model.lstm.weight_hh_l0, recurrent_kernel.T, "LSTM recurrent kernel")
    _copy(model.lstm.bias_ih_l0, bias, "LSTM bias")
    model.lstm.bias_hh_l0.zero_()
    _copy(model.head.weight, dense_kernel.T, "Dense kernel")
    _copy(model.head.bias, dense_bias, "Dense bias")


def _copy(parameter: torch.Tensor, value: torch.Tensor, name: str) -> None:
    if parameter.shape != value.shape:
        raise ValueError(
            f"The Keras {name} has shape {tuple(value.shape)} (after conversion), but lrcn's "
            f"parameter has shape {tuple(parameter.shape)}; build the lrcn model with the Keras "
            "model's sizes."
        )
    parameter.copy_(value)
