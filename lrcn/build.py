"""The one place a ``Config`` becomes sources, datasets and models.

Names in a config (dataset, encoder, decoder wiring, metrics) are checked here against the
registries (:func:`check_config`), so a new entry registered anywhere, even in a user's own script,
is accepted with no edit to the config module.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from lrcn.config import Config
from lrcn.config_yaml import shown, shown_name
from lrcn.data.datasets import Source
from lrcn.data.manifest import read_manifest
from lrcn.data.sources import ManifestImageSource, ManifestVideoSource
from lrcn.data.store import FeatureSource, read_store_header
from lrcn.data.synthetic import available_datasets, find_dataset
from lrcn.errors import LrcnError
from lrcn.metrics import SCORERS
from lrcn.models.attributes import AttributeClassifier
from lrcn.models.captioner import Captioner, ImageCaptioner, MeanPool, TemporalLSTM, VideoCaptioner
from lrcn.models.classifier import ActivityClassifier
from lrcn.models.decoder import LSTMDecoder
from lrcn.models.encoders import (
    ENCODERS,
    Encoder,
    create_encoder,
    encoder_spec,
)
from lrcn.models.init import keras_init_
from lrcn.models.wirings import WIRINGS, available_wirings, get_wiring
from lrcn.models.wirings.transformer import Transformer
from lrcn.task import get_task, task_names


def check_config(cfg: Config, source: str = "config") -> None:
    """Refuse, in one sentence naming the key, a name no registry knows.

    Args:
        cfg: the loaded config.
        source: where it came from (file name), for the message.

    Raises:
        LrcnError: unknown task, dataset for the task, encoder, decoder wiring or metric, or a
            ``train.monitor`` the task's validation does not report.
    """
    try:
        task = get_task(cfg.task)
    except LrcnError:
        raise LrcnError(
            f"{source}: `task` is {shown(cfg.task)}; choose one of {', '.join(task_names())} "
            "(or register your own)."
        ) from None
    monitors = task.validation_metrics
    if cfg.train.monitor not in ("auto", *monitors):
        raise LrcnError(
            f"{source}: `train.monitor` is {shown(cfg.train.monitor)}, which validation does not "
            f"report for task {cfg.task}; choose auto or one of {', '.join(monitors)}."
        )
    names = [
        ("data.dataset", [cfg.data.dataset], available_datasets(cfg.task)),
        ("encoder.name", [cfg.encoder.name], ENCODERS),
        ("eval.metrics", list(cfg.eval.metrics), SCORERS),
    ]
    if task.captions:
        names.append(("decoder.variant", [cfg.decoder.variant], WIRINGS))
    for key, values, known in names:
        for value in values:
            if value not in known and (key, value) != ("data.dataset", "manifest"):
                choices = ["manifest", *known] if key == "data.dataset" else known
                raise LrcnError(
                    f"{source}: `{key}` is {shown(value)}, which is not registered for task "
                    f"{cfg.task}; choose one of {', '.join(choices)} (or register your own)."
                )
    _check_image_size(cfg, source)
    if task.captions:
        _check_heads(cfg, source)


def _check_image_size(cfg: Config, source: str) -> None:
    """A ViT cuts images into patches: refuse, in one sentence, a side its patch does not divide."""
    multiple = encoder_spec(cfg.encoder.name).input_multiple
    if cfg.data.image_size % multiple:
        fit = max(multiple, cfg.data.image_size // multiple * multiple)
        raise LrcnError(
            f"{source}: `data.image_size` {cfg.data.image_size} is not a multiple of encoder "
            f"{cfg.encoder.name}'s {multiple}-pixel patches; set data.image_size to e.g. {fit}."
        )


def _check_heads(cfg: Config, source: str) -> None:
    """A Transformer wiring splits ``decoder.hidden_dim`` among ``decoder.heads``: refuse, in one
    sentence, a width the heads do not divide (the others ignore both keys)."""
    hidden, heads = cfg.decoder.hidden_dim, cfg.decoder.heads
    if issubclass(get_wiring(cfg.decoder.variant), Transformer) and hidden % heads:
        raise LrcnError(
            f"{source}: `decoder.hidden_dim` {hidden} is not a multiple of `decoder.heads` "
            f"{heads} (decoder.variant {cfg.decoder.variant} splits its width among its heads); "
            f"set decoder.heads to a divisor of {hidden}, e.g. {math.gcd(hidden, heads)}."
        )


def normalisation(cfg: Config) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std the configured encoder's weights expect."""
    spec = encoder_spec(cfg.encoder.name)
    return spec.mean, spec.std


def _split_size(cfg: Config, split: str) -> int:
    sizes = {"train": cfg.data.train_size, "val": cfg.data.val_size, "test": cfg.data.test_size}
    if split not in sizes:
        raise LrcnError(f"unknown split `{split}`; choose train, val or test.")
    return sizes[split]


def build_source(cfg: Config, split: str) -> Source:
    """The captioning examples of one split (image or video), from the feature store when set."""
    if cfg.data.features:
        expected = store_header(cfg)
        _check_store_kind(cfg, split, expected)
        return FeatureSource(
            cfg.data.features, split, build_source_raw(cfg, split), expected=expected
        )
    return build_source_raw(cfg, split)


def _synthetic_split(builder: Callable[..., Any], cfg: Config, split: str) -> Any:
    """One split of a registered synthetic dataset, sized and seeded by ``cfg.data``."""
    mean, std = normalisation(cfg)
    return builder(
        split=split,
        size=_split_size(cfg, split),
        seed=cfg.data.seed,
        data=cfg.data,
        mean=mean,
        std=std,
    )


def synthetic_split(cfg: Config, split: str) -> Any:
    """One split of the synthetic dataset ``data.dataset`` registered for ``cfg.task`` (a task of
    one's own builds its data so: ``@register_dataset(name, task=...)``).

    Raises:
        LrcnError: no such dataset is registered for the task.
    """
    entry = find_dataset(cfg.data.dataset, cfg.task)
    if entry is None:
        raise LrcnError(
            f"data.dataset {shown_name(cfg.data.dataset)} is not registered for task {cfg.task}; "
            f"choose one of {', '.join(available_datasets(cfg.task))}."
        )
    return _synthetic_split(entry.builder, cfg, split)


def build_source_raw(cfg: Config, split: str) -> Source:
    """The captioning examples of one split as pixels (embedded generator or manifest)."""
    synthetic = find_dataset(cfg.data.dataset, cfg.task)
    if synthetic is not None:
        return _synthetic_split(synthetic.builder, cfg, split)
    mean, std = normalisation(cfg)
    if cfg.data.dataset == "manifest":
        records = read_manifest(cfg.data.manifest, split, cfg.data.max_captions_per_item)
        if not get_task(cfg.task).video:
            return ManifestImageSource(records, cfg.data.image_size, mean, std)
        return ManifestVideoSource(records, cfg.data.image_size, mean, std, cfg.data.num_frames)
    raise LrcnError(
        f"data.dataset {shown_name(cfg.data.dataset)} does not fit task `{cfg.task}`; see configs/ for working pairs."
    )


class ActivitySourceDataset(Dataset):
    """Activity items ``{"frames": (T, C, H, W), "label": int}`` from a manifest source."""

    def __init__(self, source: Source) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        example = self.source.example(index)
        return {"frames": example.pixels, "label": int(example.label)}


def build_activity_dataset(cfg: Config, split: str) -> tuple[Dataset, list[str]]:
    """Activity dataset of one split and its class names."""
    synthetic = find_dataset(cfg.data.dataset, cfg.task)
    if synthetic is not None:
        data = _synthetic_split(synthetic.builder, cfg, split)
        return data, data.class_names
    if cfg.data.dataset == "manifest":
        labels_file = Path(cfg.data.manifest) / "labels.json"
        try:
            labels = json.loads(labels_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise LrcnError(
                f"{labels_file}: missing or unreadable; re-run `lrcn prepare` for this dataset."
            ) from None
        return ActivitySourceDataset(build_source_raw(cfg, split)), labels
    raise LrcnError(
        f"data.dataset {shown_name(cfg.data.dataset)} does not fit task {cfg.task}; use manifest "
        f"or one of {', '.join(available_datasets(cfg.task))}."
    )


def build_attribute_dataset(cfg: Config, split: str) -> Dataset:
    """One split of an attributes dataset (encoder pretraining): items ``images`` and
    ``targets``; the dataset's ``heads`` maps head names to their class counts."""
    synthetic = find_dataset(cfg.data.dataset, cfg.task)
    if synthetic is None:
        raise LrcnError(
            f"data.dataset {shown_name(cfg.data.dataset)} has no attribute labels for task "
            f"{cfg.task}; choose one of {', '.join(available_datasets(cfg.task))}."
        )
    return _synthetic_split(synthetic.builder, cfg, split)


def build_encoder(cfg: Config) -> Encoder:
    """The configured CNN: any registered encoder, the seed CNN included."""
    options = {"feature_dim": cfg.encoder.feature_dim, "image_size": cfg.data.image_size}
    if cfg.encoder.channels_last:  # only then: builders registered elsewhere need not know it
        options["channels_last"] = True
    if cfg.encoder.grid_before_pool:  # small_cnn's finer attention grid; likewise only then
        options["grid_before_pool"] = True
    return create_encoder(
        cfg.encoder.name,
        weights=cfg.encoder.weights,
        freeze=cfg.encoder.freeze,
        grid_size=cfg.encoder.grid_size,
        **options,
    )


def attention_input(cfg: Config) -> str | None:
    """What the configured decoder attends over (``grid``, ``frames``) or None; refuses, naming
    ``decoder.variant``, a wiring whose input does not exist for the task."""
    task = get_task(cfg.task)
    if not task.captions:
        return None
    attends = get_wiring(cfg.decoder.variant).attends
    wanted = "frames" if task.video else "grid"
    if attends is not None and attends != wanted:
        raise LrcnError(
            f"decoder.variant {cfg.decoder.variant} attends over {attends}, which task "
            f"{cfg.task} does not have; choose a wiring that attends over {wanted} "
            f"({', '.join(n for n in available_wirings() if get_wiring(n).attends == wanted)})."
        )
    return attends


def build_captioner(cfg: Config, vocab_size: int, encoder: Encoder | None = None) -> Captioner:
    """Image or video captioner as configured; ``encoder`` reuses an already built CNN.

    An attention decoder reads the CNN's grid cells (images: ``encoder.grid``, (B, N, D)) or, for
    video, the frame features themselves (``encoder.temporal: mean``, (B, T, D)) or a temporal
    LSTM's output at every frame (``encoder.temporal: lstm``, (B, T, H)).
    """
    encoder = encoder or build_encoder(cfg)
    attends = attention_input(cfg)
    feature_dim = encoder.grid_dim if attends == "grid" else encoder.feature_dim
    temporal: nn.Module | None = None
    video = get_task(cfg.task).video
    if video and attends is None:
        temporal = (
            MeanPool(feature_dim)
            if cfg.encoder.temporal == "mean"
            else TemporalLSTM(feature_dim, cfg.encoder.temporal_hidden_dim)
        )
        feature_dim = temporal.output_dim
    elif attends == "frames" and cfg.encoder.temporal == "lstm":
        # attend over the temporal LSTM's output at every frame; "mean": over the frames themselves
        temporal = TemporalLSTM(feature_dim, cfg.encoder.temporal_hidden_dim, every_frame=True)
        feature_dim = temporal.output_dim
    decoder = LSTMDecoder(
        vocab_size,
        feature_dim,
        embed_dim=cfg.decoder.embed_dim,
        hidden_dim=cfg.decoder.hidden_dim,
        num_layers=cfg.decoder.num_layers,
        dropout=cfg.decoder.dropout,
        variant=cfg.decoder.variant,
        packed=cfg.decoder.packed,
        attention_dim=cfg.decoder.attention_dim,
        attention_gate=cfg.decoder.attention_gate,
        heads=cfg.decoder.heads,
        ff_dim=cfg.decoder.ff_dim,
    )
    cls = VideoCaptioner if video else ImageCaptioner
    model = cls(encoder, decoder, temporal)
    model.attention_reg = cfg.decoder.attention_reg if attends is not None else 0.0
    return model


def build_classifier(cfg: Config, num_classes: int) -> nn.Module:
    """The activity classifier: TimeDistributed(CNN) -> LSTM -> per-class outputs."""
    encoder = build_encoder(cfg)
    num_outputs = cfg.classifier.num_outputs or num_classes
    if num_outputs == 1 and num_classes != 2:
        raise LrcnError(
            f"classifier.num_outputs=1 (sigmoid) needs 2 classes, the data has {num_classes}; set it to 0."
        )
    return ActivityClassifier(
        encoder,
        encoder.feature_dim,
        num_outputs,
        hidden_dim=cfg.classifier.hidden_dim,
        num_layers=cfg.classifier.num_layers,
        dropout=cfg.classifier.dropout,
        prediction=cfg.classifier.prediction,
        single_bias=cfg.classifier.single_bias,
    )


def build_attribute_model(cfg: Config) -> AttributeClassifier:
    """The encoder with one linear head per attribute of the configured dataset."""
    heads = build_attribute_dataset(cfg, "val").heads  # a lazy split: nothing is drawn
    return AttributeClassifier(build_encoder(cfg), heads)


def build_model(cfg: Config, vocab_size: int = 0, num_classes: int = 0) -> nn.Module:
    """The model ``cfg.task`` builds (`lrcn.task.Task.build_model`), initialised as ``train.init``
    says."""
    model = get_task(cfg.task).build_model(cfg, vocab_size=vocab_size, num_classes=num_classes)
    if cfg.train.init == "keras":
        pretrained = cfg.encoder.weights not in ("none", "")
        for name, child in model.named_children():
            # never re-draw pretrained weights
            if not (pretrained and name in ("encoder", "frame_encoder")):
                keras_init_(child)
    return model


# The feature store's header lives here: it reads the config and the encoder registry, which the
# store itself (lrcn.data.store) must not.
def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        raise LrcnError(
            f"{path}: encoder weights file not found or unreadable; pass an existing file or "
            "encoder.weights=imagenet|none."
        ) from None
    return digest.hexdigest()


def store_header(cfg: Config) -> dict[str, Any]:
    """What the configuration says a feature store's rows must have been made with.

    A decoder attending over the image grid (``decoder.variant`` show_attend_tell) needs a store
    of grids, (N, N_cells, D): its header says ``grid: true`` and the ``encoder.grid_size`` it was
    pooled to. Video stores hold per-frame vectors whatever the decoder (temporal attention reads
    them as they are).

    Raises:
        LrcnError: ``encoder.freeze`` is false (stored features of a trained encoder go stale).
    """
    if not cfg.encoder.freeze:
        raise LrcnError(
            "encoder.freeze is false, but a feature store holds a frozen encoder's features "
            "(training would change the encoder and leave them stale); set encoder.freeze=true, "
            "or unset data.features to train the encoder on pixels."
        )
    weights = cfg.encoder.weights
    spec = ENCODERS.find(cfg.encoder.name)
    # encoder.feature_dim only shapes encoders whose builder takes it (small_cnn); for the others a
    # changed value must not invalidate an expensive store.
    sized = spec is None or "feature_dim" in inspect.signature(spec.builder).parameters
    video = get_task(cfg.task).video
    synthetic = cfg.data.dataset in available_datasets()
    header: dict[str, Any] = {
        "encoder": cfg.encoder.name,
        "weights": weights,
        "encoder_feature_dim": cfg.encoder.feature_dim if sized else None,
        "image_size": cfg.data.image_size,
        "num_frames": cfg.data.num_frames if video else None,
        "dtype": cfg.data.features_dtype,
        "dataset": cfg.data.dataset,
        "data_seed": cfg.data.seed if synthetic else None,
    }
    if attention_input(cfg) == "grid":
        # (N_cells, D) rows; vector stores carry neither key, so stores made before grids stay valid
        header.update(grid=True, grid_size=cfg.encoder.grid_size)
    if weights in ("none", ""):
        # Random weights: extraction seeds the encoder's init with train.seed, as fit does.
        header["init_seed"] = cfg.train.seed
    elif weights != "imagenet":
        header["weights_sha256"] = _file_sha256(Path(weights))
    return header


def _check_store_kind(cfg: Config, split: str, expected: dict[str, Any]) -> None:
    """Refuse, naming the config key that decides it, a store of vectors for a decoder that attends
    over the grid, a store of grids for one that does not, or grids pooled to another size."""
    found = read_store_header(cfg.data.features, split)
    if found is None:  # no store yet: FeatureSource says what to run
        return
    folder, variant = cfg.data.features, cfg.decoder.variant
    rerun = f"re-run `lrcn extract-features` with this config (data.features={folder})"
    if expected.get("grid") and not found.get("grid"):
        raise LrcnError(
            f"data.features {folder} holds pooled vectors (one per image) but decoder.variant "
            f"{variant} attends over the grid; {rerun} to store grids, or point data.features at "
            "a grid store."
        )
    if found.get("grid") and not expected.get("grid"):
        raise LrcnError(
            f"data.features {folder} holds grids (N_cells x D per image) for an attention decoder "
            f"but decoder.variant {variant} reads one pooled vector; set decoder.variant to a "
            f"wiring that attends over the grid (show_attend_tell), or point data.features at a "
            f"vector store (or {rerun} into another folder)."
        )
    if found.get("grid") and found.get("grid_size") != expected.get("grid_size"):
        raise LrcnError(
            f"data.features {folder} holds grids pooled with encoder.grid_size="
            f"{found.get('grid_size')} but the config sets encoder.grid_size={cfg.encoder.grid_size}; "
            f"set encoder.grid_size={found.get('grid_size')}, or {rerun} to rebuild the store."
        )
