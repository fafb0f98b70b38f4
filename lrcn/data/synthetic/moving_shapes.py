"""Embedded **moving shapes** video captions: short clips of one or two coloured shapes in motion.

Each shape moves left, right, up or down, grows or shrinks; five captions per clip come from varied
phrasings ("a red circle moves to the left", "a red ball slides left", ...). Clips are drawn on the
fly from ``(seed, split, index)``. Telling left from right needs the frames' *order*, so a captioner
must encode time (``encoder.temporal: lstm``), not just average the frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from lrcn.data.datasets import Example, Source
from lrcn.data.media import frames_to_tensor
from lrcn.data.synthetic.registry import register_dataset
from lrcn.data.synthetic.shapes import (
    COLOURS,
    SHAPE_WORDS,
    SHAPES,
    SPLITS,
    ShapeObject,
    _pick,
    draw_shape,
)

MOTIONS = ("left", "right", "up", "down", "grows", "shrinks")
PHRASES = {
    "left": (
        "{} moves to the left",
        "{} slides left",
        "{} is moving left",
        "{} goes to the left",
        "{} moves from right to left",
    ),
    "right": (
        "{} moves to the right",
        "{} slides right",
        "{} is moving right",
        "{} goes to the right",
        "{} moves from left to right",
    ),
    "up": (
        "{} moves up",
        "{} rises",
        "{} is moving up",
        "{} goes up",
        "{} moves from bottom to top",
    ),
    "down": (
        "{} moves down",
        "{} falls",
        "{} is moving down",
        "{} goes down",
        "{} moves from top to bottom",
    ),
    "grows": (
        "{} grows",
        "{} gets bigger",
        "{} is growing",
        "{} becomes larger",
        "{} grows in size",
    ),
    "shrinks": (
        "{} shrinks",
        "{} gets smaller",
        "{} is shrinking",
        "{} becomes smaller",
        "{} shrinks in size",
    ),
}


@dataclass(frozen=True)
class Mover:
    """A shape and its motion; positions and radius are fractions of the frame side."""

    shape: str
    colour: str
    motion: str
    x: float
    y: float
    radius: float

    def at(self, t: float, size: int) -> ShapeObject:
        """The object at time ``t`` in [0, 1]."""
        dx = {"left": -0.45, "right": 0.45}.get(self.motion, 0.0)
        dy = {"up": -0.45, "down": 0.45}.get(self.motion, 0.0)
        scale = {"grows": 0.5 + 1.2 * t, "shrinks": 1.7 - 1.2 * t}.get(self.motion, 1.0)
        return ShapeObject(
            self.shape,
            self.colour,
            "small",
            (self.x + dx * (t - 0.5)) * size,
            (self.y + dy * (t - 0.5)) * size,
            self.radius * scale * size,
        )


def sample_movers(rng: np.random.Generator) -> list[Mover]:
    """One or two shapes with distinct (colour, shape) and distinct halves of the frame for two."""
    count = 1 if rng.random() < 0.6 else 2
    movers: list[Mover] = []
    while len(movers) < count:
        shape, colour = SHAPES[rng.integers(len(SHAPES))], list(COLOURS)[rng.integers(len(COLOURS))]
        if any(m.shape == shape and m.colour == colour for m in movers):
            continue
        motion = MOTIONS[rng.integers(len(MOTIONS))]
        if count == 1:
            x, y = rng.uniform(0.4, 0.6, size=2)
        else:  # one shape per half (top/bottom) so they never collide
            x, y = rng.uniform(0.4, 0.6), (0.27 if not movers else 0.73) + rng.uniform(-0.03, 0.03)
        radius = 0.12 if count == 1 else 0.09
        movers.append(Mover(shape, colour, motion, float(x), float(y), radius))
    return movers


def describe(movers: list[Mover], rng: np.random.Generator, count: int = 5) -> list[str]:
    """``count`` captions of the movers, their order drawn from ``rng``."""
    captions = []
    order = rng.permutation(5)
    for k in range(count):
        parts = []
        for m in movers:
            noun = _pick(rng, SHAPE_WORDS[m.shape])
            parts.append(
                PHRASES[m.motion][order[k % 5] if len(movers) == 1 else rng.integers(5)].format(
                    f"a {m.colour} {noun}"
                )
            )
        joiner = " and " if rng.random() < 0.7 else " while "
        captions.append(joiner.join(parts) + ".")
    return captions


def render_clip(movers: list[Mover], size: int, num_frames: int) -> np.ndarray:
    """Frames (T, size, size, 3) uint8 on a black background."""
    frames = np.zeros((num_frames, size, size, 3), dtype=np.uint8)
    for t in range(num_frames):
        image = Image.new("RGB", (size, size))
        draw = ImageDraw.Draw(image)
        for m in movers:
            draw_shape(draw, m.at(t / max(num_frames - 1, 1), size), COLOURS[m.colour])
        frames[t] = np.asarray(image)
    return frames


class MovingShapesCaptions:
    """Deterministic moving-shapes split: ``item(i)`` -> (frames (T, S, S, 3) uint8, captions, movers)."""

    captions_per_item = 5

    def __init__(
        self, split: str, num_items: int, seed: int = 0, image_size: int = 48, num_frames: int = 8
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {tuple(SPLITS)}, got {split!r}")
        self.split, self.num_items, self.seed = split, num_items, seed
        self.image_size, self.num_frames = image_size, num_frames

    def __len__(self) -> int:
        return self.num_items

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, 10 + SPLITS[self.split], index])

    def item(self, index: int) -> tuple[np.ndarray, list[str], list[Mover]]:
        """Item ``index``: (frames (T, S, S, 3) uint8, captions, movers)."""
        if not 0 <= index < self.num_items:
            raise IndexError(index)
        rng = self._rng(index)
        movers = sample_movers(rng)
        captions = describe(movers, rng, self.captions_per_item)
        return render_clip(movers, self.image_size, self.num_frames), captions, movers

    def captions(self, index: int) -> list[str]:
        """The item's captions without rendering its clip."""
        rng = self._rng(index)
        return describe(sample_movers(rng), rng, self.captions_per_item)

    def item_id(self, index: int) -> str:
        """Item ``index``'s id."""
        return f"moving-shapes-{self.split}-{index:06d}"


def motion_in(text: str) -> str | None:
    """The motion a caption fragment names ("slides left" -> "left"), or None."""
    text = f" {text.lower()} "
    if "from right to left" in text:
        return "left"
    if "from left to right" in text:
        return "right"
    if "from bottom to top" in text:
        return "up"
    if "from top to bottom" in text:
        return "down"
    keywords = {
        "left": (" left ",),
        "right": (" right ",),
        "up": (" up ", " rises "),
        "down": (" down ", " falls "),
        "grows": (" grows ", " bigger ", " growing ", " larger "),
        "shrinks": (" shrinks ", " smaller ", " shrinking "),
    }
    found = [motion for motion, words in keywords.items() if any(w in text for w in words)]
    return found[0] if len(found) == 1 else None


def names_motions(caption: str, movers: list[Mover], match: str = "order") -> bool:
    """True when the caption names every shape's motion correctly (ground truth from the generator).

    The caption is split into one clause per shape ("... and ...", "... while ..."). With
    ``match="order"`` the clauses are taken in the order every reference describes the shapes (top
    to bottom): only the motion words are judged. With ``match="colour"`` each clause must also name
    its shape's colour (and, where two share a colour, its noun).
    """
    clauses = [c.strip(" .") for part in caption.split(" while ") for c in part.split(" and ")]
    if match == "order":
        return len(clauses) == len(movers) and all(
            motion_in(c) == m.motion for c, m in zip(clauses, movers)
        )
    for mover in movers:
        nouns = [word for word, _ in SHAPE_WORDS[mover.shape]]
        mine = [c for c in clauses if any(f" {mover.colour} {noun} " in f" {c} " for noun in nouns)]
        if len(mine) != 1:  # the shape word may be wrong: the colour alone identifies the clause
            mine = [c for c in clauses if f" {mover.colour} " in f" {c} "]
        if len(mine) != 1 or motion_in(mine[0]) != mover.motion:
            return False
    return True


def motion_accuracy(
    captions: dict[str, str], data: MovingShapesCaptions, match: str = "order"
) -> float:
    """Fraction of clips whose generated caption names every motion right; ids as ``item_id``."""
    index = {data.item_id(i): i for i in range(len(data))}
    hits = [
        names_motions(caption, sample_movers(data._rng(index[item])), match)
        for item, caption in captions.items()
    ]
    return sum(hits) / max(len(hits), 1)


class MovingShapesSource(Source):
    """The embedded moving-shapes video captioning split as a `Source`."""

    is_video = True

    def __init__(
        self,
        split: str,
        size: int,
        seed: int,
        image_size: int,
        num_frames: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.data = MovingShapesCaptions(
            split, size, seed=seed, image_size=image_size, num_frames=num_frames
        )
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.data)

    def example(self, index: int) -> Example:
        """Item ``index``: its normalised frames (T, 3, S, S) and five captions."""
        frames, captions, _ = self.data.item(index)  # (T, S, S, 3) uint8
        pixels = frames_to_tensor(frames, self.data.image_size, self.mean, self.std)  # (T, 3, S, S)
        return Example(self.data.item_id(index), captions, pixels=pixels)

    def captions(self, index: int) -> list[str]:
        """Item ``index``'s captions, without rendering its clip."""
        return self.data.captions(index)

    def item_id(self, index: int) -> str:
        """Item ``index``'s id."""
        return self.data.item_id(index)

    def task_metrics(self, captions: dict[str, str]) -> dict[str, float]:
        """`motion_accuracy` of generated captions (by item id): motions in the references'
        order, and with their colours."""
        return {
            "motion_accuracy": motion_accuracy(captions, self.data),
            "motion_colour_accuracy": motion_accuracy(captions, self.data, match="colour"),
        }


@register_dataset("moving_shapes", task="video_caption")
def build_moving_shapes(
    split: str, size: int, seed: int, data: Any, mean: Sequence[float], std: Sequence[float]
) -> MovingShapesSource:
    """The moving-shapes split: ``size`` clips of ``data.num_frames`` frames."""
    return MovingShapesSource(split, size, seed, data.image_size, data.num_frames, mean, std)
