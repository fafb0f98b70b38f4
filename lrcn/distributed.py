"""torchrun / DistributedDataParallel plumbing: PyTorch's own engine, nothing invented.

Launch with ``torchrun --nproc_per_node=N -m lrcn.cli train ...``; torchrun sets RANK,
WORLD_SIZE, LOCAL_RANK and MASTER_ADDR/PORT, and ``setup()`` reads them. Without torchrun every
helper here is a no-op for a single process.
"""

from __future__ import annotations

import os
from typing import Any

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
        loss = self.model.loss(batch)
        lengths = batch.get("lengths")
        if lengths is None:  # a mean over items: every rank holds as many (the sampler pads)
            return loss
        # A captioner's loss is the mean over target tokens (caption length - 1 each), and ranks
        # hold different numbers of them: weight each rank's mean by its share of the global
        # batch's tokens, so DDP's average of the ranks' gradients is one process's gradient.
        tokens = (lengths - 1).sum().to(loss.dtype)
        total = tokens.clone()
        dist.all_reduce(total)
        return loss * (tokens * world_size() / total)


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) whose backward all-reduces the gradient: d(sum over ranks)/d(own part)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """What ``torch.nn.SyncBatchNorm`` does on GPUs, for CPU tensors (gloo).

    torch's synchronised kernels are CUDA-only (and DDP refuses ``nn.SyncBatchNorm`` on CPU), so
    the global batch's statistics are summed over ranks here: per-channel sums and counts, then
    the sum of squares about the global mean (two passes, as exact as one process's BatchNorm).
    Gradients flow through both sums. In eval mode or one process it is plain BatchNorm; its
    state_dict keys are BatchNorm's.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Normalise with the global batch's statistics while training under torchrun."""
        if not (self.training and input.device.type == "cpu" and world_size() > 1):
            return super().forward(input)
        self._check_input_dim(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        local_count = input.new_tensor([input.numel() // input.size(1)])
        sums = _SumOverRanks.apply(torch.cat([input.sum(dims), local_count]))
        count = sums[-1]
        mean = sums[:-1] / count
        centred = input - mean.view(shape)
        var = _SumOverRanks.apply((centred * centred).sum(dims)) / count
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach() * count / (count - 1))
        return out

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        factor = (
            self.momentum if self.momentum is not None else 1.0 / self.num_batches_tracked.item()
        )
        self.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
        self.running_var.mul_(1 - factor).add_(unbiased_var, alpha=factor)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm of ``model`` in place by a synchronised one (torch's on GPU).

    Parameters and running statistics are shared with the replaced layers, so optimizers built
    before keep working and ``model.state_dict()`` keeps its keys. Layers in eval mode (a frozen
    encoder) never synchronise: they normalise with their running statistics.
    """
    cls = nn.SyncBatchNorm if device.type == "cuda" else CpuSyncBatchNorm
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, _BATCH_NORMS):
                setattr(parent, name, _synchronised(child, cls))
    return model


_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _synchronised(bn: nn.Module, cls: type) -> nn.Module:
    sync = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    if bn.affine:
        sync.weight, sync.bias = bn.weight, bn.bias
    sync.running_mean, sync.running_var = bn.running_mean, bn.running_var
    sync.num_batches_tracked = bn.num_batches_tracked
    sync.train(bn.training)
    return sync


def wrap(model: nn.Module, device: torch.device, sync_batchnorm: bool = True) -> nn.Module:
    """DDP-wrap for multi-process training; the bare model otherwise.

    With ``sync_batchnorm`` (``train.sync_batchnorm``), BatchNorm layers normalise with the
    statistics of the global batch, as one process would (see ``convert_sync_batchnorm``); ``model``
    itself is changed, so what fit saves is what was trained.
    """
    if world_size() <= 1:
        return model
    if sync_batchnorm:
        convert_sync_batchnorm(model, device)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        _LossModule(model), device_ids=ids, find_unused_parameters=leaves_parameters_unused(model)
    )


def leaves_parameters_unused(model: nn.Module) -> bool:
    """Whether some trainable parameters get no gradient in a step, which DDP must be told.

    A captioner attending over a trainable CNN's grid reads the map before the layers that make
    the pooled vector (small_cnn's fc, VGG's and MobileNet's classifiers), so those layers take
    no part in the loss; DDP's reducer would otherwise stop the second step with a RuntimeError.
    Only then is the (per-step) search for unused parameters switched on.
    """
    encoder = getattr(model, "encoder", None)
    return (
        getattr(model, "attends", None) == "grid"
        and isinstance(encoder, nn.Module)
        and any(p.requires_grad for p in encoder.parameters())
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
