"""A task's data, model and validation, built from a config: what ``fit`` trains.

The task (`lrcn.task.get_task`) fills the run in (`Task.prepare_run`: data, collates, model,
vocabulary or labels) and validates it (`Task.validate`); the run adds what every task shares:
the sampler, the batch size per process, the loaders and the monitor.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from lrcn import distributed
from lrcn.config import Config
from lrcn.data.datasets import EpochSampler
from lrcn.errors import LrcnError
from lrcn.runtime import make_loader
from lrcn.task import get_task
from lrcn.text.vocab import Vocabulary

log = logging.getLogger(__name__)


class Run:
    """Everything ``fit`` needs for one task: data, model, evaluation; built from a config.

    Attributes set by the task: ``train_data``, ``val_data``, ``collate`` and ``val_collate``
    (None: the default collate), ``model``; ``vocab``, ``baseline_caption`` (captioning),
    ``labels`` (class names, or an attribute task's heads), ``heads``.
    """

    def __init__(
        self, cfg: Config, run_dir: Path, device: torch.device, vocab: Vocabulary | None = None
    ) -> None:
        self.cfg, self.run_dir, self.device = cfg, run_dir, device
        self.task = get_task(cfg.task)
        self.vocab = vocab
        self.labels: list[str] | None = None
        self.baseline_caption = ""
        self.val_collate: Any = None
        rank, world = distributed.rank(), distributed.world_size()
        self.task.prepare_run(self)
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
        auto = self.task.validation_metrics[0]
        self.monitor = cfg.train.monitor if cfg.train.monitor != "auto" else auto

    def best_files(self) -> dict[str, dict[str, torch.Tensor]]:
        """Files written beside ``best.pt`` whenever it is (`Task.best_files`; for a pretraining
        run, task attributes, ``encoder.pt``, the state_dict ``encoder.weights`` names)."""
        return self.task.best_files(self.model)

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

    def val_loader(self) -> DataLoader:
        """The validation split in order, ``eval.batch_size`` at a time."""
        return make_loader(
            self.val_data,
            self.cfg.eval.batch_size,
            self.val_collate,
            None,
            self.cfg.data.num_workers,
            self.device,
        )

    def validate(self) -> dict[str, Any]:
        """The task's validation metrics (`Task.validation_metrics` among them), and for a
        captioner sample captions and a picture."""
        return self.task.validate(self, self.val_loader())


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
