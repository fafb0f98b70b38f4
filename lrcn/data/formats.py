"""Deprecated: the old home of the dataset readers and manifest I/O, kept for old imports.

Readers live in `lrcn.data.readers` (one module per dataset family, plus a registry) and
manifests in `lrcn.data.manifest`; import from there.
"""

from lrcn.data.manifest import (
    LABELS_FILE,
    prepare,
    read_labels,
    read_manifest,
    write_manifest,
)
from lrcn.data.readers import (
    FLICKR8K_ABSENT_IMAGES,
    MSVD_SPLIT_BOUNDS,
    READERS,
    read_coco,
    read_flickr8k,
    read_flickr30k,
    read_kaggle_captions,
    read_karpathy,
    read_msrvtt,
    read_msvd,
    read_ucf101,
    read_ucf101_classes,
)
from lrcn.data.readers.files import SPLITS

__all__ = [
    "FLICKR8K_ABSENT_IMAGES",
    "LABELS_FILE",
    "MSVD_SPLIT_BOUNDS",
    "READERS",
    "SPLITS",
    "prepare",
    "read_coco",
    "read_flickr8k",
    "read_flickr30k",
    "read_kaggle_captions",
    "read_karpathy",
    "read_labels",
    "read_manifest",
    "read_msrvtt",
    "read_msvd",
    "read_ucf101",
    "read_ucf101_classes",
    "write_manifest",
]
