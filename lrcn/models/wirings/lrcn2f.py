"""LRCN2f (the LRCN paper's best captioner): a word LSTM, then an LSTM over [its output, visual]."""

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


@register_wiring("lrcn2f")
class LRCN2f(Wiring):
    """``lstm`` reads words only; ``lstm2`` reads its output concatenated with the visual feature."""

    def __init__(self, embed_dim: int, hidden_dim: int, num_layers: int, dropout: float) -> None:
        super().__init__(embed_dim, hidden_dim, num_layers, dropout)
        inter = self.inter_dropout
        self.lstm = nn.LSTM(embed_dim, hidden_dim, num_layers, batch_first=True, dropout=inter)
        self.lstm2 = nn.LSTM(
            hidden_dim + embed_dim, hidden_dim, num_layers, batch_first=True, dropout=inter
        )

    def reset_parameters(self) -> None:
        """Orthogonal recurrent weights, forget-gate bias 1, on both LSTMs."""
        remember_init_(self.lstm)
        remember_init_(self.lstm2)

    def init_state(self, visual: torch.Tensor) -> State:
        """Zero states for both LSTMs; the visual feature rides along for every step."""
        zeros = visual.new_zeros(self.num_layers, visual.shape[0], self.hidden_dim)
        return {"h": zeros, "c": zeros, "visual": visual, "h2": zeros, "c2": zeros}

    def step(
        self, word: torch.Tensor, state: State, dropout: Dropout = identity
    ) -> tuple[torch.Tensor, State]:
        """One word (B, 1, E) -> second LSTM's output (B, H); ``dropout`` between the two."""
        first, (h, c) = self.lstm(word, (state["h"], state["c"]))  # (B, 1, H)
        inputs = torch.cat([dropout(first), state["visual"].unsqueeze(1)], dim=2)  # (B, 1, H+E)
        out, (h2, c2) = self.lstm2(inputs, (state["h2"], state["c2"]))
        return out[:, 0], {"h": h, "c": c, "h2": h2, "c2": c2, "visual": state["visual"]}

    def hidden_states(
        self, visual: torch.Tensor, words: torch.Tensor, steps: torch.Tensor, dropout: Dropout
    ) -> torch.Tensor:
        """Teacher forcing: packed words through ``lstm``, then ``[its output, visual]``: (B, L, H)."""
        n = words.shape[1]
        first = dropout(run_packed(self.lstm, words, steps, n, self.packed))  # (B, L, H)
        inputs = torch.cat([first, visual.unsqueeze(1).expand(-1, n, -1)], dim=2)  # (B, L, H+E)
        return run_packed(self.lstm2, inputs, steps, n, self.packed)
