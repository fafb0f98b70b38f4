"""Caption new shapes PNGs with a checkpoint and count how many name every object right.

`python scripts/caption_new_pngs.py --checkpoint RUN [--out DIR]` draws 18 single-shape PNGs (every
colour x shape, alternately clean and with the training noise) and 18 two-object PNGs (distinct
pairs, random places and sizes, alternately clean and noisy) from a stream no split uses, captions
them the way `lrcn caption` does, and prints each caption with a mark and the two counts.
"""

from __future__ import annotations

import argparse
import itertools
from collections import Counter
from pathlib import Path

import numpy as np

from lrcn.data.synthetic.shapes import (
    COLOURS,
    SHAPES,
    SIZES,
    ShapeObject,
    named_objects,
    render_scene,
    sample_scene,
)
from lrcn.predict import caption_files

STREAM = 99  # not a split's (0, 1, 2) nor the pretraining's fresh images (3)


def _single(colour: str, shape: str, rng: np.random.Generator, size: int) -> list[ShapeObject]:
    size_name = SIZES[int(rng.integers(len(SIZES)))]
    radius = size * (0.09 if size_name == "small" else 0.17)
    x, y = rng.uniform(radius + 1, size - radius - 1, size=2)
    return [ShapeObject(shape, colour, size_name, float(x), float(y), radius)]


def _two(rng: np.random.Generator, size: int) -> list[ShapeObject]:
    while True:
        objects = sample_scene(rng, size)
        if len(objects) == 2:
            return objects


def make_pngs(out: Path, size: int = 64, seed: int = 0) -> dict[str, list[ShapeObject]]:
    """Write the 36 PNGs into ``out``; returns path -> its objects."""
    out.mkdir(parents=True, exist_ok=True)
    truth: dict[str, list[ShapeObject]] = {}
    pairs = list(itertools.product(COLOURS, SHAPES))
    for i, (colour, shape) in enumerate(pairs):
        rng = np.random.default_rng([seed, STREAM, i])
        objects = _single(colour, shape, rng, size)
        path = out / f"one-{i:02d}-{colour}-{shape}.png"
        render_scene(objects, size, rng=rng if i % 2 else None).save(path)
        truth[str(path)] = objects
    for i in range(18):
        rng = np.random.default_rng([seed, STREAM, 100 + i])
        objects = _two(rng, size)
        path = out / f"two-{i:02d}.png"
        render_scene(objects, size, rng=rng if i % 2 else None).save(path)
        truth[str(path)] = objects
    return truth


def main() -> None:
    """Draw, caption and count."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", default="runs/new_pngs")
    parser.add_argument("--beam-size", type=int)
    args = parser.parse_args()
    truth = make_pngs(Path(args.out))
    right: Counter[str] = Counter()
    for path, caption in caption_files(args.checkpoint, list(truth), args.beam_size):
        expected = Counter((o.colour, o.shape) for o in truth[path])
        hit = named_objects(caption) == expected
        group = "single-shape" if Path(path).name.startswith("one") else "two-object"
        right[group] += hit
        print(f"{'ok ' if hit else 'BAD'} {Path(path).name}\t{caption}")
    for group in ("single-shape", "two-object"):
        print(f"{group}: {right[group]} of 18 name every object right")


if __name__ == "__main__":
    main()
