"""Caption image files with onnxruntime from a model folder's ``onnx/`` (``lrcn export --onnx``).

    python scripts/onnx_caption.py IMAGE... --model DIR [--beam-size K] [--threads N]

Prints ``path<TAB>caption`` per image, as ``lrcn caption`` does. The decoding is
`lrcn.onnx_runtime.OnnxCaptioner` (numpy + onnxruntime, no torch model); the images are read and
normalised with lrcn's own loader (shorter side to the exported size, centre crop, the exported
mean and std), so a caller outside Python reproduces that step and the loop in that module.
Errors are one sentence on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lrcn.errors import LrcnError  # noqa: E402
from lrcn.onnx_runtime import OnnxCaptioner  # noqa: E402


def pixels_of(paths: list[str], size: int, mean: list[float], std: list[float]) -> np.ndarray:
    """Images -> normalised (B, 3, size, size) float32, as lrcn prepares them."""
    from lrcn.data.media import image_to_tensor, load_image

    rows = []
    for path in paths:
        try:
            rows.append(image_to_tensor(load_image(path, size), size, mean, std).numpy())
        except (OSError, ValueError) as exc:
            raise LrcnError(f"{path}: not a readable image ({exc.__class__.__name__}).") from None
    return np.stack(rows)


def main(argv: list[str] | None = None) -> int:
    """Parse, load the graphs, caption the images in one batch and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+")
    parser.add_argument("--model", required=True, help="model folder (or its onnx/ folder)")
    parser.add_argument("--beam-size", type=int, help="default: the exported eval.beam_size")
    parser.add_argument("--threads", type=int, help="onnxruntime threads (default: its own)")
    args = parser.parse_args(argv)
    try:
        captioner = OnnxCaptioner(args.model, threads=args.threads)
        if captioner.meta["input"] != "images":
            raise LrcnError(
                f"{args.model}: a video captioner's graphs take frames (B, T, 3, H, W); this "
                "script captions image files: use OnnxCaptioner with frames, or lrcn caption."
            )
        meta = captioner.meta
        pixels = pixels_of(args.images, meta["image_size"], meta["mean"], meta["std"])
        for path, ids in zip(args.images, captioner.caption_ids(pixels, args.beam_size)):
            print(f"{path}\t{captioner.words(ids)}")
    except LrcnError as exc:
        print(f"onnx_caption: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
