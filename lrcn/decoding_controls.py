"""Decoding controls over `lrcn.decoding`: n-gram blocking, a repetition penalty, diverse beams.

`decode_with` is what evaluation, captioning and serving call. With every control off it calls
`lrcn.decoding.decode` itself, so today's captions are kept bit for bit; with any control on,
greedy (``beam_size`` 1) and beam search run here, batched like `lrcn.decoding`'s, through the
same ``init_state`` / ``step`` / ``reorder_state`` (an ensemble decodes as one model).

The controls, each applied to the step's log-probabilities of every unfinished row in this order:

* ``repetition_penalty`` θ (1.0: off): CTRL's rule (Keskar et al. 2019) — a token already
  generated in the row has its logit divided by θ when positive and multiplied by θ when
  negative. It is applied to the log-probabilities, which are never positive, so each
  already-generated token's log-probability is multiplied by θ (θ > 1 makes repeats less likely;
  θ < 1 more; a token of probability 1 is unchanged).
* ``no_repeat_ngram`` n (0: off): a token that would complete an n-gram already in the row is
  blocked (-inf), so no caption holds an n-gram twice. ``<end>`` is never blocked: a caption can
  always finish.
* with either of the two above, the row is renormalised (``log_softmax``): beam scores stay
  log-probabilities of the distribution tokens are chosen from.
* ``beam_groups`` G (1: off) with ``diversity_strength`` λ: diverse beam search (Vijayakumar et
  al. 2016) with Hamming diversity. The k beams form G groups of k/G; at each step the groups
  choose in order, and group g's log-probability of a token is lowered by λ times the number of
  beams of groups before g that chose that token at this step. Each group keeps its k/G best
  beams by the scores it chose with; the caption returned is the beam (of any group) with the best
  score without the diversity term (length-penalised as `lrcn.decoding.beam_search`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lrcn.config import EvalConfig
from lrcn.decoding import PAD_ID, StepDecoder, _forbid, _trim, decode
from lrcn.errors import LrcnError

__all__ = ["Controls", "controlled_beam_search", "controlled_greedy", "decode_with"]


@dataclass(frozen=True)
class Controls:
    """The decoding controls (the module docstring defines each); the defaults are all off."""

    no_repeat_ngram: int = 0
    repetition_penalty: float = 1.0
    beam_groups: int = 1
    diversity_strength: float = 0.0

    @classmethod
    def from_config(cls, eval_cfg: EvalConfig) -> Controls:
        """The controls of a config's ``eval`` section (``eval.no_repeat_ngram``, ...)."""
        return cls(
            no_repeat_ngram=eval_cfg.no_repeat_ngram,
            repetition_penalty=eval_cfg.repetition_penalty,
            beam_groups=eval_cfg.beam_groups,
            diversity_strength=eval_cfg.diversity_strength,
        )

    @property
    def reshape(self) -> bool:
        """True when a row's log-probabilities change with its history (blocking or penalty)."""
        return self.no_repeat_ngram > 0 or self.repetition_penalty != 1.0

    @property
    def off(self) -> bool:
        """True when decoding is today's `lrcn.decoding.decode` (one group: plain beam search)."""
        return not self.reshape and self.beam_groups == 1

    def check(self, beam_size: int) -> None:
        """Refuse values that cannot decode, naming the ``eval.*`` key and the fix."""
        if self.no_repeat_ngram < 0:
            raise LrcnError(
                f"eval.no_repeat_ngram is {self.no_repeat_ngram}; set it to 0 (off) or to the "
                "n-gram length never to repeat (e.g. 2)."
            )
        if not self.repetition_penalty > 0:
            raise LrcnError(
                f"eval.repetition_penalty is {self.repetition_penalty}; set a number above 0 "
                "(1.0 is off, above 1 discourages repeats)."
            )
        if self.beam_groups < 1 or beam_size % self.beam_groups:
            raise LrcnError(
                f"eval.beam_groups {self.beam_groups} does not divide eval.beam_size "
                f"{beam_size}; set eval.beam_groups to a divisor of the beam size (1 is off)."
            )


def _reshaped(
    log_probs: torch.Tensor, history: torch.Tensor, controls: Controls, end_id: int
) -> torch.Tensor:
    """Apply the penalty and n-gram blocking to ``log_probs`` (R, V) given the rows' tokens so far
    ``history`` (R, t), then renormalise; unchanged when neither is on."""
    if not controls.reshape:
        return log_probs
    R, V = log_probs.shape
    if controls.repetition_penalty != 1.0 and history.shape[1]:
        seen = torch.zeros(R, V, device=log_probs.device).scatter_add_(
            1, history, torch.ones_like(history, dtype=torch.float32)
        )
        penalised = log_probs * controls.repetition_penalty
        log_probs = torch.where(seen > 0, penalised, log_probs)
    n = controls.no_repeat_ngram
    if n and history.shape[1] >= n:
        grams = history.unfold(1, n, 1)  # (R, t-n+1, n): every n-gram so far
        prefix = history[:, history.shape[1] - n + 1 :]  # (R, n-1): the last n-1 tokens
        match = (grams[:, :, : n - 1] == prefix.unsqueeze(1)).all(dim=-1)  # (R, M)
        hits = torch.zeros(R, V, device=log_probs.device).scatter_add_(
            1, grams[:, :, n - 1], match.float()
        )
        hits[:, end_id] = 0  # <end> is never blocked
        log_probs = log_probs.masked_fill(hits > 0, float("-inf"))
    return torch.log_softmax(log_probs, dim=-1)


@torch.no_grad()
def controlled_greedy(
    decoder: StepDecoder,
    features: torch.Tensor,
    start_id: int,
    end_id: int,
    *,
    max_length: int,
    controls: Controls,
    pad_id: int = PAD_ID,
) -> list[list[int]]:
    """`lrcn.decoding.greedy` with the penalty and n-gram blocking: the best allowed token."""
    B, device = features.shape[0], features.device
    state = decoder.init_state(features)
    tokens = torch.full((B,), start_id, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    out = torch.full((B, max_length), end_id, dtype=torch.long, device=device)
    for t in range(max_length):
        log_probs, state = decoder.step(tokens, state)
        allowed = _reshaped(_forbid(log_probs, start_id, pad_id), out[:, :t], controls, end_id)
        tokens = torch.where(
            done, torch.full_like(done, end_id, dtype=torch.long), allowed.argmax(-1)
        )
        out[:, t] = tokens
        done = done | (tokens == end_id)
        if bool(done.all()):
            break
    return _trim(out, end_id)


def _group_step(
    log_probs: torch.Tensor,
    scores: torch.Tensor,
    raw: torch.Tensor,
    chosen: torch.Tensor,
    group: slice,
    diversity: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One group's beam step: (new scores, new raw scores, beam indices, tokens), each (B, k/G).

    Args:
        log_probs: (B, k, V), finished beams already frozen to ``<end>`` at no cost.
        chosen: (B, V) how many beams of earlier groups chose each token at this step.
    """
    B, _, V = log_probs.shape
    own = log_probs[:, group]  # (B, s, V)
    s = own.shape[1]
    moved = own - diversity * chosen.unsqueeze(1) if diversity and group.start else own
    candidates = (scores[:, group].unsqueeze(-1) + moved).view(B, s * V)
    new_scores, flat = candidates.topk(s, dim=-1)
    beam_index, tokens = flat // V, flat % V
    if moved is own:
        new_raw = new_scores
    else:
        picked = own.reshape(B, s * V).gather(1, flat)
        new_raw = raw[:, group].gather(1, beam_index) + picked
    return new_scores, new_raw, beam_index + group.start, tokens


@torch.no_grad()
def controlled_beam_search(
    decoder: StepDecoder,
    features: torch.Tensor,
    start_id: int,
    end_id: int,
    *,
    max_length: int,
    beam_size: int,
    controls: Controls,
    length_penalty: float = 0.0,
    pad_id: int = PAD_ID,
) -> list[list[int]]:
    """`lrcn.decoding.beam_search` with the controls; one group and no control is the same search,
    step for step (the same operations in the same order)."""
    controls.check(beam_size)
    B, k, device = features.shape[0], beam_size, features.device
    G = controls.beam_groups
    s = k // G
    groups = [slice(g * s, (g + 1) * s) for g in range(G)]
    state = decoder.init_state(features.repeat_interleave(k, dim=0))
    tokens = torch.full((B * k,), start_id, dtype=torch.long, device=device)
    scores = torch.full((B, k), float("-inf"), device=device)
    for group in groups:  # each group's beams start identical: keep one until it fans out
        scores[:, group.start] = 0.0
    raw = scores.clone()
    finished = torch.zeros(B, k, dtype=torch.bool, device=device)
    lengths = torch.zeros(B, k, device=device)
    history = torch.full((B, k, max_length), end_id, dtype=torch.long, device=device)
    base = (torch.arange(B, device=device) * k).unsqueeze(1)
    for t in range(max_length):
        log_probs, state = decoder.step(tokens, state)
        V = log_probs.shape[-1]
        log_probs = _forbid(log_probs, start_id, pad_id)
        log_probs = _reshaped(log_probs, history[:, :, :t].reshape(B * k, t), controls, end_id)
        log_probs = log_probs.view(B, k, V)
        frozen = torch.full_like(log_probs, float("-inf"))
        frozen[..., end_id] = 0.0
        log_probs = torch.where(finished.unsqueeze(-1), frozen, log_probs)
        chosen = torch.zeros(B, V, device=device)
        parts = []
        for group in groups:
            part = _group_step(log_probs, scores, raw, chosen, group, controls.diversity_strength)
            # the words of beams still writing (not finished, not a -inf filler of a group
            # with fewer candidates than beams) count against the later groups
            live = ~finished.gather(1, part[2]) & torch.isfinite(part[1])
            chosen.scatter_add_(1, part[3], live.float())
            parts.append(part)
        scores, raw, beam_index, tokens_bk = (torch.cat(p, dim=1) for p in zip(*parts))
        history = history.gather(1, beam_index.unsqueeze(-1).expand(-1, -1, max_length))
        history[:, :, t] = tokens_bk
        was_finished = finished.gather(1, beam_index)
        lengths = lengths.gather(1, beam_index) + (~was_finished).float()
        finished = was_finished | (tokens_bk == end_id)
        state = decoder.reorder_state(state, (base + beam_index).view(-1))
        tokens = tokens_bk.view(-1)
        if bool(finished.all()):
            break
    final = raw / lengths.clamp(min=1) ** length_penalty if length_penalty else raw
    best = final.argmax(dim=-1)
    return _trim(history[torch.arange(B, device=device), best], end_id)


def decode_with(
    decoder: StepDecoder,
    features: torch.Tensor,
    start_id: int,
    end_id: int,
    *,
    max_length: int,
    beam_size: int = 1,
    length_penalty: float = 0.0,
    controls: Controls | None = None,
    pad_id: int = PAD_ID,
) -> list[list[int]]:
    """`lrcn.decoding.decode` with ``controls``: exactly ``decode`` when they are off (or None)."""
    controls = controls or Controls()
    controls.check(beam_size)
    if controls.off:
        return decode(
            decoder,
            features,
            start_id,
            end_id,
            max_length=max_length,
            beam_size=beam_size,
            length_penalty=length_penalty,
            pad_id=pad_id,
        )
    if beam_size == 1:
        return controlled_greedy(
            decoder, features, start_id, end_id, max_length=max_length, controls=controls,
            pad_id=pad_id,
        )  # fmt: skip
    return controlled_beam_search(
        decoder,
        features,
        start_id,
        end_id,
        max_length=max_length,
        beam_size=beam_size,
        controls=controls,
        length_penalty=length_penalty,
        pad_id=pad_id,
    )
