"""Soft attention (Xu et al., "Show, Attend and Tell", ICML 2015; Yao et al., ICCV 2015 for video).

At every step the LSTM's input is the word and an attention-weighted sum of the projected visual
features: an image's grid cells (``show_attend_tell``) or a video's frames
(``temporal_attention``). The weights of each step are left in the state as ``alpha`` (B, N).

Options (``decoder.*`` config keys, passed by `lrcn.models.decoder.LSTMDecoder`):

- ``attention_dim`` A: size of the additive attention's space (0: the LSTM's hidden size).
- ``attention_gate``: Xu et al. 4.2.1's gating scalar, beta = sigmoid(f_beta(h_{t-1})) per
  feature channel, scaling the context (it learns to turn attention down for words such as "a").
- The doubly stochastic regularisation (``decoder.attention_reg``) is the wiring's own loss term
  (``regulariser``, from the weights teacher forcing traced), weighted and added in
  `lrcn.models.captioner.Captioner.loss`.
"""

from __future__ import annotations

import torch
from torch import nn

from lrcn.models.wirings.base import (
    Dropout,
    State,
    Trace,
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

    Args:
        embed_dim, hidden_dim, num_layers, dropout: as every `Wiring`.
        attention_dim: size A of the attention space; 0 takes ``hidden_dim``.
        attention_gate: scale the context by beta = sigmoid(f_beta(h)) (Xu et al. 4.2.1).
    """

    attends: str | None = "grid"

    def __init__(
        self,
        embed_dim: int,
        hidden_dim: int,
        num_layers: int,
        dropout: float,
        attention_dim: int = 0,
        attention_gate: bool = False,
    ) -> None:
        super().__init__(embed_dim, hidden_dim, num_layers, dropout)
        A = attention_dim or hidden_dim
        self.init_h = nn.Linear(embed_dim, num_layers * hidden_dim)
        self.init_c = nn.Linear(embed_dim, num_layers * hidden_dim)
        self.att_visual = nn.Linear(embed_dim, A)  # W_a: cells -> attention space
        self.att_hidden = nn.Linear(hidden_dim, A, bias=False)  # W_h
        self.att_score = nn.Linear(A, 1)  # w^T tanh(...)
        self.lstm = nn.LSTM(
            2 * embed_dim, hidden_dim, num_layers, batch_first=True, dropout=self.inter_dropout
        )
        self.att_gate: nn.Linear | None = None
        if attention_gate:  # drawn aside: every other weight is initialised as without the gate
            with torch.random.fork_rng(devices=[]):
                self.att_gate = nn.Linear(hidden_dim, embed_dim)

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
        top = state["h"][-1]  # (B, H)
        query = self.att_hidden(top).unsqueeze(1)  # (B, 1, A)
        scores = self.att_score(torch.tanh(state["keys"] + query)).squeeze(-1)  # (B, N)
        alpha = torch.softmax(scores.float(), dim=-1).to(scores.dtype)  # (B, N)
        context = torch.bmm(alpha.unsqueeze(1), state["cells"]).squeeze(1)  # (B, E)
        if self.att_gate is not None:
            context = torch.sigmoid(self.att_gate(top)) * context  # beta (B, E) * context
        return context, alpha

    def step(
        self, word: torch.Tensor, state: State, dropout: Dropout = identity
    ) -> tuple[torch.Tensor, State]:
        """One word (B, 1, E) and the attended context -> LSTM output (B, H)."""
        context, alpha = self.attend(state)
        inputs = torch.cat([word, context.unsqueeze(1)], dim=2)  # (B, 1, 2E)
        out, (h, c) = self.lstm(inputs, (state["h"], state["c"]))
        return out[:, 0], {**state, "h": h, "c": c, "alpha": alpha}

    def run(
        self, visual: torch.Tensor, words: torch.Tensor, steps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing: outputs (B, L, H) and the weights (B, L, N), both zero past ``steps``.

        The keys are projected once (in ``init_state``). Rows run longest first and each step
        only runs the rows still going, as packed sequences do: on shapes captions (2 to 20
        words) that is about half the work of stepping every row to the longest.
        """
        B, L = words.shape[:2]
        order = torch.argsort(steps, descending=True, stable=True)  # (B,) on the CPU
        running = [int((steps > t).sum()) for t in range(L)]  # rows still going at step t
        index = order.to(visual.device)
        state = self.init_state(visual.index_select(0, index))
        words = words.index_select(0, index)
        outputs, alphas = [], []
        for t, n in enumerate(running):
            if n == 0:
                break
            state = _first_rows(state, n)
            out, state = self.step(words[:n, t : t + 1], state)
            outputs.append(nn.functional.pad(out, (0, 0, 0, B - n)))  # (B, H), zeros below n
            alphas.append(nn.functional.pad(state["alpha"], (0, 0, 0, B - n)))  # (B, N)
        inverse = torch.argsort(order).to(visual.device)  # sorted position of each row
        hidden = nn.functional.pad(torch.stack(outputs, 1), (0, 0, 0, L - len(outputs)))
        alpha = nn.functional.pad(torch.stack(alphas, 1), (0, 0, 0, L - len(alphas)))
        return hidden.index_select(0, inverse), alpha.index_select(0, inverse)

    def hidden_states(
        self, visual: torch.Tensor, words: torch.Tensor, steps: torch.Tensor, dropout: Dropout
    ) -> torch.Tensor:
        """Teacher forcing: outputs (B, L, H) for words (B, L, E), zero past each row's ``steps``."""
        return self.run(visual, words, steps)[0]

    def teacher_forcing(
        self, visual: torch.Tensor, words: torch.Tensor, steps: torch.Tensor, dropout: Dropout
    ) -> tuple[torch.Tensor, Trace]:
        """`run`'s outputs and, as the trace, the weights ``alpha`` (B, L, N) of every step."""
        hidden, alpha = self.run(visual, words, steps)
        return hidden, {"alpha": alpha}

    def trace(self, state: State) -> Trace:
        """The weights (B, N) the step that left ``state`` attended with."""
        return {"alpha": state["alpha"]}

    def regulariser(self, trace: Trace) -> torch.Tensor:
        """Xu et al.'s doubly stochastic penalty of the traced weights
        (`doubly_stochastic_penalty`)."""
        return doubly_stochastic_penalty(trace["alpha"])

    def batch_axis(self, name: str) -> int:
        """LSTM states ``h``, ``c`` hold the batch on axis 1, the rest on axis 0."""
        return 1 if name in ("h", "c") else 0


def _first_rows(state: State, n: int) -> State:
    """The first ``n`` rows of every entry of a state (LSTM states on dim 1)."""
    if state["cells"].shape[0] == n:
        return state
    return {k: v[:, :n] if k in ("h", "c") else v[:n] for k, v in state.items()}


def doubly_stochastic_penalty(alphas: torch.Tensor) -> torch.Tensor:
    """Xu et al.'s (eq. 14) sum_i (1 - sum_t alpha_ti)^2 per caption, averaged over captions.

    ``alphas`` (B, L, N) are zero past each caption's real steps (as `ShowAttendTell.run` leaves
    them), so only the real steps count. It pushes every cell to receive, over the caption, a
    total weight of about one: the model must look at every part of the image at some word.
    """
    coverage = alphas.float().sum(dim=1)  # (B, N)
    return ((1.0 - coverage) ** 2).sum(dim=1).mean()


@register_wiring("temporal_attention")
class TemporalAttention(ShowAttendTell):
    """The same soft attention over a video's frame features (B, T, E): each word attends over
    the frames (Yao et al., "Describing Videos by Exploiting Temporal Structure")."""

    attends: str | None = "frames"
