"""Soft attention (Xu et al., "Show, Attend and Tell", ICML 2015; Yao et al., ICCV 2015 for video).

At every step the LSTM's input is the word and an attention-weighted sum of the projected visual
features: an image's grid cells (``show_attend_tell``) or a video's frames
(``temporal_attention``). The weights of each step are left in the state as ``alpha`` (B, N).
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
)


@register_wiring("show_attend_tell")
class ShowAttendTell(Wiring):
    """Additive attention over grid cells; h0 and c0 from the cells' mean (Xu et al. 4.2.1).

    State: ``h``, ``c`` (num_layers, B, H); ``cells`` (B, N, E) the projected features;
    ``keys`` (B, N, A) their attention projection (computed once per image); ``alpha`` (B, N).
    """

    attends: str | None = "grid"

    def __init__(self, embed_dim: int, hidden_dim: int, num_layers: int, dropout: float) -> None:
        super().__init__(embed_dim, hidden_dim, num_layers, dropout)
        self.init_h = nn.Linear(embed_dim, num_layers * hidden_dim)
        self.init_c = nn.Linear(embed_dim, num_layers * hidden_dim)
        self.att_visual = nn.Linear(embed_dim, hidden_dim)  # W_a: cells -> attention space
        self.att_hidden = nn.Linear(hidden_dim, hidden_dim, bias=False)  # W_h
        self.att_score = nn.Linear(hidden_dim, 1)  # w^T tanh(...)
        self.lstm = nn.LSTM(
            2 * embed_dim, hidden_dim, num_layers, batch_first=True, dropout=self.inter_dropout
        )

    def reset_parameters(self) -> None:
        """Orthogonal recurrent weights, forget-gate bias 1."""
        remember_init_(self.lstm)

    def init_state(self, visual: torch.Tensor) -> State:
        """Cells (B, N, E) -> the state before ``<start>``: LSTM state from the mean cell."""
        B, L, H = visual.shape[0], self.num_layers, self.hidden_dim
        mean = visual.mean(dim=1)  # (B, E)
        h = torch.tanh(self.init_h(mean)).view(B, L, H).transpose(0, 1).contiguous()
        c = torch.tanh(self.init_c(mean)).view(B, L, H).transpose(0, 1).contiguous()
        alpha = visual.new_full(visual.shape[:2], 1.0 / visual.shape[1])  # (B, N): none yet
        return {"h": h, "c": c, "cells": visual, "keys": self.att_visual(visual), "alpha": alpha}

    def attend(self, state: State) -> tuple[torch.Tensor, torch.Tensor]:
        """The context (B, E) and weights (B, N) for the next step, queried by the top ``h``."""
        query = self.att_hidden(state["h"][-1]).unsqueeze(1)  # (B, 1, A)
        scores = self.att_score(torch.tanh(state["keys"] + query)).squeeze(-1)  # (B, N)
        alpha = torch.softmax(scores.float(), dim=-1).to(scores.dtype)  # (B, N)
        context = torch.bmm(alpha.unsqueeze(1), state["cells"]).squeeze(1)  # (B, E)
        return context, alpha

    def step(
        self, word: torch.Tensor, state: State, dropout: Dropout = identity
    ) -> tuple[torch.Tensor, State]:
        """One word (B, 1, E) and the attended context -> LSTM output (B, H)."""
        context, alpha = self.attend(state)
        inputs = torch.cat([word, context.unsqueeze(1)], dim=2)  # (B, 1, 2E)
        out, (h, c) = self.lstm(inputs, (state["h"], state["c"]))
        return out[:, 0], {**state, "h": h, "c": c, "alpha": alpha}

    @staticmethod
    def reorder_state(state: State, index: torch.Tensor) -> State:
        """Rows ``index`` of every entry: LSTM states on dim 1, the rest on dim 0."""
        return {k: v.index_select(1 if k in ("h", "c") else 0, index) for k, v in state.items()}


@register_wiring("temporal_attention")
class TemporalAttention(ShowAttendTell):
    """The same soft attention over a video's frame features (B, T, E): each word attends over
    the frames (Yao et al., "Describing Videos by Exploiting Temporal Structure")."""

    attends: str | None = "frames"
