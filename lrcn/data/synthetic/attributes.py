"""The shapes images (and moving-shapes frames) with their ground truth as labels: stage 1.

Show and Tell feeds the LSTM the last hidden layer of a CNN *already trained to classify images*
(ImageNet). The shapes generator labels its images for free, so the small CNN is pretrained the
same way here (``task: attributes``, ``data.dataset: shapes``): linear heads on its last hidden
layer must recover everything a caption names, bound together and in order, so that "a red circle
to the left of a blue square" is readable from the one feature vector the decoder gets.

The targets: objects sorted left to right into three slots; per slot its colour, shape, the
(colour, shape) pair, size, row third and column third, each with an ``empty`` class; the number
of objects; and, for two objects, whether the left one is above, below or level with the right one
(the captions' "above"/"below" templates use the same 0.25-of-the-side threshold); and, whatever
the order, whether each (colour, shape) pair is in the picture.

For video (``data.dataset: moving_shapes``) the frame encoder learns single frames of the moving
shapes the same way: per shape (top, then bottom: the references' order) its colour, shape, the
pair, its position in sixths of the frame and its radius, so that the temporal LSTM over the
frames' features sees where each shape goes.

``data.fresh_images: true`` draws a new training set every epoch from ``(seed, epoch, index)``
(the generator is unlimited; a fixed set is overfitted after about 14 epochs). Validation and test
are the caption splits' very images, so stage 1's test numbers are about the images stage 2 is
scored on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from lrcn.data.media import frames_to_tensor, image_to_tensor
from lrcn.data.synthetic.moving_shapes import MovingShapesCaptions, sample_movers
from lrcn.data.synthetic.registry import register_dataset
from lrcn.data.synthetic.shapes import (
    COLOURS,
    SHAPES,
    SIZES,
    ShapeObject,
    ShapesCaptions,
    draw_shape,
    render_scene,
    sample_scene,
)

SLOTS = 3
EMPTY = "empty"
ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "center", "right")
RELATIONS = ("none", "left_above", "left_below", "level")  # two objects only; else none
# Per slot: attribute -> its classes (the last one is `empty`).
SLOT_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "colour": (*COLOURS, EMPTY),
    "shape": (*SHAPES, EMPTY),
    "object": (*(f"{c} {s}" for c in COLOURS for s in SHAPES), EMPTY),
    "size": (*SIZES, EMPTY),
    "row": (*ROWS, EMPTY),
    "column": (*COLUMNS, EMPTY),
}
PAIRS = SLOT_ATTRIBUTES["object"][:-1]  # every (colour, shape): "red circle", ...
# The stream id of freshly drawn training images: never one of the caption splits' (0, 1, 2).
_FRESH_STREAM = 3


def attribute_heads() -> dict[str, int]:
    """Head name -> number of classes, in the order of a target vector."""
    heads = {
        f"slot{slot + 1}_{name}": len(classes)
        for slot in range(SLOTS)
        for name, classes in SLOT_ATTRIBUTES.items()
    }
    heads["count"] = SLOTS
    heads["relation"] = len(RELATIONS)
    heads.update({f"has_{pair.replace(' ', '_')}": 2 for pair in PAIRS})
    return heads


def _third(value: float, size: int) -> int:
    return min(int(value // (size / 3)), 2)


def _relation(objects: list[ShapeObject], size: int) -> int:
    if len(objects) != 2:
        return RELATIONS.index("none")
    left, right = objects  # sorted by x
    if right.y - left.y > size * 0.25:
        return RELATIONS.index("left_above")
    if left.y - right.y > size * 0.25:
        return RELATIONS.index("left_below")
    return RELATIONS.index("level")


def scene_targets(objects: list[ShapeObject], size: int) -> list[int]:
    """A scene's class indices, one per head of :func:`attribute_heads`, in its order."""
    by_x = sorted(objects, key=lambda o: o.x)
    targets = []
    for slot in range(SLOTS):
        obj = by_x[slot] if slot < len(by_x) else None
        for name, classes in SLOT_ATTRIBUTES.items():
            if obj is None:
                targets.append(len(classes) - 1)
                continue
            value = {
                "colour": obj.colour,
                "shape": obj.shape,
                "object": f"{obj.colour} {obj.shape}",
                "size": obj.size,
                "row": ROWS[_third(obj.y, size)],
                "column": COLUMNS[_third(obj.x, size)],
            }[name]
            targets.append(classes.index(value))
    targets.append(len(objects) - 1)
    targets.append(_relation(by_x, size))
    present = {f"{o.colour} {o.shape}" for o in objects}
    targets += [int(pair in present) for pair in PAIRS]
    return targets


class ShapesAttributes(Dataset):
    """Items ``{"images": (3, S, S), "targets": (heads,) int64}`` of one shapes split.

    Args:
        split: ``train``, ``val`` or ``test``.
        num_items: images in the split (per epoch, for fresh training images).
        seed: the dataset seed (``data.seed``).
        image_size: side in pixels.
        mean, std: the encoder's input normalisation.
        fresh: training only: draw new images every epoch (``set_epoch``) instead of the caption
            split's fixed ones.
    """

    def __init__(
        self,
        split: str,
        num_items: int,
        seed: int,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        fresh: bool = False,
    ) -> None:
        self.captions = ShapesCaptions(split, num_items, seed=seed, image_size=image_size)
        self.split, self.seed, self.image_size = split, seed, image_size
        self.mean, self.std = mean, std
        self.fresh = fresh and split == "train"
        self.epoch = 0
        self.heads = attribute_heads()

    def set_epoch(self, epoch: int) -> None:
        """Use the images of ``epoch`` (fresh training images only; otherwise nothing changes)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.captions)

    def scene(self, index: int) -> tuple[Any, list[ShapeObject]]:
        """Item ``index``'s PIL image and objects."""
        if not self.fresh:
            image, _, objects = self.captions.item(index)
            return image, objects
        if not 0 <= index < len(self):
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, _FRESH_STREAM, self.epoch, index])
        objects = sample_scene(rng, self.image_size)
        return render_scene(objects, self.image_size, rng=rng), objects

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, objects = self.scene(index)
        return {
            "images": image_to_tensor(image, self.image_size, self.mean, self.std),
            "targets": torch.tensor(scene_targets(objects, self.image_size), dtype=torch.long),
        }


@register_dataset("shapes", task="attributes")
def build_shapes_attributes(
    split: str, size: int, seed: int, data: Any, mean: Sequence[float], std: Sequence[float]
) -> ShapesAttributes:
    """The shapes split of ``size`` images with their attribute targets (see the module)."""
    return ShapesAttributes(split, size, seed, data.image_size, mean, std, fresh=data.fresh_images)


# ---- moving shapes: the frame encoder of the video captioner -------------------------------------
MOVING_SLOTS = 2  # top and bottom half: the order every moving-shapes reference names them in
POSITION_BINS = 6  # sixths of the frame: a shape moves 0.45 of the side in a clip
RADIUS_BINS = (0.075, 0.11, 0.15)  # fractions of the side: a growing shape spans 0.045..0.2
MOVING_SLOT_ATTRIBUTES: dict[str, int] = {  # attribute -> classes, `empty` last
    "colour": len(COLOURS) + 1,
    "shape": len(SHAPES) + 1,
    "object": len(COLOURS) * len(SHAPES) + 1,
    "x": POSITION_BINS + 1,
    "y": POSITION_BINS + 1,
    "radius": len(RADIUS_BINS) + 2,
}


def moving_attribute_heads() -> dict[str, int]:
    """Head name -> classes for moving-shapes frames, in the order of a target vector."""
    heads = {
        f"slot{slot + 1}_{name}": classes
        for slot in range(MOVING_SLOTS)
        for name, classes in MOVING_SLOT_ATTRIBUTES.items()
    }
    heads["count"] = MOVING_SLOTS
    return heads


def frame_targets(objects: list[ShapeObject], size: int) -> list[int]:
    """One moving-shapes frame's class indices (objects in the generator's top-to-bottom order)."""
    targets = []
    colours, shapes = list(COLOURS), list(SHAPES)
    for slot in range(MOVING_SLOTS):
        obj = objects[slot] if slot < len(objects) else None
        if obj is None:
            targets += [classes - 1 for classes in MOVING_SLOT_ATTRIBUTES.values()]
            continue
        colour, shape = colours.index(obj.colour), shapes.index(obj.shape)
        targets += [
            colour,
            shape,
            colour * len(SHAPES) + shape,
            min(max(int(obj.x / size * POSITION_BINS), 0), POSITION_BINS - 1),
            min(max(int(obj.y / size * POSITION_BINS), 0), POSITION_BINS - 1),
            int(np.searchsorted(RADIUS_BINS, obj.radius / size)),
        ]
    targets.append(len(objects) - 1)
    return targets


class MovingShapesFrames(Dataset):
    """Single frames of moving-shapes clips with their ground truth: ``images`` (3, S, S) and
    ``targets``. Item ``i`` of val/test is frame ``i mod T`` of the caption split's clip ``i``;
    fresh training frames come from new clips at a random instant, drawn from (seed, epoch, i)."""

    def __init__(
        self,
        split: str,
        num_items: int,
        seed: int,
        image_size: int,
        num_frames: int,
        mean: Sequence[float],
        std: Sequence[float],
        fresh: bool = False,
    ) -> None:
        self.clips = MovingShapesCaptions(split, num_items, seed, image_size, num_frames)
        self.seed, self.image_size, self.num_frames = seed, image_size, num_frames
        self.mean, self.std = mean, std
        self.fresh = fresh and split == "train"
        self.epoch = 0
        self.heads = moving_attribute_heads()

    def set_epoch(self, epoch: int) -> None:
        """Use the frames of ``epoch`` (fresh training frames only)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.clips)

    def frame(self, index: int) -> tuple[np.ndarray, list[ShapeObject]]:
        """Item ``index``: a frame (S, S, 3) uint8 and its objects."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        if self.fresh:
            rng = np.random.default_rng([self.seed, _FRESH_STREAM + 10, self.epoch, index])
            movers, t = sample_movers(rng), float(rng.uniform())
        else:
            movers = sample_movers(self.clips._rng(index))
            t = (index % self.num_frames) / max(self.num_frames - 1, 1)
        objects = [m.at(t, self.image_size) for m in movers]
        image = Image.new("RGB", (self.image_size,) * 2)
        draw = ImageDraw.Draw(image)
        for obj in objects:
            draw_shape(draw, obj, COLOURS[obj.colour])
        return np.asarray(image), objects

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        pixels, objects = self.frame(index)
        return {
            "images": frames_to_tensor(pixels[None], self.image_size, self.mean, self.std)[0],
            "targets": torch.tensor(frame_targets(objects, self.image_size), dtype=torch.long),
        }


@register_dataset("moving_shapes", task="attributes")
def build_moving_shapes_frames(
    split: str, size: int, seed: int, data: Any, mean: Sequence[float], std: Sequence[float]
) -> MovingShapesFrames:
    """Frames of the moving-shapes split with their attribute targets (see the class)."""
    return MovingShapesFrames(
        split,
        size,
        seed,
        data.image_size,
        data.num_frames,
        mean,
        std,
        fresh=data.fresh_images,
    )


__all__ = [
    "MovingShapesFrames",
    "RELATIONS",
    "SLOTS",
    "SLOT_ATTRIBUTES",
    "ShapesAttributes",
    "attribute_heads",
    "frame_targets",
    "moving_attribute_heads",
    "scene_targets",
]
