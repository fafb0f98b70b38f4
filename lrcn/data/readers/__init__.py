"""Readers for datasets' native files, one module per dataset family, turning them into records.

A reader returns one record per image or video:

- captioning: ``{"id", "path", "split", "captions": [str, ...]}``
- activity: ``{"id", "path", "split", "label": int (0-based), "label_name"}``

``path`` is absolute (an image, a video file or a folder of frames) and ``split`` is one of
``train``, ``val``, ``test``. Readers do not stat every image or video (datasets are large); pass
``check_files=True`` to have them verified. `lrcn.data.manifest.prepare` runs a reader by its
registered name and writes the manifest.

Each reader finds its files under ``root`` by their usual names (in ``root`` or one folder
below); every file can also be given explicitly, relative to ``root`` or absolute.
"""

from lrcn.data.readers.coco import read_coco, read_karpathy
from lrcn.data.readers.flickr import (
    FLICKR8K_ABSENT_IMAGES,
    read_flickr8k,
    read_flickr30k,
    read_kaggle_captions,
)
from lrcn.data.readers.images import read_images
from lrcn.data.readers.msrvtt import read_msrvtt
from lrcn.data.readers.msvd import MSVD_SPLIT_BOUNDS, read_msvd
from lrcn.data.readers.registry import READERS, available_readers, get_reader, register_reader
from lrcn.data.readers.ucf101 import read_ucf101, read_ucf101_classes
from lrcn.data.readers.videos import read_videos

__all__ = [
    "FLICKR8K_ABSENT_IMAGES",
    "MSVD_SPLIT_BOUNDS",
    "READERS",
    "available_readers",
    "get_reader",
    "read_coco",
    "read_flickr8k",
    "read_flickr30k",
    "read_images",
    "read_kaggle_captions",
    "read_karpathy",
    "read_msrvtt",
    "read_msvd",
    "read_ucf101",
    "read_ucf101_classes",
    "read_videos",
    "register_reader",
]
