"""The child runs of scripts/golden.py: which runs a recipe needs (a stage that reads an earlier
stage's output is chained after it, the path pointed at the work folder) and running each one, tiny,
with ``lrcn train`` or ``lrcn extract-features``. See golden.py's docstring for the use."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOG_TAIL = 25  # lines of a failed run's log in the report

# Every run: tiny splits, one epoch, no progress bars, the fast metrics, no bootstrap resampling.
COMMON = (
    "data.train_size=64",
    "data.val_size=16",
    "data.test_size=16",
    "train.epochs=1",
    "train.batch_size=16",
    "train.progress=false",
    "eval.metrics=bleu,cider",
    "eval.tokenizer=python",
    "eval.bootstrap=0",
)
# Per embedded dataset: smaller images and layers (the same for every stage of a chain, so a
# stage-1 encoder fits the stage-2 config that loads it).
TINY: dict[str, tuple[str, ...]] = {
    "shapes": (
        "data.image_size=32",
        "encoder.feature_dim=32",
        "decoder.embed_dim=16",
        "decoder.hidden_dim=32",
    ),
    "moving_shapes": (
        "data.image_size=32",
        "data.num_frames=4",
        "encoder.feature_dim=32",
        "encoder.temporal_hidden_dim=32",
        "decoder.embed_dim=16",
        "decoder.hidden_dim=32",
    ),
    "moving_line": (
        "data.image_size=20",
        "data.num_frames=10",
        "classifier.hidden_dim=8",
        "eval.batch_size=16",
    ),
}
# `lrcn demo`'s roots (lrcn/cli.py) -> its data; the probe reads the stages' recipes from lrcn.demo.
DEMO_ROOTS = {"demo": "shapes", "video": "moving_shapes"}
# The config paths that may name an earlier stage's output, and how each is overridden.
INPUTS = ("encoder.weights", "data.features", "train.init_from")


@dataclass(frozen=True)
class Product:
    """One child command: ``train`` a recipe into a run folder, or ``extract`` its feature store."""

    kind: str  # train | extract
    recipe: str

    @property
    def name(self) -> str:
        """Its folder's name under the work folder."""
        return self.recipe if self.kind == "train" else f"features-{self.recipe}"


@dataclass
class Side:
    """One checkout being measured: its folder, its probe, and what has run there."""

    repo: Path
    work: Path
    env: dict[str, str]
    probe: dict[str, Any] = field(default_factory=dict)
    done: dict[Product, str | None] = field(default_factory=dict)  # None: finished; else error

    def folder(self, product: Product) -> Path:
        """Where ``product`` is made on this side."""
        return self.work / product.name


def _producer(path: str, probe: dict[str, Any]) -> tuple[Product, Path] | None:
    """The product that makes a config path under ``runs/``, and the path's rest inside it."""
    parts = Path(path).parts
    if len(parts) < 2 or parts[0] != "runs":
        return None
    root, rest = parts[1], Path(*parts[2:]) if len(parts) > 2 else Path()
    if root in DEMO_ROOTS and DEMO_ROOTS[root] in probe["demo"]:
        first, second = probe["demo"][DEMO_ROOTS[root]]
        stage, inner = (rest.parts[0], Path(*rest.parts[1:])) if rest.parts else ("", Path())
        stages = {
            "1-pretrain": Product("train", first),
            "features": Product("extract", second),
            "2-caption": Product("train", second),
        }
        return (stages[stage], inner) if stage in stages else None
    if root in probe["recipes"]:
        return Product("train", root), rest
    return None


def plan(product: Product, side: Side) -> tuple[list[str], list[Product]]:
    """The overrides pointing ``product``'s inputs at their makers' folders, and those makers.

    Raises:
        ValueError: an input under ``runs/`` that no recipe here makes.
    """
    info = side.probe["recipes"][product.recipe]
    overrides, needs = [], []
    for key, value in info["inputs"].items():
        if not value or not str(value).startswith("runs/"):
            continue
        found = _producer(str(value), side.probe)
        if found is None:
            raise ValueError(f"{key}: {value} is made by no recipe golden.py can chain")
        maker, inner = found
        target = side.folder(maker) / inner
        overrides.append(f"{key}={target}")
        if maker != product:  # an extraction fills its own store
            needs.append(maker)
    return overrides, needs


def _tail(path: Path, lines: int = LOG_TAIL) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").rstrip().splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def make(product: Product, side: Side, log: Callable[[str], None], stack: tuple = ()) -> str | None:
    """Run ``product`` (after what it needs) unless done; None when it finished, else the error."""
    if product in side.done:
        return side.done[product]
    if product in stack:
        return f"{product.name}: a cycle of stages ({' -> '.join(p.name for p in stack)})"
    try:
        overrides, needs = plan(product, side)
    except ValueError as exc:
        side.done[product] = str(exc)
        return side.done[product]
    for need in needs:
        error = make(need, side, log, (*stack, product))
        if error is not None:
            side.done[product] = f"needs {need.name}, which failed:\n{error}"
            return side.done[product]
    info = side.probe["recipes"][product.recipe]
    tiny = [*COMMON, *TINY.get(info["dataset"], ())]
    folder = side.folder(product)
    if folder.exists():  # a reused --work folder: run afresh
        shutil.rmtree(folder)
    if product.kind == "train":
        args = ["train", "-c", info["path"], "--run-dir", str(folder), *tiny, *overrides]
    else:
        args = ["extract-features", "-c", info["path"], *tiny, *overrides]
    logs = side.work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{product.name}.log"
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as out:
        out.write("$ lrcn " + " ".join(args) + "\n")
        out.flush()
        done = subprocess.run(
            [sys.executable, "-m", "lrcn.cli", *args],
            cwd=side.repo,
            env=side.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    seconds = time.perf_counter() - start
    if done.returncode:
        side.done[product] = f"exit {done.returncode} ({log_path}):\n{_tail(log_path)}"
    else:
        side.done[product] = None
    log(f"  {product.kind} {product.recipe}: {'ok' if done.returncode == 0 else 'FAILED'} "
        f"({seconds:.1f} s)")  # fmt: skip
    return side.done[product]
