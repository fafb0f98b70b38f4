"""Encoder pretraining: ``task: attributes``, stage 1 of ``lrcn demo``.

The CNN learns the generator's ground truth (every object's colour and shape, as heads), as Show
and Tell's CNN learned ImageNet; its run writes ``encoder.pt`` for ``encoder.weights`` of the
caption stage.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from lrcn import build
from lrcn.config import Config
from lrcn.engine import Run
from lrcn.engine.attributes import evaluate_attributes
from lrcn.runtime import make_loader
from lrcn.split_evaluation import Files, json_writer
from lrcn.task import Task


class AttributesTask(Task):
    """Images -> one linear head per attribute of the dataset (`lrcn.models.attributes`)."""

    name = "attributes"
    description = "encoder pretraining on attributes"
    # every object's colour and shape right (the captions' scene_accuracy, read from the heads),
    # then the mean accuracy of every head
    validation_metrics = ("scene_accuracy", "attribute_accuracy")
    # the pretrained CNN depends on the data, the encoder and training, not on the decoder
    result_sections = {"train": ("task", "data", "encoder", "train")}
    cannot_caption = (
        "has no caption decoder; name its run's encoder.pt as encoder.weights in a caption "
        "config and train that"
    )

    def build_model(self, cfg: Config, *, vocab_size: int = 0, num_classes: int = 0) -> nn.Module:
        """`lrcn.build.build_attribute_model`: the encoder and the dataset's heads."""
        return build.build_attribute_model(cfg)

    def prepare_run(self, run: Run) -> None:
        """The training and validation images with their targets, and the model."""
        run.train_data = build.build_attribute_dataset(run.cfg, "train")
        run.val_data = build.build_attribute_dataset(run.cfg, "val")
        run.heads = dict(run.train_data.heads)
        run.labels = list(run.heads)  # the heads, in the order of the targets (checkpoint)
        run.collate = None
        run.model = build.build_model(run.cfg)

    def validate(self, run: Run, loader: DataLoader) -> dict[str, Any]:
        """The summary accuracies (per attribute, per scene); each head's own accuracy is in
        the evaluation's file."""
        result = evaluate_attributes(run.model, loader, run.device, run.heads)
        return {
            k: v
            for k, v in result.items()
            if isinstance(v, float) and not k.startswith(("slot", "has_"))
        }

    def best_files(self, model: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
        """``encoder.pt``: the encoder's state_dict, which ``encoder.weights`` names."""
        return {"encoder.pt": model.encoder.trunk.state_dict()}

    def evaluate(
        self, model: nn.Module, cfg: Config, payload: dict[str, Any], split: str
    ) -> tuple[dict[str, Any], Files]:
        """Every head's accuracy and the summaries on ``split``."""
        data = build.build_attribute_dataset(cfg, split)
        loader = make_loader(data, cfg.eval.batch_size, None, None, cfg.data.num_workers)
        device = next(model.parameters()).device
        metrics = {**evaluate_attributes(model, loader, device, data.heads), "split": split}
        return metrics, {f"{split}_metrics.json": json_writer(metrics)}
