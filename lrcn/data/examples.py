"""Files shaped like a researcher's own data, drawn by the embedded generators: the worked examples
of docs/your-own-data.md (``lrcn make-example images|videos --out DIR``).

- ``images``: ``DIR/photos/batch-K/shape-NNNN.png`` and ``DIR/captions.csv`` (``image,caption``,
  five rows per photo, as Kaggle's Flickr8k captions.txt).
- ``videos``: ``DIR/videos/<motion>/v_<motion>_gGG_cCC.mp4``, one folder per class (the direction
  a single shape moves: left, right, up, down), UCF101's names; the clips of one group share their
  shape and colour (near-duplicates, which a split must keep together), and
  ``DIR/captions.csv`` (``video,caption``) describes each clip for video description.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from lrcn.data.media import write_video
from lrcn.data.synthetic.moving_shapes import Mover, describe, render_clip
from lrcn.data.synthetic.shapes import COLOURS, SHAPES, ShapesCaptions
from lrcn.errors import LrcnError

VIDEO_CLASSES = ("left", "right", "up", "down")
EXAMPLES = ("images", "videos")


def make_image_example(
    out: str | os.PathLike, count: int = 60, seed: int = 0, image_size: int = 64
) -> dict[str, Path]:
    """Write ``count`` shapes photos in batch folders and their captions CSV under ``out``.

    Returns:
        ``{"root": photo folder, "captions": CSV}``.
    """
    out = Path(out)
    root = out / "photos"
    data = ShapesCaptions("train", count, seed=seed, image_size=image_size)
    rows = []
    for index in range(count):
        image, captions, _ = data.item(index)
        relative = f"batch-{index // 20 + 1}/shape-{index:04d}.png"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        image.save(root / relative)
        rows += [(Path(relative).name, caption) for caption in captions]
    captions_file = _write_csv(out / "captions.csv", ("image", "caption"), rows)
    return {"root": root, "captions": captions_file}


def make_video_example(
    out: str | os.PathLike,
    groups: int = 4,
    clips: int = 3,
    seed: int = 0,
    image_size: int = 48,
    num_frames: int = 8,
) -> dict[str, Path]:
    """Write ``groups`` x ``clips`` MP4 clips per class and their captions CSV under ``out``.

    Returns:
        ``{"root": folder of class folders, "captions": CSV}``.
    """
    out = Path(out)
    root = out / "videos"
    pairs = [(shape, colour) for shape in SHAPES for colour in COLOURS]
    rows = []
    for label, motion in enumerate(VIDEO_CLASSES):
        (root / motion).mkdir(parents=True, exist_ok=True)
        for group in range(1, groups + 1):
            rng = np.random.default_rng([seed, label, group])
            shape, colour = pairs[rng.integers(len(pairs))]
            for clip in range(1, clips + 1):
                x, y = rng.uniform(0.35, 0.65, size=2)
                mover = Mover(shape, colour, motion, float(x), float(y), 0.12)
                name = f"v_{motion}_g{group:02d}_c{clip:02d}.mp4"
                write_video(root / motion / name, render_clip([mover], image_size, num_frames))
                rows += [(f"{motion}/{name}", c) for c in describe([mover], rng, 5)]
    captions_file = _write_csv(out / "captions.csv", ("video", "caption"), rows)
    return {"root": root, "captions": captions_file}


def make_example(kind: str, out: str | os.PathLike, seed: int = 0) -> dict[str, Path]:
    """Write the ``images`` or ``videos`` worked example under ``out`` (see the module docstring)."""
    if kind not in EXAMPLES:
        raise LrcnError(f"no example {kind!r}; choose one of {', '.join(EXAMPLES)}.")
    if kind == "images":
        return make_image_example(out, seed=seed)
    return make_video_example(out, seed=seed)


def _write_csv(path: Path, header: tuple[str, str], rows: list[tuple[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path
