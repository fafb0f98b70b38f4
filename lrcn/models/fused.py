"""A small first CNN block (pad -> conv -> ReLU -> max pool) fused forward and backward on CPU.

The seed's first block turns 50x50 frames into a 2x50x50 conv output (32 MB a batch of 1,600
frames), applies ReLU and keeps the maximum of each 2x2 window. Layer by layer, on one thread,
oneDNN spends 27 ms writing that output and 28 ms on the weights' gradient from it,
``max_pool2d_with_indices`` 19 + 4 ms and ReLU 3 + 3 ms: 84 of the training step's 114 ms, for
128 MFLOP of arithmetic. Fused, the block takes about 30 ms forward and backward and the step 63.

:class:`FusedSequential` computes the same block as one matrix product per direction. Each
pooling window of a k x k conv reads a (pool + k - 1)^2 patch of the padded input; the patches
(9 rows for the seed) form a matrix ``cols``, and one weight matrix whose rows are the conv's
kernels placed at each of the window's positions gives every conv output of every window at once
(``addmm``). The block's output is the maximum over each window's rows, clamped at zero. The
backward pass sends each window's gradient to its first maximum in row-major order, as PyTorch's
max pool does, using float arithmetic only (``sign(max - y)`` is 0 at a maximum and 1 below it),
and the weights' gradient is one more matrix product with ``cols``. Both directions run
chunk by chunk, in window order: no NCHW conv output, no ReLU copy, no pool indices. (It keeps
76 MB a seed batch for the backward pass, patches, conv outputs and maxima; the layers kept 65.) (For the weights' gradient of a first
layer, only ties between different patches need the rule: equal patches give equal gradients.)

It applies where the layer pattern is exactly ``[ZeroPad2d] Conv2d ReLU MaxPool2d`` with a
stride-1 conv of few input channels (patch rows <= :data:`MAX_PATCH_ROWS`), non-overlapping
unpadded pooling windows, float32 on CPU, no autocast, and no gradient wanted for the block's
input (a first layer). Everywhere else PyTorch's modules run unchanged. The values equal the
modules' within rounding (the sums run in another order: about 1e-7 relative); the window's
tie rule is PyTorch's.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

# in_channels * (pool + k - 1)^2, the patch's rows: the seed has 9. Measured (one thread, forward +
# backward / no-grad forward, ms): 1 channel, 2x2 kernel: 112 -> 31 / 44 -> 15; 3 channels, 2x2
# (27 rows): 65 -> 36 / 28 -> 21; 3 channels, 3x3 (48 rows): 110 -> 91 but 34 -> 46, hence 27.
MAX_PATCH_ROWS = 27
_CHUNK = 1 << 16  # windows a chunk (frames whole): its working set stays in the cache


def _pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[-1]))


def _window_weights(weight: torch.Tensor, pool: tuple[int, int]) -> torch.Tensor:
    """(F * ph * pw, C * rh * rw): the kernel placed at each window position, row (f, a, b)."""
    filters, channels, kh, kw = weight.shape
    ph, pw = pool
    out = weight.new_zeros(filters, ph, pw, channels, ph + kh - 1, pw + kw - 1)
    for a in range(ph):
        for b in range(pw):
            out[:, a, b, :, a : a + kh, b : b + kw] = weight
    return out.view(filters * ph * pw, -1)


def _fold_window_grad(grad: torch.Tensor, shape: torch.Size, pool: tuple[int, int]) -> torch.Tensor:
    """The kernel's gradient from the window weights' gradient (the adjoint of the placement)."""
    filters, channels, kh, kw = shape
    ph, pw = pool
    grad = grad.view(filters, ph, pw, channels, ph + kh - 1, pw + kw - 1)
    out = grad.new_zeros(shape)
    for a in range(ph):
        for b in range(pw):
            out += grad[:, a, b, :, a : a + kh, b : b + kw]
    return out


class _ConvReluPool(torch.autograd.Function):
    """max_pool(relu(conv2d(x, weight, bias))) for tiling windows; gradients for weight, bias.

    Both directions run over chunks of about :data:`_CHUNK` windows (whole frames), so that a
    chunk's patches, conv outputs and gradients stay in the cache between the few operations that
    read them (1,600 seed frames, one thread: 29 ms forward and backward, 39 ms unchunked).
    """

    @staticmethod
    def forward(
        ctx: Any,
        xpad: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        pool: tuple[int, int],
    ) -> torch.Tensor:
        filters, _, kh, kw = weight.shape
        (ph, pw), batch = pool, xpad.shape[0]
        oh, ow = (xpad.shape[2] - kh + 1) // ph, (xpad.shape[3] - kw + 1) // pw
        patches = xpad.unfold(2, ph + kh - 1, ph).unfold(3, pw + kw - 1, pw)  # N,C,oh,ow,rh,rw
        patches = patches.permute(1, 4, 5, 0, 2, 3)  # (C, rh, rw, N, oh, ow): a row per tap
        rows = _window_weights(weight, pool)  # (F * A, R)
        shift = None if bias is None else bias.repeat_interleave(ph * pw)[:, None]
        frames = max(1, _CHUNK // (oh * ow))
        out = xpad.new_empty(batch, filters, oh, ow)
        keep = any(ctx.needs_input_grad)  # inference: let each chunk's buffers go at once
        parts = []
        for first in range(0, batch, frames):
            last = min(batch, first + frames)
            cols = patches[:, :, :, first:last].reshape(rows.shape[1], -1)  # (R, windows)
            conv = rows @ cols if shift is None else torch.addmm(shift, rows, cols)  # (F * A, M)
            peak = conv.view(filters, ph * pw, -1).amax(1)  # (F, M): each window's maximum
            out[first:last] = peak.view(filters, last - first, oh, ow).transpose(0, 1)
            if keep:
                parts.append((first, last, cols, conv, peak))
        ctx.parts, ctx.pool, ctx.shape = parts, pool, weight.shape
        ctx.has_bias = bias is not None
        return out.clamp_min_(0)  # ReLU commutes with the maximum

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        filters, channels, kh, kw = ctx.shape
        area = ctx.pool[0] * ctx.pool[1]
        window = grad_out.new_zeros(
            filters * area, channels * (ctx.pool[0] + kh - 1) * (ctx.pool[1] + kw - 1)
        )
        grad_bias = grad_out.new_zeros(filters)
        for first, last, cols, conv, peak in ctx.parts:
            grad = grad_out[first:last].transpose(0, 1).reshape(filters, -1)  # (F, M)
            grads = _window_grads(grad, conv.view(filters, area, -1), peak)
            grad_bias += grads.sum((1, 2))
            window.addmm_(grads.view(filters * area, -1), cols.T)  # partial sums, chunk by chunk
        grad_weight = _fold_window_grad(window, ctx.shape, ctx.pool)
        return None, grad_weight, grad_bias if ctx.has_bias else None, None


def _window_grads(grad: torch.Tensor, conv: torch.Tensor, peak: torch.Tensor) -> torch.Tensor:
    """(F, A, M): each window's gradient at its first maximum (row-major), as PyTorch's pool does.

    Float arithmetic only (comparisons into bool masks cost four times as much here): where the
    maximum is above zero (ReLU's condition), ``sign(peak - conv)`` is 0 at a maximum and 1 below
    it, so each position takes what the earlier ones left and passes on the rest.
    """
    area = conv.shape[1]
    grads = torch.empty_like(conv)
    rest = grads[:, area - 1]  # the last position takes whatever is left
    torch.mul(grad, peak.clamp_min(0).sign_(), out=rest)  # none where the maximum is <= 0
    below = torch.empty_like(peak)
    for k in range(area - 1):
        torch.sub(peak, conv[:, k], out=below).sign_()
        below.mul_(rest)  # left for the later positions
        torch.sub(rest, below, out=grads[:, k])
        rest.copy_(below)
    return grads


def _block(layers: list[nn.Module], start: int) -> tuple[int, int, int, int] | None:
    """Padding (l, r, t, b) of the fusable block at ``layers[start]``, or None if there is none."""
    pad = (0, 0, 0, 0)
    if isinstance(layers[start], nn.ZeroPad2d):
        pad = tuple(int(p) for p in layers[start].padding)  # type: ignore[assignment]
        start += 1
    if len(layers) < start + 3:
        return None
    conv, relu, pool = layers[start : start + 3]
    if not (type(conv) is nn.Conv2d and type(relu) is nn.ReLU and isinstance(pool, nn.MaxPool2d)):
        return None
    kernel, stride = _pair(pool.kernel_size), _pair(pool.stride or pool.kernel_size)
    if not (
        kernel == stride
        and _pair(pool.padding) == (0, 0)
        and _pair(pool.dilation) == (1, 1)
        and not pool.ceil_mode
        and not pool.return_indices
        and not isinstance(conv.padding, str)
        and conv.padding_mode == "zeros"
        and _pair(conv.stride) == (1, 1)
        and _pair(conv.dilation) == (1, 1)
        and conv.groups == 1
    ):
        return None
    kh, kw = _pair(conv.kernel_size)
    if conv.in_channels * (kernel[0] + kh - 1) * (kernel[1] + kw - 1) > MAX_PATCH_ROWS:
        return None
    rows, columns = _pair(conv.padding)  # the conv's own zero padding, on both sides
    return (pad[0] + columns, pad[1] + columns, pad[2] + rows, pad[3] + rows)


def _applies(x: torch.Tensor, conv: nn.Conv2d, pad: tuple[int, ...], pool: nn.MaxPool2d) -> bool:
    """Whether this input may take the fused path (see the module's conditions)."""
    if not (
        x.device.type == "cpu"
        and x.dim() == 4
        and x.dtype == torch.float32
        and conv.weight.dtype == torch.float32
        and not (x.requires_grad and torch.is_grad_enabled())
        and not torch.jit.is_tracing()  # ONNX export traces the plain ops
        and not torch.is_autocast_enabled("cpu")
    ):
        return False
    kh, kw = _pair(conv.kernel_size)
    ph, pw = _pair(pool.kernel_size)
    return (
        x.shape[2] + pad[2] + pad[3] - kh + 1 >= ph and x.shape[3] + pad[0] + pad[1] - kw + 1 >= pw
    )


class FusedSequential(nn.Sequential):
    """``nn.Sequential`` that runs a leading ``[ZeroPad2d] Conv2d ReLU MaxPool2d`` fused on CPU.

    The same modules, parameters and state_dict keys; only the computation of that first block
    changes, and only where it applies (see the module); otherwise it runs layer by layer.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layers in order, the first block fused where it applies."""
        layers = list(self)
        pad = _block(layers, 0) if layers else None
        if pad is None:
            return super().forward(x)
        first = 1 if isinstance(layers[0], nn.ZeroPad2d) else 0
        conv, pool = layers[first], layers[first + 2]
        if not _applies(x, conv, pad, pool):
            return super().forward(x)
        xpad = F.pad(x, pad) if any(pad) else x
        out = _ConvReluPool.apply(xpad, conv.weight, conv.bias, _pair(pool.kernel_size))
        for layer in layers[first + 3 :]:
            out = layer(out)
        return out


def use_fused_blocks(module: nn.Module) -> nn.Module:
    """Fuse the first ``[ZeroPad2d] Conv2d ReLU MaxPool2d`` of every plain ``nn.Sequential``.

    Only sequentials that start with such a block change class (to :class:`FusedSequential`);
    parameters and state_dict keys stay. Returns ``module``.
    """
    for child in module.modules():
        if type(child) is nn.Sequential and len(child) and _block(list(child), 0) is not None:
            child.__class__ = FusedSequential
    return module
