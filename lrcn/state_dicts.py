"""Comparing a state_dict with a module: the one-sentence mismatch report shared by checkpoints and
pretrained-weight loaders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lrcn.errors import LrcnError

_NORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)
_LAYERS = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)


def fold_biases_into_batchnorm(module: torch.nn.Module, state: dict[str, Any]) -> list[str]:
    """Move the biases an older ``state`` has for bias-free layers that feed a BatchNorm into
    that BatchNorm's running mean, in place; returns the folded bias keys.

    Until lrcn 0.2 ``small_cnn`` gave its convolutions and its linear layer a bias although a
    BatchNorm follows each. The BatchNorm subtracts the batch mean in training, so such a bias has
    a zero true gradient (Adam moved it by rounding noise alone), and in evaluation it subtracts
    the running mean, which absorbed the bias: ``(x + b - mean) = (x - (mean - b))``. Folding
    ``mean - b`` gives the same outputs in both modes, up to the rounding of one subtraction.
    """
    folded = []
    for name, parent in module.named_modules():
        children = list(parent.named_children())
        for (layer_name, layer), (norm_name, norm) in zip(children, children[1:]):
            if not (isinstance(layer, _LAYERS) and layer.bias is None and isinstance(norm, _NORMS)):
                continue
            prefix = f"{name}." if name else ""
            bias, mean = f"{prefix}{layer_name}.bias", f"{prefix}{norm_name}.running_mean"
            if bias in state and mean in state and state[bias].shape == state[mean].shape:
                state[mean] = state[mean] - state[bias].to(state[mean].dtype)
                del state[bias]
                folded.append(bias)
    return folded


def state_dict_mismatch(module: torch.nn.Module, state: dict[str, Any]) -> str | None:
    """What keeps ``state`` from loading strictly into ``module``, in a few words; None if it fits.

    Biases of an older layout that feed a BatchNorm are folded first
    (:func:`fold_biases_into_batchnorm`), so ``state`` may change in place."""
    fold_biases_into_batchnorm(module, state)
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [
        f"{k} {_shape(state[k])} vs {_shape(own[k])}"
        for k in own
        if k in state and _shape(state[k]) != _shape(own[k])
    ]
    problems = [
        f"{label}: {short_list(keys)}"
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", reshaped),
        )
        if keys
    ]
    return "; ".join(problems) or None


def _shape(value: object) -> tuple[int, ...] | str:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


def short_list(keys: list[str], limit: int = 3) -> str:
    """The first ``limit`` keys, then how many more: keeps an error sentence short."""
    shown = ", ".join(keys[:limit])
    return shown if len(keys) <= limit else f"{shown} and {len(keys) - limit} more"


def load_state_dict_checked(
    module: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path
) -> None:
    """``load_state_dict`` that names the mismatch (vocabulary size, layer shapes) in one sentence."""
    problem = state_dict_mismatch(module, state)
    if problem:
        raise LrcnError(
            f"{path}: the weights do not fit this model ({problem}); use a checkpoint of the same config and vocabulary."
        )
    module.load_state_dict(state)
