"""The training loop's contract with its user: one stop decision for every DDP rank, a monitor that
exists, a schedule that plans the steps it takes, TensorBoard pictures at the right epoch, resuming
with a longer schedule, and arguments in any order."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, TINY_SHAPES
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lrcn.cli import main
from lrcn.config import TrainConfig, load_config

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TINY_LINE = [
    "data.train_size=64",
    "data.val_size=8",
    "data.test_size=8",
    "data.image_size=16",
    "data.num_frames=8",
    "train.batch_size=16",
    "train.progress=false",
]
SHAPES = str(REPO / "configs" / "shapes.yaml")


@pytest.mark.slow
def test_ddp_early_stopping_stops_every_rank_together(tmp_path: Path) -> None:
    # lr 1e-12: validation accuracy never changes, so epoch 2 is a bad epoch and patience 1 stops
    # there. Before the fix rank 0 stopped while rank 1 began epoch 3 (traceback or hang).
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531",
         "-m", "lrcn.cli", "train", "-c", "configs/moving_line.yaml", "--run-dir", str(tmp_path / "run"),
         "--no-test", *TINY_LINE, "train.epochs=5", "train.lr=1e-12", "train.early_stopping_patience=1"],
        capture_output=True, text=True, cwd=REPO, env=ENV, timeout=240,
    )  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "epochs: 2" in ddp.stdout, ddp.stdout


def test_a_monitor_validation_does_not_compute_is_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    code = main(["train", "-c", SHAPES, "--run-dir", str(run), *TINY_SHAPES, "train.monitor=Bleu4"])
    err = capsys.readouterr().err
    assert code == 2
    assert "train.monitor" in err and "Bleu_4" in err and "CIDEr" in err
    assert not (run / "checkpoints").exists()


def test_activity_monitor_must_be_accuracy(tmp_path: Path) -> None:
    from lrcn.build import check_config
    from lrcn.errors import LrcnError

    with pytest.raises(LrcnError, match="train.monitor"):  # the task's validation metrics
        check_config(load_config(REPO / "configs" / "moving_line.yaml", ["train.monitor=CIDEr"]))
    check_config(load_config(REPO / "configs" / "moving_line.yaml", ["train.monitor=accuracy"]))


def test_the_schedule_plans_the_optimizer_steps_gradient_accumulation_takes(tmp_path: Path) -> None:
    # 4 batches, 3 per optimizer step: steps after batches 3 and 4 (an epoch closes its cycle).
    # The step schedule ends at 0.1**3 of train.lr exactly when it planned the 2 steps taken.
    run = tmp_path / "run"
    code = main(["train", "-c", SHAPES, "--run-dir", str(run), "--no-test", *TINY_SHAPES,
                 "data.train_size=128", "train.epochs=1", "train.grad_accum_steps=3",
                 "train.scheduler=step", "train.lr=0.001"])  # fmt: skip
    assert code == 0
    payload = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert payload["train_state"]["step"] == 2
    # three float64 multiplications by 0.1: rel 1e-9 is millions of float64 ulps
    assert payload["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-6, rel=1e-9)


def test_the_validation_picture_is_logged_at_its_own_epoch(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    assert main(["train", "-c", SHAPES, "--run-dir", str(run), "--no-test", *TINY_SHAPES]) == 0
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0}).Reload()
    image_tags = events.Tags()["images"]
    assert image_tags, "no validation picture was logged"
    scalar_steps = sorted(e.step for e in events.Scalars("epoch/train_loss"))
    assert scalar_steps == [1, 2]
    for tag in image_tags:
        assert sorted(e.step for e in events.Images(tag)) == scalar_steps


def test_resume_with_a_longer_schedule_as_the_readme_shows(tmp_path: Path) -> None:
    run = tmp_path / "quick"
    assert main(["train", "-c", SHAPES, "--run-dir", str(run), "--no-test", *TINY_SHAPES,
                 "train.epochs=1"]) == 0  # fmt: skip
    assert main(["train", "--resume", str(run), "train.epochs=2", "--no-test"]) == 0
    payload = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert payload["train_state"]["epoch"] == 2
    assert payload["config"]["train"]["epochs"] == 2
    assert "epochs: 2" in (run / "config.yaml").read_text()


def test_resume_refuses_a_change_that_would_corrupt_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "quick"
    assert main(["train", "-c", SHAPES, "--run-dir", str(run), "--no-test", *TINY_SHAPES,
                 "train.epochs=1"]) == 0  # fmt: skip
    before = (run / "checkpoints" / "last.pt").read_bytes()
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "decoder.hidden_dim=128", "--no-test"]) == 2
    err = capsys.readouterr().err
    assert "decoder.hidden_dim" in err and "--resume" in err
    assert (run / "checkpoints" / "last.pt").read_bytes() == before


def test_overrides_on_both_sides_of_an_option(tmp_path: Path) -> None:
    # as a user types it: overrides, then an option, then more overrides
    run = tmp_path / "quick"
    first, rest = TINY_SHAPES[:3], TINY_SHAPES[3:]
    code = main(["train", "-c", SHAPES, *first, "--run-dir", str(run), *rest, "--no-test",
                 "train.epochs=1"])  # fmt: skip
    assert code == 0
    payload = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert payload["config"]["data"]["train_size"] == 256
    assert payload["train_state"]["epoch"] == 1


def _no_clip(grad_accum_steps: int) -> TrainConfig:
    """The loop's settings for these exact tests: no clipping, no autocast, no progress bar."""
    return TrainConfig(grad_clip=0.0, amp=False, grad_accum_steps=grad_accum_steps, progress=False)


def test_an_epoch_ending_in_an_unreadable_batch_still_applies_its_gradients() -> None:
    from lrcn.engine import TrainState, train_one_epoch

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(1))

        def loss(self, batch: dict) -> torch.Tensor:
            return (self.weight * batch["x"]).sum()

    model = Tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    batches = [{"x": torch.ones(2), "size": 2}, {"x": torch.ones(2), "size": 2}, {"size": 0}]
    batches = torch.utils.data.DataLoader(batches, batch_size=None)
    state = TrainState()
    # three batches, three per optimizer step: the cycle closes at the (empty) last batch
    train_one_epoch(model, batches, state, optimizer=optimizer, scheduler=scheduler,
                    device=torch.device("cpu"), train=_no_clip(grad_accum_steps=3))  # fmt: skip
    assert state.step == 1 and state.batch_in_epoch == 3
    # one float32 SGD step: approx's rel 1e-6 is 8 float32 ulps, a few roundings need fewer
    assert model.weight.item() == pytest.approx(1.0 - 0.1 * 4 / 3)


class _Weight(torch.nn.Module):
    """One float64 weight; a batch's loss is ``weight * x.sum()``, so its gradient is ``x.sum()``."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def loss(self, batch: dict) -> torch.Tensor:
        return (self.weight * batch["x"]).sum()


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 3), min_size=1, max_size=12),  # 0: every item unreadable
    accum=st.integers(1, 4),
)
def test_accumulation_counts_cycles_not_batches(sizes: list[int], accum: int) -> None:
    """Float64 rounding of a few additions (each loss is divided by ``accum`` before it is summed
    into the gradient): every cycle of ``accum`` batches (and
    the epoch's last, shorter one) that holds a readable batch is one optimizer step of its own
    micro-batches' gradients, wherever the unreadable (empty) batches fall."""
    from lrcn.engine import TrainState, train_one_epoch

    model = _Weight()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    steps: list[float] = []
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    optimizer.register_step_pre_hook(lambda *_: steps.append(model.weight.grad.item()))
    batches = [{"x": torch.ones(n, dtype=torch.float64) * (i + 1), "size": n} if n else {"size": 0}
               for i, n in enumerate(sizes)]  # fmt: skip
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    state = TrainState()
    train_one_epoch(model, loader, state, optimizer=optimizer, scheduler=scheduler,
                    device=torch.device("cpu"), train=_no_clip(grad_accum_steps=accum))  # fmt: skip
    cycles = [sizes[i : i + accum] for i in range(0, len(sizes), accum)]
    starts = range(0, len(sizes), accum)
    expected = [
        sum(n * (start + j + 1) for j, n in enumerate(cycle)) / accum
        for start, cycle in zip(starts, cycles)
        if any(cycle)
    ]
    assert steps == pytest.approx(expected, rel=1e-12)
    assert state.step == len(expected) and state.batch_in_epoch == len(sizes)


def test_a_stop_inside_an_accumulation_cycle_resumes_equal_to_a_run_never_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exact by construction (one process, one machine): SIGTERM after the first micro-batch of a
    cycle stops at the cycle's end, so the resume starts from a whole step. Before, the stop
    checkpoint dropped the open cycle's gradient and the resumed last.pt differed."""
    import signal
    import sys

    from test_crash_checkpoints import same_checkpoint

    from lrcn.engine import fit

    fit_module = sys.modules["lrcn.engine.fit"]  # the package's `fit` is the function

    args = [*TINY_SHAPES, "data.train_size=96", "train.grad_accum_steps=2", "train.epochs=1",
            "train.checkpoint_every_steps=0"]  # fmt: skip
    cfg = load_config(SHAPES, args)
    fit(cfg, tmp_path / "whole")
    calls = {"n": 0}
    real = fit_module.kill_point

    def terminate_at_first_step(name: str) -> None:
        real(name)
        if name == "step":
            calls["n"] += 1
            if calls["n"] == 1:  # after batch 1 of the 3: inside the first cycle of 2
                signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(fit_module, "kill_point", terminate_at_first_step)
    with pytest.raises(fit_module.StopRequested):
        fit(cfg, tmp_path / "stopped")
    stopped = torch.load(tmp_path / "stopped" / "checkpoints" / "last.pt", weights_only=True)
    assert stopped["train_state"]["batch_in_epoch"] == 2  # the cycle closed before the stop
    monkeypatch.setattr(fit_module, "kill_point", real)
    fit(None, tmp_path / "stopped", resume=True)
    assert same_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt",
                           tmp_path / "stopped" / "checkpoints" / "last.pt")  # fmt: skip


TINY_SIZES = ["data.val_size=8", "data.test_size=8", "data.image_size=32", "train.epochs=1",
              "train.progress=false", "encoder.feature_dim=16", "decoder.embed_dim=16",
              "decoder.hidden_dim=16", "eval.metrics=bleu", "eval.tokenizer=python"]  # fmt: skip


def test_an_epoch_whose_last_batch_holds_one_item_trains(tmp_path: Path, caplog) -> None:
    """The shapes CNN trains its BatchNorm: a one-item last batch ended epoch 1 in a raw
    ValueError. Now the epoch leaves that item out, says so, and plans the steps it takes."""
    run = tmp_path / "run"
    args = ["data.train_size=33", "train.batch_size=16", *TINY_SIZES]
    assert main(["train", "-c", SHAPES, "--run-dir", str(run), "--no-test", *args]) == 0
    payload = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert payload["train_state"]["step"] == 2  # 32 of the 33 items, in two batches of 16
    assert payload["scheduler"]["last_epoch"] == 2
    assert "leave one item for the last batch" in caplog.text


def test_a_batch_size_batchnorm_cannot_train_on_is_refused_at_load(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["data.train_size=8", "train.batch_size=1", *TINY_SIZES]
    assert main(["train", "-c", SHAPES, "--run-dir", str(tmp_path / "run"), "--no-test", *args]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "train.batch_size=1" in err and "BatchNorm cannot train on one item" in err
    assert len(err.strip().splitlines()) == 1


@settings(max_examples=6, deadline=None)
@given(size=st.integers(2, 40), batch=st.integers(2, 17))
@example(size=17, batch=16).via("one item over")
@example(size=9, batch=4).via("one item over")
def test_any_train_size_with_the_shapes_recipe_trains(size: int, batch: int) -> None:
    """Whatever is left over for the last batch (one item included), an epoch trains to its end."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        args = [f"data.train_size={size}", f"train.batch_size={batch}", *TINY_SIZES]
        assert main(["train", "-c", SHAPES, "--run-dir", folder + "/run", "--no-test", *args]) == 0
        payload = torch.load(Path(folder) / "run" / "checkpoints" / "last.pt", weights_only=True)
        used = size - 1 if size % batch == 1 else size
        assert payload["train_state"]["step"] == -(-used // batch)
