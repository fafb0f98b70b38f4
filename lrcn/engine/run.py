"""A task's data, model and validation, built from a config: what ``fit`` trains."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from lrcn import build, distributed
from lrcn.config import VALIDATION_METRICS, Config
from lrcn.data.datasets import (
    CaptionEvalDataset,
    CaptionTrainDataset,
    EpochSampler,
    build_vocabulary,
    make_caption_collate,
    make_eval_collate,
    most_frequent_caption,
    tokenize_source,
)
from lrcn.engine.attributes import evaluate_attributes
from lrcn.engine.evaluation import evaluate_classifier, generate_captions, score_captions
from lrcn.errors import LrcnError
from lrcn.runtime import make_loader
from lrcn.text.vocab import Vocabulary
from lrcn.visualize import denormalise

log = logging.getLogger(__name__)


class Run:
    """Everything ``fit`` needs for one task: data, model, evaluation; built from a config."""

    def __init__(
        self, cfg: Config, run_dir: Path, device: torch.device, vocab: Vocabulary | None = None
    ) -> None:
        self.cfg, self.run_dir, self.device = cfg, run_dir, device
        self.task = cfg.task
        self.vocab = vocab
        self.labels: list[str] | None = None
        self.baseline_caption = ""
        rank, world = distributed.rank(), distributed.world_size()
        if self.task == "activity":
            self._build_activity(cfg)
        elif self.task == "attributes":
            self._build_attributes(cfg)
        else:
            self._build_captioning(cfg)
        self.model.to(device)
        if cfg.train.batch_size % world:
            raise LrcnError(
                f"train.batch_size={cfg.train.batch_size} is the global batch and must divide by the {world} processes."
            )
        self.batch_size = cfg.train.batch_size // world  # per process; train.batch_size is global
        self.trains_norm = trains_norm = _trains_batchnorm(self.model)
        if trains_norm and self.batch_size == 1 and not (world > 1 and cfg.train.sync_batchnorm):
            raise LrcnError(
                f"train.batch_size={cfg.train.batch_size} gives each process batches of one item, "
                "and the model's BatchNorm cannot train on one item; set train.batch_size to 2 or "
                "more (or freeze the encoder: encoder.freeze=true)."
            )
        self.sampler = EpochSampler(
            len(self.train_data),
            cfg.train.seed,
            rank=rank,
            world_size=world,
            batch_size=self.batch_size,
            drop_single_last=trains_norm,
        )
        if self.sampler.drops_one:
            log.warning(
                "%d training items in batches of %d leave one item for the last batch, and "
                "BatchNorm cannot train on one item: each epoch leaves its last item out (another "
                "one each epoch)",
                len(self.train_data),
                self.batch_size,
            )
        self.monitor = (
            cfg.train.monitor if cfg.train.monitor != "auto" else VALIDATION_METRICS[self.task][0]
        )

    def _build_activity(self, cfg: Config) -> None:
        self.train_data, self.labels = build.build_activity_dataset(cfg, "train")
        self.val_data, _ = build.build_activity_dataset(cfg, "val")
        self.collate = None
        self.model = build.build_model(cfg, num_classes=len(self.labels))

    def _build_attributes(self, cfg: Config) -> None:
        self.train_data = build.build_attribute_dataset(cfg, "train")
        self.val_data = build.build_attribute_dataset(cfg, "val")
        self.heads = dict(self.train_data.heads)
        self.labels = list(self.heads)  # the heads, in the order of the targets (checkpoint)
        self.collate = None
        self.model = build.build_model(cfg)

    def best_files(self) -> dict[str, dict[str, torch.Tensor]]:
        """Files written beside ``best.pt`` whenever it is: for a pretraining run (task
        attributes), ``encoder.pt``, the encoder's state_dict that ``encoder.weights`` names."""
        if self.task != "attributes":
            return {}
        return {"encoder.pt": self.model.encoder.trunk.state_dict()}

    def _build_captioning(self, cfg: Config) -> None:
        train_source = build.build_source(cfg, "train")
        tokenized = tokenize_source(train_source)  # once, for all three uses below
        if self.vocab is None:
            self.vocab = build_vocabulary(
                train_source, cfg.data.min_word_count, cfg.data.max_caption_length, tokenized
            )
        self.baseline_caption = (
            most_frequent_caption(train_source, tokenized) if cfg.eval.reference_points else ""
        )
        self.train_data = CaptionTrainDataset(
            train_source,
            self.vocab,
            cfg.data.max_caption_length,
            seed=cfg.train.seed,
            on_error=cfg.data.on_error,
            tokenized=tokenized,
        )
        del tokenized
        self.collate = make_caption_collate(train_source.is_video)
        self.val_data = CaptionEvalDataset(
            build.build_source(cfg, "val"),
            on_error=cfg.data.on_error,
            max_items=cfg.train.val_max_items,
        )
        self.val_collate = make_eval_collate(train_source.is_video)
        self.model = build.build_model(cfg, vocab_size=len(self.vocab))
        if hasattr(train_source, "check_encoder"):  # the store was made by this very encoder
            train_source.check_encoder(self.model.encoder)

    def train_loader(self) -> DataLoader:
        """This process's share of the training data, in the epoch's order."""
        collate = self.collate
        if collate is not None and self.trains_norm:
            collate = _NoSingleLeftOver(collate)
        return make_loader(
            self.train_data,
            self.batch_size,
            collate,
            self.sampler,
            self.cfg.data.num_workers,
            self.device,
        )

    def _val_loader(self) -> DataLoader:
        collate = None if self.task in ("activity", "attributes") else self.val_collate
        return make_loader(
            self.val_data,
            self.cfg.eval.batch_size,
            collate,
            None,
            self.cfg.data.num_workers,
            self.device,
        )

    def validate(self) -> dict[str, Any]:
        """The validation metrics (``config.VALIDATION_METRICS``), sample captions and a picture."""
        loader = self._val_loader()
        if self.task == "activity":
            result = evaluate_classifier(self.model, loader, self.device, self.labels)
            return {"accuracy": result["accuracy"]}
        if self.task == "attributes":
            result = evaluate_attributes(self.model, loader, self.device, self.heads)
            # the summary (per attribute, per scene); each head's own accuracy is in the test file
            return {
                k: v
                for k, v in result.items()
                if isinstance(v, float) and not k.startswith(("slot", "has_"))
            }
        hyps, refs, _ = generate_captions(
            self.model, loader, self.vocab, self.device, 1, self.cfg.eval.max_length
        )
        metrics = score_captions(hyps, refs, ["bleu", "cider"], "python")
        # the dataset's own content check (shapes: scene_accuracy), logged beside BLEU each epoch
        metrics.update(self.val_data.source.task_metrics(hyps))
        metrics["samples"] = [
            {"id": k, "caption": hyps[k], "reference": refs[k][0]} for k in list(hyps)[:4]
        ]
        # the same first items generate_captions decoded, for a picture grid
        first = next(iter(loader))
        key = "frames" if "frames" in first else "images" if "images" in first else None
        if key is not None:
            ids = first["ids"][:8]
            metrics["grid"] = (
                denormalise(first[key][:8], *build.normalisation(self.cfg)),
                [f"{hyps[i]}\n({refs[i][0]})" for i in ids],
            )
        return metrics


class _NoSingleLeftOver:
    """A collate whose batch skipping unreadable items (``data.on_error: skip``) left one item
    gives an empty batch instead, that item counted as skipped: BatchNorm cannot train on one item
    (it ended the epoch in a raw ValueError). A class, so DataLoader workers can pickle it."""

    def __init__(self, collate: Any) -> None:
        self.collate = collate

    def __call__(self, items: list) -> dict:
        batch = self.collate(items)
        if batch.get("size") == 1 and batch.get("skipped"):
            note = "the one readable item left in its batch (BatchNorm cannot train on one item)"
            return {"size": 0, "skipped": [*batch["skipped"], note]}
        return batch


def _trains_batchnorm(model: torch.nn.Module) -> bool:
    """Whether training updates a BatchNorm of ``model`` with batch statistics (one that is not
    frozen: a frozen encoder stays in eval mode and normalises with its running statistics)."""
    return any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        and any(p.requires_grad for p in m.parameters(recurse=False))
        for m in model.modules()
    )
