"""LRCN1u (Donahue et al.): one LSTM whose input at every step is [word, visual feature]."""

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


@register_wiring("lrcn1u")
class LRCN1u(Wiring):
    """The visual feature is concatenated to every word embedding of a single LSTM."""

    def __init__(self, embed_dim: int, hidden_dim: int, num_layers: int, dropout: float) -> None:
        super().__init__(embed_dim, hidden_dim, num_layers, dropout)
        self.lstm = nn.LSTM(
            2 * embed_dim, hidden_dim, num_layers, batch_first=True, dropout=self.inter_dropout
        )

    def reset_parameters(self) -> None:
        """Orthogonal recurrent weights, forget-gate bias 1."""
        remember_init_(self.lstm)

    def init_state(self, visual: torch.Tensor) -> State:
        """Zero LSTM state; the visual feature rides along for every step."""
        zeros = visual.new_zeros(self.num_layers, visual.shape[0], self.hidden_dim)
        return {"h": zeros, "c": zeros, "visual": visual}

    def step(
        self, word: torch.Tensor, state: State, dropout: Dropout = identity
    ) -> tuple[torch.Tensor, State]:
        """One word (B, 1, E) with the visual feature -> LSTM output (B, H)."""
        inputs = torch.cat([word, state["visual"].unsqueeze(1)], dim=2)  # (B, 1, 2E)
        out, (h, c) = self.lstm(inputs, (state["h"], state["c"]))
        return out[:, 0], {"h": h, "c": c, "visual": state["visual"]}

    def hidden_states(
        self, visual: torch.Tensor, words: torch.Tensor, steps: torch.Tensor, dropout: Dropout
    ) -> torch.Tensor:
        """Teacher forcing over packed ``[word_t, visual]`` inputs: (B, L, H)."""
        n = words.shape[1]
        inputs = torch.cat([words, visual.unsqueeze(1).expand(-1, n, -1)], dim=2)  # (B, L, 2E)
        return run_packed(self.lstm, inputs, steps, n, self.packed)
