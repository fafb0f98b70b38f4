"""The optimizer and the learning-rate schedule of a training run."""

from __future__ import annotations

import math

import torch
from torch import nn

from lrcn.config import Config


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """AdamW (or Adam); a fine-tuned pretrained encoder gets ``train.encoder_lr``."""
    encoder = getattr(model, "encoder", None)
    encoder_params = (
        [p for p in encoder.parameters() if p.requires_grad] if encoder is not None else []
    )
    encoder_ids = {id(p) for p in encoder_params}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in encoder_ids]
    groups = [{"params": rest, "lr": cfg.train.lr}]
    if encoder_params:
        groups.append({"params": encoder_params, "lr": group_lrs(cfg)[1]})
    cls = torch.optim.AdamW if cfg.train.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=cfg.train.lr, eps=cfg.train.adam_eps, weight_decay=cfg.train.weight_decay)


def group_lrs(cfg: Config) -> tuple[float, float]:
    """The base learning rates of the decoder group and the encoder group."""
    pretrained = cfg.encoder.weights not in ("none", "")
    return cfg.train.lr, cfg.train.encoder_lr if pretrained else cfg.train.lr


def planned_steps(batches_per_epoch: int, epochs: int, grad_accum_steps: int) -> int:
    """Optimizer steps a run takes: an accumulation cycle also closes at each epoch's last batch."""
    return math.ceil(batches_per_epoch / grad_accum_steps) * epochs


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: Config, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Warmup, then cosine (to 2% of the base rate), step (x0.1 at each third) or constant."""
    warmup = cfg.train.warmup_steps

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if cfg.train.scheduler == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress))
        if cfg.train.scheduler == "step":
            return 0.1 ** int(3 * step / max(1, total_steps))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def set_base_lrs(
    optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler, cfg: Config
) -> None:
    """Make a resumed run follow ``cfg``'s learning rates from where its schedule stands."""
    bases = list(group_lrs(cfg))[: len(optimizer.param_groups)]
    scheduler.base_lrs = bases
    for group, base, lam in zip(optimizer.param_groups, bases, scheduler.lr_lambdas):
        group["initial_lr"] = base
        group["lr"] = base * lam(scheduler.last_epoch)
