"""Moving-line activity recognition: the seed's toy video problem, generated on the fly.

Item i is drawn from `np.random.default_rng([seed, i])`, so the dataset needs no storage, is the
same in every DataLoader worker and in every epoch, and two seeds give disjoint-looking data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from lrcn.data.synthetic.registry import register_dataset

Variant = Literal["classic", "square4"]

CLASS_NAMES: dict[str, list[str]] = {
    # Label 1 = left to right, as in the Machine Learning Mastery original (its `right` flag).
    "classic": ["right_to_left", "left_to_right"],
    "square4": ["right", "left", "down", "up"],
}


class MovingLineDataset(Dataset):
    """Videos of a line being drawn (classic) or a square moving (square4); label = direction.

    "classic" (2 classes): frame t adds one pixel in column t (left to right) or size-1-t (right
    to left); its row starts at random and then moves by -1, 0 or +1 per frame, uniformly among
    the rows inside the image, as in the original.
    Frames accumulate the line drawn so far, so the last frame alone shows the whole line and
    only the order of the pixels tells the direction.

    "square4" (4 classes, harder): only the current position of a filled square is drawn; it
    moves right, left, down or up over a random span of at least a quarter of the image, at a
    random fixed position on the other axis. The direction must be read across frames.

    Args:
        num_samples: number of items.
        seed: dataset seed; item i is generated from `np.random.default_rng([seed, i])`.
        frames: frames per video (T); for "classic" at most `size` (one column per frame).
        size: frame height and width in pixels.
        variant: "classic" or "square4".

    Items are `{"frames": float32 tensor (T, 1, size, size) in {0, 1}, "label": int}`.
    """

    def __init__(
        self,
        num_samples: int,
        seed: int,
        frames: int = 50,
        size: int = 50,
        variant: Variant = "classic",
    ) -> None:
        if variant not in CLASS_NAMES:
            raise ValueError(
                f"MovingLineDataset got variant {variant!r}; choose one of {list(CLASS_NAMES)}."
            )
        if num_samples < 0:
            raise ValueError(f"MovingLineDataset needs num_samples >= 0, got {num_samples}.")
        if variant == "classic" and not 1 <= frames <= size:
            raise ValueError(
                f"The classic moving line draws one column per frame, so frames ({frames}) must "
                f"be between 1 and size ({size})."
            )
        if variant == "square4" and (frames < 2 or size < 8):
            raise ValueError(
                f"The square4 moving line needs frames >= 2 and size >= 8, got frames={frames} "
                f"and size={size}."
            )
        self.num_samples = num_samples
        self.seed = seed
        self.frames = frames
        self.size = size
        self.variant = variant
        self.class_names = list(CLASS_NAMES[variant])

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} is out of range for {self.num_samples} samples")
        rng = np.random.default_rng([self.seed, index])
        if self.variant == "classic":
            video, label = _classic(rng, self.frames, self.size)
        else:
            video, label = _square4(rng, self.frames, self.size)
        frames = torch.from_numpy(video).unsqueeze(1)  # (T, 1, size, size)
        return {"frames": frames, "label": label}


def _classic(rng: np.random.Generator, frames: int, size: int) -> tuple[np.ndarray, int]:
    label = int(rng.integers(2))
    rows = np.empty(frames, dtype=np.int64)
    rows[0] = rng.integers(size)
    for t in range(1, frames):
        rows[t] = rng.integers(max(rows[t - 1] - 1, 0), min(rows[t - 1] + 1, size - 1) + 1)
    steps = np.arange(frames)
    columns = steps if label == 1 else size - 1 - steps
    new_pixels = np.zeros((frames, size, size), dtype=np.float32)
    new_pixels[steps, rows, columns] = 1.0
    # Each column holds one pixel, so the running sum stays in {0, 1}.
    return np.cumsum(new_pixels, axis=0, dtype=np.float32), label  # (T, size, size)


def _square4(rng: np.random.Generator, frames: int, size: int) -> tuple[np.ndarray, int]:
    label = int(rng.integers(4))
    side = max(2, size // 10)
    last = size - side  # the largest top-left coordinate that keeps the square inside
    start = int(rng.integers(last // 2 + 1))
    end = int(rng.integers(start + max(1, last // 4), last + 1))
    along = np.rint(np.linspace(start, end, frames)).astype(np.int64)  # (T,)
    if label in (1, 3):  # left and up run towards 0
        along = last - along
    across = int(rng.integers(last + 1))
    video = np.zeros((frames, size, size), dtype=np.float32)
    for t, position in enumerate(along):
        if label < 2:
            video[t, across : across + side, position : position + side] = 1.0
        else:
            video[t, position : position + side, across : across + side] = 1.0
    return video, label


SPLIT_OFFSETS = {"train": 0, "val": 1, "test": 2}


@register_dataset("moving_line", task="activity")
def build_moving_line(
    split: str, size: int, seed: int, data: Any, mean: Sequence[float], std: Sequence[float]
) -> MovingLineDataset:
    """The moving-line split (seeded ``seed * 10 + split``); frames are not normalised."""
    return MovingLineDataset(
        size,
        seed * 10 + SPLIT_OFFSETS[split],
        frames=data.num_frames,
        size=data.image_size,
        variant=data.variant,
    )
