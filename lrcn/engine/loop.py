"""One training epoch: forward, backward, accumulation, clipping, the optimizer step."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from lrcn.config import TrainConfig
from lrcn.errors import LrcnError
from lrcn.runtime import autocast, move_batch, progress_bar

log = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, dict], torch.Tensor]


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0  # the epoch in progress (or next to start)
    step: int = 0  # optimizer steps so far
    batch_in_epoch: int = 0  # batches of `epoch` already trained
    best: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    state: TrainState,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    train: TrainConfig,
    on_step: Callable[[TrainState, float], None] | None = None,
    loss_fn: LossFn | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, float]:
    """One pass over ``loader`` (which already skips the batches trained before a resume).

    Every batch is a dict the model's ``loss(batch)`` understands. From ``train`` (the config's
    ``train`` section) the loop reads ``grad_clip``, ``amp``, ``grad_accum_steps`` and ``progress``.
    ``on_step`` runs after each batch (logging, step checkpoints, stop requests). An enabled
    ``scaler`` (float16 autocast, :func:`lrcn.runtime.make_grad_scaler`) scales the loss before
    backward, unscales the gradients before clipping, and skips the optimizer step whose gradients
    overflowed.

    Returns:
        ``{"loss": mean training loss, "items": examples seen, "seconds": wall time}``.
    """
    model.train()
    scaler = scaler if scaler is not None and scaler.is_enabled() else None
    total, count, items, start = 0.0, 0, 0, time.perf_counter()
    # an accumulation cycle always closes at the epoch's last batch
    last_batch = _start(loader) + len(loader)
    bar = progress_bar(loader, train.progress, desc=f"epoch {state.epoch + 1}")
    pending = False  # gradients accumulated since the last optimizer step
    for batch in bar:
        _count_skipped(batch, state)
        value = None  # an empty batch: every item unreadable (data.on_error: skip)
        if batch.get("size", 1) != 0:
            batch = move_batch(batch, device)
            value = _backward(model, batch, device, state, train, loss_fn, scaler)
            pending = True
        state.batch_in_epoch += 1
        # an empty batch closes its cycle where the cycle closes too (mid-epoch, left open, the
        # next cycle summed three micro-batches of two cycles at 1.5x the scale); a cycle with no
        # readable batch at all takes no step
        if pending and _closes_cycle(state.batch_in_epoch, train.grad_accum_steps, last_batch):
            if _optimizer_step(model, optimizer, train.grad_clip, scaler):
                scheduler.step()  # the schedule follows the steps actually taken
            state.step += 1
            pending = False
        if value is None:
            continue
        total += value
        count += 1
        items += int(batch.get("size", 0)) or next(
            v.shape[0] for v in batch.values() if torch.is_tensor(v)
        )
        if train.progress and hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{value:.3f}")
        if on_step is not None:
            on_step(state, value)
    return {"loss": total / max(count, 1), "items": items, "seconds": time.perf_counter() - start}


def _backward(
    model: nn.Module,
    batch: dict,
    device: torch.device,
    state: TrainState,
    train: TrainConfig,
    loss_fn: LossFn | None,
    scaler: torch.amp.GradScaler | None,
) -> float:
    """The batch's loss, back-propagated at ``1 / grad_accum_steps`` of its size; its value."""
    with autocast(device, train.amp):
        loss = _loss(model, batch, loss_fn)
    value = loss.item()  # the step's one host sync: logging and the NaN check share it
    if not math.isfinite(value):
        raise LrcnError(
            f"the training loss became {value} at step {state.step + 1} (epoch {state.epoch + 1}); "
            "the last good checkpoint is kept — lower train.lr or enable train.grad_clip."
        )
    loss = loss / train.grad_accum_steps
    (scaler.scale(loss) if scaler is not None else loss).backward()
    return value


def _closes_cycle(batch_in_epoch: int, grad_accum_steps: int, last_batch: int) -> bool:
    """Whether the batch at this position (1-based within the epoch) ends an accumulation cycle:
    every ``grad_accum_steps`` batches, and at the epoch's last batch."""
    return batch_in_epoch % grad_accum_steps == 0 or batch_in_epoch == last_batch


def _count_skipped(batch: dict, state: TrainState) -> None:
    """Log and count the unreadable items a collate left out (``data.on_error: skip``)."""
    skipped = batch.pop("skipped", [])
    state.skipped += len(skipped)
    for message in skipped:
        log.warning("skipped: %s", message)


def _loss(model: nn.Module, batch: dict, loss_fn: LossFn | None) -> torch.Tensor:
    """The batch's training loss: a custom loss (SCST), DDP's forward, or the model's own."""
    if loss_fn is not None:
        return loss_fn(model, batch)
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return model(batch)
    return model.loss(batch)


def _optimizer_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    grad_clip: float,
    scaler: torch.amp.GradScaler | None,
) -> bool:
    """Clip and apply the accumulated gradients; False when a float16 overflow skipped the step."""
    if scaler is not None:
        scaler.unscale_(optimizer)  # clip the true gradients
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    applied = True
    if scaler is not None:
        scale = scaler.get_scale()
        scaler.step(optimizer)  # skipped when a gradient is inf/nan
        scaler.update()
        applied = scaler.get_scale() >= scale  # the scale backs off only on a skip
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return applied


def _start(loader: DataLoader) -> int:
    """Batches of this epoch trained before a resume (the sampler starts after them)."""
    sampler = loader.batch_sampler.sampler if loader.batch_sampler is not None else None
    return getattr(sampler, "start", 0) // max(loader.batch_size or 1, 1)
