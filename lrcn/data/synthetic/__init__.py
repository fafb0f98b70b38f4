"""Embedded datasets drawn on the fly from a seed: shapes (images; and their ground truth for
pretraining, `attributes`), moving shapes (video captions), moving line (activity recognition),
each registered by name and task (see `registry`)."""

from lrcn.data.synthetic.attributes import ShapesAttributes, attribute_heads
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
    "ShapesAttributes",
    "ShapesCaptions",
    "ShapesSource",
    "attribute_heads",
    "available_datasets",
    "find_dataset",
    "get_dataset",
    "register_dataset",
]
