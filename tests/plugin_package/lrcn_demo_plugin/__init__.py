"""A plug-in package: one decoder wiring and one metric, registered when lrcn imports it."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lrcn.metrics import register_metric
from lrcn.models import Wiring, register_wiring


@register_wiring("demo_plugin_gru")  # decoder.variant=demo_plugin_gru
class DemoGRU(Wiring):
    """Show and Tell with a GRU core: the projected image is the first input."""

    def __init__(self, embed_dim: int, hidden_dim: int, num_layers: int, dropout: float) -> None:
        super().__init__(embed_dim, hidden_dim, num_layers, dropout)
        self.gru = nn.GRU(embed_dim, hidden_dim, num_layers, batch_first=True)

    def init_state(self, visual: torch.Tensor) -> dict[str, torch.Tensor]:
        _, h = self.gru(visual.unsqueeze(1))  # (layers, B, H)
        return {"h": h}

    def step(self, word, state, dropout=lambda x: x):  # noqa: ANN001
        out, h = self.gru(word, state["h"])  # (B, 1, H)
        return out[:, 0], {"h": h}


@register_metric("demo_first_word")  # eval.metrics=bleu,demo_first_word
class FirstWord:
    """Share of captions whose first word starts one of their references."""

    keys = ("DemoFirstWord",)

    def compute_score(self, gts, res):  # noqa: ANN001
        per_item = np.array(
            [float(bool(res[k][0]) and any(r[:1] == res[k][0][:1] for r in gts[k])) for k in res]
        )
        return float(per_item.mean()), per_item
