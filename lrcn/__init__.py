"""lrcn: CNN + LSTM models for activity recognition, image and video description."""

from lrcn.version import __version__

__all__ = ["__version__"]
