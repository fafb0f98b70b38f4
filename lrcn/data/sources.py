"""Example sources: the embedded generators and manifests of real files, as ``Source`` objects."""

from __future__ import annotations

from collections.abc import Sequence

from lrcn.data.datasets import Example, Source
from lrcn.data.media import frames_to_tensor, image_to_tensor
from lrcn.data.synthetic.shapes import ShapesCaptions


class ShapesSource(Source):
    """The embedded shapes captioning split (see ``lrcn.data.synthetic.shapes``)."""

    def __init__(
        self,
        split: str,
        size: int,
        seed: int,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.data = ShapesCaptions(split, size, seed=seed, image_size=image_size)
        self.image_size, self.mean, self.std = image_size, mean, std

    def __len__(self) -> int:
        return len(self.data)

    def example(self, index: int) -> Example:
        image, captions, _ = self.data.item(index)
        return Example(
            self.data.item_id(index),
            captions,
            pixels=image_to_tensor(image, self.image_size, self.mean, self.std),
        )

    def captions(self, index: int) -> list[str]:
        return self.data.captions(index)

    def item_id(self, index: int) -> str:
        return self.data.item_id(index)


class ManifestImageSource(Source):
    """Images listed in a manifest (``lrcn prepare``): records with ``id``, ``path``, ``captions``."""

    def __init__(
        self, records: list[dict], image_size: int, mean: Sequence[float], std: Sequence[float]
    ) -> None:
        self.records, self.image_size, self.mean, self.std = records, image_size, mean, std

    def __len__(self) -> int:
        return len(self.records)

    def example(self, index: int) -> Example:
        from lrcn.data.media import image_to_tensor, load_image

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
        return list(self.records[index].get("captions", []))

    def item_id(self, index: int) -> str:
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
        from lrcn.data.media import frames_to_tensor, read_frames

        record = self.records[index]
        frames = read_frames(record["path"], self.num_frames)  # (T, H, W, 3) uint8
        pixels = frames_to_tensor(frames, self.image_size, self.mean, self.std)  # (T, 3, S, S)
        return Example(
            str(record["id"]),
            list(record.get("captions", [])),
            pixels=pixels,
            label=record.get("label"),
        )


class MovingShapesSource(Source):
    """The embedded moving-shapes video captioning split."""

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
        from lrcn.data.synthetic.moving_shapes import MovingShapesCaptions

        self.data = MovingShapesCaptions(
            split, size, seed=seed, image_size=image_size, num_frames=num_frames
        )
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.data)

    def example(self, index: int) -> Example:
        frames, captions, _ = self.data.item(index)  # (T, S, S, 3) uint8
        pixels = frames_to_tensor(frames, self.data.image_size, self.mean, self.std)  # (T, 3, S, S)
        return Example(self.data.item_id(index), captions, pixels=pixels)

    def captions(self, index: int) -> list[str]:
        return self.data.captions(index)

    def item_id(self, index: int) -> str:
        return self.data.item_id(index)
