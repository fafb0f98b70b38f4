"""The valid values of the config's numeric keys (`RANGES`), and the keys a trained model's
config cannot change (`WEIGHT_KEYS`), checked by `lrcn.config`."""

from __future__ import annotations

import math
import typing

__all__ = ["NEEDED_SPLITS", "RANGES", "WEIGHT_KEYS", "Range"]


class Range(typing.NamedTuple):
    """The valid values of a numeric key: ``low``..``high`` (None: unbounded), ends included
    unless ``open_low``/``open_high``; NaN and infinities never."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    why: str = ""  # what a value outside does, when the range alone does not say

    def admits(self, value: float) -> bool:
        """True when ``value`` is finite and inside the range."""
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if isinstance(value, int) and not -(2**63) <= value < 2**63:
            return False  # no float either (10**400), and torch and numpy take 64 bits at most
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return self.high is None or (value < self.high if self.open_high else value <= self.high)

    def describe(self, integer: bool) -> str:
        """``"an integer of at least 1"``, ``"a number above 0 and at most 1"``..."""
        kind = "an integer" if integer else "a finite number"
        low = high = ""
        if self.low is not None:
            low = f"above {self.low}" if self.open_low else f"of at least {self.low}"
        if self.high is not None:
            high = f"below {self.high}" if self.open_high else f"at most {self.high}"
        return " and ".join(part for part in (f"{kind} {low}".strip(), high) if part)


_COUNT = Range(low=1)  # sizes, steps, epochs, batch and beam sizes: at least one
_NATURAL = Range(low=0)  # 0 has a meaning (off, none, all)
_SEED = Range(low=0, high=2**32 - 1, why="numpy seeds are 32-bit and non-negative")
_PROBABILITY = Range(low=0, high=1, open_high=True)
# Adam and AdamW move each weight by about lr per step: above 1 nothing can be learned (and from
# about 3e37 the first step overflows float32).
_LEARNING_RATE = Range(low=0, high=1, open_low=True)
_SPLIT = Range(low=0, why="a split cannot hold fewer than no items")

# key -> its valid values; every int and float field of the config is here (a test checks).
RANGES: dict[str, Range] = {
    "data.image_size": _COUNT,
    "data.num_frames": _COUNT,
    "data.train_size": _SPLIT,
    "data.val_size": _SPLIT,
    "data.test_size": _SPLIT,
    "data.seed": _SEED,
    "data.min_word_count": _COUNT,
    "data.max_caption_length": _COUNT,
    "data.max_captions_per_item": _COUNT,
    "data.num_workers": _NATURAL,
    "encoder.feature_dim": _COUNT,
    "encoder.temporal_hidden_dim": _COUNT,
    "encoder.grid_size": _NATURAL,
    "decoder.embed_dim": _COUNT,
    "decoder.hidden_dim": _COUNT,
    "decoder.num_layers": _COUNT,
    "decoder.dropout": _PROBABILITY,
    "decoder.attention_dim": _NATURAL,
    "decoder.attention_reg": Range(low=0, why="0 disables the regularisation"),
    "decoder.heads": _COUNT,
    "decoder.ff_dim": Range(low=0, why="0 is four times decoder.hidden_dim"),
    "classifier.hidden_dim": _COUNT,
    "classifier.num_layers": _COUNT,
    "classifier.dropout": _PROBABILITY,
    "classifier.num_outputs": Range(0, 1, why="0 is one output per class, 1 a single sigmoid"),
    "classifier.clip_length": _COUNT,
    "classifier.clip_stride": _COUNT,
    "train.epochs": _COUNT,
    "train.batch_size": _COUNT,
    "train.lr": _LEARNING_RATE,
    "train.encoder_lr": _LEARNING_RATE,
    "train.weight_decay": _NATURAL,
    "train.adam_eps": Range(low=0, open_low=True),
    "train.grad_clip": Range(low=0, why="0 disables clipping"),
    "train.warmup_steps": _NATURAL,
    "train.seed": _SEED,
    "train.grad_accum_steps": _COUNT,
    "train.early_stopping_patience": Range(low=0, why="0 disables early stopping"),
    "train.checkpoint_every_steps": Range(low=0, why="0 checkpoints at epoch ends only"),
    "train.log_every_steps": _COUNT,
    "train.val_max_items": Range(low=0, why="0 validates on the whole split"),
    "train.scheduled_sampling_max": Range(low=0, high=1),
    "train.scheduled_sampling_ramp_epochs": _NATURAL,
    "train.scst_samples": _COUNT,
    "eval.beam_size": _COUNT,
    "eval.max_length": _COUNT,
    "eval.length_penalty": Range(),
    "eval.no_repeat_ngram": Range(low=0, why="0 turns n-gram blocking off"),
    "eval.repetition_penalty": Range(low=0, open_low=True, why="1.0 turns the penalty off"),
    "eval.beam_groups": _COUNT,
    "eval.diversity_strength": Range(low=0, why="0 adds no diversity term"),
    "eval.batch_size": _COUNT,
    "eval.bootstrap": Range(low=0, why="0 turns the intervals off"),
    "eval.reference_loo_max_held_out": Range(low=0, why="0 holds out every reference"),
    "eval.attention_maps": Range(low=0, why="0 writes no attention maps"),
}
# Generated datasets must have items where training reads them: fit trains on `train` and
# validates on `val` after every epoch (for best.pt and early stopping).
NEEDED_SPLITS = {
    "data.train_size": "there is nothing to train on",
    "data.val_size": "fit validates after every epoch to choose best.pt",
}

# The keys that decide which parameters a model has and their shapes (lrcn.build): a checkpoint's
# weights fit only the values they were trained with, so an override of a saved config (evaluate,
# caption, classify, train --resume) that changes one is refused naming it, not left to fail as a
# list of mismatched tensors. (encoder.grid_size pools without parameters: it may change.)
WEIGHT_KEYS = (
    "task",
    "encoder.name",
    "encoder.feature_dim",
    "encoder.grid_before_pool",
    "encoder.temporal",
    "encoder.temporal_hidden_dim",
    "decoder.variant",
    "decoder.embed_dim",
    "decoder.hidden_dim",
    "decoder.num_layers",
    "decoder.attention_dim",
    "decoder.attention_gate",
    "decoder.heads",
    "decoder.ff_dim",
    "classifier.hidden_dim",
    "classifier.num_layers",
    "classifier.num_outputs",
    "classifier.single_bias",
)
