"""What every decoder wiring is, and the registry that names them.

A wiring is the recurrent core of `lrcn.models.decoder.LSTMDecoder`: it owns the LSTM(s) and says
how the projected visual feature and the embedded words reach them. The embedding, the visual
projection, the dropout and the output layer are shared and stay on the decoder.

Register one the way timm registers models, from anywhere (a plugin, a test file)::

    @register_wiring("gru_show_tell")
    class GRUShowTell(Wiring):
        ...

and select it with ``decoder.variant=gru_show_tell``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lrcn.registry import Registry

State = dict[str, torch.Tensor]
# What a teacher-forced pass recorded at every step for a wiring's regulariser, by name:
# each (B, L, ...), zero past each row's length (an attention wiring's weights ``alpha``).
Trace = dict[str, torch.Tensor]
Dropout = Callable[[torch.Tensor], torch.Tensor]


def identity(x: torch.Tensor) -> torch.Tensor:
    """No dropout: what decoding steps use."""
    return x


class Wiring(nn.Module):
    """The recurrent core between the shared word/visual embeddings and the output layer.

    An ``nn.Module``: the decoder holds it as its submodule ``wiring``, so its modules, parameters
    and buffers are trained, moved and saved with the decoder. Its state_dict keys are written at
    the decoder's level, without ``wiring.`` (a wiring's ``self.lstm`` is ``decoder.lstm.*``), as
    when a wiring was a plain object whose modules were copied onto the decoder: checkpoints of
    either time load into the other (see `lrcn.models.decoder.LSTMDecoder`). Dropout comes in as
    an argument, so a wiring reads no training flag of its own.

    A subclass calls ``super().__init__(embed_dim, hidden_dim, num_layers, dropout)`` first, sets
    its modules in ``__init__`` and implements ``init_state`` and ``step``; ``hidden_states``
    (teacher forcing) steps through ``step`` unless a faster version is given. Its modules'
    names must not be the decoder's own (``embed``, ``visual_proj``, ``dropout``, ``out``,
    ``wiring``): their keys sit beside the decoder's. A wiring with a loss term of its own (an
    attention wiring's doubly stochastic regularisation) records what it reads in ``trace`` and
    computes it in ``regulariser``.

    Args:
        embed_dim: size of a word embedding and of the projected visual feature.
        hidden_dim: size of the output the decoder's output layer reads.
        num_layers: stacked layers per recurrent network.
        dropout: the decoder's dropout; recurrent networks use it between stacked layers.
    """

    # teacher forcing over packed sequences (False: the fused CPU LSTM; see `run_packed`)
    packed: bool = True
    # What an attention wiring attends over: "grid" (an image's spatial cells, (B, N, E)) or
    # "frames" (a video's frame features, (B, T, E)); None: one visual vector (B, E).
    attends: str | None = None

    def __init__(self, embed_dim: int, hidden_dim: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        self.embed_dim, self.hidden_dim, self.num_layers = embed_dim, hidden_dim, num_layers
        self.inter_dropout = dropout if num_layers > 1 else 0.0

    def state_names(self) -> set[str]:
        """The first part of every state_dict key the wiring writes: the names of its modules
        and of the parameters and buffers it holds itself."""
        names = {name for name, _ in self.named_children()}
        names |= {name for name, _ in self.named_parameters(recurse=False)}
        return names | {name for name, _ in self.named_buffers(recurse=False)}

    def reset_parameters(self) -> None:
        """Re-initialise weights; called once the decoder's output layer exists (random order)."""

    def init_state(self, visual: torch.Tensor) -> State:
        """State before ``<start>`` is fed, from the projected visual feature (B, E).

        An attention wiring (``attends`` set) gets (B, N, E): one projected feature per grid cell
        or frame. After each ``step`` its state holds ``alpha`` (B, N): the attention weights that
        step's output was computed with (what `lrcn.decoding.attention_weights` collects).
        """
        raise NotImplementedError

    def step(
        self, word: torch.Tensor, state: State, dropout: Dropout = identity
    ) -> tuple[torch.Tensor, State]:
        """One embedded word per row (B, 1, E) -> top output (B, H) and the new state."""
        raise NotImplementedError

    def hidden_states(
        self, visual: torch.Tensor, words: torch.Tensor, steps: torch.Tensor, dropout: Dropout
    ) -> torch.Tensor:
        """Teacher forcing: outputs (B, L, H) for words (B, L, E), zero past each row's ``steps``.

        Args:
            visual: (B, E) projected visual feature (dropout applied).
            words: (B, L, E) embedded inputs ``<start> w1 ...`` (dropout applied).
            steps: (B,) inputs per row, on the CPU.
            dropout: the decoder's dropout, for use between networks.
        """
        return self._step_through(visual, words, steps, dropout, traced=False)[0]

    def teacher_forcing(
        self, visual: torch.Tensor, words: torch.Tensor, steps: torch.Tensor, dropout: Dropout
    ) -> tuple[torch.Tensor, Trace]:
        """``hidden_states`` and the `Trace` of its steps (what ``regulariser`` reads).

        A wiring that traces nothing (keeps the default ``trace``) gives ``hidden_states`` and
        ``{}``; one that traces steps through ``step``, stacking ``trace`` of every step, unless
        it overrides this with a faster pass giving the same.
        """
        if type(self).trace is Wiring.trace:
            return self.hidden_states(visual, words, steps, dropout), {}
        return self._step_through(visual, words, steps, dropout, traced=True)

    def _step_through(
        self,
        visual: torch.Tensor,
        words: torch.Tensor,
        steps: torch.Tensor,
        dropout: Dropout,
        traced: bool,
    ) -> tuple[torch.Tensor, Trace]:
        """Teacher forcing one ``step`` per word: outputs (B, L, H) and, when ``traced``, the
        stacked ``trace`` of every step, both zero past each row's ``steps``."""
        state = self.init_state(visual)
        outputs, traces = [], []
        for t in range(words.shape[1]):
            out, state = self.step(words[:, t : t + 1], state, dropout)
            outputs.append(out)
            if traced:
                traces.append(self.trace(state))
        hidden = torch.stack(outputs, dim=1)  # (B, L, H)
        valid = (torch.arange(words.shape[1]) < steps[:, None]).to(hidden.device)  # (B, L)
        return zero_past(hidden, valid), stack_trace(traces, valid)

    def trace(self, state: State) -> Trace:
        """What the state after one ``step`` holds for ``regulariser``, each (B, ...): nothing
        by default. The decoder stacks them over the steps (zero past each row's length)."""
        return {}

    def regulariser(self, trace: Trace) -> torch.Tensor | None:
        """The wiring's own loss term, from a teacher-forced pass's `Trace` (before its weight
        ``decoder.attention_reg``); None: the wiring has none."""
        return None

    def batch_axis(self, name: str) -> int:
        """The axis of state entry ``name`` that holds the batch (what ``reorder_state`` selects
        on). By default recurrent states are (num_layers, B, H) and the entry ``visual`` is
        (B, E); a wiring whose state is shaped otherwise (a Transformer's key/value cache, batch
        first) says so here rather than overriding ``reorder_state``."""
        return 0 if name == "visual" else 1

    def reorder_state(self, state: State, index: torch.Tensor) -> State:
        """Select (or repeat) rows of a state: beam search's bookkeeping. index: (B',) long.

        Each entry is indexed on its ``batch_axis``.
        """
        return {k: v.index_select(self.batch_axis(k), index) for k, v in state.items()}


WIRINGS: Registry[type[Wiring]] = Registry(
    "decoder variant", "set decoder.variant to one of", setting="decoder.variant"
)


def register_wiring(name: str) -> Callable[[type[Wiring]], type[Wiring]]:
    """Class decorator: make a `Wiring` subclass selectable as ``decoder.variant=name``.

    Raises:
        LrcnError: another class is registered as ``name``.
    """

    def add(cls: type[Wiring]) -> type[Wiring]:
        return WIRINGS.register(name, cls)

    return add


def available_wirings() -> tuple[str, ...]:
    """Names of the registered wirings, in registration order (the built-in ones first)."""
    return WIRINGS.names()


def get_wiring(name: str) -> type[Wiring]:
    """The wiring class registered as ``name``; LrcnError naming the registered ones if none."""
    return WIRINGS.get(name)


def run_packed(
    lstm: nn.LSTM,
    inputs: torch.Tensor,
    lengths: torch.Tensor,
    total: int,
    packed: bool = True,
) -> torch.Tensor:
    """Run ``lstm`` over padded ``inputs`` (B, T, I) packed by ``lengths``: (B, total, H), zeros past each length.

    With ``packed=False`` (``decoder.packed: false``) on CPU, the padded batch goes through the LSTM
    whole and the steps past each length are zeroed: a one-way LSTM's outputs before a row's end
    never see what follows, so they equal the packed run's within 1.5e-7, and oneDNN's fused LSTM
    runs 2.3x faster than the packed kernel (hidden 256, 320 captions of up to 16 steps, forward +
    backward: 83 against 190 ms). Its rounding depends on the batch, though: torchrun's ranks then
    no longer add up to one process within 1e-5 (tests/test_ddp.py), so packing stays the default.
    """
    if not packed and inputs.device.type == "cpu":
        out, _ = lstm(inputs)  # (B, T, H)
        steps = torch.arange(total, device=inputs.device)
        valid = steps[None, :] < lengths.to(inputs.device)[:, None]  # (B, total)
        out = nn.functional.pad(out, (0, 0, 0, total - out.shape[1]))  # (B, total, H)
        return out * valid.unsqueeze(-1)
    packed_inputs = nn.utils.rnn.pack_padded_sequence(
        inputs, lengths, batch_first=True, enforce_sorted=False
    )
    out, _ = lstm(packed_inputs)
    out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=total)
    return out


def remember_init_(lstm: nn.LSTM) -> None:
    """Orthogonal recurrent weights and forget-gate bias 1 (Jozefowicz et al. 2015; Keras' default).

    Show and Tell sees the image only at the first step; with PyTorch's default init the forget gate
    starts near 0.5, the image fades within a few words, and training plateaus at a language model
    that ignores the picture (measured here: loss 1.07 vs 0.93 after 140 steps on shapes).
    """
    hidden = lstm.hidden_size
    for name, param in lstm.named_parameters():
        if name.startswith("weight_hh"):
            for gate in range(4):
                nn.init.orthogonal_(param.data[gate * hidden : (gate + 1) * hidden])
        elif name.startswith("bias_ih"):
            nn.init.zeros_(param)
            nn.init.ones_(param.data[hidden : 2 * hidden])
        elif name.startswith("bias_hh"):
            nn.init.zeros_(param)


def zero_past(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``values`` (B, L, ...) with the steps where ``valid`` (B, L) is False set to zero."""
    return values * valid.view(*valid.shape, *[1] * (values.dim() - 2))


def stack_trace(traces: list[Trace], valid: torch.Tensor) -> Trace:
    """One `Trace` per step (each entry (B, ...)) -> one of (B, L, ...) entries, zero where
    ``valid`` (B, L) is False (past each row's length)."""
    names = traces[0] if traces else {}
    return {name: zero_past(torch.stack([t[name] for t in traces], dim=1), valid) for name in names}
