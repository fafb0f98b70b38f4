"""The caption decoder shared by image and video captioners.

The embedding, the visual projection, the dropout and the output layer are shared; the recurrent
core between them is a *wiring* looked up by name in `lrcn.models.wirings`:

- ``show_tell`` (Vinyals et al.): the projected visual feature is the LSTM's first input; the
  words follow. The visual feature is seen once.
- ``lrcn1u`` (Donahue et al., LRCN1u): one LSTM whose input at every step is the word embedding
  concatenated with the projected visual feature.
- ``lrcn2f`` (LRCN2f, the paper's best captioner): a first LSTM over words only, a second LSTM over
  the first one's output concatenated with the visual feature.
- ``show_attend_tell`` / ``temporal_attention`` (Xu et al.; Yao et al.): soft attention over an
  image's grid cells or a video's frames at every step (``decoder.attention_*`` options).

``forward`` is teacher forcing over packed sequences; ``init_state`` + ``step`` decode one token at a
time for greedy, beam and sampling decoders (``lrcn.decoding``).
"""

from __future__ import annotations

import torch
from torch import nn

from lrcn.models.wirings import State, available_wirings, get_wiring, remember_init_

VARIANTS = available_wirings()  # the built-in wirings (those registered when lrcn is imported)
_remember_init_ = remember_init_  # the old private name

__all__ = ["VARIANTS", "LSTMDecoder", "State"]


class LSTMDecoder(nn.Module):
    """Word embedding -> wiring (LSTM(s)) -> vocabulary logits, conditioned on a visual feature.

    The wiring's modules are registered on the decoder under their own names (``lstm``,
    ``lstm2``), so the state_dict keys are ``embed.*, visual_proj.*, lstm.*, [lstm2.*,] out.*``
    whatever the wiring.

    Args:
        vocab_size: number of tokens including the four specials.
        feature_dim: size of the visual feature (CNN last hidden layer or temporal encoder output).
        embed_dim: word (and projected visual) embedding size.
        hidden_dim: LSTM hidden size.
        num_layers: stacked layers per LSTM.
        dropout: on embeddings and LSTM outputs (and between stacked layers).
        variant: a registered wiring: ``show_tell``, ``lrcn1u``, ``lrcn2f`` or one added with
            `lrcn.models.wirings.register_wiring`.
        pad_id: padding token id (its embedding stays zero).
        packed: teacher forcing over packed sequences; False runs CPU batches through the fused
            LSTM, 2.3x faster, equal within rounding (see `lrcn.models.wirings.run_packed`).
        attention_dim: an attention wiring's attention size (0: ``hidden_dim``); others ignore it.
        attention_gate: an attention wiring's gating scalar (Xu et al. 4.2.1); others ignore it.
    """

    def __init__(
        self,
        vocab_size: int,
        feature_dim: int,
        embed_dim: int = 256,
        hidden_dim: int = 512,
        num_layers: int = 1,
        dropout: float = 0.0,
        variant: str = "show_tell",
        pad_id: int = 0,
        packed: bool = True,
        attention_dim: int = 0,
        attention_gate: bool = False,
    ) -> None:
        super().__init__()
        wiring_class = get_wiring(variant)
        options: dict[str, object] = {}
        if wiring_class.attends is not None:  # only they take attention options
            options = {"attention_dim": attention_dim, "attention_gate": attention_gate}
        self.vocab_size, self.variant, self.hidden_dim = vocab_size, variant, hidden_dim
        # Creation order (embed, visual_proj, dropout, the wiring's modules, out, then the wiring's
        # re-initialisation) fixes the random init: keep it.
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        # LayerNorm: CNN features range widely in scale (pooled ReLU outputs, up to ~10^2); unnormalised,
        # they saturate the LSTM gates at the first step and the model learns to ignore the image.
        self.visual_proj = nn.Sequential(nn.Linear(feature_dim, embed_dim), nn.LayerNorm(embed_dim))
        self.dropout = nn.Dropout(dropout)
        self.wiring = wiring_class(
            embed_dim, hidden_dim, num_layers, dropout, **options
        )  # no Module
        self.wiring.packed = packed
        for name, module in self.wiring.submodules().items():
            setattr(self, name, module)
        self.out = nn.Linear(hidden_dim, vocab_size)
        self.wiring.reset_parameters()

    @property
    def attends(self) -> str | None:
        """What the wiring attends over: ``grid``, ``frames``, or None (one visual vector)."""
        return self.wiring.attends

    # ---- teacher forcing -------------------------------------------------------------------
    def hidden_states(
        self, features: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """Wiring outputs that predict ``tokens[:, 1:]``.

        Args:
            features: (B, D) visual features.
            tokens: (B, L) ``<start> w1 ... <end> <pad>...``.
            lengths: (B,) tokens per row including ``<start>`` and ``<end>``.

        Returns:
            (B, L - 1, H): row b, position t is the state that predicts ``tokens[b, t + 1]``.
        """
        visual = self.dropout(self.visual_proj(features))  # (B, E)
        words = self.dropout(self.embed(tokens[:, :-1]))  # (B, L-1, E)
        steps = lengths.cpu() - 1  # inputs per row: <start> .. last word
        return self.dropout(self.wiring.hidden_states(visual, words, steps, self.dropout))

    def forward(
        self, features: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """Teacher-forced logits (B, L - 1, V) for targets ``tokens[:, 1:]``."""
        return self.out(self.hidden_states(features, tokens, lengths))

    # ---- scheduled sampling ------------------------------------------------------------------
    def hidden_states_scheduled(
        self,
        features: torch.Tensor,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        sample_prob: float,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``hidden_states`` with scheduled sampling (Bengio et al. 2015), one step at a time.

        At every step t >= 1 each row's gold input ``tokens[:, t]`` is replaced, with probability
        ``sample_prob``, by a token drawn from the model's own distribution at step t - 1
        (detached: no gradient flows through the choice). Dropout is applied where
        ``hidden_states`` applies it, so ``sample_prob == 0`` gives the teacher-forced states.

        Args:
            features: (B, D) visual features.
            tokens: (B, L) ``<start> w1 ... <end> <pad>...``.
            lengths: (B,) tokens per row including ``<start>`` and ``<end>``.
            sample_prob: probability of feeding the sampled token instead of the gold one.
            generator: random source for the coin flips and samples (on ``tokens``' device);
                the global one when None.

        Returns:
            (B, L - 1, H), zeros past each row's length, as ``hidden_states``.
        """
        return self._scheduled(features, tokens, lengths, sample_prob, generator)[0]

    def _scheduled(
        self,
        features: torch.Tensor,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        sample_prob: float,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``hidden_states_scheduled``'s states and, for an attention wiring, its weights
        (B, L-1, N) (else None), both zero past each row's length."""
        B, L = tokens.shape
        visual = self.dropout(self.visual_proj(features))  # (B, E)
        state = self.wiring.init_state(visual)
        outputs: list[torch.Tensor] = []
        alphas: list[torch.Tensor] = []
        for t in range(L - 1):
            inputs = tokens[:, t]  # (B,)
            if t > 0 and sample_prob > 0:
                inputs = self._maybe_sampled(inputs, outputs[-1], sample_prob, generator)
            word = self.dropout(self.embed(inputs)).unsqueeze(1)  # (B, 1, E)
            out, state = self.wiring.step(word, state, self.dropout)  # (B, H)
            outputs.append(self.dropout(out))
            if "alpha" in state:
                alphas.append(state["alpha"])
        hidden = torch.stack(outputs, dim=1)  # (B, L-1, H)
        valid = torch.arange(L - 1, device=tokens.device) < (lengths.to(tokens.device) - 1)[:, None]
        valid = valid.unsqueeze(-1)
        alpha = torch.stack(alphas, dim=1) * valid if alphas else None  # (B, L-1, N)
        return hidden * valid, alpha  # (B, L-1, H), as packed sequences leave them

    def attention_states(
        self,
        features: torch.Tensor,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        sample_prob: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """An attention wiring's ``hidden_states`` (or ``hidden_states_scheduled`` with
        ``sample_prob`` > 0) and the weights every step used: (B, L-1, H), (B, L-1, N), zero past
        each row's length (what the doubly stochastic regularisation reads)."""
        if self.wiring.attends is None:
            raise ValueError(f"decoder variant {self.variant} has no attention weights")
        if sample_prob > 0:
            hidden, alpha = self._scheduled(features, tokens, lengths, sample_prob, generator)
            assert alpha is not None
            return hidden, alpha
        visual = self.dropout(self.visual_proj(features))  # (B, N, E)
        words = self.dropout(self.embed(tokens[:, :-1]))  # (B, L-1, E)
        hidden, alpha = self.wiring.run(visual, words, lengths.cpu() - 1)
        return self.dropout(hidden), alpha

    def _maybe_sampled(
        self,
        gold: torch.Tensor,
        previous: torch.Tensor,
        sample_prob: float,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Gold inputs (B,), each replaced with probability ``sample_prob`` by a token drawn from
        the output ``previous`` (B, H) of the step before."""
        use = torch.rand(gold.shape[0], generator=generator, device=gold.device) < sample_prob
        if not bool(use.any()):
            return gold
        with torch.no_grad():
            probs = torch.softmax(self.out(previous).float(), dim=-1)  # (B, V)
            drawn = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (B,)
        return torch.where(use, drawn, gold)

    # ---- step-by-step decoding ---------------------------------------------------------------
    def init_state(self, features: torch.Tensor) -> State:
        """Decoder state before the first word (``<start>``) is fed, for features (B, D)."""
        return self.wiring.init_state(self.visual_proj(features))

    def step_hidden(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Feed one token per row: tokens (B,) -> top LSTM output (B, H) and the new state."""
        return self.wiring.step(self.embed(tokens).unsqueeze(1), state)

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Feed one token per row: tokens (B,) -> log-probabilities (B, V) of the next token."""
        out, state = self.step_hidden(tokens, state)
        return torch.log_softmax(self.out(out).float(), dim=-1), state

    def reorder_state(self, state: State, index: torch.Tensor) -> State:
        """Select (or repeat) rows of a state: beam search's bookkeeping. index: (B',) long."""
        return self.wiring.reorder_state(state, index)
