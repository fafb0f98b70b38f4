"""A task of one's own: how many objects a shapes image holds (`task: count`), as a plug-in.

docs/tasks.md walks through it; tests/test_tasks.py trains, evaluates and reports it from the
command line:

    lrcn train --plugin docs/examples/count_task.py -c configs/shapes_pretrain.yaml task=count
    lrcn evaluate --checkpoint RUN          # the run recorded the plug-in: no --plugin needed
    lrcn report RUN

A task says what it is (a label per image, validated by accuracy) and does its part: the model,
the run's data, validation, one split's evaluation files and the report's rows. Its data comes
from a synthetic dataset registered for the task (``@register_dataset(name, task="count")``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from lrcn import build
from lrcn.config import Config
from lrcn.data.media import image_to_tensor
from lrcn.data.synthetic import register_dataset
from lrcn.data.synthetic.shapes import ShapesCaptions
from lrcn.report.page import Row
from lrcn.split_evaluation import json_writer
from lrcn.task import Task, register_task


class Counts(torch.utils.data.Dataset):
    """Shapes images labelled with how many objects they hold (1-3, as classes 0-2)."""

    def __init__(self, split: str, size: int, seed: int, data: Any, mean: Any, std: Any) -> None:
        self.scenes = ShapesCaptions(split, size, seed=seed, image_size=data.image_size)
        self.size, self.mean, self.std = data.image_size, mean, std

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, _, objects = self.scenes.item(index)
        pixels = image_to_tensor(image, self.size, self.mean, self.std)
        return {"images": pixels, "label": len(objects) - 1, "id": self.scenes.item_id(index)}


# data.dataset=shapes for task count: lrcn calls it with split, size, seed, data, mean and std
register_dataset("shapes", task="count")(Counts)


class Counter(nn.Module):
    """The configured CNN, then one linear layer over the three counts."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder, self.head = encoder, nn.Linear(encoder.feature_dim, 3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> logits (B, 3)."""
        return self.head(self.encoder(images))

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """What the training loop minimises for a batch of `Counts` items."""
        return nn.functional.cross_entropy(self(batch["images"]), batch["label"])


def predictions_of(model: nn.Module, loader: Any, device: torch.device) -> list[dict[str, Any]]:
    """Each item's true and predicted count with the prediction's probability, in order."""
    model.eval()
    out = []
    with torch.no_grad():
        for batch in loader:
            proba = model(batch["images"].to(device)).softmax(1)
            for item, label, p in zip(batch["id"], batch["label"].tolist(), proba.tolist()):
                predicted = p.index(max(p))
                out.append(
                    {"id": item, "label": str(label + 1), "predicted": str(predicted + 1),
                     "probability": max(p)}
                )  # fmt: skip
    return out


def accuracy(predictions: list[dict[str, Any]]) -> float:
    """The share of items whose count is right."""
    return sum(p["label"] == p["predicted"] for p in predictions) / len(predictions)


class CountTask(Task):
    """How many objects: a label per image."""

    name = "count"
    description = "object counting"
    labels = True  # the report shows true and predicted labels
    validation_metrics = ("accuracy",)  # train.monitor: auto watches the first
    items_file = "predictions.json"  # the evaluation's per-item file the report reads

    def build_model(self, cfg: Config, *, vocab_size: int = 0, num_classes: int = 0) -> nn.Module:
        """The registered encoder ``encoder.name`` with a counting head."""
        return Counter(build.build_encoder(cfg))

    def prepare_run(self, run: Any) -> None:
        """The run's training and validation data, and its model."""
        run.train_data = build.synthetic_split(run.cfg, "train")
        run.val_data = build.synthetic_split(run.cfg, "val")
        run.collate = None  # torch's default collate stacks the items' tensors
        run.model = build.build_model(run.cfg)

    def validate(self, run: Any, loader: Any) -> dict[str, Any]:
        """After each epoch: accuracy on the validation split."""
        return {"accuracy": accuracy(predictions_of(run.model, loader, run.device))}

    def evaluate(
        self, model: nn.Module, cfg: Config, payload: dict[str, Any], split: str
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """``lrcn evaluate``: the metrics and the files it writes, as one unit."""
        loader = torch.utils.data.DataLoader(build.synthetic_split(cfg, split), batch_size=32)
        predictions = predictions_of(model, loader, next(model.parameters()).device)
        metrics = {"accuracy": accuracy(predictions), "items": len(predictions), "split": split}
        return metrics, {
            f"{split}_metrics.json": json_writer(metrics),
            f"{split}_predictions.json": json_writer(predictions),
        }

    def report_rows(
        self, cfg: Config, files: Any, metrics: dict[str, Any], run_dir: Path
    ) -> tuple[list[tuple[str, str]], list[Row]]:
        """``lrcn report``: one row per item of the evaluation (checked files: ``files.read``)."""
        rows = [
            Row(i, p["id"], None, {**p, "correct": p["label"] == p["predicted"]})
            for i, p in enumerate(files.read("predictions.json"))
        ]
        return [("label", "text"), ("predicted", "text"), ("probability", "num")], rows


register_task(CountTask())
