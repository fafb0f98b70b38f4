"""Embedded datasets drawn on the fly from a seed: shapes (images), moving shapes (video captions),
moving line (activity recognition)."""

from lrcn.data.synthetic.moving_line import MovingLineDataset
from lrcn.data.synthetic.moving_shapes import MovingShapesCaptions
from lrcn.data.synthetic.shapes import ShapesCaptions

__all__ = ["MovingLineDataset", "MovingShapesCaptions", "ShapesCaptions"]
