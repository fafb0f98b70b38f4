"""Caption decoding as free functions over a decoder's ``init_state`` / ``step`` / ``reorder_state``.

All functions decode a whole batch at once: beam search keeps (B * k) beams in one tensor, so
decoding 64 images is one call with no Python loop over images.

``<pad>`` and ``<start>`` are never valid outputs: every function takes the optimum (or draws)
over the other tokens only, whatever probability the model gives those two.

Every function takes ``(decoder, features, start_id, end_id)`` by position and its sizes and
knobs by name only, in one order: ``max_length``, ``beam_size``, ``length_penalty``,
``num_samples``, ``temperature``, ``generator``, ``pad_id`` (two positional ints in two orders,
as ``decode`` and ``beam_search`` once took them, swap silently).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from lrcn.errors import LrcnError
from lrcn.text.vocab import Vocabulary

State = dict[str, torch.Tensor]
PAD_ID = Vocabulary.pad_id


class StepDecoder(Protocol):
    """What decoding needs from a decoder (``lrcn.models.decoder.LSTMDecoder`` is one)."""

    def init_state(self, features: torch.Tensor) -> State:
        """State before ``<start>`` is fed, for features (B, D)."""
        ...

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Feed tokens (B,): log-probabilities (B, V) of the next token and the new state."""
        ...

    def reorder_state(self, state: State, index: torch.Tensor) -> State:
        """Rows ``index`` (B',) of a state."""
        ...


def _trim(sequences: torch.Tensor, end_id: int) -> list[list[int]]:
    """Cut each row at its first ``<end>`` (excluded)."""
    out = []
    for row in sequences.tolist():
        out.append(row[: row.index(end_id)] if end_id in row else row)
    return out


def _forbid(log_probs: torch.Tensor, start_id: int, pad_id: int) -> torch.Tensor:
    """``log_probs`` (..., V) with ``<pad>`` and ``<start>`` at -inf: never chosen, never drawn."""
    forbidden = torch.tensor([pad_id, start_id], device=log_probs.device)
    return log_probs.index_fill(-1, forbidden, float("-inf"))


def _unroll(
    decoder: StepDecoder,
    features: torch.Tensor,
    start_id: int,
    end_id: int,
    choose: Callable[[torch.Tensor], torch.Tensor],
    *,
    max_length: int,
    pad_id: int = PAD_ID,
    score: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Feed each row's chosen token back until every row has produced ``<end>``.

    Args:
        choose: log-probabilities (B, V) -> the next tokens (B,), never ``<pad>``/``<start>``.
        score: False when the caller needs only the tokens (greedy): the sum stays zero.

    Returns:
        (tokens (B, max_length) padded with ``<end>``, summed log-probabilities (B,) of the tokens
        up to and including the first ``<end>`` under the distribution tokens are drawn from: the
        model's, renormalised over the tokens other than ``<pad>`` and ``<start>``. It carries
        gradients when they are enabled: SCST's policy gradient is that of the policy it samples.)
    """
    B, device = features.shape[0], features.device
    state = decoder.init_state(features)
    tokens = torch.full((B,), start_id, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    total = torch.zeros(B, device=device)
    out = torch.full((B, max_length), end_id, dtype=torch.long, device=device)
    for t in range(max_length):
        log_probs, state = decoder.step(tokens, state)  # (B, V)
        tokens = choose(log_probs)
        tokens = torch.where(done, torch.full_like(tokens, end_id), tokens)
        if score:
            policy = torch.log_softmax(_forbid(log_probs, start_id, pad_id), dim=-1)  # (B, V)
            picked = policy.gather(1, tokens.unsqueeze(1)).squeeze(1)  # (B,)
            total = total + torch.where(done, torch.zeros_like(picked), picked)
        out[:, t] = tokens
        done = done | (tokens == end_id)
        if bool(done.all()):
            break
    return out, total


@torch.no_grad()
def greedy(
    decoder: StepDecoder,
    features: torch.Tensor,
    start_id: int,
    end_id: int,
    *,
    max_length: int,
    pad_id: int = PAD_ID,
) -> list[list[int]]:
    """Most likely next token at every step (``<pad>``, ``<start>`` excluded).

    Args:
        features: (B, D) visual features.
        max_length: most words per caption (``<end>`` excluded).

    Returns:
        B token-id lists without ``<start>``/``<end>``.
    """
    out, _ = _unroll(
        decoder,
        features,
        start_id,
        end_id,
        lambda log_probs: _forbid(log_probs, start_id, pad_id).argmax(dim=-1),
        max_length=max_length,
        pad_id=pad_id,
        score=False,
    )
    return _trim(out, end_id)


@torch.no_grad()
def beam_search(
    decoder: StepDecoder,
    features: torch.Tensor,
    start_id: int,
    end_id: int,
    *,
    max_length: int,
    beam_size: int,
    length_penalty: float = 0.0,
    pad_id: int = PAD_ID,
) -> list[list[int]]:
    """Batched beam search over (B * k) beams (``<pad>``, ``<start>`` excluded).

    A finished beam keeps its score and is extended only by ``<end>`` at no cost (so an ``<end>``
    is never repeated in the output). The best beam per image is chosen by
    ``log_prob / length ** length_penalty`` (0: raw sum; 1: per-word average). With
    ``beam_size == 1`` this is exactly greedy decoding.

    Args:
        features: (B, D) visual features.

    Returns:
        B token-id lists without ``<start>``/``<end>``.
    """
    if beam_size == 1:
        return greedy(decoder, features, start_id, end_id, max_length=max_length, pad_id=pad_id)
    B, k, device = features.shape[0], beam_size, features.device
    state = decoder.init_state(features.repeat_interleave(k, dim=0))  # (B*k, ...)
    tokens = torch.full((B * k,), start_id, dtype=torch.long, device=device)
    scores = torch.zeros(B, k, device=device)
    scores[:, 1:] = float(
        "-inf"
    )  # all beams start identical: keep one until the first step fans out
    finished = torch.zeros(B, k, dtype=torch.bool, device=device)
    lengths = torch.zeros(B, k, device=device)
    history = torch.full((B, k, max_length), end_id, dtype=torch.long, device=device)
    base = (torch.arange(B, device=device) * k).unsqueeze(1)  # (B, 1)
    for t in range(max_length):
        log_probs, state = decoder.step(tokens, state)  # (B*k, V)
        V = log_probs.shape[-1]
        log_probs = _forbid(log_probs, start_id, pad_id).view(B, k, V)
        # finished beams: only <end>, at zero cost
        frozen = torch.full_like(log_probs, float("-inf"))
        frozen[..., end_id] = 0.0
        log_probs = torch.where(finished.unsqueeze(-1), frozen, log_probs)
        candidates = (scores.unsqueeze(-1) + log_probs).view(B, k * V)  # (B, k*V)
        scores, flat = candidates.topk(k, dim=-1)  # (B, k)
        beam_index, tokens_bk = flat // V, flat % V  # (B, k) each
        history = history.gather(1, beam_index.unsqueeze(-1).expand(-1, -1, max_length))
        history[:, :, t] = tokens_bk
        was_finished = finished.gather(1, beam_index)
        lengths = lengths.gather(1, beam_index) + (~was_finished).float()
        finished = was_finished | (tokens_bk == end_id)
        state = decoder.reorder_state(state, (base + beam_index).view(-1))
        tokens = tokens_bk.view(-1)
        if bool(finished.all()):
            break
    final = scores / lengths.clamp(min=1) ** length_penalty if length_penalty else scores
    best = final.argmax(dim=-1)  # (B,)
    return _trim(history[torch.arange(B, device=device), best], end_id)


def sample_sequences(
    decoder: StepDecoder,
    features: torch.Tensor,
    start_id: int,
    end_id: int,
    *,
    max_length: int,
    num_samples: int = 1,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    pad_id: int = PAD_ID,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Temperature sampling of ``num_samples`` rows per image, with gradients when enabled.

    Each token is drawn from the model's distribution over the tokens other than ``<pad>`` and
    ``<start>`` (``exp(log_probs)`` at temperature 1, ``softmax(log_probs / temperature)``
    otherwise; argmax for a temperature <= 1e-6). Self-critical training draws through this.

    Returns:
        (token ids (B*N, max_length) padded with ``<end>``, rows image-major; summed
        log-probabilities (B*N,) at temperature 1 of the tokens up to and including the first
        ``<end>``).
    """

    def draw(log_probs: torch.Tensor) -> torch.Tensor:
        allowed = _forbid(log_probs.detach(), start_id, pad_id)
        if temperature <= 1e-6:
            return allowed.argmax(dim=-1)
        probs = allowed.exp() if temperature == 1.0 else torch.softmax(allowed / temperature, -1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    features = features.repeat_interleave(num_samples, dim=0)
    return _unroll(decoder, features, start_id, end_id, draw, max_length=max_length, pad_id=pad_id)


@torch.no_grad()
def sample(
    decoder: StepDecoder,
    features: torch.Tensor,
    start_id: int,
    end_id: int,
    *,
    max_length: int,
    num_samples: int = 1,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    pad_id: int = PAD_ID,
) -> tuple[list[list[list[int]]], torch.Tensor]:
    """Temperature sampling, ``num_samples`` captions per image, all in one batch.

    Returns:
        (captions, log_probs): captions[b][n] is a token list; log_probs (B, num_samples) holds each
        sample's total log-probability under the model at temperature 1 (for best-of-N).
        As ``temperature`` -> 0 this becomes greedy decoding.
    """
    B, N = features.shape[0], num_samples
    out, total = sample_sequences(
        decoder,
        features,
        start_id,
        end_id,
        max_length=max_length,
        num_samples=N,
        temperature=temperature,
        generator=generator,
        pad_id=pad_id,
    )
    captions = _trim(out, end_id)
    return [captions[b * N : (b + 1) * N] for b in range(B)], total.view(B, N)


def best_of_n(
    decoder: StepDecoder,
    features: torch.Tensor,
    start_id: int,
    end_id: int,
    *,
    max_length: int,
    num_samples: int = 5,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    pad_id: int = PAD_ID,
) -> list[list[int]]:
    """Sample ``num_samples`` captions per image and keep the most probable one."""
    captions, log_probs = sample(
        decoder,
        features,
        start_id,
        end_id,
        max_length=max_length,
        num_samples=num_samples,
        temperature=temperature,
        generator=generator,
        pad_id=pad_id,
    )
    best = log_probs.argmax(dim=1).tolist()
    return [captions[b][best[b]] for b in range(len(captions))]


def decode(
    decoder: StepDecoder,
    features: torch.Tensor,
    start_id: int,
    end_id: int,
    *,
    max_length: int,
    beam_size: int = 1,
    length_penalty: float = 0.0,
    pad_id: int = PAD_ID,
) -> list[list[int]]:
    """Greedy for ``beam_size == 1``, else batched beam search."""
    return beam_search(
        decoder,
        features,
        start_id,
        end_id,
        max_length=max_length,
        beam_size=beam_size,
        length_penalty=length_penalty,
        pad_id=pad_id,
    )


@torch.no_grad()
def attention_weights(
    decoder: StepDecoder,
    features: torch.Tensor,
    captions: list[list[int]],
    start_id: int,
    end_id: int,
) -> list[torch.Tensor]:
    """The attention weights of every word of decoded captions, by teacher forcing them.

    Each caption (token ids without ``<start>``/``<end>``, as `greedy`, `beam_search` and `sample`
    return them) is fed after ``<start>`` through ``init_state`` and ``step`` in one batched pass;
    after each step the state's ``alpha`` (B, N) holds the weights that step's output was computed
    with, so row ``t`` is where the model looked when it chose word ``t`` (the last row: ``<end>``).
    Whichever decoding produced a caption, its maps are those its words were chosen with.

    Args:
        decoder: an attention decoder (``decoder.attends`` is ``grid`` or ``frames``).
        features: (B, N, D) grid cells or frame features, one row per caption.
        captions: B token-id lists.

    Returns:
        B float tensors (len_i + 1, N): one row per word and one for ``<end>``, each summing to 1.

    Raises:
        LrcnError: the decoder does not attend (naming ``decoder.variant``).
    """
    if getattr(decoder, "attends", None) is None:
        variant = getattr(decoder, "variant", type(decoder).__name__)
        raise LrcnError(
            f"decoder.variant {variant} does not attend, so it has no attention maps; use a "
            "checkpoint trained with decoder.variant=show_attend_tell (images) or "
            "temporal_attention (video)."
        )
    if len(captions) != features.shape[0]:
        raise ValueError(f"{len(captions)} captions for {features.shape[0]} feature rows")
    B, device = features.shape[0], features.device
    steps = max((len(c) for c in captions), default=0) + 1  # <start> and every word
    tokens = torch.full((B, steps), end_id, dtype=torch.long, device=device)
    tokens[:, 0] = start_id
    for b, caption in enumerate(captions):
        tokens[b, 1 : len(caption) + 1] = torch.as_tensor(caption, dtype=torch.long)
    state = decoder.init_state(features)
    alphas = []
    for t in range(steps):
        _, state = decoder.step(tokens[:, t], state)
        alphas.append(state["alpha"].float())
    stacked = torch.stack(alphas, dim=1)  # (B, steps, N)
    return [stacked[b, : len(caption) + 1] for b, caption in enumerate(captions)]
