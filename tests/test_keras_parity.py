"""The lrcn seed model computes what the Keras seed computes, and initialises as Keras does."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

import numpy as np
import pytest
import torch
from torch import nn

from lrcn.models.classifier import build_seed_model, load_keras_seed_weights
from lrcn.models.init import keras_init_

KERAS_SEED_PARAMETERS = 20_261
STEPS, HEIGHT, WIDTH = 5, 10, 10

if "keras" not in sys.modules:
    # Keras reads both at import; its home must not be the user's ~/.keras.
    os.environ.setdefault("KERAS_BACKEND", "torch")
    _keras_home = tempfile.mkdtemp(prefix="lrcn-keras-home-")
    atexit.register(shutil.rmtree, _keras_home, ignore_errors=True)
    os.environ["KERAS_HOME"] = _keras_home


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras", reason="keras is not installed")


def build_keras_seed(keras, wrap: str):
    """The seed, written either with one TimeDistributed per layer or around a whole CNN."""
    layers = keras.layers
    conv = layers.Conv2D(2, (2, 2), activation="relu", padding="same")
    if wrap == "per_layer":
        per_frame = [
            layers.TimeDistributed(conv),
            layers.TimeDistributed(layers.MaxPooling2D(pool_size=(2, 2))),
            layers.TimeDistributed(layers.Flatten()),
        ]
    else:
        cnn = keras.Sequential(
            [keras.Input((HEIGHT, WIDTH, 1)), conv, layers.MaxPooling2D((2, 2)), layers.Flatten()]
        )
        per_frame = [layers.TimeDistributed(cnn)]
    return keras.Sequential(
        [
            keras.Input((STEPS, HEIGHT, WIDTH, 1)),
            *per_frame,
            layers.LSTM(50),
            layers.Dense(1, activation="sigmoid"),
        ]
    )


def randomise(keras_model) -> None:
    """Large random weights, so a wrong padding side or flatten order shows in the output."""
    rng = np.random.default_rng(7)
    keras_model.set_weights(
        [rng.normal(0.0, 0.5, size=w.shape).astype(np.float32) for w in keras_model.get_weights()]
    )


def keras_and_lrcn_outputs(keras, keras_model, model: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    frames = np.random.default_rng(3).random((4, STEPS, HEIGHT, WIDTH, 1), dtype=np.float32)
    expected = keras.ops.convert_to_numpy(keras_model(frames))  # (B, 1) probabilities
    model.eval()
    with torch.no_grad():
        channels_first = torch.from_numpy(frames).permute(0, 1, 4, 2, 3)  # (B, T, 1, H, W)
        actual = torch.sigmoid(model(channels_first)).numpy()
    return expected, actual


@pytest.mark.parametrize("wrap", ["whole", "per_layer"])
def test_seed_matches_keras_for_both_ways_of_wrapping(keras, wrap):
    keras_model = build_keras_seed(keras, wrap)
    randomise(keras_model)
    model = build_seed_model(HEIGHT, WIDTH, wrap=wrap)
    load_keras_seed_weights(model, keras_model.get_weights())

    expected, actual = keras_and_lrcn_outputs(keras, keras_model, model)

    assert expected.shape == actual.shape == (4, 1)
    assert expected.std() > 0.05  # the comparison is not between saturated outputs
    # One forward each, on this CPU's kernels: probabilities lie in (0, 1), so 1e-5 is 84 ulps of
    # the largest possible value, far above what two summation orders give on any CPU.
    np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("wrap", ["whole", "per_layer"])
def test_parameter_counts_match_keras(keras, wrap):
    keras_model = build_keras_seed(keras, wrap)
    model = build_seed_model(HEIGHT, WIDTH, wrap=wrap)
    total = sum(p.numel() for p in model.parameters())
    # PyTorch's LSTM has two bias vectors where Keras has one: the seed model keeps bias_hh as a
    # zero buffer (single_lstm_bias_), so the counts are equal outright.
    assert "bias_hh_l0" not in dict(model.lstm.named_parameters())

    assert keras_model.count_params() == KERAS_SEED_PARAMETERS
    assert total == KERAS_SEED_PARAMETERS


@pytest.mark.parametrize("mistake", ["pytorch_same_padding", "channels_first_kernel_rows"])
def test_parity_check_catches_the_two_layout_traps(keras, mistake):
    keras_model = build_keras_seed(keras, "whole")
    randomise(keras_model)
    model = build_seed_model(HEIGHT, WIDTH)
    load_keras_seed_weights(model, keras_model.get_weights())
    cnn = model.frame_encoder.module
    with torch.no_grad():
        if mistake == "pytorch_same_padding":
            cnn[0] = nn.ZeroPad2d((1, 0, 1, 0))  # PyTorch's padding="same" pads left/top
        else:
            model.lstm.weight_ih_l0.copy_(torch.from_numpy(keras_model.get_weights()[2]).T)

    expected, actual = keras_and_lrcn_outputs(keras, keras_model, model)

    assert np.abs(actual - expected).max() > 1e-3  # 100 times the parity bound: not rounding


def test_keras_init_matches_keras_initial_weights(keras):
    keras_model = build_keras_seed(keras, "per_layer")
    conv_kernel, conv_bias, kernel, recurrent_kernel, bias, dense_kernel, dense_bias = (
        keras_model.get_weights()
    )
    torch.manual_seed(0)  # the conv has 8 weights: unseeded, all 8 under 0.5 * limit 1 run in 256
    model = keras_init_(build_seed_model(HEIGHT, WIDTH, keras_init=False))
    conv = model.frame_encoder.module[1]
    lstm = model.lstm

    # Same glorot-uniform limits: Keras' fans equal PyTorch's for the transposed layouts.
    for keras_weight, weight in [
        (conv_kernel, conv.weight),
        (kernel, lstm.weight_ih_l0),
        (dense_kernel, model.head.weight),
    ]:
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        assert np.abs(keras_weight).max() <= limit
        assert weight.abs().max().item() <= limit
        assert weight.abs().max().item() > 0.5 * limit
    # One orthogonal (50, 200) recurrent kernel in Keras; its transpose in PyTorch. Each entry is
    # a dot product of two unit vectors of 200 float32 numbers: rounding stays under 200 ulps of 1
    # (2.4e-5) on any CPU, so 1e-4 is relative to the entries' magnitude of 1.
    np.testing.assert_allclose(recurrent_kernel @ recurrent_kernel.T, np.eye(50), atol=1e-4)
    weight_hh = lstm.weight_hh_l0.detach()
    torch.testing.assert_close(weight_hh.T @ weight_hh, torch.eye(50), atol=1e-4, rtol=0)
    # Keras' single LSTM bias (forget quarter 1) equals PyTorch's bias_ih + bias_hh.
    np.testing.assert_array_equal(bias, np.r_[np.zeros(50), np.ones(50), np.zeros(100)])
    torch.testing.assert_close(
        (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach(), torch.from_numpy(bias).float()
    )
    assert not conv_bias.any() and not dense_bias.any()
    assert not conv.bias.any() and not model.head.bias.any()


def test_keras_init_covers_stacked_and_bidirectional_recurrent_layers():
    model = nn.Sequential(
        nn.LSTM(6, 4, num_layers=2, bidirectional=True), nn.GRU(3, 5), nn.Embedding(10, 3)
    )
    keras_init_(model)

    lstm, gru, embedding = model
    for name, parameter in [*lstm.named_parameters(), *gru.named_parameters()]:
        if name.startswith("weight_hh"):  # unit columns of at most 20 rows: 1e-5 is 84 ulps of 1
            columns = parameter.shape[1]
            torch.testing.assert_close(
                parameter.T @ parameter, torch.eye(columns), atol=1e-5, rtol=0
            )
        elif name.startswith("bias_ih") and parameter.shape[0] == 16:  # LSTM: forget gate 1
            expected = torch.tensor([0.0] * 4 + [1.0] * 4 + [0.0] * 8)
            torch.testing.assert_close(parameter.detach(), expected)
        elif name.startswith("bias"):
            assert not parameter.any(), name
    assert embedding.weight.abs().max() <= 0.05
