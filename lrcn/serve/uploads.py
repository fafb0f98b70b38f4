"""What `lrcn serve` accepts from a caller: the limits, and an upload decoded or refused.

Every refusal is a `BadUpload` carrying the HTTP status and one sentence that names the upload
and the fix; the web layer turns it into ``{"error": sentence}``. Images are decoded as `lrcn
caption` decodes files (`lrcn.data.media.load_image`'s colour policies, the same JPEG draft
size), so a served caption equals the command's caption of the same file.

A decompression bomb (a small file declaring a huge picture) is refused twice over: the picture's
size is read from the file's header and checked against ``Limits.max_pixels`` before any pixel
is decoded, and Pillow's own ``Image.MAX_IMAGE_PIXELS`` check stays on behind it.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lrcn.data.media import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    _size_hw,
    _to_rgb,  # lrcn caption's colour policies, shared so both give the same pixels
    read_frames,
)
from lrcn.errors import LrcnError
from lrcn.serve.limits import Limits


class BadUpload(Exception):
    """A request refused with ``status`` and one sentence (``str(exc)``)."""

    def __init__(self, sentence: str, status: int = 400) -> None:
        super().__init__(sentence)
        self.status = status


def decode_image(data: bytes, name: str, min_size: int, limits: Limits) -> Image.Image:
    """An uploaded image as RGB, as `lrcn.data.media.load_image` would load the same file.

    Raises:
        BadUpload: empty, not an image, truncated or corrupt, or larger than ``limits.max_pixels``
            (413) — each a sentence naming ``name``.
    """
    if not data:
        raise BadUpload(f"upload {name} is empty (0 bytes); send the image file's contents.")
    try:
        with Image.open(io.BytesIO(data)) as img:
            _check_pixels(img.size, name, limits)  # the header alone is read so far
            if img.format == "JPEG":
                side = max(_size_hw(min_size))
                img.draft("RGB", (side, side))
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except UnidentifiedImageError:
        raise BadUpload(
            f"upload {name} is not an image Pillow can read; send a PNG, JPEG or another image "
            f"file ({', '.join(sorted(IMAGE_EXTENSIONS))})."
        ) from None
    except Image.DecompressionBombError as err:  # Pillow's own check, at open: over 2x its limit
        raise BadUpload(
            f"upload {name} declares more pixels than Pillow decodes safely ({err}); resize it.",
            413,
        ) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise BadUpload(
            f"upload {name} is corrupt or truncated ({err}); send the whole file, re-encoded if "
            "it still fails."
        ) from None


def _check_pixels(size: tuple[int, int], name: str, limits: Limits) -> None:
    if size[0] * size[1] > limits.max_pixels:
        raise BadUpload(
            f"upload {name} declares {size[0]}x{size[1]} pixels, over this server's limit of "
            f"{limits.max_pixels:,}; resize it, or start lrcn serve with a larger --max-pixels.",
            413,
        )


def read_video_upload(data: bytes, name: str, num_frames: int, limits: Limits) -> np.ndarray:
    """An uploaded video's ``num_frames`` sampled frames, (T, H, W, 3) uint8, as `lrcn caption`
    samples a video file (PyAV reads it from a private temporary file, removed after).

    Raises:
        BadUpload: empty, not a video file name, frames over ``limits.max_pixels``, or a file
            PyAV cannot decode.
    """
    suffix = Path(name).suffix.lower()
    if suffix not in VIDEO_EXTENSIONS:
        raise BadUpload(
            f"upload {name}: this server's model captions videos; send a video file "
            f"({', '.join(sorted(VIDEO_EXTENSIONS))})."
        )
    if not data:
        raise BadUpload(f"upload {name} is empty (0 bytes); send the video file's contents.")
    handle, temp = tempfile.mkstemp(suffix=suffix, prefix="lrcn-serve-")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        _check_frame_size(temp, name, limits)
        return read_frames(temp, num_frames)
    except LrcnError as exc:
        raise BadUpload(str(exc).replace(temp, f"upload {name}")) from None
    finally:
        os.unlink(temp)


def _check_frame_size(path: str, name: str, limits: Limits) -> None:
    """Refuse a video whose frames declare more than ``limits.max_pixels`` before decoding one."""
    try:
        import av
    except ImportError:
        return  # read_frames says what to install
    try:
        with av.open(path) as container:
            streams = container.streams.video
            if streams:
                context = streams[0].codec_context
                _check_pixels((context.width, context.height), name, limits)
    except (av.error.FFmpegError, OSError, ValueError):
        return  # read_frames refuses it with its own sentence
