"""Speed and memory figures of lrcn on this machine.

    python scripts/benchmark.py [--quick] [--out benchmark.json] [--threads 1] [--only NAMES]

Prints one line per figure and writes them, with the machine and its load average, to a JSON file:

1. ``train_store_vs_live``: images/s of one training epoch from the feature store vs the same
   epoch with the frozen CNN (resnet18, random weights, 224x224 shapes images) run live.
2. ``beam_batched_vs_single``: captions/s of batched beam search (batch 100, k=5) vs the same
   images decoded one at a time with the same beam; the captions must be identical.
3. ``extraction_pipeline``: images/s of ``extract_features`` over JPEG files on disk (decode,
   resize, batch in a DataLoader worker, encode) as a fraction of the encoder's forward pass
   alone on ready tensors.
4. ``scoring``: seconds to score 5,000 captions (BLEU-1..4 + CIDEr) with ``lrcn.metrics`` vs
   pycocoevalcap's Bleu and Cider scorers, on the same tokens.
5. ``store_memory``: resident memory growth while training from a 100,000-row float16 store
   (D=2048, about 400 MB), measured in a child process from /proc/self/status.
6. ``checkpoint_integrity``: loading a 100 MB checkpoint with its CRC check, over the same load
   without it.
9. ``grid_store_memory``: resident memory growth while training ``show_attend_tell`` from an
   8,000-row store of 7x7x2048 float16 grids (1.6 GB) and iterating its DataLoader over every row.
10. ``store_check``: opening that grid store with every block's CRC32 verified, over one pass
   reading every row as training does (and both from the disk, beside it).

``--quick`` runs every figure at toy sizes in seconds: a check that the benchmark still works;
its numbers say nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # the figures' package, scripts/benchmarks, when imported from elsewhere
    sys.path.insert(0, HERE)

from benchmarks.beam import beam_batched_vs_single  # noqa: E402
from benchmarks.common import BELOW, SIZES, TARGETS, load_average, machine  # noqa: E402
from benchmarks.extraction import extraction_pipeline  # noqa: E402
from benchmarks.grid_memory import grid_store_memory  # noqa: E402
from benchmarks.integrity import checkpoint_integrity  # noqa: E402
from benchmarks.memory import memory_child, store_memory  # noqa: E402
from benchmarks.scoring import scoring  # noqa: E402
from benchmarks.seed_keras import seed_child, seed_vs_keras  # noqa: E402
from benchmarks.store_check import store_check  # noqa: E402
from benchmarks.train_store import train_store_vs_live  # noqa: E402
from benchmarks.video_encoder import video_child, video_encoder  # noqa: E402

from lrcn.io import write_json_atomic  # noqa: E402


@dataclass
class Session:
    """What the figures of one benchmark run share: sizes, a scratch folder, figure 1's Run."""

    size: dict[str, Any]
    work: Path
    run: Any = None  # the store-trained Run of figure 1, whose decoder figure 2 decodes with


def _train_store(session: Session) -> dict[str, Any]:
    """Figure 1; keeps its store-trained Run for figure 2."""
    result, session.run = train_store_vs_live(session.size, session.work)
    return result


# name -> measure, in the order they run; each returns the figure's JSON with its "ratio" and the
# printed "line"
FIGURES: dict[str, Callable[[Session], dict[str, Any]]] = {
    "train_store_vs_live": _train_store,
    "beam_batched_vs_single": lambda s: beam_batched_vs_single(s.size, s.run),
    "extraction_pipeline": lambda s: extraction_pipeline(s.size, s.work),
    "scoring": lambda s: scoring(s.size),
    "store_memory": lambda s: store_memory(s.size, s.work),
    "checkpoint_integrity": lambda s: checkpoint_integrity(s.size, s.work),
    "seed_vs_keras": lambda s: seed_vs_keras(s.size),
    "video_encoder": lambda s: video_encoder(s.size),
    "grid_store_memory": lambda s: grid_store_memory(s.size, s.work),
    "store_check": lambda s: store_check(s.size, s.work),
}
# figure -> the figures it needs run before it
NEEDS = {"beam_batched_vs_single": ("train_store_vs_live",)}  # its trained decoder is the beam's


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line: ``[--quick] [--out F] [--threads N] [--only a,b]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="toy sizes: checks it works, not speed"
    )
    parser.add_argument("--out", default="benchmark.json", help="JSON file to write")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared machine more threads than free cores make "
        "small ops wait on each other; 0: torch's default)",
    )
    parser.add_argument("--only", help="comma-separated figure names to run (default: all)")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--seed-child", help=argparse.SUPPRESS)
    parser.add_argument("--video-child", help=argparse.SUPPRESS)
    parser.add_argument("--steps", default="0", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def measure(name: str, session: Session, quick: bool) -> dict[str, Any]:
    """Run one figure, judge it against its target, print its line and return its JSON."""
    start = time.perf_counter()
    result = FIGURES[name](session)
    target = TARGETS[name]
    # memory and integrity: ratios that must stay below the target; the others must reach it
    met = result["ratio"] < target if name in BELOW else result["ratio"] >= target
    relation = "<" if name in BELOW else ">="
    result.update(
        target=f"{relation} {target}",
        met=met,
        seconds=time.perf_counter() - start,
        load_average=load_average(),
    )
    verdict = "n/a, quick mode" if quick else ("met" if met else "NOT met")
    print(
        f"{result.pop('line')}  [target {relation} {target}: {verdict}; "
        f"load {result['load_average'][0]}]",
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    """Measure the wanted figures, print one line each and write them to ``--out``."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.seed_child:
        print(json.dumps(seed_child(args.seed_child, args.threads, int(args.steps))))
        return 0
    if args.video_child:
        clips, rounds = (int(n) for n in args.steps.split(","))
        print(json.dumps(video_child(args.video_child, clips, rounds)))
        return 0
    if args.memory_child:
        steps, loader_pass = (int(n) for n in f"{args.steps},0".split(",")[:2])
        print(json.dumps(memory_child(json.loads(args.memory_child), steps, bool(loader_pass))))
        return 0

    logging.basicConfig(level=logging.WARNING)
    size = SIZES["quick" if args.quick else "full"]
    wanted = set(args.only.split(",")) if args.only else set(TARGETS)
    for name in list(wanted):
        wanted.update(NEEDS.get(name, ()))
    report: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "machine": machine(),
        "load_average_start": load_average(),
        "figures": {},
    }
    print(f"machine: {report['machine']}  load average: {report['load_average_start']}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lrcn-benchmark-") as tmp:
        session = Session(size, Path(tmp))
        for name in FIGURES:
            if name in wanted:
                report["figures"][name] = measure(name, session, args.quick)
    report["seconds"] = time.perf_counter() - started
    report["load_average_end"] = load_average()
    write_json_atomic(args.out, report)
    print(f"total {report['seconds']:.0f} s; figures written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
