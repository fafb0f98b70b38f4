"""Tasks as registered objects: what a task reads, builds, validates, evaluates and shows.

A task (``task:`` in a config: caption, video_caption, activity, attributes, or one registered
from outside) is one `Task` object; the rest of lrcn asks it instead of comparing the task's name.
A task declares:

- what it is: ``description`` (the report's heading), ``video`` (its inputs are clips),
  ``captions`` (it generates captions: decoder wirings, feature stores, SCST, `lrcn caption`),
  ``labels`` (it predicts one label per input: `lrcn classify`), ``items_file`` (the evaluation
  file the report's item table shows), ``cannot_caption`` (why `lrcn caption` refuses it);
- ``validation_metrics``: what validation reports after each epoch (the first is
  ``train.monitor: auto``; `train.monitor` must name one of them);
- ``result_sections``: which config sections a demo stage's result depends on, by stage kind;
- its behaviour, as methods: `Task.build_model`, `Task.prepare_run` (the training and
  validation data and the model of a run), `Task.validate`, `Task.best_files`, `Task.evaluate`
  (one split's metrics and files), `Task.report_rows`.

The built-in tasks live in ``lrcn/tasks/``, at the top of the package (they use the engine, the
evaluation and the report), and register themselves here as a plug-in's task would: the core
reaches them only through this registry (`get_task`), and loads them on the first lookup.
``docs/tasks.md`` adds a task from outside the package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

from lrcn.errors import LrcnError
from lrcn.registry import Registry

BUILTIN_TASKS = "lrcn.tasks"  # the package whose import registers the built-in tasks


class Task:
    """One task's declarations and behaviour (see the module); subclass it and `register_task`.

    The methods' defaults refuse in one sentence, so a task implements only what it supports.
    ``run`` arguments are `lrcn.engine.Run` objects; ``model`` a `torch.nn.Module`.
    """

    name: str = ""
    description: str = ""
    video: bool = False
    captions: bool = False
    labels: bool = False
    validation_metrics: tuple[str, ...] = ()
    # the evaluation file of per-item outputs the report shows (None: the task shows none)
    items_file: str | None = None
    # why `lrcn caption` refuses its checkpoints (after "PATH: a TASK checkpoint ")
    cannot_caption: str = "does not generate captions"
    # demo stage kind (train, extract) -> the config sections its result depends on; a kind not
    # listed depends on the whole config
    result_sections: dict[str, tuple[str, ...]] = {}

    def build_model(self, cfg: Any, *, vocab_size: int = 0, num_classes: int = 0) -> Any:
        """The task's model for ``cfg`` (before ``train.init``; `lrcn.build.build_model` applies it)."""
        raise self._cannot("build a model")

    def model_sizes(self, payload: dict[str, Any]) -> dict[str, int]:
        """The `build_model` sizes a checkpoint's payload implies (vocabulary, classes)."""
        return {}

    def prepare_run(self, run: Any) -> None:
        """Set a run's ``train_data``, ``val_data``, ``collate``, ``val_collate`` and ``model``
        (and what else the task keeps on it: ``vocab``, ``labels``, ``heads``)."""
        raise self._cannot("train")

    def validate(self, run: Any, loader: Any) -> dict[str, Any]:
        """The validation metrics of ``run``'s model over ``loader`` (`validation_metrics` among them)."""
        raise self._cannot("validate")

    def best_files(self, model: Any) -> dict[str, Any]:
        """Files written beside ``best.pt`` whenever it is: ``{name: state_dict}``."""
        return {}

    def evaluate(
        self, model: Any, cfg: Any, payload: dict[str, Any], split: str
    ) -> tuple[dict[str, Any], dict[str, Callable[..., None]]]:
        """One split's metrics and the files to write, ``{file name: writer(path)}``."""
        raise self._cannot("be evaluated")

    def report_rows(self, cfg: Any, files: Any, metrics: dict[str, Any], run_dir: Any) -> Any:
        """The report's item table of an evaluation: ``(columns, rows)``."""
        raise self._cannot("be reported")

    def model_summary(self, cfg: Any) -> str:
        """The report's one-line description of the model (HTML-escaped by the caller)."""
        return cfg.encoder.name

    def _cannot(self, what: str) -> LrcnError:
        return LrcnError(f"task {self.name} cannot {what}; use a task that does, or implement it.")


T = TypeVar("T", bound=Task)
# a task registered again by its own class (a module imported twice) replaces itself
TASKS: Registry[Task] = Registry("task", "set task to one of", setting="task", identity=type)
_builtins: list[bool] = []  # set once the built-in tasks are registered


def register_task(task: T) -> T:
    """Register ``task`` under ``task.name`` (a taken name is refused); returns it."""
    if not task.name:
        raise LrcnError(f"{type(task).__name__} has no name; set its `name`.")
    _load_builtins()  # the built-in tasks first, whoever registers first
    TASKS.register(task.name, task)
    return task


def _load_builtins() -> None:
    if not _builtins:
        _builtins.append(True)
        importlib.import_module(BUILTIN_TASKS)


def get_task(name: str) -> Task:
    """The task registered as ``name``.

    Raises:
        LrcnError: none is; the sentence lists the registered tasks.
    """
    _load_builtins()
    return TASKS.get(name)


def task_names() -> tuple[str, ...]:
    """Every registered task, the built-in ones first."""
    _load_builtins()
    return TASKS.names()
