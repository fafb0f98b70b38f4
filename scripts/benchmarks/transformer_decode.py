"""Transformer decoding speed: the key/value cache against recomputing the prefix, and the LSTM.

Beam search (batch 100, k=5: 500 beams) at COCO size (vocabulary 10000, d_model 512, 3 layers,
8 heads, a 7 x 7 grid of 2048-d cells) for exactly 20 words (``<end>`` made unreachable, so every
decoder runs every step), three ways in one run:

- ``cached``: the transformer wiring as lrcn decodes, one position a word through the cache;
- ``recompute``: the same weights, every step rerunning teacher forcing's parallel pass over the
  whole prefix (decoding without a cache);
- ``lstm``: show_attend_tell at the same size (hidden 512, one layer), over the same grid.

Untrained weights: speed does not depend on them. Prints captions/s and the ratios
cached/recompute and cached/lstm, and checks that cached and recomputed captions agree::

    OMP_NUM_THREADS=2 .venv/bin/python scripts/benchmarks/transformer_decode.py [--quick] [--out F]

Each decoder runs ``--repeats`` times (2), interleaved; the fastest run counts. ``--quick`` runs a
small size (a smoke test, seconds). ``--out`` writes the figures as JSON (atomically).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path
from typing import Any

import torch

from lrcn.decoding import beam_search
from lrcn.io import write_json_atomic
from lrcn.models.decoder import LSTMDecoder

START, END = 1, 2
SIZES = {
    "coco": {"vocab": 10000, "width": 512, "layers": 3, "heads": 8, "cells": 49, "feature": 2048,
             "batch": 100, "beam": 5, "words": 20},
    "quick": {"vocab": 500, "width": 64, "layers": 2, "heads": 4, "cells": 16, "feature": 64,
              "batch": 10, "beam": 3, "words": 8},
}  # fmt: skip


class Recompute:
    """A step decoder without a cache: each step reruns the wiring's teacher-forcing pass over
    the whole prefix and reads its last position."""

    def __init__(self, decoder: LSTMDecoder) -> None:
        self.decoder = decoder

    def init_state(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """The projected cells and an empty prefix."""
        prefix = torch.zeros(features.shape[0], 0, dtype=torch.long)
        return {"visual": self.decoder.visual_proj(features), "prefix": prefix}

    def step(
        self, tokens: torch.Tensor, state: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The whole prefix and ``tokens`` through one causal pass: the last position's log-probs."""
        prefix = torch.cat([state["prefix"], tokens[:, None]], dim=1)
        steps = torch.full((prefix.shape[0],), prefix.shape[1])
        words = self.decoder.embed(prefix)
        hidden = self.decoder.wiring.hidden_states(state["visual"], words, steps, lambda x: x)
        log_probs = torch.log_softmax(self.decoder.out(hidden[:, -1]).float(), dim=-1)
        return log_probs, {**state, "prefix": prefix}

    def reorder_state(
        self, state: dict[str, torch.Tensor], index: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Rows ``index`` of both entries."""
        return {k: v.index_select(0, index) for k, v in state.items()}


def _decoder(size: dict[str, int], variant: str) -> LSTMDecoder:
    """An untrained decoder at ``size`` whose ``<end>`` is never the best token."""
    torch.manual_seed(0)
    layers = size["layers"] if variant == "transformer" else 1
    decoder = LSTMDecoder(size["vocab"], size["feature"], embed_dim=size["width"],
                          hidden_dim=size["width"], num_layers=layers, variant=variant,
                          heads=size["heads"]).eval()  # fmt: skip
    with torch.no_grad():
        decoder.out.bias[END] = -1e4  # every caption runs all its words: equal work per row
    return decoder


def _timed(decoder: Any, features: torch.Tensor, size: dict[str, int]) -> tuple[float, list]:
    """Seconds of one batched beam search and its captions."""
    options = {"max_length": size["words"], "beam_size": size["beam"]}
    with torch.no_grad():
        start = time.perf_counter()
        captions = beam_search(decoder, features, START, END, **options)
    return time.perf_counter() - start, captions


def measure(name: str, repeats: int = 2) -> dict[str, Any]:
    """The three decoders side by side at size ``name``: captions/s and the ratios.

    Each decoder runs ``repeats`` times, interleaved with the others (a shared machine's load
    falls on all three alike), after a warm-up; the fastest run of each counts."""
    size = SIZES[name]
    features = torch.randn(size["batch"], size["cells"], size["feature"],
                           generator=torch.Generator().manual_seed(0))  # fmt: skip
    transformer = _decoder(size, "transformer")
    decoders = {"cached": transformer, "recompute": Recompute(transformer),
                "lstm": _decoder(size, "show_attend_tell")}  # fmt: skip
    for decoder in decoders.values():
        _timed(decoder, features[:2], size)  # warm-up
    runs: dict[str, list[tuple[float, list]]] = {k: [] for k in decoders}
    for _ in range(repeats):
        for key, decoder in decoders.items():
            runs[key].append(_timed(decoder, features, size))
    seconds = {k: min(found, key=lambda run: run[0]) for k, found in runs.items()}
    rate = {k: size["batch"] / s for k, (s, _) in seconds.items()}
    same = seconds["cached"][1] == seconds["recompute"][1]
    words = {len(c) for c in seconds["cached"][1]}
    return {
        "size": name,
        **size,
        "captions_per_s": rate,
        "cached_over_recompute": rate["cached"] / rate["recompute"],
        "cached_over_lstm": rate["cached"] / rate["lstm"],
        "captions_identical": same,
        "repeats": repeats,
        "words_per_caption": sorted(words),
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }


def main() -> None:
    """Parse ``--quick`` / ``--out``, measure, print one line per figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each (the fastest counts)")
    args = parser.parse_args()
    result = measure("quick" if args.quick else "coco", args.repeats)
    rate = result["captions_per_s"]
    print(
        f"beam k={result['beam']}, batch {result['batch']}, {result['words']} words, vocab "
        f"{result['vocab']}, d_model {result['width']}, {result['layers']} layers, "
        f"{result['heads']} heads, {result['threads']} threads: cached {rate['cached']:.2f} "
        f"captions/s, recompute {rate['recompute']:.2f}, LSTM (show_attend_tell) "
        f"{rate['lstm']:.2f}; cached/recompute {result['cached_over_recompute']:.2f}x, "
        f"cached/LSTM {result['cached_over_lstm']:.2f}x; captions identical: "
        f"{result['captions_identical']}"
    )
    if args.out:
        write_json_atomic(args.out, result)


if __name__ == "__main__":
    main()
