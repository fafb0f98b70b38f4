"""The edge where a ``Config`` becomes datasets and models; nothing else in lrcn reads config."""

from __future__ import annotations

from torch import nn
from torch.utils.data import Dataset

from lrcn.config import Config
from lrcn.data.datasets import Source
from lrcn.errors import LrcnError
from lrcn.models.captioner import Captioner, ImageCaptioner, MeanPool, TemporalLSTM, VideoCaptioner
from lrcn.models.decoder import LSTMDecoder
from lrcn.models.encoders import Encoder, create_encoder, encoder_spec


def normalisation(cfg: Config) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std the configured encoder's weights expect."""
    if cfg.encoder.name == "seed_cnn":
        return (0.0,), (1.0,)
    spec = encoder_spec(cfg.encoder.name)
    return spec.mean, spec.std


def _manifest_records(cfg: Config, split: str) -> list[dict]:
    from lrcn.data.formats import read_manifest

    return read_manifest(cfg.data.manifest, split)


def _split_size(cfg: Config, split: str) -> int:
    sizes = {"train": cfg.data.train_size, "val": cfg.data.val_size, "test": cfg.data.test_size}
    if split not in sizes:
        raise LrcnError(f"unknown split `{split}`; choose train, val or test.")
    return sizes[split]


def build_source(cfg: Config, split: str) -> Source:
    """The captioning examples of one split (image or video), from the feature store when set."""
    if cfg.data.features:
        from lrcn.data.features import FeatureSource, store_header

        return FeatureSource(
            cfg.data.features, split, build_source_raw(cfg, split), expected=store_header(cfg)
        )
    return build_source_raw(cfg, split)


def build_source_raw(cfg: Config, split: str) -> Source:
    """The captioning examples of one split as pixels (embedded generator or manifest)."""
    mean, std = normalisation(cfg)
    if cfg.task == "caption" and cfg.data.dataset == "shapes":
        from lrcn.data.sources import ShapesSource

        return ShapesSource(
            split, _split_size(cfg, split), cfg.data.seed, cfg.data.image_size, mean, std
        )
    if cfg.task == "video_caption" and cfg.data.dataset == "moving_shapes":
        from lrcn.data.sources import MovingShapesSource

        return MovingShapesSource(
            split,
            _split_size(cfg, split),
            cfg.data.seed,
            cfg.data.image_size,
            cfg.data.num_frames,
            mean,
            std,
        )
    if cfg.data.dataset == "manifest":
        from lrcn.data.sources import ManifestImageSource, ManifestVideoSource

        records = _manifest_records(cfg, split)
        if cfg.task == "caption":
            return ManifestImageSource(records, cfg.data.image_size, mean, std)
        return ManifestVideoSource(records, cfg.data.image_size, mean, std, cfg.data.num_frames)
    raise LrcnError(
        f"data.dataset `{cfg.data.dataset}` does not fit task `{cfg.task}`; see configs/ for working pairs."
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
    if cfg.data.dataset == "moving_line":
        from lrcn.data.synthetic.moving_line import MovingLineDataset

        seed = cfg.data.seed * 10 + {"train": 0, "val": 1, "test": 2}[split]
        data = MovingLineDataset(
            _split_size(cfg, split),
            seed,
            frames=cfg.data.num_frames,
            size=cfg.data.image_size,
            variant=cfg.data.variant,
        )
        return data, data.class_names
    if cfg.data.dataset == "manifest":
        import json
        from pathlib import Path

        labels_file = Path(cfg.data.manifest) / "labels.json"
        try:
            labels = json.loads(labels_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise LrcnError(
                f"{labels_file}: missing or unreadable; re-run `lrcn prepare` for this dataset."
            ) from None
        return ActivitySourceDataset(build_source_raw(cfg, split)), labels
    raise LrcnError(
        f"data.dataset `{cfg.data.dataset}` does not fit task activity; use moving_line or manifest."
    )


def build_encoder(cfg: Config) -> Encoder:
    if cfg.encoder.name == "seed_cnn":
        from lrcn.models.classifier import build_seed_cnn

        trunk, dim = build_seed_cnn(height=cfg.data.image_size, width=cfg.data.image_size)
        return Encoder(trunk, dim, "seed_cnn", freeze=cfg.encoder.freeze)
    options = {"feature_dim": cfg.encoder.feature_dim, "image_size": cfg.data.image_size}
    return create_encoder(
        cfg.encoder.name, weights=cfg.encoder.weights, freeze=cfg.encoder.freeze, **options
    )


def build_captioner(cfg: Config, vocab_size: int, encoder: Encoder | None = None) -> Captioner:
    """Image or video captioner as configured; ``encoder`` reuses an already built CNN."""
    encoder = encoder or build_encoder(cfg)
    feature_dim = encoder.feature_dim
    temporal = None
    if cfg.task == "video_caption":
        temporal = (
            MeanPool(feature_dim)
            if cfg.encoder.temporal == "mean"
            else TemporalLSTM(feature_dim, cfg.encoder.temporal_hidden_dim)
        )
        feature_dim = temporal.output_dim
    decoder = LSTMDecoder(
        vocab_size,
        feature_dim,
        embed_dim=cfg.decoder.embed_dim,
        hidden_dim=cfg.decoder.hidden_dim,
        num_layers=cfg.decoder.num_layers,
        dropout=cfg.decoder.dropout,
        variant=cfg.decoder.variant,
    )
    cls = VideoCaptioner if cfg.task == "video_caption" else ImageCaptioner
    return cls(encoder, decoder, temporal)


def build_classifier(cfg: Config, num_classes: int) -> nn.Module:
    from lrcn.models.classifier import ActivityClassifier

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


def build_model(cfg: Config, vocab_size: int = 0, num_classes: int = 0) -> nn.Module:
    """The model for ``cfg.task``, initialised as ``train.init`` says."""
    model = (
        build_classifier(cfg, num_classes)
        if cfg.task == "activity"
        else build_captioner(cfg, vocab_size)
    )
    if cfg.train.init == "keras":
        from lrcn.models.init import keras_init_

        pretrained = cfg.encoder.weights not in ("none", "")
        for name, child in model.named_children():
            # never re-draw pretrained weights
            if not (pretrained and name in ("encoder", "frame_encoder")):
                keras_init_(child)
    return model
