"""Ensembles of captioners: several models decoded as one, by averaging their next-token
distributions at every step.

The average is the log of the members' mean probability, ``log(1/M * sum_m p_m)`` (a mixture,
as fairseq and most captioning ensembles average): it is a distribution again, so beam scores
stay log-probabilities, and a token that one member rates plausible stays plausible (the mean
of log-probabilities, a product of experts, lets one member veto a token the others agree on).
It is computed as ``mx + log(mean(exp(lp_m - mx)))`` with ``mx`` the members' largest
log-probability: for members that agree exactly every term is ``exp(0) = 1``, so the ensemble of
copies of one model gives that model's log-probabilities bit for bit, and an ensemble of one
model is that model (its log-probabilities are returned unchanged).

`Ensemble` is a module with ``encode(batch)`` and ``decoder`` like a captioner, so evaluation and
captioning decode it unchanged: ``encode`` packs every member's features into one (B, F) tensor
(each flattened, then concatenated), and `EnsembleDecoder` is a `lrcn.decoding.StepDecoder`
whose state is the tuple of the members' states (``reorder_state`` reorders each).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lrcn.errors import LrcnError
from lrcn.models.encoders import encoder_spec
from lrcn.task import get_task

__all__ = ["Ensemble", "EnsembleDecoder", "check_members", "mean_log_probs"]


def _inputs(cfg: Any) -> tuple:
    """What the first member's loader gives every member: size, frames, normalisation."""
    spec = encoder_spec(cfg.encoder.name)
    return cfg.data.image_size, cfg.data.num_frames, tuple(spec.mean), tuple(spec.std)


def check_members(members: Sequence[tuple[Any, dict[str, Any]]]) -> None:
    """Refuse an ensemble whose members (config, checkpoint payload) differ in task, vocabulary
    or input (image size, frames, pixel normalisation: all are fed the first's batches).

    Raises:
        LrcnError: naming the first member's file, the other's and what differs.
    """
    cfg, payload = members[0]
    for other_cfg, other in members[1:]:
        what = ""
        if get_task(other_cfg.task) is not get_task(cfg.task):  # the registry's objects
            what = f"tasks ({cfg.task}, {other_cfg.task})"
        elif other.get("vocab") != payload.get("vocab"):
            what = "vocabularies"
        elif _inputs(other_cfg) != _inputs(cfg):
            what = "inputs (data.image_size, data.num_frames or the encoder's normalisation)"
        if what:
            raise LrcnError(
                f"{payload['path']} and {other['path']} have different {what}; an ensemble "
                "averages the next-word probabilities of models of one task and vocabulary fed "
                "the same pixels, so pass checkpoints of runs on the same data and inputs."
            )


def mean_log_probs(members: Sequence[torch.Tensor]) -> torch.Tensor:
    """``log(mean_m exp(members[m]))`` (B, V), exact when the members are equal (see module)."""
    if len(members) == 1:
        return members[0]
    stacked = torch.stack(list(members))  # (M, B, V)
    top = stacked.max(dim=0).values
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # all -inf: stays -inf
    return top + torch.log(torch.exp(stacked - top).mean(dim=0))


class EnsembleDecoder(nn.Module):
    """The members' decoders as one `lrcn.decoding.StepDecoder` over packed features."""

    attends = None  # no single attention map: attention pictures are refused, as for show_tell

    def __init__(self, decoders: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(decoders)
        self.shapes: list[torch.Size] = []  # each member's feature shape after the batch axis
        self.variant = "ensemble"

    def unpack(self, features: torch.Tensor) -> list[torch.Tensor]:
        """The members' features (B, ...) from the packed (B, F) tensor, each contiguous as the
        member's encoder gave it (a strided view can take another kernel, with other rounding)."""
        sizes = [math.prod(shape) for shape in self.shapes]
        parts = features.split(sizes, dim=1)
        return [p.reshape(p.shape[0], *shape).contiguous() for p, shape in zip(parts, self.shapes)]

    def init_state(self, features: torch.Tensor) -> tuple[Any, ...]:
        """Each member's state for its part of the packed features."""
        return tuple(d.init_state(f) for d, f in zip(self.members, self.unpack(features)))

    def step(self, tokens: torch.Tensor, state: tuple[Any, ...]) -> tuple[torch.Tensor, tuple]:
        """Every member steps; the log of their mean next-token probability (`mean_log_probs`)."""
        outputs = [d.step(tokens, s) for d, s in zip(self.members, state)]
        return mean_log_probs([lp for lp, _ in outputs]), tuple(s for _, s in outputs)

    def reorder_state(self, state: tuple[Any, ...], index: torch.Tensor) -> tuple[Any, ...]:
        """Rows ``index`` of every member's state."""
        return tuple(d.reorder_state(s, index) for d, s in zip(self.members, state))


class Ensemble(nn.Module):
    """Captioners decoded together: ``encode`` and ``decoder`` as one captioner has them."""

    attends = None

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        self.models = nn.ModuleList(models)
        self.decoder = EnsembleDecoder([m.decoder for m in models])

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Every member's features of the batch, flattened and concatenated: (B, F)."""
        features = [m.encode(batch) for m in self.models]
        self.decoder.shapes = [f.shape[1:] for f in features]
        return torch.cat([f.reshape(f.shape[0], -1) for f in features], dim=1)
