"""``lrcn demo`` (``make demo``): Show and Tell's two stages on the embedded shapes data.

1. **pretrain**: the small CNN learns the generator's ground truth (``configs/shapes_pretrain.yaml``,
   task attributes), as Show and Tell's CNN learned ImageNet; its run writes ``encoder.pt``.
2. **features**: ``lrcn extract-features`` runs that frozen encoder once over every split into
   the feature store (``configs/shapes_two_stage.yaml``).
3. **caption**: the Show-and-Tell decoder trains from the store (the same config), and the test
   split is evaluated and reported.

Each stage is its own config and folder under the demo's root (``runs/demo``). A stage that
finished writes ``stage.json`` there (its resolved config, the checksum of the weights file it
read, its time); run again, a stage whose ``stage.json`` still matches is reused, an interrupted
training run is resumed, and a stage whose config or input changed is redone, the old folder
kept beside it.

One writer per folder: a demo holds ``<root>/.lock`` from start to end, so a second ``lrcn demo``
on the same root is refused at once, naming the first's PID (and never renames the first's live
folders). A stage folder is set aside only while holding its own lock (the one ``lrcn train``
holds), so a folder another process is writing is never moved; the decision to reuse, resume or
redo a stage is made from its recorded ``stage.json`` and ``config.yaml``. The printout ends with each stage's time, the test metrics, a few test captions
beside their references and the path of the HTML report.

``lrcn demo --video`` runs the same stages for video description (``runs/video``): the frame CNN
pretrained on moving-shapes frames, every frame's features in the store, the temporal LSTM and
decoder trained from it (``configs/moving_shapes_pretrain.yaml``, ``moving_shapes_two_stage.yaml``).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrcn.config import Config, config_from_dict, load_config
from lrcn.config_yaml import load_yaml
from lrcn.engine import fit
from lrcn.errors import LrcnError
from lrcn.evaluation_files import read_evaluation
from lrcn.extract import extract_features
from lrcn.io import check_writable, hold_lock, read_json, write_json_atomic
from lrcn.predict import evaluate
from lrcn.report import write_report
from lrcn.results import load_result, standing
from lrcn.task import get_task

log = logging.getLogger(__name__)

MARKER = "stage.json"
SPLITS = ("train", "val", "test")
SAMPLES = 6  # test captions printed beside their references


@dataclass(frozen=True)
class Stage:
    """One step of the demo: a ``train`` or ``extract`` of one config into one folder."""

    name: str
    kind: str  # train | extract
    config: str  # a recipe name or YAML file
    folder: Path
    overrides: tuple[str, ...] = ()

    def load(self, extra: Sequence[str]) -> Config:
        """The stage's resolved config (``extra`` overrides apply to every stage)."""
        return load_config(self.config, [*self.overrides, *extra])


# The demo's data: recipe of stage 1, recipe of the stages after it.
RECIPES = {
    "shapes": ("shapes_pretrain", "shapes_two_stage"),
    "moving_shapes": ("moving_shapes_pretrain", "moving_shapes_two_stage"),
}
# The recorded result each demo is compared with (docs/results/<name>.json, lrcn.results), and
# the caption stage's metrics shown beside their recorded range.
RECORDED = {
    "shapes": (
        "demo",
        (
            "scene_accuracy",
            "scene_accuracy_1",
            "scene_accuracy_2",
            "scene_accuracy_3",
            "Bleu_4",
            "CIDEr",
        ),
    ),  # fmt: skip
    "moving_shapes": (
        "video_demo",
        ("motion_accuracy", "motion_colour_accuracy", "Bleu_4", "CIDEr"),
    ),  # fmt: skip
}


def demo_stages(root: str | Path = "runs/demo", data: str = "shapes") -> list[Stage]:
    """The demo's stages on ``data`` (shapes images, or moving_shapes clips), folders under ``root``."""
    root = Path(root)
    pretrain, store = root / "1-pretrain", root / "features"
    first, second = RECIPES[data]
    stage2 = (f"encoder.weights={pretrain / 'encoder.pt'}", f"data.features={store}")
    return [
        Stage("pretrain", "train", first, pretrain),
        Stage("features", "extract", second, store, stage2),
        Stage("caption", "train", second, root / "2-caption", stage2),
    ]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _identity(cfg: Config, kind: str) -> dict[str, Any]:
    """What a finished stage must match to be reused: the parts of its config its result depends
    on, and the checksum of the weights file it read."""
    weights = cfg.encoder.weights
    inputs = {}
    if weights not in ("none", "", "imagenet") and Path(weights).is_file():
        inputs[weights] = _sha256(Path(weights))
    config = cfg.to_dict()
    # the sections the task says a stage's result depends on (every stage gets the same
    # overrides, and a decoder's size must not redo the pretraining or the feature store)
    sections = get_task(cfg.task).result_sections.get(kind, tuple(config))
    config = {k: v for k, v in config.items() if k in sections}
    if "train" in config:
        config["train"] = _without_progress(config)["train"]  # how it looks, not what it computes
    return {"config": config, "inputs": inputs}


def _finished(folder: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The stage's marker when the stage finished with this identity, else None."""
    marker = folder / MARKER
    if not marker.is_file():
        return None
    try:
        record = read_json(marker, "the stage will run again")
    except LrcnError:
        return None
    same = isinstance(record, dict) and all(record.get(k) == v for k, v in identity.items())
    return record if same else None


def _set_aside(folder: Path) -> None:
    """Move a stage's folder made with another config out of the way (never deleted).

    Called while holding the folder's lock (`_train`): a folder a live process writes is not moved.
    """
    target = folder.with_name(f"{folder.name}-replaced-{time.strftime('%Y%m%d-%H%M%S')}")
    folder.rename(target)
    log.info("%s was made with another config or input; kept as %s", folder, target)


_STAGE_WRITER = "another process (`lrcn train` or `lrcn demo`)"


def _saved_config(folder: Path) -> dict[str, Any] | None:
    """The resolved config a run folder was started with, or None when it cannot be read."""
    try:
        path = folder / "config.yaml"
        saved = load_yaml(path.read_text(encoding="utf-8"), str(path))
        return config_from_dict(saved, str(path)).to_dict()
    except (LrcnError, OSError, ValueError):
        return None


def _train(cfg: Config, folder: Path) -> dict[str, Any]:
    """Train (or finish an interrupted run of) ``cfg`` in ``folder``; evaluate the test split.

    The folder's lock (``<folder>/.lock``, the one `fit` takes) is held while deciding to resume
    or set the folder aside, so a run another process is writing is refused, never moved.
    """
    resume = False
    if folder.is_dir():
        with hold_lock(folder / ".lock", _STAGE_WRITER):
            if (folder / "checkpoints" / "last.pt").is_file():
                saved = _saved_config(folder)
                resume = saved is not None and _without_progress(saved) == _without_progress(
                    cfg.to_dict()
                )
            if not resume:
                _set_aside(folder)
    if resume:
        log.info("continuing the interrupted run in %s", folder)
        fit(None, folder, resume=True)
    else:
        fit(cfg, folder)
    return evaluate(folder)


def _without_progress(config: dict[str, Any]) -> dict[str, Any]:
    return {**config, "train": {k: v for k, v in config["train"].items() if k != "progress"}}


def _extract(cfg: Config, folder: Path) -> dict[str, Any]:
    """Fill the feature store (rows already made the same way are kept)."""
    rows = {split: extract_features(cfg, split)["rows"] for split in SPLITS}
    return {"rows": rows}


RUNNERS: dict[str, Callable[[Config, Path], dict[str, Any]]] = {
    "train": _train,
    "extract": _extract,
}


def run_stage(stage: Stage, extra: Sequence[str] = ()) -> dict[str, Any]:
    """Run one stage unless it already finished with the same config and input.

    Returns:
        Its marker: ``seconds`` it took when it ran, ``reused`` (True when not run now), its
        ``result`` (test metrics of a training stage), ``folder``.
    """
    cfg = stage.load(extra)
    identity = _identity(cfg, stage.kind)
    record = _finished(stage.folder, identity)
    if record is not None:
        return {**record, "reused": True}
    start = time.perf_counter()
    result = RUNNERS[stage.kind](cfg, stage.folder)
    record = {
        "stage": stage.name,
        **identity,
        "seconds": round(time.perf_counter() - start, 1),
        "result": {k: v for k, v in result.items() if isinstance(v, int | float | str | dict)},
        "folder": str(stage.folder),
    }
    write_json_atomic(stage.folder / MARKER, record)
    return {**record, "reused": False}


def run_demo(
    root: str | Path = "runs/demo",
    overrides: Sequence[str] = (),
    echo: Callable[[str], None] = print,
    data: str = "shapes",
) -> dict[str, Any]:
    """Run (or reuse) every stage, write the report, print the summary.

    Args:
        root: the folder of the stages' folders.
        overrides: ``key=value`` applied to every stage's config (e.g. smaller data for a test).
        echo: where the summary lines go.
        data: ``shapes`` (image description) or ``moving_shapes`` (video description).

    Returns:
        ``{"stages": {name: marker}, "report": path, "seconds": this call's wall time}``.
    """
    start = time.perf_counter()
    with hold_lock(check_writable(root) / ".lock", "another `lrcn demo`"):
        summary = _run_stages(Path(root), overrides, echo, data)
        summary["seconds"] = round(time.perf_counter() - start, 1)
        *lines, report_line = summary_lines(demo_stages(root, data), summary)
        for line in [*lines, *recorded_range_lines(data, summary["stages"], overrides)]:
            echo(line)
        echo(report_line)
    return summary


def _run_stages(
    root: Path, overrides: Sequence[str], echo: Callable[[str], None], data: str
) -> dict[str, Any]:
    """Every stage in order (reused when finished), then the report; called holding the root's lock."""
    stages = demo_stages(root, data)
    records = {}
    for number, stage in enumerate(stages, 1):
        echo(f"== stage {number}/{len(stages)}: {stage.name} ({stage.config} -> {stage.folder})")
        records[stage.name] = run_stage(stage, overrides)
        echo(_stage_line(stage, records[stage.name]))
    caption_dir = stages[-1].folder
    report = caption_dir / "eval" / "test_report.html"
    if not report.is_file() or not all(r["reused"] for r in records.values()):
        report = write_report(caption_dir, split="test")
    return {"stages": records, "report": str(report)}


def recorded_range_lines(
    data: str, records: dict[str, Any], overrides: Sequence[str], directory: Path | None = None
) -> list[str]:
    """Where this demo's test metrics lie against the range recorded for its recipe over seeds
    and CPUs (another CPU's kernels round differently, so a run lands anywhere in that range)."""
    name, metrics = RECORDED[data]
    record = load_result(name, directory)
    if record is None:
        return [f"(no recorded range: docs/results/{name}.json is not here, e.g. in a pip install)"]
    runs = ", ".join(sorted({str(m.get("capability")) for m in record.get("machines", [])}))
    lines = [
        f"recorded for this recipe (docs/results/{name}.json: {len(record.get('each_run', []))} "
        f"runs over seeds and kernel sets {runs}):"
    ]
    if overrides:
        lines.append(
            f"  (this run overrides {' '.join(overrides)}: the range is for the recipe as it is)"
        )
    lines += standing(records.get("caption", {}).get("result", {}), record, metrics)
    return lines


def _stage_line(stage: Stage, record: dict[str, Any]) -> str:
    when = "reused, it took" if record["reused"] else "took"
    return f"   {stage.name}: {when} {record['seconds']:.0f} s"


def _metrics_lines(pretrain: dict[str, Any], caption: dict[str, Any]) -> list[str]:
    lines = []
    if "scene_accuracy" in pretrain:
        lines.append(
            f"stage 1 heads on the test split: every object's colour and shape right in "
            f"{pretrain['scene_accuracy']:.3f} of the scenes ({_by_count(pretrain)})"
        )
    bleu = " / ".join(f"{caption.get(f'Bleu_{n}', float('nan')):.3f}" for n in range(1, 5))
    lines.append(
        f"test captions ({caption.get('items')} images, beam {caption.get('beam_size')}): "
        f"BLEU-1..4 {bleu}, CIDEr {caption.get('CIDEr', float('nan')):.3f}"
    )
    if "reference_loo_Bleu_4" in caption:
        lines.append(
            f"  BLEU-4 of each human-style reference against the other four (leave-one-out): "
            f"{caption['reference_loo_Bleu_4']:.3f}"
        )
    if "scene_accuracy" in caption:
        lines.append(
            f"  scene accuracy (every object named with its colour and shape): "
            f"{caption['scene_accuracy']:.3f} ({_by_count(caption)})"
        )
    if "motion_accuracy" in caption:
        lines.append(
            f"  every motion named right in {caption['motion_accuracy']:.3f} of the clips, "
            f"with its shape's colour in {caption.get('motion_colour_accuracy', float('nan')):.3f}"
        )
    return lines


def _by_count(metrics: dict[str, Any]) -> str:
    counts = [n for n in (1, 2, 3) if f"scene_accuracy_{n}" in metrics]
    parts = [f"{metrics[f'scene_accuracy_{n}']:.3f}" for n in counts]
    return f"{' / '.join(map(str, counts))} objects: {' / '.join(parts)}"


def _samples(caption_dir: Path, count: int = SAMPLES) -> list[str]:
    """A few test captions beside their references, read from one whole, checked evaluation."""
    try:
        evaluation = read_evaluation(caption_dir / "eval", "test")
        captions = evaluation.read("captions.json")
        references = evaluation.references() or {}
    except LrcnError as exc:
        log.warning("%s", exc)
        return []
    lines = []
    for entry in captions[:count]:
        item = str(entry["image_id"])
        lines.append(f"  {item}: {entry['caption']}")
        for reference in references.get(item, [])[:2]:
            lines.append(f"      reference: {reference}")
    return lines


def summary_lines(stages: list[Stage], summary: dict[str, Any]) -> list[str]:
    """The demo's closing printout: times, metrics, sample captions, the report's path."""
    records = summary["stages"]
    total = sum(r["seconds"] for r in records.values())
    lines = ["", "== the demo, stage by stage"]
    for stage in stages:
        lines.append(_stage_line(stage, records[stage.name]))
    lines.append(f"   all stages: {total:.0f} s of work; this run: {summary['seconds']:.0f} s")
    pretrain = records.get("pretrain", {}).get("result", {})
    caption = records.get("caption", {}).get("result", {})
    lines += _metrics_lines(pretrain, caption)
    samples = _samples(stages[-1].folder)
    if samples:
        lines += ["a few test images, the model's caption first:", *samples]
    lines.append(f"report: {summary['report']}")
    return lines
