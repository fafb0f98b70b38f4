"""What one request to `lrcn serve` may carry (no imports: the command line reads the defaults)."""

from __future__ import annotations

from dataclasses import dataclass

MEGABYTE = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one request may carry.

    Args:
        max_bytes: the whole request body (multipart framing included).
        max_pixels: width x height of an image (or of a video's frames), checked before decoding.
        max_beam: the largest beam size a caller may ask for (a beam costs its size in work).
    """

    max_bytes: int = 20 * MEGABYTE
    max_pixels: int = 40_000_000
    max_beam: int = 10
