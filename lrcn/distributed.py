"""torchrun / DistributedDataParallel plumbing: PyTorch's own engine, nothing invented.

Launch with ``torchrun --nproc_per_node=N -m lrcn.cli train ...``; torchrun sets RANK,
WORLD_SIZE, LOCAL_RANK and MASTER_ADDR/PORT, and ``setup()`` reads them. Without torchrun every
helper here is a no-op for a single process.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def is_initialized() -> bool:
    """True inside a torchrun process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 without torchrun)."""
    return dist.get_rank() if is_initialized() else int(os.environ.get("RANK", 0))


def world_size() -> int:
    """Processes in the run (1 without torchrun)."""
    return dist.get_world_size() if is_initialized() else int(os.environ.get("WORLD_SIZE", 1))


def is_main() -> bool:
    """True on rank 0, the process that validates, logs and writes checkpoints."""
    return rank() == 0


def setup() -> None:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on GPU)."""
    if world_size() > 1 and not is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend=backend)


def device_for(device: torch.device) -> torch.device:
    """This process's device: its LOCAL_RANK's GPU under torchrun."""
    if device.type == "cuda" and world_size() > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


class _LossModule(nn.Module):
    """Routes DDP's forward to the model's ``loss(batch)`` so gradients are all-reduced."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> torch.Tensor:
        return self.model.loss(batch)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP-wrap for multi-process training; the bare model otherwise."""
    if world_size() <= 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        _LossModule(model), device_ids=ids, find_unused_parameters=False
    )


def agree(flag: bool) -> bool:
    """Rank 0's ``flag``, the same on every rank (a decision only rank 0 can make, e.g. to stop)."""
    if not is_initialized():
        return flag
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )
    decision = torch.tensor([int(flag)], device=device)
    dist.broadcast(decision, src=0)
    return bool(decision.item())


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if is_initialized():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (no-op in one process)."""
    if is_initialized():
        dist.destroy_process_group()
