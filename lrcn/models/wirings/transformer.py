"""A Transformer decoder (Vaswani et al. 2017) on the same parts as the LSTM wirings.

A stack of pre-LayerNorm decoder layers: causal self-attention over the words so far,
cross-attention over the visual memory, a feed-forward block, each a residual branch. The memory is
an image's grid cells (``transformer``), a video's frames (``temporal_transformer``) or one pooled
vector as a single cell (``transformer_vector``: vector stores and the demo's stage-1 features).
The model width is ``decoder.hidden_dim`` (what the shared output layer reads), with
``decoder.heads`` heads and a ``decoder.ff_dim`` feed-forward (0: four times the width).

Positions are sinusoidal, so no caption length is baked into the weights: the words' order, and
the grid's two dimensions (rows in half the channels, columns in the other half, for a square grid)
or the frames' order. Teacher forcing is one parallel pass under a causal mask; decoding steps one
word at a time through ``init_state`` / ``step`` with a cache of every layer's past keys and
values, so a new word attends from one position instead of recomputing the prefix. After each
step the state's ``alpha`` (B, N) is the last layer's cross-attention averaged over the heads:
what ``caption --attention`` and the report's strips draw.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lrcn.models.wirings.base import (
    Dropout,
    State,
    Trace,
    Wiring,
    identity,
    register_wiring,
    zero_past,
)


def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Vaswani et al.'s encoding of ``positions`` (n,) in ``dim`` channels: (n, dim), sin on even
    channels and cos on odd ones, wavelengths from 2 pi to 10000 * 2 pi."""
    channel = torch.arange(dim, device=positions.device)
    rate = torch.exp(-(channel // 2 * 2).float() * (math.log(10000.0) / max(dim, 1)))
    angle = positions.float()[:, None] * rate[None, :]
    return torch.where(channel % 2 == 0, torch.sin(angle), torch.cos(angle))


def memory_positions(cells: int, dim: int, grid: bool, device: torch.device) -> torch.Tensor:
    """Positions of ``cells`` memory cells: (cells, dim). A square grid (row-major, as
    ``encoder.grid`` flattens it) encodes its row in the first half of the channels and its column
    in the other half; frames, or a grid that is not square, encode their order."""
    side = math.isqrt(cells)
    if not grid or side * side != cells:
        return sinusoid(torch.arange(cells, device=device), dim)
    index = torch.arange(cells, device=device)
    half = dim // 2
    return torch.cat([sinusoid(index // side, half), sinusoid(index % side, dim - half)], dim=1)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, D) -> (B, heads, T, D / heads)."""
    B, T, D = x.shape
    return x.view(B, T, heads, D // heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, T, d) -> (B, T, heads * d)."""
    B, h, T, d = x.shape
    return x.transpose(1, 2).reshape(B, T, h * d)


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention: outputs (B, h, Tq, d) and weights (B, h, Tq, Tk).

    The softmax runs in float32; ``causal`` hides from query t every key after t (the keys
    then are the queries' own positions: teacher forcing's one pass)."""
    scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    if causal:
        Tq, Tk = scores.shape[-2:]
        future = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    return weights @ v, weights


class DecoderLayer(nn.Module):
    """Pre-LayerNorm: x + SelfAttn(LN(x)), + CrossAttn(LN(x), memory), + FF(LN(x))."""

    def __init__(self, width: int, heads: int, ff_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.self_norm = nn.LayerNorm(width)
        self.self_qkv = nn.Linear(width, 3 * width)
        self.self_out = nn.Linear(width, width)
        self.cross_norm = nn.LayerNorm(width)
        self.cross_q = nn.Linear(width, width)
        self.cross_kv = nn.Linear(width, 2 * width)
        self.cross_out = nn.Linear(width, width)
        self.ff_norm = nn.LayerNorm(width)
        self.ff = nn.Sequential(nn.Linear(width, ff_dim), nn.GELU(), nn.Linear(ff_dim, width))

    def memory(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The cross-attention's keys and values of the memory (B, N, D): each (B, h, N, d)."""
        k, v = self.cross_kv(memory).chunk(2, dim=-1)
        return _heads(k, self.heads), _heads(v, self.heads)

    def forward(
        self,
        x: torch.Tensor,
        cache: tuple[torch.Tensor, torch.Tensor] | None,
        memory: tuple[torch.Tensor, torch.Tensor],
        dropout: Dropout,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inputs (B, T, D) -> outputs (B, T, D), this layer's keys and values of every position
        so far (the ``cache``'s with the new ones appended, (B, h, t + T, d)) and the
        cross-attention's weights (B, h, T, N). No cache: T positions from the first, causal."""
        q, k, v = (_heads(p, self.heads) for p in self.self_qkv(self.self_norm(x)).chunk(3, -1))
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        out, _ = attend(q, k, v, causal=cache is None)
        x = x + dropout(self.self_out(_merge(out)))
        q = _heads(self.cross_q(self.cross_norm(x)), self.heads)
        out, weights = attend(q, *memory, causal=False)
        x = x + dropout(self.cross_out(_merge(out)))
        x = x + dropout(self.ff(self.ff_norm(x)))
        return x, k, v, weights


@register_wiring("transformer")
class Transformer(Wiring):
    """Transformer decoder layers over the grid cells; the last layer's cross-attention is
    ``alpha``.

    State (batch on axis 0 of every entry): ``memory_keys``, ``memory_values`` (B, layers, h, N, d)
    the cross-attention's projections of the memory (computed once per image); ``keys``,
    ``values`` (B, layers, h, t, d) the self-attention cache of the t words fed so far;
    ``alpha`` (B, N).

    Args:
        embed_dim, hidden_dim, num_layers, dropout: as every `Wiring`; ``hidden_dim`` is the
            model width, ``num_layers`` the decoder layers, ``dropout`` on every residual branch.
        heads: attention heads; ``hidden_dim`` must be a multiple (``decoder.heads``).
        ff_dim: the feed-forward block's inner size; 0: ``4 * hidden_dim`` (``decoder.ff_dim``).
    """

    attends: str | None = "grid"

    def __init__(
        self,
        embed_dim: int,
        hidden_dim: int,
        num_layers: int,
        dropout: float,
        heads: int = 4,
        ff_dim: int = 0,
    ) -> None:
        super().__init__(embed_dim, hidden_dim, num_layers, dropout)
        if hidden_dim % heads:
            raise ValueError(f"hidden_dim {hidden_dim} is not a multiple of heads {heads}")
        self.heads = heads
        self.word_in = nn.Linear(embed_dim, hidden_dim)
        self.memory_in = nn.Linear(embed_dim, hidden_dim)
        self.layers = nn.ModuleList(
            DecoderLayer(hidden_dim, heads, ff_dim or 4 * hidden_dim) for _ in range(num_layers)
        )
        self.final_norm = nn.LayerNorm(hidden_dim)

    def _memory(self, visual: torch.Tensor) -> torch.Tensor:
        """Projected cells (B, N, E) (or one vector (B, E)) -> positioned memory (B, N, D)."""
        cells = visual if visual.dim() == 3 else visual.unsqueeze(1)
        memory = self.memory_in(cells)
        where = memory_positions(cells.shape[1], self.hidden_dim, self.attends == "grid",
                                 cells.device)  # fmt: skip
        return memory + where.to(memory.dtype)

    def _words(self, words: torch.Tensor, first: int) -> torch.Tensor:
        """Embedded words (B, T, E) at positions ``first``.. -> layer inputs (B, T, D)."""
        x = self.word_in(words)
        where = sinusoid(torch.arange(first, first + words.shape[1], device=words.device),
                         self.hidden_dim)  # fmt: skip
        return x + where.to(x.dtype)

    def init_state(self, visual: torch.Tensor) -> State:
        """Cells (B, N, E) or a vector (B, E) -> the memory's keys and values, an empty cache."""
        memory = self._memory(visual)
        pairs = [layer.memory(memory) for layer in self.layers]
        mk = torch.stack([k for k, _ in pairs], dim=1)  # (B, layers, h, N, d)
        mv = torch.stack([v for _, v in pairs], dim=1)
        B, _, h, N, d = mk.shape
        empty = mk.new_zeros(B, len(self.layers), h, 0, d)
        alpha = mk.new_full((B, N), 1.0 / N)  # no word yet: uniform
        return {"memory_keys": mk, "memory_values": mv, "keys": empty, "values": empty.clone(),
                "alpha": alpha}  # fmt: skip

    def _run(
        self, x: torch.Tensor, state: State, cached: bool, dropout: Dropout
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """Every layer over inputs (B, T, D): outputs, each layer's keys and values, and the last
        layer's cross-attention averaged over the heads (B, T, N)."""
        keys, values = [], []
        weights = x.new_zeros(0)
        for i, layer in enumerate(self.layers):
            cache = (state["keys"][:, i], state["values"][:, i]) if cached else None
            memory = (state["memory_keys"][:, i], state["memory_values"][:, i])
            x, k, v, weights = layer(x, cache, memory, dropout)
            keys.append(k)
            values.append(v)
        return self.final_norm(x), keys, values, weights.mean(dim=1)

    def step(
        self, word: torch.Tensor, state: State, dropout: Dropout = identity
    ) -> tuple[torch.Tensor, State]:
        """One word (B, 1, E) at the cache's next position -> output (B, D), the cache one longer."""
        x = self._words(word, state["keys"].shape[3])
        out, keys, values, alpha = self._run(x, state, cached=True, dropout=dropout)
        new = {"keys": torch.stack(keys, dim=1), "values": torch.stack(values, dim=1)}
        return out[:, 0], {**state, **new, "alpha": alpha[:, 0]}

    def run(
        self, visual: torch.Tensor, words: torch.Tensor, steps: torch.Tensor, dropout: Dropout
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing in one causal pass: outputs (B, L, D) and the weights (B, L, N), zero
        past each row's ``steps`` (a position never sees the padding after it)."""
        state = self.init_state(visual)
        out, _, _, alpha = self._run(self._words(words, 0), state, cached=False, dropout=dropout)
        valid = (torch.arange(words.shape[1]) < steps[:, None]).to(out.device)  # (B, L)
        return zero_past(out, valid), zero_past(alpha, valid)

    def hidden_states(
        self, visual: torch.Tensor, words: torch.Tensor, steps: torch.Tensor, dropout: Dropout
    ) -> torch.Tensor:
        """Teacher forcing: outputs (B, L, D) for words (B, L, E), zero past each row's ``steps``."""
        return self.run(visual, words, steps, dropout)[0]

    def teacher_forcing(
        self, visual: torch.Tensor, words: torch.Tensor, steps: torch.Tensor, dropout: Dropout
    ) -> tuple[torch.Tensor, Trace]:
        """`run`'s outputs and, as the trace, the weights ``alpha`` (B, L, N) of every word."""
        hidden, alpha = self.run(visual, words, steps, dropout)
        return hidden, {"alpha": alpha}

    def trace(self, state: State) -> Trace:
        """The cross-attention weights (B, N) of the step that left ``state``."""
        return {"alpha": state["alpha"]}

    def batch_axis(self, name: str) -> int:
        """Every entry holds the batch on axis 0."""
        return 0


@register_wiring("temporal_transformer")
class TemporalTransformer(Transformer):
    """The same decoder over a video's frame features (B, T, E), positioned by frame order."""

    attends: str | None = "frames"


@register_wiring("transformer_vector")
class TransformerVector(Transformer):
    """The same decoder over one pooled visual vector (B, E) as its only memory cell: what vector
    stores and the demo's stage-1 features hold. Cross-attention over one cell is the identity
    mixing (``alpha`` is 1), so it has no attention maps."""

    attends: str | None = None
