"""Embedded datasets drawn on the fly from a seed: shapes (images), moving shapes (video captions),
moving line (activity recognition), each registered by name (see `registry`)."""

from lrcn.data.synthetic.moving_line import MovingLineDataset
from lrcn.data.synthetic.moving_shapes import MovingShapesCaptions, MovingShapesSource
from lrcn.data.synthetic.registry import (
    DATASETS,
    available_datasets,
    find_dataset,
    get_dataset,
    register_dataset,
)
from lrcn.data.synthetic.shapes import ShapesCaptions, ShapesSource

__all__ = [
    "DATASETS",
    "MovingLineDataset",
    "MovingShapesCaptions",
    "MovingShapesSource",
    "ShapesCaptions",
    "ShapesSource",
    "available_datasets",
    "find_dataset",
    "get_dataset",
    "register_dataset",
]
