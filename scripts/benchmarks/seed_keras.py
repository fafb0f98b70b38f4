"""Figure 7, ``seed_vs_keras``: the seed recipe's training steps/s in lrcn against Keras 3.

The seed (``configs/moving_line.yaml``: TimeDistributed(Conv2D(2, 2x2) -> MaxPool -> Flatten) ->
LSTM(50) -> Dense(1)), the same moving-line sequences prepared as arrays beforehand, batch 32,
Adam(1e-3, eps 1e-7), at equal torch threads (1 and 2). Each side trains in its own fresh
process (``benchmark.py --seed-child``): lrcn through its training loop
(`lrcn.engine.train_one_epoch`) on the model `lrcn.build` makes from the recipe, Keras 3 with
its torch backend through ``model.fit`` with one ``TimeDistributed`` per layer, as the seed is
written. Keras runs as a Keras user runs it: with the C library's allocator as it comes (lrcn
tunes it, `lrcn.runtime.tune_cpu_allocator`); ``keras_tuned`` repeats Keras with lrcn's
allocator tuning, to show what is lrcn's own. The ratio is lrcn's steps/s over Keras' at one
thread. The step is also set against its arithmetic floor: the seconds a large matmul of the
step's floating-point operations takes on this machine at the same threads.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from benchmarks.common import REPO, SCRIPT

FRAMES, SIZE, HIDDEN, FILTERS, BATCH = 50, 50, 50, 2, 32


def seed_step_flops(batch: int = BATCH) -> float:
    """Floating-point operations of one training step of the seed (multiply-adds count two)."""
    rows = batch * FRAMES  # frames through the CNN and LSTM steps
    pooled = FILTERS * (SIZE // 2) ** 2  # the LSTM's input size (1,250)
    gates = 4 * HIDDEN
    conv = 2 * rows * FILTERS * SIZE * SIZE * 4  # 2x2 kernel, one input channel
    lstm = 2 * rows * (pooled + HIDDEN) * gates
    # forward; backward: the weights' gradients (conv, LSTM) and the LSTM input's gradient
    return conv + lstm + (conv + 2 * lstm)


def _matmul_floor(flops: float, threads: int) -> float:
    """Seconds a float32 matmul of ``flops`` operations takes here (best of five)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(BATCH * FRAMES, 1250), torch.randn(1250, 200)
    per_call = 2.0 * a.shape[0] * a.shape[1] * b.shape[1]
    calls = max(1, round(flops / per_call))
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            a @ b
        best = min(best, time.perf_counter() - start)
    return best * flops / (calls * per_call)


def _sequences(count: int) -> tuple[Any, Any]:
    """(frames (N, T, 1, S, S) float32, labels (N,)) of the recipe's moving-line train split."""
    import numpy as np

    from lrcn.data.synthetic.moving_line import MovingLineDataset

    data = MovingLineDataset(count, 0, frames=FRAMES, size=SIZE)
    frames = np.empty((count, FRAMES, 1, SIZE, SIZE), dtype=np.float32)
    labels = np.empty(count, dtype=np.int64)
    for i in range(count):
        item = data[i]
        frames[i], labels[i] = item["frames"].numpy(), item["label"]
    return frames, labels


def _lrcn_child(steps: int, warmup: int) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from lrcn.build import build_model
    from lrcn.config import TrainConfig, load_config
    from lrcn.engine.loop import TrainState, train_one_epoch
    from lrcn.engine.optim import build_optimizer, build_scheduler
    from lrcn.runtime import tune_cpu_allocator

    tune_cpu_allocator()
    cfg = load_config(REPO / "configs" / "moving_line.yaml")
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=2)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps)
    frames, labels = _sequences(BATCH * (steps + warmup))
    tensors = TensorDataset(torch.from_numpy(frames), torch.from_numpy(labels))

    def loader(first: int, count: int) -> DataLoader:
        part = torch.utils.data.Subset(tensors, range(first * BATCH, (first + count) * BATCH))
        return DataLoader(
            part,
            batch_size=BATCH,
            collate_fn=lambda b: {
                "frames": torch.stack([f for f, _ in b]),
                "label": torch.stack([y for _, y in b]),
            },
        )

    state = TrainState()
    loop = {"optimizer": optimizer, "scheduler": scheduler, "device": torch.device("cpu"),
            "train": TrainConfig(grad_clip=0.0, amp=False, progress=False)}  # fmt: skip
    train_one_epoch(model, loader(0, warmup), state, **loop)
    start, cpu = time.perf_counter(), time.process_time()
    train_one_epoch(model, loader(warmup, steps), state, **loop)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "cpu_seconds": time.process_time() - cpu, "steps": steps}


def _keras_child(steps: int, warmup: int) -> dict[str, Any]:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    os.environ["KERAS_HOME"] = tempfile.mkdtemp(prefix="lrcn-keras-home-")
    import keras  # optional: the dev extra has it

    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((FRAMES, SIZE, SIZE, 1)),
            layers.TimeDistributed(
                layers.Conv2D(FILTERS, (2, 2), activation="relu", padding="same")
            ),
            layers.TimeDistributed(layers.MaxPooling2D(pool_size=(2, 2))),
            layers.TimeDistributed(layers.Flatten()),
            layers.LSTM(HIDDEN),
            layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3, epsilon=1e-7), loss="binary_crossentropy")
    frames, labels = _sequences(BATCH * (steps + warmup))
    frames = frames.transpose(0, 1, 3, 4, 2)  # channels last, as Keras reads them
    labels = labels.astype("float32")
    cut = BATCH * warmup
    model.fit(frames[:cut], labels[:cut], batch_size=BATCH, epochs=1, verbose=0, shuffle=False)
    start, cpu = time.perf_counter(), time.process_time()
    model.fit(frames[cut:], labels[cut:], batch_size=BATCH, epochs=1, verbose=0, shuffle=False)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "cpu_seconds": time.process_time() - cpu, "steps": steps}


def seed_child(framework: str, threads: int, steps: int) -> dict[str, Any]:
    """One side's training seconds for ``steps`` steps (after warm-up), in this process."""
    import torch

    torch.set_num_threads(threads)
    warmup = 3
    if framework == "keras_tuned":
        from lrcn.runtime import tune_cpu_allocator

        tune_cpu_allocator()
    result = _lrcn_child(steps, warmup) if framework == "lrcn" else _keras_child(steps, warmup)
    result["steps_per_s"] = steps / result["seconds"]
    return result


def _run_child(framework: str, threads: int, steps: int) -> dict[str, Any]:
    # Both sides wait passively, as the lrcn command does (lrcn.cli): spinning OpenMP threads made
    # either side take ~2 s a step at 2 threads on a busy machine, whichever the code.
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), LRCN_MALLOC="", OMP_WAIT_POLICY="PASSIVE")
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--seed-child",
            framework,
            "--threads",
            str(threads),
            "--steps",
            str(steps),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the {framework} child failed: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def seed_vs_keras(size: dict[str, Any]) -> dict[str, Any]:
    """Figure 7: lrcn's and Keras' steps/s on the seed recipe at 1 and 2 threads."""
    if importlib.util.find_spec("keras") is None:  # (importing it here would pick its backend)
        return {
            "ratio": float("nan"),
            "skipped": "keras is not installed (pip install -e '.[dev]')",
            "line": "seed_vs_keras: skipped, keras is not installed (it is in the dev extra)",
        }
    steps = size["seed_steps"]
    result: dict[str, Any] = {"steps": steps, "batch": BATCH, "step_gflop": seed_step_flops() / 1e9}
    parts = []
    for threads in size["seed_threads"]:
        runs = {name: _run_child(name, threads, steps) for name in size["seed_sides"]}
        row = {name: run["steps_per_s"] for name, run in runs.items()}
        floor = _matmul_floor(seed_step_flops(), threads)
        row.update(
            ratio=row["lrcn"] / row["keras"],
            floor_ms=1000 * floor,
            step_over_floor=(1.0 / row["lrcn"]) / floor,
            lrcn_step_ms=1000 / row["lrcn"],
            lrcn_cpu_ms=1000 * runs["lrcn"]["cpu_seconds"] / steps,  # all threads together
        )
        result[f"threads_{threads}"] = row
        parts.append(
            f"{threads} thread(s): lrcn {row['lrcn']:.2f} steps/s, Keras {row['keras']:.2f} "
            f"({row['ratio']:.2f}x; Keras with lrcn's allocator "
            f"{row.get('keras_tuned', float('nan')):.2f}), "
            f"step {row['lrcn_step_ms']:.0f} ms ({row['lrcn_cpu_ms']:.0f} ms CPU), "
            f"{row['step_over_floor']:.1f}x its FLOP floor ({row['floor_ms']:.0f} ms)"
        )
    result["ratio"] = min(result[f"threads_{t}"]["ratio"] for t in size["seed_threads"])
    result["line"] = "seed_vs_keras: " + "; ".join(parts)
    return result
