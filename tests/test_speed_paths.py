"""The CPU speed paths of issue 16 change where memory lives and how a maximum is taken, not results."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lrcn import runtime
from lrcn.models import fused as fused_module
from lrcn.models.classifier import build_seed_cnn, build_seed_model
from lrcn.models.fused import FusedSequential, use_fused_blocks
from lrcn.models.pooling import MaxPool2d, use_fast_pools

REPO = Path(__file__).resolve().parents[1]


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 3),
    channels=st.integers(1, 4),
    height=st.integers(2, 11),
    width=st.integers(2, 11),
    kernel=st.sampled_from([2, 3, (2, 1), (1, 3)]),
    levels=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_fast_pool_equals_torch_bit_for_bit(batch, channels, height, width, kernel, levels, seed):
    """Values drawn from a few levels make ties common: the maximum is exact whatever the order."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    if height < kh or width < kw:
        return
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(-levels, levels + 1, (batch, channels, height, width), generator=gen).float()
    x += torch.randn(x.shape, generator=gen) * (seed % 2)  # half the cases: no ties at all
    with torch.no_grad():
        assert torch.equal(MaxPool2d(kernel)(x), F.max_pool2d(x, kernel))
        assert torch.equal(MaxPool2d(kernel)(x[0]), F.max_pool2d(x[0], kernel))  # (C, H, W)


def test_fast_pool_keeps_nan_as_torch_does():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 1] = float("nan")
    with torch.no_grad():
        assert torch.equal(MaxPool2d(2)(x).isnan(), F.max_pool2d(x, 2).isnan())


def test_fast_pool_defers_to_torch_for_gradients_and_other_windows(monkeypatch):
    """Training (a gradient to compute), overlapping or padded windows take PyTorch's kernel."""
    calls = []
    real = nn.MaxPool2d.forward
    monkeypatch.setattr(nn.MaxPool2d, "forward", lambda self, x: calls.append(1) or real(self, x))
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    MaxPool2d(2)(x).sum().backward()
    assert calls and x.grad is not None
    calls.clear()
    with torch.no_grad():
        MaxPool2d(3, stride=2, padding=1)(x)
        assert calls
        calls.clear()
        MaxPool2d(2)(x)
        assert not calls  # the fast path


def test_use_fast_pools_swaps_only_max_pools_and_keeps_the_state_dict():
    cnn, _ = build_seed_cnn()
    assert any(type(m) is MaxPool2d for m in cnn.modules())
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2), nn.MaxPool2d(3, 2, 1), nn.ReLU())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    use_fast_pools(model)
    assert [type(m).__name__ for m in model] == ["Conv2d", "MaxPool2d", "MaxPool2d", "ReLU"]
    assert all(type(m) is MaxPool2d for m in model if isinstance(m, nn.MaxPool2d))
    assert before.keys() == model.state_dict().keys()


def test_allocator_tuning_is_glibc_only_and_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("LRCN_MALLOC", "system")
    assert runtime._mallopt_keep_memory() is False
    monkeypatch.delenv("LRCN_MALLOC")
    monkeypatch.setattr(sys, "platform", "darwin")
    assert runtime._mallopt_keep_memory() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_allocator_tuning_stops_the_seed_steps_page_faults():
    """A fresh process trains the seed layer by layer (unfused: its conv output is 32 MB) for nine
    steps: untuned, glibc maps every activation above 32 MB afresh and each step faults in hundreds
    of MB; tuned, the freed memory is reused once the heap has grown to its size (a few steps)."""
    code = (
        "import resource, sys, torch\n"
        "from lrcn.models.classifier import build_seed_model\n"
        "from lrcn.runtime import tune_cpu_allocator\n"
        "assert tune_cpu_allocator() == (sys.argv[1] == 'tuned')\n"
        "torch.set_num_threads(1)\n"
        "model = build_seed_model()\n"
        "model.frame_encoder.module.__class__ = torch.nn.Sequential\n"
        "opt = torch.optim.Adam(model.parameters())\n"
        "x = torch.zeros(32, 50, 1, 50, 50)\n"
        "def step():\n"
        "    opt.zero_grad(); model(x).sum().backward(); opt.step()\n"
        "for _ in range(6): step()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(3): step()\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 3)\n"
    )
    faults = {}
    for mode in ("system", "tuned"):
        env = dict(os.environ, PYTHONPATH=str(REPO), LRCN_MALLOC=mode, OMP_NUM_THREADS="1")
        done = subprocess.run(
            [sys.executable, "-c", code, mode], capture_output=True, text=True, env=env, check=True
        )
        faults[mode] = int(done.stdout.strip().splitlines()[-1])
    assert faults["system"] > 25_000  # over 100 MB of fresh pages a step (measured: 146,000)
    assert faults["tuned"] < faults["system"] / 20  # measured: 0


def _cli_in_a_fresh_process(args: list[str]) -> dict:
    """Run ``lrcn ARGS`` in a fresh interpreter: its exit status and whether torch got imported."""
    code = (
        "import json, sys\n"
        "from lrcn.cli import main\n"
        "status = main(sys.argv[1:])\n"
        "print(json.dumps({'status': status, 'torch': 'torch' in sys.modules}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_score_command_does_not_import_torch(shared_data):
    """`lrcn score` needs no tensors: importing torch would cost it about 1.8 s of start-up."""
    coco = shared_data / "coco"
    args = ["score", "--annotations", str(coco / "captions_val2014_subset200.json"),
            "--results", str(coco / "fakecap_results_subset200.json"),
            "--tokenizer", "python", "--metrics", "bleu,cider"]  # fmt: skip
    assert _cli_in_a_fresh_process(args) == {"status": 0, "torch": False}


def test_prepare_command_does_not_import_torch(tmp_path):
    """Turning a folder and a captions file into a manifest needs no tensors (torch: 1.4 s)."""
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    rows = ["image,caption"]
    for i in range(6):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(photos / f"p{i}.png")
        rows.append(f"p{i}.png,a red square number {i}")
    (tmp_path / "captions.csv").write_text("\n".join(rows) + "\n")
    args = ["prepare", "images", "--root", str(photos), "--out", str(tmp_path / "manifest")]
    args.append(f"captions={tmp_path / 'captions.csv'}")
    assert _cli_in_a_fresh_process(args) == {"status": 0, "torch": False}
    assert (tmp_path / "manifest" / "train.jsonl").is_file()


def _block_pair(channels, filters, kernel, pool, pad, conv_pad, bias):
    """The same modules twice: layer by layer (nn.Sequential) and fused (FusedSequential)."""
    layers = [nn.Conv2d(channels, filters, kernel, padding=conv_pad, bias=bias), nn.ReLU()]
    layers += [nn.MaxPool2d(pool), nn.Flatten()]
    if pad is not None:
        layers.insert(0, nn.ZeroPad2d(pad))
    return nn.Sequential(*layers), FusedSequential(*layers), layers[1 if pad is not None else 0]


def _assert_grads_close(actual, expected):
    for a, e in zip(actual, expected, strict=True):
        scale = max(1.0, e.abs().max().item())
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5 * scale)


@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(1, 3),
    channels=st.integers(1, 3),
    filters=st.integers(1, 3),
    kernel=st.sampled_from([1, 2, 3, (2, 1)]),
    pool=st.sampled_from([2, 3, (2, 1)]),
    pad=st.sampled_from([None, (0, 1, 0, 1), (1, 1, 1, 1), (2, 0, 1, 0)]),
    conv_pad=st.integers(0, 1),
    bias=st.booleans(),
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    integers=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_fused_block_equals_the_layers_it_replaces(
    batch, channels, filters, kernel, pool, pad, conv_pad, bias, height, width, integers, seed
):
    """Forward within 1e-6, weight and bias gradients within 1e-5, odd sizes included. With small
    integer weights and binary inputs every sum is exact and ties between different patches are
    everywhere: the gradient then goes to each window's first maximum, as PyTorch's pool does.
    One forward and backward, float32 rounding only: both bounds are relative to the largest value
    compared, so they hold on any CPU's kernels."""
    torch.manual_seed(seed)
    plain, fused, conv = _block_pair(channels, filters, kernel, pool, pad, conv_pad, bias)
    fused_calls = []
    real_apply = fused_module._ConvReluPool.apply
    frames = (torch.rand(batch, channels, height, width) > 0.6).float()
    if integers:
        with torch.no_grad():
            for parameter in conv.parameters():
                parameter.copy_(torch.randint(-2, 3, parameter.shape))
    else:
        frames += torch.rand(frames.shape)  # no ties at all, rounding in another order
    try:
        expected = plain(frames)
    except RuntimeError:  # the pool's window is larger than the conv's output
        with pytest.raises(RuntimeError):
            fused(frames)
        return
    with (
        mock.patch.object(fused_module, "MAX_PATCH_ROWS", 10**6),  # the arithmetic, any size
        mock.patch.object(
            fused_module._ConvReluPool, "apply", lambda *a: fused_calls.append(1) or real_apply(*a)
        ),
    ):
        actual = fused(frames)
    assert fused_calls  # the fused path ran, not the layers
    scale = 1 + expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6 * scale)
    grad = torch.randn(expected.shape)
    params = list(conv.parameters())
    _assert_grads_close(
        torch.autograd.grad(actual, params, grad), torch.autograd.grad(expected, params, grad)
    )


def test_fused_seed_block_on_moving_line_frames_and_a_whole_training_step():
    """The recipe's own frames (binary, so equal conv outputs in a window are common) through the
    seed model, fused and layer by layer: loss within 1e-6, every gradient within 1e-5, each
    relative to the values compared (one forward and backward: float32 rounding only)."""
    from lrcn.data.synthetic.moving_line import MovingLineDataset

    data = MovingLineDataset(4, 0, frames=12, size=20)
    frames = torch.stack([data[i]["frames"] for i in range(4)])  # (4, 12, 1, 20, 20)
    labels = torch.tensor([data[i]["label"] for i in range(4)])
    torch.manual_seed(0)
    fused = build_seed_model(20, 20)
    plain = copy.deepcopy(fused)
    plain.frame_encoder.module.__class__ = nn.Sequential
    assert isinstance(fused.frame_encoder.module, FusedSequential)
    losses = [m.loss({"frames": frames, "label": labels}) for m in (fused, plain)]
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-6, atol=1e-7)
    grads = [
        torch.autograd.grad(loss, list(m.parameters())) for loss, m in zip(losses, (fused, plain))
    ]
    _assert_grads_close(*grads)


def test_seed_cnn_trains_and_infers_without_running_its_conv_and_pool_modules(monkeypatch):
    """The seed CNN's conv and pool modules are not run while it trains or infers (float32 on
    CPU): the fused block computes them (no NCHW conv output, no ReLU copy, no pool indices)."""
    calls = []
    for module in (nn.Conv2d, nn.MaxPool2d, MaxPool2d):
        real = module.forward
        monkeypatch.setattr(
            module, "forward", lambda s, x, real=real: calls.append(1) or real(s, x)
        )
    cnn, _ = build_seed_cnn()
    cnn(torch.rand(3, 1, 50, 50)).sum().backward()
    with torch.no_grad():
        cnn(torch.rand(3, 1, 50, 50))
    assert calls == []


@pytest.mark.parametrize(
    "case", ["input_grad", "float64", "bf16_autocast", "overlapping_pool", "batch_norm", "wide"]
)
def test_fused_block_defers_to_the_layers_where_it_does_not_apply(monkeypatch, case):
    """A gradient for the block's input, another dtype, autocast, overlapping windows, a layer in
    between or many input channels: the modules run one by one, as before."""
    calls = []
    real = nn.Conv2d.forward
    monkeypatch.setattr(nn.Conv2d, "forward", lambda s, x: calls.append(1) or real(s, x))
    channels = 8 if case == "wide" else 1
    layers = [nn.Conv2d(channels, 2, 3), nn.ReLU(), nn.MaxPool2d(2)]
    if case == "overlapping_pool":
        layers[2] = nn.MaxPool2d(2, stride=1)
    if case == "batch_norm":
        layers.insert(1, nn.BatchNorm2d(2))
    fused = FusedSequential(*layers)
    x = torch.rand(2, channels, 9, 9, requires_grad=case == "input_grad")
    if case == "float64":
        fused, x = fused.double(), x.double()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=case == "bf16_autocast"):
        fused(x)
    assert calls == [1]
    calls.clear()
    FusedSequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2))(torch.rand(2, 1, 9, 9))
    assert calls == []  # the fused path, for contrast


def test_use_fused_blocks_keeps_modules_and_state_dict():
    model = nn.Sequential(
        nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(1, 2, 2), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(1, 2, 2), nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(2)),
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    use_fused_blocks(model)
    assert type(model) is nn.Sequential  # no block of its own at its start
    assert type(model[0]) is FusedSequential and type(model[1]) is nn.Sequential
    assert model.state_dict().keys() == before.keys()
