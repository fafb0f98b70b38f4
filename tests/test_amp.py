"""Mixed precision: which dtype ``train.amp`` picks, and float16's loss scaling.

No GPU is needed: the dtype choice is checked with a faked compute capability, and the scaler's
effect on a training step with a CPU ``GradScaler`` (the same code path as CUDA's).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from lrcn.config import TrainConfig
from lrcn.engine import TrainState, train_one_epoch
from lrcn.runtime import amp_dtype, make_grad_scaler


class _Regression(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return ((self.linear(batch["x"]).squeeze(1) - batch["y"]) ** 2).mean()


def _batches(target_scale: float = 1.0) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(24, 4, generator=generator)
    y = target_scale * x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
    return [{"x": x[i : i + 8], "y": y[i : i + 8]} for i in range(0, 24, 8)]


def _train(
    model: nn.Module,
    scaler: torch.amp.GradScaler | None,
    grad_clip: float,
    target_scale: float = 1.0,
) -> torch.optim.lr_scheduler.LRScheduler:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)
    train_one_epoch(
        model, DataLoader(_batches(target_scale), batch_size=None), TrainState(), optimizer=optimizer,
        scheduler=scheduler, device=torch.device("cpu"),
        train=TrainConfig(grad_clip=grad_clip, amp=False, progress=False), scaler=scaler,
    )  # fmt: skip
    return scheduler


@pytest.mark.parametrize(
    ("device", "capability", "expected"),
    [
        ("cpu", None, None),
        ("cuda", (8, 0), torch.bfloat16),  # A100
        ("cuda", (9, 0), torch.bfloat16),  # H100
        ("cuda", (7, 5), torch.float16),  # T4, where bfloat16 would only be emulated
        ("cuda", (7, 0), torch.float16),  # V100
    ],
)
def test_amp_dtype_follows_native_bfloat16(
    monkeypatch: pytest.MonkeyPatch, device: str, capability, expected
) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)

    assert amp_dtype(torch.device(device), True) is expected
    assert amp_dtype(torch.device(device), False) is None


def test_grad_scaler_only_for_float16(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not make_grad_scaler(torch.device("cpu"), True).is_enabled()
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    assert not make_grad_scaler(torch.device("cuda"), True).is_enabled()


@pytest.mark.parametrize("grad_clip", [0.0, 0.5])
def test_scaled_steps_equal_unscaled_steps(grad_clip: float) -> None:
    torch.manual_seed(0)
    plain = _Regression()
    scaled = copy.deepcopy(plain)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)

    plain_schedule = _train(plain, None, grad_clip)
    scaled_schedule = _train(scaled, scaler, grad_clip)

    # a power-of-two scale is exact: clipping sees the unscaled gradients, the steps are the same.
    # Scaling by 2**16 commutes with float32 rounding and both runs share this CPU's kernels, so
    # the weights are bitwise equal on any CPU (they are on default, AVX2 and AVX-512 kernels).
    for a, b in zip(plain.parameters(), scaled.parameters()):
        assert torch.equal(a, b)
    assert scaler.get_scale() == 2.0**16  # no overflow, so no back-off
    assert scaled_schedule.last_epoch == plain_schedule.last_epoch == 3


def test_overflowing_step_is_skipped_and_scale_backs_off() -> None:
    torch.manual_seed(0)
    model = _Regression()
    before = copy.deepcopy(model.state_dict())
    # targets of ~1e4 and a scale of 2^127: every scaled loss overflows float32 (3.4e38)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)

    scheduler = _train(model, scaler, grad_clip=0.0, target_scale=1e4)

    # each of the three batches overflowed: its step was skipped (not applied as inf/nan) and
    # the scale halved
    for key, value in model.state_dict().items():
        assert torch.equal(before[key], value), key
    assert scaler.get_scale() == 2.0**124
    assert scheduler.last_epoch == 0  # the schedule did not advance past steps never taken
