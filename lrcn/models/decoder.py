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
- ``transformer`` / ``temporal_transformer`` / ``transformer_vector``: pre-LayerNorm Transformer
  decoder layers cross-attending over the grid, the frames or one pooled vector
  (``decoder.heads``, ``decoder.ff_dim``).

``teacher_forcing`` is the one pass every loss takes (plain teacher forcing over packed sequences,
or scheduled sampling step by step; ``forward`` gives its logits); ``init_state`` + ``step`` decode
one token at a time for greedy, beam and sampling decoders (``lrcn.decoding``).
"""

from __future__ import annotations

import sys
from typing import Any, NamedTuple

import torch
from torch import nn

from lrcn.errors import LrcnError
from lrcn.models.wirings import (
    State,
    Trace,
    Wiring,
    available_wirings,
    get_wiring,
    remember_init_,
)
from lrcn.models.wirings.base import stack_trace, zero_past
from lrcn.models.wirings.transformer import Transformer

VARIANTS = available_wirings()  # the built-in wirings (those registered when lrcn is imported)
_remember_init_ = remember_init_  # the old private name
# the decoder's own names: a wiring's keys sit beside them in the state_dict
_OWN_NAMES = frozenset({"embed", "visual_proj", "dropout", "wiring", "out"})

__all__ = ["VARIANTS", "LSTMDecoder", "State", "TeacherForced"]


class TeacherForced(NamedTuple):
    """What `LSTMDecoder.teacher_forcing` computed.

    Attributes:
        hidden: (B, L - 1, H) the states that predict ``tokens[:, 1:]``, zero past each row's
            length (dropout applied: what the output layer reads).
        trace: what the wiring recorded at every step for its regulariser, each (B, L - 1, ...)
            and zero past each row's length; ``{}`` for a wiring without one.
    """

    hidden: torch.Tensor
    trace: Trace


class LSTMDecoder(nn.Module):
    """Word embedding -> wiring (LSTM(s)) -> vocabulary logits, conditioned on a visual feature.

    The wiring is the decoder's submodule ``wiring`` (``decoder.wiring.lstm`` in
    ``named_parameters``), but its state_dict keys are written at the decoder's level, as before
    it was a submodule: ``embed.*, visual_proj.*, lstm.*, [lstm2.*,] out.*`` whatever the wiring,
    in that order. Old and new checkpoints therefore have the same keys and load into either
    code; a state with the nested keys (``wiring.lstm.*``) loads too.

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
        heads: a Transformer wiring's attention heads (``hidden_dim`` a multiple of it).
        ff_dim: a Transformer wiring's feed-forward size (0: ``4 * hidden_dim``).

    Raises:
        LrcnError: a plug-in wiring that is not a `Wiring` module, sets a module before
            ``super().__init__``, or names a module as the decoder's own.
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
        heads: int = 4,
        ff_dim: int = 0,
    ) -> None:
        super().__init__()
        wiring_class = get_wiring(variant)
        options: dict[str, object] = {}
        if wiring_class.attends is not None and not issubclass(wiring_class, Transformer):
            options = {"attention_dim": attention_dim, "attention_gate": attention_gate}
        if issubclass(wiring_class, Transformer):  # only they have heads and a feed-forward
            options = {"heads": heads, "ff_dim": ff_dim}
        self.vocab_size, self.variant, self.hidden_dim = vocab_size, variant, hidden_dim
        # Creation order (embed, visual_proj, dropout, the wiring's modules, out, then the wiring's
        # re-initialisation) fixes the random init: keep it.
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        # LayerNorm: CNN features range widely in scale (pooled ReLU outputs, up to ~10^2); unnormalised,
        # they saturate the LSTM gates at the first step and the model learns to ignore the image.
        self.visual_proj = nn.Sequential(nn.Linear(feature_dim, embed_dim), nn.LayerNorm(embed_dim))
        self.dropout = nn.Dropout(dropout)
        self.wiring = _create_wiring(
            wiring_class, variant, (embed_dim, hidden_dim, num_layers, dropout), options
        )
        self.wiring.packed = packed
        self.out = nn.Linear(hidden_dim, vocab_size)
        self.wiring.reset_parameters()
        # the private hook API: every torch since 1.x has it (torch >= 2.2 is allowed here)
        self._register_state_dict_hook(_unnest_wiring_keys)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """Load keys of the wiring's modules written at the decoder's level (``lstm.*``: what
        every checkpoint holds) into the submodule ``wiring``; nested keys load as they are."""
        names = self.wiring.state_names()
        for key in [k for k in state_dict if k.startswith(prefix)]:
            if key[len(prefix) :].split(".", 1)[0] in names:
                state_dict[f"{prefix}wiring.{key[len(prefix) :]}"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args)

    @property
    def attends(self) -> str | None:
        """What the wiring attends over: ``grid``, ``frames``, or None (one visual vector)."""
        return self.wiring.attends

    # ---- teacher forcing -------------------------------------------------------------------
    def teacher_forcing(
        self,
        features: torch.Tensor,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        *,
        sample_prob: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> TeacherForced:
        """The states that predict ``tokens[:, 1:]`` and the wiring's trace: every loss's pass.

        Plain teacher forcing runs the wiring over all the words at once (packed sequences).
        With ``sample_prob`` > 0 it is scheduled sampling (Bengio et al. 2015), one step at a
        time: at every step t >= 1 each row's gold input ``tokens[:, t]`` is replaced, with that
        probability, by a token drawn from the model's own distribution at step t - 1 (detached:
        no gradient flows through the choice). Dropout is applied at the same places either way,
        so the steps give the states of the packed pass (within rounding) when no coin lands.

        Args:
            features: (B, D) visual features ((B, N, D) for an attention wiring).
            tokens: (B, L) ``<start> w1 ... <end> <pad>...``.
            lengths: (B,) tokens per row including ``<start>`` and ``<end>``.
            sample_prob: probability of feeding the sampled token instead of the gold one.
            generator: random source for the coin flips and samples (on ``tokens``' device);
                the global one when None.
        """
        visual = self.dropout(self.visual_proj(features))  # (B, E) or (B, N, E)
        if sample_prob > 0:
            return self._stepped(visual, tokens, lengths, sample_prob, generator)
        words = self.dropout(self.embed(tokens[:, :-1]))  # (B, L-1, E)
        steps = lengths.cpu() - 1  # inputs per row: <start> .. last word
        hidden, trace = self.wiring.teacher_forcing(visual, words, steps, self.dropout)
        return TeacherForced(self.dropout(hidden), trace)

    def forward(
        self, features: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """Teacher-forced logits (B, L - 1, V) for targets ``tokens[:, 1:]``."""
        return self.out(self.teacher_forcing(features, tokens, lengths).hidden)

    def _stepped(
        self,
        visual: torch.Tensor,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        sample_prob: float,
        generator: torch.Generator | None,
    ) -> TeacherForced:
        """`teacher_forcing` with scheduled sampling, from the projected ``visual`` (dropout
        applied): one ``wiring.step`` per input, the wiring's ``trace`` of each step stacked."""
        B, L = tokens.shape
        state = self.wiring.init_state(visual)
        outputs: list[torch.Tensor] = []
        traces: list[Trace] = []
        for t in range(L - 1):
            inputs = tokens[:, t]  # (B,)
            if t > 0:
                inputs = self._maybe_sampled(inputs, outputs[-1], sample_prob, generator)
            word = self.dropout(self.embed(inputs)).unsqueeze(1)  # (B, 1, E)
            out, state = self.wiring.step(word, state, self.dropout)  # (B, H)
            outputs.append(self.dropout(out))
            traces.append(self.wiring.trace(state))
        valid = torch.arange(L - 1, device=tokens.device) < (lengths.to(tokens.device) - 1)[:, None]
        # (B, L-1, H), zero past each row's length, as packed sequences leave them
        hidden = zero_past(torch.stack(outputs, dim=1), valid)
        return TeacherForced(hidden, stack_trace(traces, valid))

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


def _create_wiring(
    wiring_class: type[Wiring],
    variant: str,
    sizes: tuple[int, int, int, float],
    options: dict[str, object],
) -> Wiring:
    """``wiring_class(*sizes, **options)``; LrcnError naming the wiring's file when it is not
    a `Wiring` module the decoder can hold and save (a plug-in written the old way)."""
    where = getattr(sys.modules.get(wiring_class.__module__), "__file__", None)
    where = f"{where or wiring_class.__module__}: wiring {variant} ({wiring_class.__qualname__})"
    try:
        wiring = wiring_class(*sizes, **options)
    except AttributeError as exc:
        if "before Module.__init__() call" not in str(exc):
            raise
        raise LrcnError(
            f"{where} sets a module before calling Wiring.__init__; call "
            "super().__init__(embed_dim, hidden_dim, num_layers, dropout) first in its __init__."
        ) from None
    if not isinstance(wiring, Wiring) or "_modules" not in vars(wiring):
        raise LrcnError(
            f"{where} is not a Wiring module; subclass lrcn.models.Wiring and call "
            "super().__init__(embed_dim, hidden_dim, num_layers, dropout) first in its __init__."
        )
    clash = sorted(wiring.state_names() & _OWN_NAMES)
    if clash:
        raise LrcnError(
            f"{where} names {', '.join(clash)} as the decoder names its own parts (their "
            "state_dict keys would collide); rename them in the wiring's __init__."
        )
    return wiring


def _unnest_wiring_keys(
    module: nn.Module, state: dict[str, Any], prefix: str, local_metadata: dict[str, Any]
) -> None:
    """State-dict hook of `LSTMDecoder`: write ``wiring.lstm.*`` as ``lstm.*``, in place.

    It runs once the decoder's keys are written, so they are the last ones of ``state``: taking
    them out and putting them back in order keeps every key's place (the golden digests and
    optimizers see the keys in order).
    """
    nested = f"{prefix}wiring."
    for key in [k for k in state if k.startswith(prefix)]:
        value = state.pop(key)
        state[prefix + key[len(nested) :] if key.startswith(nested) else key] = value
