"""Example sources of manifests of real files (the embedded generators' sources live beside them,
in `lrcn.data.synthetic`, and are re-exported here)."""

from __future__ import annotations

from collections.abc import Sequence

from lrcn.data.datasets import Example, Source
from lrcn.data.media import frames_to_tensor, image_to_tensor, load_image, read_frames
from lrcn.data.synthetic.moving_shapes import MovingShapesSource
from lrcn.data.synthetic.shapes import ShapesSource

__all__ = ["ManifestImageSource", "ManifestVideoSource", "MovingShapesSource", "ShapesSource"]


class ManifestImageSource(Source):
    """Images listed in a manifest (``lrcn prepare``): records with ``id``, ``path``, ``captions``."""

    def __init__(
        self, records: list[dict], image_size: int, mean: Sequence[float], std: Sequence[float]
    ) -> None:
        self.records, self.image_size, self.mean, self.std = records, image_size, mean, std

    def __len__(self) -> int:
        return len(self.records)

    def example(self, index: int) -> Example:
        """Item ``index`` read from its file (raises LrcnError when unreadable)."""
        record = self.records[index]
        pixels = image_to_tensor(
            load_image(record["path"], self.image_size), self.image_size, self.mean, self.std
        )
        return Example(
            str(record["id"]),
            list(record.get("captions", [])),
            pixels=pixels,
            label=record.get("label"),
        )

    def captions(self, index: int) -> list[str]:
        """The record's captions."""
        return list(self.records[index].get("captions", []))

    def item_id(self, index: int) -> str:
        """The record's id."""
        return str(self.records[index]["id"])


class ManifestVideoSource(ManifestImageSource):
    """Videos or frame folders listed in a manifest; ``num_frames`` sampled per clip."""

    is_video = True

    def __init__(
        self,
        records: list[dict],
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        num_frames: int,
    ) -> None:
        super().__init__(records, image_size, mean, std)
        self.num_frames = num_frames

    def example(self, index: int) -> Example:
        """Item ``index`` read from its file (raises LrcnError when unreadable)."""
        record = self.records[index]
        frames = read_frames(record["path"], self.num_frames)  # (T, H, W, 3) uint8
        pixels = frames_to_tensor(frames, self.image_size, self.mean, self.std)  # (T, 3, S, S)
        return Example(
            str(record["id"]),
            list(record.get("captions", [])),
            pixels=pixels,
            label=record.get("label"),
        )
