"""N processes train like one (README "Many GPUs"): torchrun on one node and on two "nodes" (two
launchers on this machine, c10d rendezvous on 127.0.0.1), gloo on CPU, against one process.

The shapes recipe's CNN has BatchNorm, which each process would otherwise normalise with its own
slice of the batch; lrcn.distributed synchronises it. What "like one" covers is stated in
``test_two_processes_train_the_shapes_model_like_one``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO
from torch import nn

from lrcn import distributed

TIMEOUT = 240  # seconds for a whole (multi-process) training: a hang fails instead of blocking
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
TRAIN = ["-m", "lrcn.cli", "train", "--no-test"]
# Two epochs of 4 global batches of 32; dropout 0 (see the docstring below for dropout on).
SHAPES = [
    "-c", "configs/shapes.yaml",
    "data.train_size=128", "data.val_size=16", "data.test_size=8", "data.image_size=32",
    "train.epochs=2", "train.batch_size=32", "train.progress=false",
    "encoder.feature_dim=64", "decoder.embed_dim=32", "decoder.hidden_dim=64",
    "decoder.dropout=0", "eval.metrics=bleu", "eval.tokenizer=python",
    # Adam divides each gradient by its own running size, so a parameter whose gradient is zero
    # up to rounding moves by whole lr steps in directions set by the rounding: with the default
    # eps 1e-8 one process differs from itself by 1e-3 between OMP_NUM_THREADS=1 and 2. 1e-6
    # keeps rounding noise (gradients near 1e-9) out of the comparison.
    "train.adam_eps=1e-6",
]  # fmt: skip
LINE = [
    "-c", "configs/moving_line.yaml",
    "data.train_size=64", "data.val_size=8", "data.test_size=8", "data.image_size=16",
    "data.num_frames=8", "train.batch_size=16", "train.progress=false",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_together(commands: list[list[str]], logs: Path) -> None:
    """Run the commands at once; fail (killing their process groups) on a non-zero exit or hang."""
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for i, command in enumerate(commands):
        out = open(logs / f"{i}.log", "w")  # noqa: SIM115 - closed below
        procs.append((subprocess.Popen(command, cwd=REPO, env=ENV, stdout=out, stderr=subprocess.STDOUT, start_new_session=True), out))  # fmt: skip
    try:
        for proc, _ in procs:
            proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        for proc, _ in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        pytest.fail(f"training did not finish within {TIMEOUT} s: {_tails(logs)}")
    finally:
        for _, out in procs:
            out.close()
    if any(proc.returncode for proc, _ in procs):
        pytest.fail(f"exit statuses {[p.returncode for p, _ in procs]}: {_tails(logs)}")


def _tails(logs: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(logs.glob("*.log")))


def _state(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


def _bias_into_batchnorm(state: dict[str, torch.Tensor]) -> set[str]:
    """Biases of layers that feed a BatchNorm straight, and that BatchNorm's running mean.

    BatchNorm subtracts the batch mean, so such a bias has a gradient of zero in exact arithmetic
    and Adam moves it by rounding noise; the running mean absorbs it. The function the layers
    compute does not depend on it.
    """
    modules = list(dict.fromkeys(k.rsplit(".", 1)[0] for k in state))
    keys: set[str] = set()
    for layer, nxt in zip(modules, modules[1:]):
        if f"{layer}.bias" in state and f"{nxt}.running_mean" in state:
            keys |= {f"{layer}.bias", f"{nxt}.running_mean"}
    return keys


def _differences(one: Path, many: Path) -> dict[str, float]:
    a, b = _state(one), _state(many)
    assert a.keys() == b.keys()  # plain BatchNorm keys: no SyncBatchNorm, no DDP `module.` prefix
    for key in a:
        if not a[key].is_floating_point():
            assert torch.equal(a[key], b[key]), key  # e.g. num_batches_tracked
    return {
        k: (a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point()
    }


def _assert_like_one_process(one: Path, many: Path) -> None:
    diff = _differences(one, many)
    noise = _bias_into_batchnorm(_state(one))
    assert any(k.endswith("running_var") for k in diff), "the model has BatchNorm"
    worst = max((k for k in diff if k not in noise), key=diff.get)
    print(f"max |difference|: {diff[worst]:.2e} ({worst}); biases into BatchNorm: "
          f"{max(diff[k] for k in noise):.2e}")  # fmt: skip
    assert diff[worst] <= 1e-5, (worst, diff[worst])  # weights and BatchNorm statistics
    # Unsynchronised BatchNorm differed by up to 0.43 here; rounding moves these by < 1e-3.
    assert all(diff[k] <= 1e-3 for k in noise), {k: diff[k] for k in noise}


@pytest.fixture(scope="module")
def one_process_shapes(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ddp") / "one"
    _run_together([[sys.executable, *TRAIN, "--run-dir", str(run), *SHAPES]], run.parent / "logs1")
    return run


@pytest.mark.slow
def test_two_processes_train_the_shapes_model_like_one(one_process_shapes: Path, tmp_path: Path):
    """Weights and BatchNorm statistics equal within 1e-5 after two epochs, dropout 0.

    Covered: the same global batches (train.batch_size is global; a last partial global batch is
    padded by wrapping, so choose train_size as a multiple of it for equality), BatchNorm over the
    global batch, each rank's caption loss weighted by its share of the batch's tokens. Not
    covered: random draws made during training (dropout masks, scheduled sampling, SCST samples).
    Every process seeds its generator with train.seed, so the ranks draw the same masks for their
    slices where one process draws a fresh one per item (with decoder.dropout=0.1 the weights
    differed by up to 8e-3 and BatchNorm statistics by up to 0.15 after two epochs).
    """
    run = tmp_path / "two"
    command = [*TORCHRUN, "--nproc_per_node=2", f"--master_port={_free_port()}", *TRAIN]
    _run_together([[*command, "--run-dir", str(run), *SHAPES]], tmp_path / "logs")
    _assert_like_one_process(one_process_shapes, run)


@pytest.mark.slow
def test_two_nodes_of_one_process_train_like_one(one_process_shapes: Path, tmp_path: Path):
    """README's multi-node command, for real: two launchers, c10d rendezvous on 127.0.0.1."""
    run, port = tmp_path / "nodes", _free_port()
    launchers = [
        [*TORCHRUN, "--nnodes=2", f"--node_rank={rank}", "--nproc_per_node=1",
         "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_conf=timeout=60",
         *TRAIN, "--run-dir", str(run), *SHAPES]
        for rank in (0, 1)
    ]  # fmt: skip
    _run_together(launchers, tmp_path / "logs")
    _assert_like_one_process(one_process_shapes, run)


@pytest.mark.slow
def test_two_process_ddp_equals_one_process_on_moving_line(tmp_path: Path):
    """The activity model (no BatchNorm): within 1e-6."""
    one, two = tmp_path / "one", tmp_path / "two"
    _run_together([[sys.executable, *TRAIN, "--run-dir", str(one), *LINE]], tmp_path / "l1")
    command = [*TORCHRUN, "--nproc_per_node=2", f"--master_port={_free_port()}", *TRAIN]
    _run_together([[*command, "--run-dir", str(two), *LINE]], tmp_path / "l2")
    assert max(_differences(one, two).values()) <= 1e-6


def _bn_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.BatchNorm1d(256))


def test_sync_batchnorm_keeps_parameters_buffers_and_keys():
    model = _bn_net()
    before = model.state_dict(keep_vars=True)
    distributed.convert_sync_batchnorm(model, torch.device("cpu"))
    after = model.state_dict(keep_vars=True)
    assert list(before) == list(after)
    assert all(before[k] is after[k] for k in before)  # the optimizer's tensors, not copies
    assert isinstance(model[1], distributed.CpuSyncBatchNorm)
    reference = _bn_net()
    reference.load_state_dict(model.state_dict())
    x = torch.randn(5, 3, 10, 10)
    assert torch.equal(model(x), reference(x))  # one process: plain BatchNorm, bit for bit


@pytest.mark.slow
def test_two_processes_train_an_attention_captioner_whose_cnn_trains(tmp_path: Path):
    """show_attend_tell reads small_cnn's grid, so the CNN's fc layer gets no gradient: DDP must
    be told (find_unused_parameters), or its reducer stops the second step with a RuntimeError."""
    run = tmp_path / "att"
    command = [*TORCHRUN, "--nproc_per_node=2", f"--master_port={_free_port()}", *TRAIN]
    attention = ["decoder.variant=show_attend_tell", "train.epochs=1"]
    _run_together([[*command, "--run-dir", str(run), *SHAPES, *attention]], tmp_path / "logs")
    state = _state(run)
    assert "decoder.att_visual.weight" in state  # it trained the attention wiring
    assert not any(k.startswith("module.") for k in state)
