"""Tasks are registered objects: a task of one's own (docs/examples/count_task.py, a plug-in file,
no edit to lrcn) is trained, evaluated and reported from the command line; the core asks the task
what it is instead of comparing its name (issue 27)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lrcn.cli import main
from lrcn.errors import LrcnError
from lrcn.plugins import import_plugin
from lrcn.task import TASKS, Task, get_task, register_task

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "docs" / "examples" / "count_task.py"  # the example docs/tasks.md walks through

SIZES = ["task=count", "data.train_size=64", "data.val_size=16", "data.test_size=24",
         "train.epochs=1", "train.batch_size=16", "train.progress=false",
         "encoder.feature_dim=32", "data.fresh_images=false"]  # fmt: skip


def test_a_task_from_a_test_file_trains_evaluates_and_reports_from_the_command_line(
    tmp_path: Path, capsys
) -> None:
    run = tmp_path / "count"
    config = str(REPO / "configs" / "shapes_pretrain.yaml")
    train = ["train", "--plugin", str(PLUGIN), "-c", config, "--run-dir", str(run), *SIZES]
    assert main(train) == 0
    assert (run / "checkpoints" / "best.pt").is_file()
    metrics = json.loads((run / "eval" / "test_metrics.json").read_text())  # train's evaluation
    assert metrics["items"] == 24 and 0.0 <= metrics["accuracy"] <= 1.0
    # a new process, no --plugin: the run recorded the plug-in its task came from
    evaluate = [sys.executable, "-m", "lrcn.cli", "evaluate", "--checkpoint", str(run), "--split", "val"]  # fmt: skip
    done = subprocess.run(evaluate, capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr
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
    import_plugin(str(PLUGIN))
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
