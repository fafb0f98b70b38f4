"""Show and Tell (Vinyals et al.): the projected visual feature is the LSTM's first input.

The words follow; the visual feature is seen once.
"""

from __future__ import annotations

import torch
from torch import nn

from lrcn.models.wirings.base import (
    Dropout,
    State,
    Wiring,
    identity,
    register_wiring,
    remember_init_,
    run_packed,
)


@register_wiring("show_tell")
class ShowTell(Wiring):
    """One LSTM over ``[visual, <start>, w1, ...]``; the image step predicts nothing."""

    def __init__(self, embed_dim: int, hidden_dim: int, num_layers: int, dropout: float) -> None:
        super().__init__(embed_dim, hidden_dim, num_layers, dropout)
        self.lstm = nn.LSTM(
            embed_dim, hidden_dim, num_layers, batch_first=True, dropout=self.inter_dropout
        )

    def reset_parameters(self) -> None:
        """Orthogonal recurrent weights, forget-gate bias 1."""
        remember_init_(self.lstm)

    def init_state(self, visual: torch.Tensor) -> State:
        """Feed the image: the state after it is the state before ``<start>``."""
        _, (h, c) = self.lstm(visual.unsqueeze(1))
        return {"h": h, "c": c}

    def step(
        self, word: torch.Tensor, state: State, dropout: Dropout = identity
    ) -> tuple[torch.Tensor, State]:
        """One word (B, 1, E) -> LSTM output (B, H)."""
        out, (h, c) = self.lstm(word, (state["h"], state["c"]))
        return out[:, 0], {"h": h, "c": c}

    def hidden_states(
        self, visual: torch.Tensor, words: torch.Tensor, steps: torch.Tensor, dropout: Dropout
    ) -> torch.Tensor:
        """Teacher forcing over packed ``[visual, words]``, the image step dropped: (B, L, H)."""
        inputs = torch.cat([visual.unsqueeze(1), words], dim=1)  # (B, L + 1, E): image first
        return run_packed(self.lstm, inputs, steps + 1, words.shape[1] + 1, self.packed)[:, 1:]
