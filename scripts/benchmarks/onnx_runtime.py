"""ONNX parity and speed: onnxruntime's captions against lrcn's on the shapes test split.

    python scripts/benchmarks/onnx_runtime.py --run show_tell=RUN --run attention=RUN \
        [--threads 1] [--beams 1 3] [--out docs/results/onnx_runtime.json]

Each run is exported with ``lrcn export --onnx`` into a scratch folder; the test split's images
(as lrcn normalises them) are captioned from pixels by lrcn (its encoder and `lrcn.decoding`,
loaded from the model folder) and by `lrcn.onnx_runtime.OnnxCaptioner`, batch 50, each beam size
in turn, one runtime right after the other with the same thread count, best of three passes
(the machine is shared). It counts the captions that are equal token for token and the captions
per second of each. The JSON records the commit, the CPU, the threads and each run's recipe;
``scripts/results.py render`` writes BENCHMARKS.md's ``onnx`` block from it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from lrcn import build  # noqa: E402
from lrcn.decoding import decode  # noqa: E402
from lrcn.export import export_model  # noqa: E402
from lrcn.io import write_json_atomic  # noqa: E402
from lrcn.onnx_runtime import OnnxCaptioner  # noqa: E402
from lrcn.predict import load_model  # noqa: E402
from lrcn.text.vocab import Vocabulary  # noqa: E402

BATCH = 50
PASSES = 3


def _best_seconds(caption: Any, batches: list[Any]) -> tuple[float, list[list[int]]]:
    """The fastest of ``PASSES`` passes over the batches, and the captions of the last."""
    best = float("inf")
    for _ in range(PASSES):
        start = time.perf_counter()
        out = [ids for batch in batches for ids in caption(batch)]
        best = min(best, time.perf_counter() - start)
    return best, out


def measure_run(name: str, run: Path, work: Path, beams: list[int], threads: int) -> dict:
    """One run's parity counts and captions/s per beam size."""
    folder = export_model(run, work / name, onnx=True)
    model, cfg, _ = load_model(folder, device="cpu")
    ort = OnnxCaptioner(folder, threads=threads)
    source = build.build_source_raw(cfg, "test")
    pixels = torch.stack([source.example(i).pixels for i in range(len(source))])
    batches = [pixels[i : i + BATCH] for i in range(0, len(pixels), BATCH)]
    arrays = [b.numpy() for b in batches]
    key = "frames" if pixels.dim() == 5 else "images"
    ids = (Vocabulary.start_id, Vocabulary.end_id)
    result: dict[str, Any] = {
        "run": str(run),
        "wiring": cfg.decoder.variant,
        "encoder": cfg.encoder.name,
        "two_stage": bool(cfg.data.features),
        "train_items": cfg.data.train_size,
        "epochs": cfg.train.epochs,
        "items": len(pixels),
        "beams": {},
    }
    for beam in beams:
        sizes = {"max_length": cfg.eval.max_length, "beam_size": beam,
                 "length_penalty": cfg.eval.length_penalty}  # fmt: skip

        def lrcn_caption(batch: torch.Tensor, sizes: dict = sizes) -> list[list[int]]:
            with torch.no_grad():
                return decode(model.decoder, model.encode({key: batch}), *ids, **sizes)

        def ort_caption(batch: np.ndarray, beam: int = beam) -> list[list[int]]:
            return ort.beam_search(batch, cfg.eval.max_length, beam, cfg.eval.length_penalty)

        lrcn_seconds, ours = _best_seconds(lrcn_caption, batches)
        ort_seconds, theirs = _best_seconds(ort_caption, arrays)
        equal = sum(a == b for a, b in zip(ours, theirs))
        result["beams"][str(beam)] = {
            "equal": equal,
            "lrcn_captions_per_s": len(ours) / lrcn_seconds,
            "onnxruntime_captions_per_s": len(theirs) / ort_seconds,
            "ratio": lrcn_seconds / ort_seconds,
        }
        print(
            f"{name} beam {beam}: {equal}/{len(ours)} captions equal; lrcn "
            f"{len(ours) / lrcn_seconds:.0f}/s, onnxruntime {len(theirs) / ort_seconds:.0f}/s "
            f"({lrcn_seconds / ort_seconds:.2f}x)",
            flush=True,
        )
    return result


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main(argv: list[str] | None = None) -> int:
    """Parse, measure every run, write the JSON."""
    import onnxruntime

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, metavar="NAME=RUN")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--out", default=str(REPO / "docs" / "results" / "onnx_runtime.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    report: dict[str, Any] = {
        "benchmark": "onnx_runtime",
        "command": "python scripts/benchmarks/onnx_runtime.py " + " ".join(argv or sys.argv[1:]),
        "commit": commit,
        "cpu": _cpu(),
        "threads": args.threads,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "batch": BATCH,
        "load_average_start": round(os.getloadavg()[0], 2),
        "runs": {},
    }
    with tempfile.TemporaryDirectory(prefix="lrcn-onnx-") as work:
        for spec in args.run:
            name, _, run = spec.partition("=")
            report["runs"][name] = measure_run(
                name, Path(run), Path(work), args.beams, args.threads
            )
    report["load_average_end"] = round(os.getloadavg()[0], 2)
    write_json_atomic(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
