"""Configuration: nested dataclasses loaded from YAML, with dotted ``key=value`` overrides.

Unknown keys and wrong types are errors that name the key, the file and the valid choices, so a
typo never silently does nothing.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lrcn.config_ranges import (  # noqa: F401  (Range: re-exported)
    NEEDED_SPLITS,
    RANGES,
    WEIGHT_KEYS,
    Range,
)
from lrcn.config_values import coerce_value
from lrcn.config_yaml import (
    SHOWN_CHARACTERS,
    Refused,
    dump_yaml,
    load_yaml,
    parse_yaml,
    shown,
    shown_name,
)
from lrcn.errors import LrcnError
from lrcn.io import write_text_atomic
from lrcn.plugins import resolve_plugins
from lrcn.recipes import resolve_config

# What captions are scored with unless told otherwise (eval.metrics, `lrcn score --metrics`,
# `lrcn.metrics.score`), and the tokenizers scoring offers (`lrcn.metrics.tokenizer`).
DEFAULT_METRICS = ("bleu", "meteor", "rouge", "cider")
TOKENIZERS = ("auto", "ptb", "python", "none")


@dataclass
class DataConfig:
    """Where examples come from and how they are shaped."""

    dataset: str = (
        "shapes"  # a registered synthetic dataset (shapes, moving_shapes, moving_line) | manifest
    )
    manifest: str | None = None  # folder with <split>.jsonl (from `lrcn prepare`)
    image_size: int = 64  # input side in pixels (square)
    num_frames: int = 16  # frames per video clip
    frame_sampling: str = "uniform"  # uniform | clips (video)
    train_size: int = 8000  # synthetic datasets only
    val_size: int = 500
    test_size: int = 500
    seed: int = 0  # synthetic data generation
    fresh_images: bool = False  # task attributes: new generated training images every epoch
    variant: str = "classic"  # moving_line: classic | square4
    min_word_count: int = 1
    max_caption_length: int = 24  # tokens, <start>/<end> excluded; longer captions are cut
    # a manifest item with more captions is refused: real datasets have 5-80 (COCO 5-7, Flickr 5,
    # MSR-VTT 20, MSVD up to ~80); thousands are a preparation mistake (a constant image column)
    max_captions_per_item: int = 100
    num_workers: int = 0
    on_error: str = "raise"  # raise | skip: what to do with an unreadable image/video
    features: str | None = None  # feature store folder; set to train on cached CNN features
    features_dtype: str = "float16"  # float16 | float32 rows in the feature store


@dataclass
class EncoderConfig:
    """The CNN and, for video, how its per-frame features are combined."""

    name: str = "small_cnn"  # see lrcn.models.encoders.available_encoders()
    weights: str = "none"  # none | imagenet | path/to/state_dict.pt
    freeze: bool = False  # True: the CNN is not trained (no gradients, eval-mode BatchNorm)
    feature_dim: int = 256  # small_cnn only: size of its last hidden layer
    channels_last: bool = False  # small_cnn: 1.4x faster on CPU; torchrun != 1 process bitwise
    temporal: str = "mean"  # video: mean | lstm (S2VT-style temporal LSTM)
    temporal_hidden_dim: int = 512
    grid_size: int = 0  # attention decoders: pool the CNN's grid to S x S cells (0: its own grid)
    grid_before_pool: bool = False  # small_cnn: attention grid before its last pool (8x8 at 64 px)


@dataclass
class DecoderConfig:
    """The caption LSTM."""

    variant: str = "show_tell"
    embed_dim: int = 256
    hidden_dim: int = 512
    num_layers: int = 1
    dropout: float = 0.0
    packed: bool = True  # False: fused CPU LSTM, 2.3x faster; torchrun != 1 process bitwise
    # attention wirings (show_attend_tell, temporal_attention) only; the others ignore these
    attention_dim: int = 0  # size of the additive attention's space; 0: hidden_dim
    attention_gate: bool = False  # Xu et al.'s gating scalar beta = sigmoid(f_beta(h))
    attention_reg: float = 0.0  # lambda of the doubly stochastic regularisation; 0: off
    # transformer wirings only: attention heads (hidden_dim a multiple) and feed-forward size
    heads: int = 4
    ff_dim: int = 0  # 0: 4 * hidden_dim


@dataclass
class ClassifierConfig:
    """The activity-recognition LSTM head."""

    hidden_dim: int = 256
    num_layers: int = 1
    dropout: float = 0.0
    prediction: str = "mean"  # mean (LRCN: average per-frame predictions) | last
    num_outputs: int = 0  # 0: one per class; 1: a single sigmoid output (binary, Keras seed)
    single_bias: bool = False  # one LSTM bias per gate, as Keras (exact Keras parameter counts)
    clip_length: int = 16  # clip-level evaluation of long videos
    clip_stride: int = 8


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping."""

    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adamw"  # adamw | adam
    lr: float = 2e-3
    encoder_lr: float = 1e-4  # fine-tuned pretrained CNNs
    weight_decay: float = 0.0
    adam_eps: float = 1e-8
    grad_clip: float = 5.0  # 0 disables
    scheduler: str = "cosine"  # cosine | step | none
    warmup_steps: int = 0
    init: str = "pytorch"  # pytorch | keras (glorot/orthogonal/forget-bias 1, as Keras does)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision on CUDA only
    sync_batchnorm: bool = True  # torchrun: BatchNorm statistics of the global batch, as 1 process
    grad_accum_steps: int = 1
    monitor: str = "auto"  # metric for best.pt / early stopping; auto: Bleu_4 or accuracy
    early_stopping_patience: int = 0  # epochs without improvement; 0 disables
    checkpoint_every_steps: int = 0  # 0: epoch ends only
    log_every_steps: int = 20
    val_max_items: int = 0  # 0: the whole validation split
    init_from: str | None = (
        None  # checkpoint whose weights start this run (e.g. SCST after cross-entropy)
    )
    scheduled_sampling_max: float = (
        0.0  # probability of feeding the model's own word, reached after the ramp
    )
    scheduled_sampling_ramp_epochs: int = 5  # linear ramp from 0 over this many epochs
    scst: bool = False  # self-critical sequence training (reward CIDEr-D, see scst_baseline)
    scst_samples: int = 5  # sampled captions per image
    scst_baseline: str = "greedy"  # greedy (Rennie et al.) | mean (of the image's other samples)
    progress: bool = True  # tqdm bars


@dataclass
class EvalConfig:
    """Decoding and scoring."""

    split: str = "test"
    beam_size: int = 1
    max_length: int = 24
    length_penalty: float = 0.0  # beam: score / length**penalty
    # decoding controls (lrcn.decoding_controls); the defaults are off and decode as before
    no_repeat_ngram: int = 0  # n: no caption holds an n-gram twice; 0: off
    repetition_penalty: float = 1.0  # CTRL's penalty on already generated tokens; 1.0: off
    beam_groups: int = 1  # diverse beam search: groups of beam_size / beam_groups beams
    diversity_strength: float = 0.0  # lambda of the groups' Hamming diversity term
    batch_size: int = 128
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    tokenizer: str = "auto"  # one of TOKENIZERS; see lrcn.metrics.tokenizer
    reference_points: bool = True  # leave-one-out reference and fixed-caption baseline
    bootstrap: int = 1000  # resamples for the metrics' 95% intervals (<metric>_ci95); 0: none
    # leave-one-out reference: an item with more references holds out a seeded sample of this
    # many (each still scored against all its others, so the cost is linear); 0: every one
    reference_loo_max_held_out: int = 20
    # attention decoders: eval/<split>_attention.npz keeps the maps of at most this many items
    # (about 2 KB each at 14 x 14 cells, float16); 0 writes none
    attention_maps: int = 5000


@dataclass
class Config:
    """One experiment."""

    task: str = "caption"  # caption | video_caption | activity | attributes (encoder pretraining)
    # plug-in modules (names or .py files) imported before anything is built; a run records here
    # also the installed and --plugin ones whose names it uses (lrcn.plugins)
    plugins: list[str] = field(default_factory=list)
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        """The config as nested plain dicts (what YAML files and checkpoints hold)."""
        return dataclasses.asdict(self)


def _valid_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        if dataclasses.is_dataclass(hints[f.name]):
            keys.extend(_valid_keys(hints[f.name], name + "."))
        else:
            keys.append(name)
    return keys


def _apply(obj: Any, data: dict[str, Any], source: str, prefix: str = "") -> None:
    if not isinstance(data, dict):
        raise LrcnError(f"{source}: `{prefix.rstrip('.') or 'top level'}` must be a mapping.")
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in data.items():
        dotted = prefix + str(key)
        if key not in names:
            valid = ", ".join(_valid_keys(type(obj), prefix))
            raise LrcnError(
                f"{source}: unknown config key {shown_name(dotted)}; valid keys are: {valid}."
            )
        if dataclasses.is_dataclass(hints[key]):
            _apply(getattr(obj, key), value, source, dotted + ".")
        else:
            setattr(obj, key, coerce_value(value, hints[key], dotted, source))


def _value(cfg: Config, key: str) -> Any:
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _check_ranges(cfg: Config, source: str) -> None:
    """Refuse a numeric value outside its ``RANGES`` entry, naming the key, value and fix."""
    defaults = Config()
    for key, valid in RANGES.items():
        value = _value(cfg, key)
        if not valid.admits(value):
            why = f" ({valid.why})" if valid.why else ""
            if isinstance(value, int) and not -(2**63) <= value < 2**63:
                why = " (more than 64 bits)"
            raise LrcnError(
                f"{source}: `{key}` is {shown(value)}, which cannot work{why}; set it to "
                f"{valid.describe(isinstance(value, int))} (default {_value(defaults, key)!r})."
            )
    if cfg.data.dataset != "manifest":
        for key, why in NEEDED_SPLITS.items():
            if _value(cfg, key) < 1:
                raise LrcnError(
                    f"{source}: `{key}` is {_value(cfg, key)}, an empty split of the generated "
                    f"{cfg.data.dataset} dataset, but {why}; set it to at least 1 "
                    f"(default {_value(defaults, key)})."
                )


def _validate(cfg: Config, source: str) -> None:
    choices = {
        "data.frame_sampling": (cfg.data.frame_sampling, ("uniform", "clips")),
        "data.on_error": (cfg.data.on_error, ("raise", "skip")),
        "data.features_dtype": (cfg.data.features_dtype, ("float16", "float32")),
        "encoder.temporal": (cfg.encoder.temporal, ("mean", "lstm")),
        "classifier.prediction": (cfg.classifier.prediction, ("mean", "last")),
        "train.optimizer": (cfg.train.optimizer, ("adamw", "adam")),
        "train.scheduler": (cfg.train.scheduler, ("cosine", "step", "none")),
        "train.init": (cfg.train.init, ("pytorch", "keras")),
        "train.scst_baseline": (cfg.train.scst_baseline, ("greedy", "mean")),
        "eval.tokenizer": (cfg.eval.tokenizer, TOKENIZERS),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise LrcnError(
                f"{source}: `{key}` is {shown(value)}; choose one of {', '.join(allowed)}."
            )
    _check_ranges(cfg, source)
    if cfg.eval.beam_size % cfg.eval.beam_groups:
        raise LrcnError(
            f"{source}: `eval.beam_groups` {cfg.eval.beam_groups} does not divide `eval.beam_size` "
            f"{cfg.eval.beam_size}; set eval.beam_groups to a divisor of the beam size (1: off)."
        )
    if cfg.train.scst and cfg.train.scst_baseline == "mean" and cfg.train.scst_samples < 2:
        raise LrcnError(
            f"{source}: `train.scst_baseline: mean` compares each sample with the image's other "
            f"samples but `train.scst_samples` is {cfg.train.scst_samples}; set it to at least 2."
        )
    if cfg.data.dataset == "manifest" and not cfg.data.manifest:
        raise LrcnError(
            f"{source}: `data.dataset: manifest` needs `data.manifest` (a folder made by `lrcn prepare`)."
        )
    cfg.plugins = resolve_plugins(cfg.plugins, cfg.to_dict(), source)


def _override_source(text: str) -> str:
    """``override `train.epochs=2``` for messages, a long override cut to its first characters."""
    if len(text) <= SHOWN_CHARACTERS:
        return f"override `{text}`"
    return f"override `{text[:SHOWN_CHARACTERS]}...` ({len(text)} characters)"


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.epochs=2"`` -> ``("train.epochs", 2)``; values are parsed as YAML scalars (YAML
    1.2's core schema, as config files: ``yes`` stays a string); text that is not YAML stays text.

    Raises:
        LrcnError: no ``=``, or a value the config loader refuses (``0x10``, nested aliases...).
    """
    if "=" not in text:
        raise LrcnError(
            f"{_override_source(text)} is not of the form key=value (e.g. train.epochs=2)."
        )
    key, raw = text.split("=", 1)
    try:
        value = parse_yaml(raw) if raw != "" else ""
    except Refused as exc:
        raise LrcnError(f"{_override_source(text)}: {exc.reason}.") from None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _nest(key: str, value: Any) -> dict[str, Any]:
    data: dict[str, Any] = {}
    cursor = data
    parts = key.split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return data


def config_from_dict(data: dict[str, Any], source: str = "config") -> Config:
    """Build a validated ``Config`` from a nested dict (e.g. the one stored in a checkpoint)."""
    cfg = Config()
    _apply(cfg, data or {}, source)
    _validate(cfg, source)
    return cfg


def load_config(path: str | Path | None, overrides: Sequence[str] | None = None) -> Config:
    """Load a YAML config and apply dotted overrides (`apply_overrides`: the rule every command's
    ``--set`` follows).

    Args:
        path: YAML file, a recipe name (``shapes``: see `lrcn.recipes`), or None for the defaults.
        overrides: ``["train.epochs=2", "data.image_size=32", "eval={beam_size: 3}"]``.

    Raises:
        LrcnError: missing file, bad YAML, unknown key (the message lists the valid keys), wrong type.
    """
    cfg = Config()
    source = str(path) if path else "defaults"
    if path is not None:
        resolved = resolve_config(path)
        if resolved != Path(path):  # a recipe name: messages name its file
            source = str(resolved)
        path = resolved
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise LrcnError(
                f"{path}: config file not found; pass an existing YAML file or a recipe name (`lrcn recipes` lists them)."
            ) from None
        except (IsADirectoryError, UnicodeDecodeError, PermissionError) as exc:
            raise LrcnError(
                f"{path}: cannot read the config ({exc.__class__.__name__}); pass a YAML file."
            ) from None
        data = load_yaml(text, str(path)) or {}
        _apply(cfg, data, source)
    apply_overrides(cfg, overrides or [])
    _validate(cfg, source)
    return cfg


def load_config_over(cfg: Config, overrides: Sequence[str]) -> Config:
    """Apply dotted overrides to a trained model's saved config by the same rule as `load_config`;
    ``cfg`` itself is left unchanged.

    Raises:
        LrcnError: what `apply_overrides` refuses, or a change of one of `WEIGHT_KEYS` (the
            model's weights fit only the value they were trained with), naming the key.
    """
    saved, cfg = cfg, config_from_dict(cfg.to_dict())
    apply_overrides(cfg, overrides)
    for key in WEIGHT_KEYS:
        before, after = _value(saved, key), _value(cfg, key)
        if before != after:
            raise LrcnError(
                f"`{key}` cannot change from {shown(before)} to {shown(after)} over a trained "
                f"model's config: its weights were trained with {shown(before)} and fit no other "
                f"value; drop the override, or train a new run with it (`-c CONFIG {key}=...`)."
            )
    _validate(cfg, "overrides")
    return cfg


def _checked_override(text: str, valid_keys: list[str]) -> tuple[str, dict[str, Any]]:
    """(the override's name for messages, its nested data); an unknown key is refused."""
    key, value = parse_override(text)
    if key not in valid_keys and not any(k.startswith(key + ".") for k in valid_keys):
        raise LrcnError(
            f"{_override_source(text)}: unknown config key {shown_name(key)}; valid keys "
            f"are: {', '.join(valid_keys)}."
        )
    return _override_source(text), _nest(key, value)


def apply_overrides(cfg: Config, overrides: Sequence[str]) -> Config:
    """The one override rule of every command (train, evaluate, caption, classify,
    extract-features, demo, ``train --resume``): each ``key=value`` sets one key
    (``train.epochs=2``) or, with a mapping, part of a section (``eval={beam_size: 3}``); an
    unknown key or a value of the wrong type is refused naming the override. Later overrides win.
    ``cfg`` is changed in place and returned; ranges are checked by the caller, on the whole
    config (`load_config`, `load_config_over`).
    """
    valid_keys = _valid_keys(Config)
    for text in overrides:
        source, data = _checked_override(text, valid_keys)
        _apply(cfg, data, source)
    return cfg


def overridden_keys(overrides: Sequence[str]) -> list[str]:
    """The dotted keys ``overrides`` set, a section override by each key of its mapping
    (``eval={beam_size: 3}`` -> ``eval.beam_size``), so a command that must keep some keys
    (``train --resume``) judges a section override as it judges the keys one by one. Refuses what
    `apply_overrides` refuses."""
    valid_keys = _valid_keys(Config)
    keys: list[str] = []
    for text in overrides:
        source, data = _checked_override(text, valid_keys)
        _apply(Config(), data, source)  # the same refusals (unknown key, type) as applying it
        keys += _leaf_keys(data)
    return keys


def _leaf_keys(data: dict[str, Any], prefix: str = "") -> list[str]:
    # a dict value is always a section: no config field holds a mapping
    out = []
    for key, value in data.items():
        if isinstance(value, dict):
            out += _leaf_keys(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""

    write_text_atomic(path, dump_yaml(cfg.to_dict()))
