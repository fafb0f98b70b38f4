"""Tasks are registered objects: a task defined in this test file, with no edit to lrcn, is
trained, evaluated and reported from the command line; the core asks the task what it is instead
of comparing its name (issue 27)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from lrcn import build
from lrcn.cli import main
from lrcn.config import Config
from lrcn.data.media import image_to_tensor
from lrcn.data.synthetic import register_dataset
from lrcn.data.synthetic.shapes import ShapesCaptions
from lrcn.errors import LrcnError
from lrcn.report.page import Row
from lrcn.split_evaluation import json_writer
from lrcn.task import TASKS, Task, get_task, register_task

REPO = Path(__file__).resolve().parents[1]


class _Counts(torch.utils.data.Dataset):
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


register_dataset("shapes", task="count")(_Counts)


class _Counter(nn.Module):
    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder, self.head = encoder, nn.Linear(encoder.feature_dim, 3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(images))

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        return nn.functional.cross_entropy(self(batch["images"]), batch["label"])


def _predictions(model: nn.Module, loader: Any, device: torch.device) -> list[dict[str, Any]]:
    model.eval()
    out = []
    with torch.no_grad():
        for batch in loader:
            proba = model(batch["images"].to(device)).softmax(1)
            for i, y, p in zip(batch["id"], batch["label"].tolist(), proba.tolist()):
                out.append({"id": i, "label": str(y + 1), "predicted": str(p.index(max(p)) + 1),
                            "probability": max(p)})  # fmt: skip
    return out


class CountTask(Task):
    """How many objects: a label per image, from a task module of one's own."""

    name = "count"
    description = "object counting"
    labels = True
    validation_metrics = ("accuracy",)
    items_file = "predictions.json"

    def build_model(self, cfg: Config, *, vocab_size: int = 0, num_classes: int = 0) -> nn.Module:
        return _Counter(build.build_encoder(cfg))

    def prepare_run(self, run: Any) -> None:
        run.train_data = build.synthetic_split(run.cfg, "train")
        run.val_data = build.synthetic_split(run.cfg, "val")
        run.collate = None
        run.model = build.build_model(run.cfg)

    def validate(self, run: Any, loader: Any) -> dict[str, Any]:
        predictions = _predictions(run.model, loader, run.device)
        return {"accuracy": sum(p["label"] == p["predicted"] for p in predictions) / len(predictions)}  # fmt: skip

    def evaluate(self, model: nn.Module, cfg: Config, payload: dict, split: str) -> tuple[dict, dict]:  # fmt: skip
        loader = torch.utils.data.DataLoader(build.synthetic_split(cfg, split), batch_size=32)
        predictions = _predictions(model, loader, next(model.parameters()).device)
        right = sum(p["label"] == p["predicted"] for p in predictions)
        metrics = {"accuracy": right / len(predictions), "items": len(predictions), "split": split}
        return metrics, {f"{split}_metrics.json": json_writer(metrics),
                         f"{split}_predictions.json": json_writer(predictions)}  # fmt: skip

    def report_rows(self, cfg: Config, files: Any, metrics: dict, run_dir: Path) -> tuple[list, list]:  # fmt: skip
        rows = [Row(i, p["id"], None, {**p, "correct": p["label"] == p["predicted"]})
                for i, p in enumerate(files.read("predictions.json"))]  # fmt: skip
        return [("label", "text"), ("predicted", "text"), ("probability", "num")], rows


register_task(CountTask())

SIZES = ["task=count", "data.train_size=64", "data.val_size=16", "data.test_size=24",
         "train.epochs=1", "train.batch_size=16", "train.progress=false",
         "encoder.feature_dim=32", "data.fresh_images=false"]  # fmt: skip


def test_a_task_from_a_test_file_trains_evaluates_and_reports_from_the_command_line(
    tmp_path: Path, capsys
) -> None:
    run = tmp_path / "count"
    config = str(REPO / "configs" / "shapes_pretrain.yaml")
    assert main(["train", "-c", config, "--run-dir", str(run), *SIZES]) == 0
    assert (run / "checkpoints" / "best.pt").is_file()
    metrics = json.loads((run / "eval" / "test_metrics.json").read_text())  # train's evaluation
    assert metrics["items"] == 24 and 0.0 <= metrics["accuracy"] <= 1.0
    assert main(["evaluate", "--checkpoint", str(run), "--split", "val"]) == 0
    assert json.loads((run / "eval" / "val_metrics.json").read_text())["items"] == 16
    assert main(["report", str(run)]) == 0
    page = (run / "eval" / "test_report.html").read_text()
    assert "object counting" in page and page.count('class="ok"') + page.count('class="bad"') == 24
    capsys.readouterr()
    assert main(["caption", "x.png", "--checkpoint", str(run)]) == 2  # it declares no captions
    assert "a count checkpoint does not generate captions" in capsys.readouterr().err


def test_an_unknown_task_is_one_sentence_naming_the_registered_ones(tmp_path: Path, capsys) -> None:
    config = str(REPO / "configs" / "shapes.yaml")
    assert main(["train", "-c", config, "--run-dir", str(tmp_path / "r"), "task=captoin"]) == 2
    err = capsys.readouterr().err
    assert "`task` is 'captoin'; choose one of caption, video_caption, activity, attributes" in err
    assert not (tmp_path / "r").exists()  # refused before the run folder is made
    with pytest.raises(LrcnError, match="task 'count' is registered already"):
        register_task(type("Other", (Task,), {"name": "count"})())
    assert get_task("count").description == "object counting"


def test_no_module_outside_the_tasks_compares_the_task_name() -> None:
    """The core asks the task (``get_task(cfg.task)``) what it is; only lrcn/tasks/ and the
    registry know the names."""
    pattern = re.compile(r"""\.task\s*(==|!=|\bin\b|\bnot in\b)|== *["'](caption|video_caption|activity|attributes)["']""")  # fmt: skip
    found = [
        f"{path.relative_to(REPO)}:{number}"
        for path in (REPO / "lrcn").rglob("*.py")
        if "tasks" not in path.parts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == []
    assert {"caption", "video_caption", "activity", "attributes"} <= set(TASKS.names())
