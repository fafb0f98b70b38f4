"""TimeDistributed: apply one module to every time step by folding time into the batch.

Keras semantics: one wrapped module, so its weights are shared across time steps. Keras 3 calls
the layer once per step; folding (B, T, ...) into (B*T, ...) gives the same result in one call,
one large kernel call instead of T small ones (BENCHMARKS.md, figure 7, times the seed both ways).
"""

from __future__ import annotations

import torch
from torch import nn


class TimeDistributed(nn.Module):
    """Apply `module` to each time step of a (B, T, ...) input with shared weights.

    Wraps a whole per-frame CNN or a single layer (Conv2d, ReLU, MaxPool2d, Flatten, BatchNorm2d
    ...); a stack of per-layer wrappers computes the same as one wrapper around the stack. Note
    that BatchNorm statistics are then taken over all B*T frames together, as in Keras.

    Args:
        module: the module to apply to each (B*T, ...) slice; it must keep the leading dimension.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Fold time into the batch, apply the module, unfold.

        Args:
            inputs: (B, T, ...) with at least one trailing dimension.

        Returns:
            (B, T, ...) with the module's trailing output shape; a tuple of such tensors when the
            module returns a tuple.
        """
        if inputs.dim() < 3:
            raise ValueError(
                f"TimeDistributed got an input of shape {tuple(inputs.shape)}, but it expects "
                "at least 3 dimensions (batch, time, features...)."
            )
        batch, steps = inputs.shape[:2]
        # reshape, not view: a view of a contiguous input (zero-copy), a copy only when needed.
        folded = inputs.reshape(batch * steps, *inputs.shape[2:])  # (B*T, ...)
        outputs = self.module(folded)
        if isinstance(outputs, tuple):
            return tuple(self._unfold(output, batch, steps) for output in outputs)
        return self._unfold(outputs, batch, steps)

    def _unfold(self, output: torch.Tensor, batch: int, steps: int) -> torch.Tensor:
        if output.dim() == 0 or output.shape[0] != batch * steps:
            raise ValueError(
                f"TimeDistributed's {type(self.module).__name__} returned shape "
                f"{tuple(output.shape)} for {batch * steps} folded frames; the wrapped module must "
                "keep the leading (batch) dimension."
            )
        return output.reshape(batch, steps, *output.shape[1:])  # (B, T, ...)
