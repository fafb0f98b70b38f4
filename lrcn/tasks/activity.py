"""Activity recognition: ``task: activity``, a label per clip (LRCN's TimeDistributed CNN -> LSTM)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import DataLoader

from lrcn import build
from lrcn.config import Config
from lrcn.engine import Run, evaluate_classifier
from lrcn.evaluation_files import EvaluationFiles
from lrcn.report.collect import activity_rows
from lrcn.report.page import Row
from lrcn.split_evaluation import Files, evaluate_activity
from lrcn.task import Task


class ActivityTask(Task):
    """Frames -> one label of the dataset's classes; validation and evaluation report accuracy."""

    name = "activity"
    description = "activity recognition"
    video = True
    labels = True
    validation_metrics = ("accuracy",)
    items_file = "predictions.json"
    cannot_caption = "classifies; use `lrcn classify`"

    def build_model(self, cfg: Config, *, vocab_size: int = 0, num_classes: int = 0) -> nn.Module:
        """`lrcn.build.build_classifier` over ``num_classes`` classes."""
        return build.build_classifier(cfg, num_classes)

    def model_sizes(self, payload: dict[str, Any]) -> dict[str, int]:
        """The classes the checkpoint was trained on."""
        return {"num_classes": len(payload["labels"])}

    def prepare_run(self, run: Run) -> None:
        """The training and validation clips, their class names and the classifier."""
        run.train_data, run.labels = build.build_activity_dataset(run.cfg, "train")
        run.val_data, _ = build.build_activity_dataset(run.cfg, "val")
        run.collate = None
        run.model = build.build_model(run.cfg, num_classes=len(run.labels))

    def validate(self, run: Run, loader: DataLoader) -> dict[str, Any]:
        """Clip accuracy on the validation split."""
        result = evaluate_classifier(run.model, loader, run.device, run.labels)
        return {"accuracy": result["accuracy"]}

    def evaluate(
        self, model: nn.Module, cfg: Config, payload: dict[str, Any], split: str
    ) -> tuple[dict[str, Any], Files]:
        """`lrcn.split_evaluation.evaluate_activity`: clip and video accuracy, predictions."""
        return evaluate_activity(model, cfg, payload, split)

    def report_rows(
        self, cfg: Config, files: EvaluationFiles, metrics: dict[str, Any], run_dir: Path
    ) -> tuple[list[tuple[str, str]], list[Row]]:
        """Each clip's predicted and true label."""
        return activity_rows(cfg, files.split, files.path("predictions.json"))

    def model_summary(self, cfg: Config) -> str:
        """``encoder -> LSTM``."""
        return f"{cfg.encoder.name} → LSTM"
