"""Max pooling over non-overlapping windows, fast on CPU for inference, equal to ``nn.MaxPool2d``.

PyTorch's CPU ``max_pool2d`` walks each window element by element and records an index per
output even when no gradient will be asked for; for the 2x2 windows of small CNNs that is four
times slower than the maximum of the window's k*k strided views taken with whole-tensor
``torch.maximum`` calls (1,600 frames of 2x50x50, one thread: 48 ms against 11 ms).
:class:`MaxPool2d` does that on CPU when no gradient flows (evaluation, captioning, feature
extraction) and the windows tile the input (stride = kernel, no padding, no dilation, floor
mode); it defers to ``nn.MaxPool2d`` otherwise, so training is unchanged. A maximum is exact:
the values are bit-identical. (A backward pass for the fast path was tried: its strided writes
made forward plus backward slower than PyTorch's.)
"""

from __future__ import annotations

import torch
from torch import nn


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[-1]))


def _windows(x: torch.Tensor, kh: int, kw: int) -> list[torch.Tensor]:
    """The kh*kw strided views of ``x`` (..., H, W), one per window position, row-major."""
    oh, ow = x.shape[-2] // kh, x.shape[-1] // kw
    return [
        x[..., i : i + kh * oh : kh, j : j + kw * ow : kw] for i in range(kh) for j in range(kw)
    ]


def _tiled_max(x: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """Max over the kh x kw windows that tile ``x``: the maximum of the window's strided views."""
    views = _windows(x, kh, kw)
    out = torch.maximum(views[0], views[1]) if len(views) > 1 else views[0].clone()
    for view in views[2:]:
        torch.maximum(out, view, out=out)
    return out


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` with a fast CPU path for windows that tile the input (see the module)."""

    def _tiles(self, x: torch.Tensor) -> bool:
        kernel, stride = _pair(self.kernel_size), _pair(self.stride or self.kernel_size)
        return (
            x.device.type == "cpu"
            and x.dim() in (3, 4)
            and kernel == stride
            and _pair(self.padding) == (0, 0)
            and _pair(self.dilation) == (1, 1)
            and not self.ceil_mode
            and not self.return_indices
            and not (x.requires_grad and torch.is_grad_enabled())
            and not torch.jit.is_tracing()  # ONNX export traces the plain ops
            and x.shape[-2] >= kernel[0]
            and x.shape[-1] >= kernel[1]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool ``x`` (N, C, H, W) or (C, H, W), as ``nn.MaxPool2d`` does."""
        if not self._tiles(x):
            return super().forward(x)
        return _tiled_max(x, *_pair(self.kernel_size))


def use_fast_pools(module: nn.Module) -> nn.Module:
    """Give every ``nn.MaxPool2d`` in ``module`` the fast CPU path (same results, no parameters).

    Works on any model (torchvision, timm, one's own): pools whose windows overlap or are padded
    keep PyTorch's kernel. Returns ``module``.
    """
    for child in module.modules():
        if type(child) is nn.MaxPool2d:
            child.__class__ = MaxPool2d
    return module
