"""``fit``: a resumable, DDP-aware training run writing ``config.yaml``, ``vocab.json``,
checkpoints and TensorBoard logs into its run directory.

Crash consistency: one process writes a run directory at a time (an OS lock on ``<run>/.lock``,
held for the whole of ``fit``), its writability is checked before any data is built, temporary
files a killed run left are removed at the next start, and every checkpoint is renamed into place
whole. Whatever instant a run is killed, ``--resume`` ends with the ``last.pt`` and ``best.pt`` an
uninterrupted run writes (tests/test_crash_harness.py kills it at 30+ points).
"""

from __future__ import annotations

import contextlib
import logging
import random
import signal
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lrcn import distributed
from lrcn.build import check_config, normalisation
from lrcn.checkpoint import (
    load_checkpoint,
    load_state_dict_checked,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from lrcn.config import Config, config_from_dict, save_config
from lrcn.engine.evaluation import attention_strips
from lrcn.engine.loop import LossFn, TrainState, train_one_epoch
from lrcn.engine.optim import build_optimizer, build_scheduler, planned_steps, set_base_lrs
from lrcn.engine.resume import resume_payload
from lrcn.engine.run import Run
from lrcn.engine.scst import SelfCriticalLoss
from lrcn.errors import LrcnError
from lrcn.io import atomic_path, check_writable, hold_lock, kill_point, remove_stale_temps
from lrcn.runtime import StopRequested, make_grad_scaler, resolve_device, tune_cpu_allocator
from lrcn.state_dicts import fold_biases_into_batchnorm
from lrcn.text.vocab import Vocabulary
from lrcn.visualize import log_hparams, log_validation_grid

try:
    from torch.utils.tensorboard import SummaryWriter
except ImportError:  # tensorboard is a dependency, but a broken install must not stop training
    SummaryWriter = None

log = logging.getLogger(__name__)


class _StopFlag:
    """Turns SIGINT/SIGTERM into a flag checked between steps (so the checkpoint is consistent)."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.requested is not None:  # second signal: give up at once
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _vocabulary(
    payload: dict[str, Any] | None, init_payload: dict[str, Any] | None
) -> Vocabulary | None:
    """The vocabulary a resumed or initialised run must keep (its weights only fit their own)."""
    for source in (payload, init_payload):
        if source is not None and source.get("vocab"):
            return Vocabulary.from_dict(source["vocab"])
    return None


class _Trainer:
    """The optimisation state of one run and what happens between its steps and epochs."""

    def __init__(self, cfg: Config, run: Run, device: torch.device, loss_fn: LossFn | None) -> None:
        self.cfg, self.run, self.device, self.loss_fn = cfg, run, device, loss_fn
        self.is_main = distributed.is_main()
        self.optimizer = build_optimizer(run.model, cfg)
        per_epoch = -(-len(run.sampler) // run.batch_size)  # batches per epoch, last one partial
        total = planned_steps(per_epoch, cfg.train.epochs, cfg.train.grad_accum_steps)
        self.scheduler = build_scheduler(self.optimizer, cfg, total)
        self.scaler = make_grad_scaler(device, cfg.train.amp)
        self.state = TrainState()
        # the epoch's training loss so far, summed as train_one_epoch sums it: saved in every
        # checkpoint, so an epoch resumed mid-way reports the mean over all its batches
        self.epoch_loss = [0.0, 0]
        self.ckpt_dir = run.run_dir / "checkpoints"
        self.writer: SummaryWriter | None = None

    def restore(self, payload: dict[str, Any]) -> None:
        """Continue from a checkpoint: weights, optimizer, schedule, loss scale, position, RNG."""
        if fold_biases_into_batchnorm(self.run.model, dict(payload["model"])):
            raise LrcnError(
                f"{self.ckpt_dir / 'last.pt'}: written before lrcn 0.2 dropped the biases that feed "
                "small_cnn's BatchNorms, so its optimizer state no longer fits; evaluate or caption "
                "with it as it is, or continue in a new run from its weights with "
                f"train.init_from={self.ckpt_dir / 'last.pt'}."
            )
        load_state_dict_checked(self.run.model, payload["model"], self.ckpt_dir / "last.pt")
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        if self.scaler.is_enabled() and payload.get("grad_scaler"):
            self.scaler.load_state_dict(payload["grad_scaler"])
        saved_lrs = config_from_dict(payload["config"]).train
        if (saved_lrs.lr, saved_lrs.encoder_lr) != (self.cfg.train.lr, self.cfg.train.encoder_lr):
            set_base_lrs(self.optimizer, self.scheduler, self.cfg)
        self.state = TrainState(**payload["train_state"])
        self.epoch_loss = list(payload.get("epoch_loss", [0.0, 0]))
        restore_rng_state(payload["rng"])
        log.info(
            "resumed from %s at epoch %d, step %d",
            self.ckpt_dir / "last.pt",
            self.state.epoch + 1,
            self.state.step,
        )

    def checkpoint(self, name: str) -> None:
        """Write ``checkpoints/<name>`` (main process only)."""
        if not self.is_main:
            return
        run, cfg = self.run, self.cfg
        save_checkpoint(
            self.ckpt_dir / name,
            {
                "task": cfg.task,
                "config": cfg.to_dict(),
                "vocab": run.vocab.to_dict() if run.vocab is not None else None,
                "labels": run.labels,
                "baseline_caption": run.baseline_caption,
                "model": run.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "grad_scaler": self.scaler.state_dict(),  # {} unless float16 autocast
                "train_state": asdict(self.state),
                "epoch_loss": list(self.epoch_loss),
                "rng": rng_state(),
            },
        )

    def train_epoch(self, train_model: torch.nn.Module, stop: _StopFlag) -> dict[str, float]:
        """One epoch from where the run stands, with step logging, step checkpoints and stops."""
        cfg, run, state = self.cfg, self.run, self.state
        run.sampler.set_epoch(state.epoch, start=state.batch_in_epoch * run.batch_size)
        if hasattr(run.train_data, "set_epoch"):
            run.train_data.set_epoch(state.epoch)
        if cfg.train.scheduled_sampling_max > 0:  # Bengio et al. 2015: ramp up feeding own words
            ramp = max(cfg.train.scheduled_sampling_ramp_epochs, 1)
            run.model.scheduled_sampling_prob = cfg.train.scheduled_sampling_max * min(
                1.0, state.epoch / ramp
            )

        def on_step(st: TrainState, loss: float) -> None:
            self._on_step(st, loss, stop)

        return train_one_epoch(
            train_model, run.train_loader(), state, optimizer=self.optimizer,
            scheduler=self.scheduler, device=self.device,
            train=replace(cfg.train, progress=cfg.train.progress and self.is_main),
            on_step=on_step, loss_fn=self.loss_fn, scaler=self.scaler,
        )  # fmt: skip

    def _on_step(self, st: TrainState, loss: float, stop: _StopFlag) -> None:
        cfg = self.cfg
        self.epoch_loss[0] += loss
        self.epoch_loss[1] += 1
        if self.writer is not None and st.step % max(cfg.train.log_every_steps, 1) == 0:
            self.writer.add_scalar("train/loss", loss, st.step)
            self.writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], st.step)
            for key, value in getattr(self.loss_fn, "pop_stats", dict)().items():
                self.writer.add_scalar(f"scst/{key}", value, st.step)  # means since the last log
        every = cfg.train.checkpoint_every_steps
        kill_point("step")
        if every and st.step % every == 0 and st.batch_in_epoch % cfg.train.grad_accum_steps == 0:
            self.checkpoint("last.pt")
        # a stop waits for the accumulation cycle to close: a checkpoint inside one would lose its
        # micro-batches' gradients (the resume starts with none), so the resumed run differed from
        # an uninterrupted one; an epoch's last, partial cycle stops at the epoch's end (fit)
        if stop.requested and st.batch_in_epoch % cfg.train.grad_accum_steps == 0:
            self.checkpoint("last.pt")
            raise StopRequested(stop.requested)

    def end_epoch(self, stats: dict[str, float]) -> bool:
        """Validate, log, checkpoint; True when early stopping ends the run (on every rank)."""
        state = self.state
        state.epoch += 1
        state.batch_in_epoch = 0
        total, count = self.epoch_loss
        self.epoch_loss = [0.0, 0]
        record: dict[str, Any] = {
            "epoch": state.epoch,
            "train_loss": total / max(count, 1),  # == stats["loss"] unless resumed mid-epoch
            "seconds": stats["seconds"],
        }
        if self.is_main:
            self._validate(record)
        patience = self.cfg.train.early_stopping_patience
        # rank 0 alone validates: its decision is every rank's, or the others start another epoch
        stop = distributed.agree(bool(patience) and state.bad_epochs >= patience)
        if stop:
            log.info(
                "early stopping: no %s improvement for %d epochs",
                self.run.monitor,
                state.bad_epochs,
            )
        return stop

    def _validate(self, record: dict[str, Any]) -> None:
        state, run = self.state, self.run
        if len(run.val_data) == 0:
            # scored as 0, an empty split made early stopping keep epoch 1's weights, silently
            if state.epoch == 1 or not state.history:
                log.warning(
                    "the validation split is empty: validation and early stopping are off, and "
                    "best.pt is the last epoch's weights (give the data a val split: see "
                    "`lrcn prepare`'s split options)"
                )
            val: dict[str, Any] = {}
        else:
            val = run.validate()
        kill_point("validate")
        samples = val.pop("samples", [])
        grid = val.pop("grid", None)
        if self.writer is not None and grid is not None:
            strips = _attention_pictures(run, self.cfg, grid[0])
            log_validation_grid(self.writer, grid[0], grid[1], state.epoch, attention=strips)
        record.update({f"val_{k}": v for k, v in val.items() if isinstance(v, int | float)})
        value = val.get(run.monitor)
        improved = value is not None and (state.best is None or value > state.best)
        if improved:
            state.best, state.best_epoch, state.bad_epochs = value, state.epoch, 0
        elif not val:  # nothing to validate on: every epoch is the best so far
            improved, state.best_epoch, state.bad_epochs = True, state.epoch, 0
        else:
            state.bad_epochs += 1
        state.history.append(record)
        _log_epoch(self.writer, record, samples, state.epoch)
        log.info(
            "epoch %d: %s",
            state.epoch,
            ", ".join(f"{k}={v:.4g}" for k, v in record.items() if isinstance(v, float)),
        )
        # best.pt BEFORE last.pt: last.pt is where a resume starts, so until it is renamed into
        # place the epoch has not happened. A kill between the two leaves a best.pt one epoch
        # "ahead"; the resume retrains that epoch from the previous last.pt (deterministically: same
        # weights, same RNG), finds the same improvement and rewrites best.pt byte for byte, then
        # last.pt. The opposite order left best.pt stale forever: last.pt already held the new best,
        # so no later epoch counted as an improvement. (An index file written last would also make
        # the pair atomic, but adds a third file every reader must consult.)
        if improved:
            self.checkpoint("best.pt")
            self._write_best_files()
        self.checkpoint("last.pt")

    def _write_best_files(self) -> None:
        """The run's files that go with ``best.pt`` (a pretraining run's ``encoder.pt``), written
        atomically after it: a kill between the two is redone by the resume, as ``best.pt`` is."""
        if not self.is_main:
            return
        for name, state in self.run.best_files().items():
            with atomic_path(self.run.run_dir / name) as tmp:
                torch.save({k: v.detach().cpu() for k, v in state.items()}, tmp)

    def close(self) -> None:
        """Final hyper-parameter summary and the TensorBoard file closed.

        TensorBoard logs are a view of the run, not the run: a disk that filled up (or went
        read-only) under them is a warning here, so the sentence about the checkpoint that could not
        be written, if any, is the one the user sees.
        """
        if self.writer is None:
            return
        final = self.state.history[-1] if self.state.history else {}
        try:
            log_hparams(
                self.writer,
                self.cfg.to_dict(),
                {
                    **{k: v for k, v in final.items() if k != "epoch"},
                    f"best_{self.run.monitor}": self.state.best,
                },
            )
            self.writer.close()
        except OSError as exc:
            log.warning(
                "the TensorBoard logs in %s could not be written: %s", self.run.run_dir, exc
            )


def _attention_pictures(run: Run, cfg: Config, pictures: torch.Tensor) -> list[np.ndarray] | None:
    """An attention captioner's maps of the first four validation pictures, for TensorBoard's
    ``val/attention`` beside the caption grid; None (grid only) for every other model."""
    if getattr(run.model, "attends", None) is None:
        return None
    mean, std = normalisation(cfg)
    return attention_strips(run.model, run.vocab, pictures[:4], mean, std, cfg.eval.max_length)


def _start_run(
    cfg: Config, run_dir: Path, device: torch.device, payload: dict[str, Any] | None
) -> tuple[Run, LossFn | None]:
    """Data and model (initialised from ``train.init_from`` when set), the loss, the run files."""
    init_payload = None
    if payload is None and cfg.train.init_from:
        init_payload = load_checkpoint(cfg.train.init_from, task=cfg.task)
    run = Run(cfg, run_dir, device, _vocabulary(payload, init_payload))
    if init_payload is not None:
        load_state_dict_checked(run.model, init_payload["model"], cfg.train.init_from)
        log.info("initialised from %s", cfg.train.init_from)
    loss_fn = SelfCriticalLoss.from_run(run) if cfg.train.scst else None
    if distributed.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        if run.vocab is not None:
            run.vocab.save(run_dir / "vocab.json")
    return run, loss_fn


def fit(
    cfg: Config | None,
    run_dir: str | Path,
    resume: bool = False,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Train as configured, writing ``config.yaml``, ``vocab.json``, checkpoints and TensorBoard logs.

    Args:
        cfg: the experiment.
        run_dir: output folder (created).
        resume: continue from ``run_dir/checkpoints/last.pt`` with its optimizer, scheduler, data
            position and RNG states (the run's saved config is used; ``cfg`` is ignored).
        overrides: with ``resume``, ``key=value`` changes to the saved config, e.g.
            ``train.epochs=20`` to train longer; only ``RESUME_SAFE_KEYS`` may change.

    Returns:
        Summary: final epoch, best validation metric, history, paths.
    """
    tune_cpu_allocator()  # large activations reused, not page-faulted in every step
    run_dir = Path(run_dir)
    if cfg is not None and not resume:
        check_config(cfg)  # before the run directory exists (a resumed run's config: in _fit)
    with _own_run_dir(run_dir, resume):
        return _fit(cfg, run_dir, resume, overrides)


@contextlib.contextmanager
def _own_run_dir(run_dir: Path, resume: bool) -> Iterator[None]:
    """Lock ``run_dir`` for this process (rank 0 under torchrun) after checking it is writable, and
    remove the temporary files a killed run left; other ranks only read the run directory."""
    if not distributed.is_main() or (resume and not run_dir.is_dir()):
        yield  # (a missing folder to resume: resume_payload names it)
        return
    check_writable(run_dir)
    with hold_lock(run_dir / ".lock", "another `lrcn train`"):
        for folder in (run_dir, run_dir / "checkpoints"):
            if folder.is_dir():
                for tmp in remove_stale_temps(folder):
                    log.info("removed %s, left by a run that was killed while writing it", tmp)
        if (run_dir / "checkpoints").is_dir() or not resume:
            check_writable(run_dir / "checkpoints")
        yield


def _fit(
    cfg: Config | None, run_dir: Path, resume: bool, overrides: list[str] | None
) -> dict[str, Any]:
    """:func:`fit` once the run directory is this process's."""
    payload = None
    if resume:
        payload, cfg = resume_payload(run_dir, list(overrides or []))
    check_config(cfg)
    distributed.setup()
    device = distributed.device_for(resolve_device(cfg.train.device))
    _seed_everything(cfg.train.seed)
    run, loss_fn = _start_run(cfg, run_dir, device, payload)
    trainer = _Trainer(cfg, run, device, loss_fn)
    if payload is not None:
        trainer.restore(payload)
    train_model = distributed.wrap(run.model, device, cfg.train.sync_batchnorm)
    if distributed.world_size() > 1:
        # Every rank was seeded (or restored) alike; dropout on different slices of the batch
        # needs different masks. Each rank gets its own stream, fixed by the run's position.
        torch.manual_seed(
            cfg.train.seed * 1_000_003 + trainer.state.step * 1_009 + distributed.rank()
        )
    if trainer.is_main and SummaryWriter is not None:
        trainer.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
    state = trainer.state
    with _StopFlag() as stop:
        try:
            while state.epoch < cfg.train.epochs:
                if trainer.end_epoch(trainer.train_epoch(train_model, stop)):
                    break
                if stop.requested:  # arrived in the epoch's last cycle: last.pt was just written
                    raise StopRequested(stop.requested)
                distributed.barrier()
        finally:
            trainer.close()
    if state.skipped:
        log.warning("%d unreadable items were skipped (data.on_error=skip)", state.skipped)
    distributed.barrier()
    return {
        "run_dir": str(run_dir),
        "epochs": state.epoch,
        "steps": state.step,
        "best": state.best,
        "best_epoch": state.best_epoch,
        "monitor": run.monitor,
        "history": state.history,
        "skipped": state.skipped,
    }


def _log_epoch(
    writer: SummaryWriter | None, record: dict[str, Any], samples: list[dict], epoch: int
) -> None:
    if writer is None:
        return
    for key, value in record.items():
        if key != "epoch" and isinstance(value, int | float):
            writer.add_scalar(f"epoch/{key}", value, epoch)
    if samples:
        text = "\n\n".join(
            f"**{s['id']}**: {s['caption']}  \n_reference_: {s['reference']}" for s in samples
        )
        writer.add_text("val/captions", text, epoch)
