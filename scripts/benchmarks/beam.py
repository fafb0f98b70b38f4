"""Figure 2, ``beam_batched_vs_single``: batched beam search vs one image at a time.

Captions/s of batched beam search (batch 100, k=5) vs the same images decoded one at a time with
the same beam; the captions must be identical.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from lrcn.config import TrainConfig
from lrcn.decoding import decode
from lrcn.engine import Run, TrainState, train_one_epoch


def train_further(run: Run, epochs: int) -> None:
    """Train ``run``'s model ``epochs`` more epochs: its decoder then ends captions as trained."""
    state = TrainState()
    for epoch in range(epochs):
        run.sampler.set_epoch(epoch + 1)
        train_one_epoch(
            run.model, run.train_loader(), state, optimizer=run.optimizer,
            scheduler=run.scheduler, device=torch.device("cpu"),
            train=TrainConfig(grad_clip=5.0, amp=False, progress=False),
        )  # fmt: skip


def beam_batched_vs_single(size: dict[str, Any], run: Run) -> dict[str, Any]:
    """Figure 2 on the decoder of figure 1's store-trained ``run``, trained a little further."""
    train_further(run, size["beam_epochs"])
    model, vocab, cfg = run.model.eval(), run.vocab, run.cfg
    source = run.train_data.source
    count = size["beam_items"]
    with torch.no_grad():
        features = torch.stack([source.features(i) for i in range(count)])  # (B, D)
        visual = model.encode_features(features)  # (B, D)
    ids = (vocab.start_id, vocab.end_id)
    sizes = {"max_length": cfg.eval.max_length, "beam_size": 5}
    decode(model.decoder, visual[:2], *ids, **sizes)  # warm-up
    batched_seconds = float("inf")
    for _ in range(3):  # best of three: the machine is shared
        start = time.perf_counter()
        batched = decode(model.decoder, visual, *ids, **sizes)
        batched_seconds = min(batched_seconds, time.perf_counter() - start)
    start = time.perf_counter()
    single = [decode(model.decoder, visual[i : i + 1], *ids, **sizes)[0] for i in range(count)]
    single_seconds = time.perf_counter() - start
    identical = batched == single
    if not identical:
        differing = [i for i in range(count) if batched[i] != single[i]]
        raise AssertionError(f"batched and single beam search differ on items {differing[:10]}")
    ratio = single_seconds / batched_seconds
    mean_words = float(np.mean([len(c) for c in batched]))
    line = (
        f"beam search k=5, batch {count}: {count / batched_seconds:.1f} captions/s; one at a "
        f"time: {count / single_seconds:.1f} captions/s; {ratio:.1f}x; outputs identical: "
        f"{identical} (mean {mean_words:.1f} words, vocab {len(vocab)}, hidden 512)"
    )
    return {
        "batched_captions_per_s": count / batched_seconds,
        "single_captions_per_s": count / single_seconds,
        "ratio": ratio,
        "identical": identical,
        "items": count,
        "beam_size": 5,
        "mean_words": mean_words,
        "vocab_size": len(vocab),
        "example": " ".join(vocab.decode(batched[0])),
        "line": line,
    }
