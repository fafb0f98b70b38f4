"""The CPU speed paths of issue 16 change where memory lives and how a maximum is taken, not results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lrcn import runtime
from lrcn.models.classifier import build_seed_cnn
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
    """A fresh process trains the seed for nine steps: untuned, glibc maps every activation above
    32 MB afresh and each step faults in tens of MB; tuned, the freed memory is reused once the
    heap has grown to its size (a few steps)."""
    code = (
        "import resource, sys, torch\n"
        "from lrcn.models.classifier import build_seed_model\n"
        "from lrcn.runtime import tune_cpu_allocator\n"
        "assert tune_cpu_allocator() == (sys.argv[1] == 'tuned')\n"
        "torch.set_num_threads(1)\n"
        "model = build_seed_model()\n"
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
    # over 40 MB of fresh pages a step (measured: 146,000 before the fused first block, 18,000 since)
    assert faults["system"] > 10_000
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
