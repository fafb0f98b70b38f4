"""What the Java-backed pieces (PTB tokenizer, METEOR) need: ``java`` on PATH, pycocoevalcap.

One place to ask, so a test that pretends Java is missing patches both at once.
"""

from __future__ import annotations

import importlib.util
import shutil


def java_available() -> bool:
    """Whether a ``java`` executable is on PATH."""
    return shutil.which("java") is not None


def pycocoevalcap_available() -> bool:
    """Whether pycocoevalcap (coco-caption's jars and scorers) is installed."""
    return importlib.util.find_spec("pycocoevalcap") is not None
