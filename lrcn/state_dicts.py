"""Comparing a state_dict with a module: the one-sentence mismatch report shared by checkpoints and
pretrained-weight loaders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lrcn.errors import LrcnError


def state_dict_mismatch(module: torch.nn.Module, state: dict[str, Any]) -> str | None:
    """What keeps ``state`` from loading strictly into ``module``, in a few words; None if it fits."""
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
