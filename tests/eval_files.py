"""Test helper: re-record a hand-edited evaluation's files in its manifest."""

from __future__ import annotations

import json
from pathlib import Path


def reseal(folder: Path, split: str = "test") -> None:
    """Record the split's files as they are now in its manifest, as if `lrcn evaluate` had
    written them so (tests edit an evaluation's files to make the case they test); nothing
    where there is no manifest."""
    try:
        from lrcn.evaluation_files import file_sha256, manifest_path
    except ImportError:  # lrcn before manifests: nothing to re-record
        return
    if not manifest_path(folder, split).is_file():
        return
    manifest = json.loads(manifest_path(folder, split).read_text())
    files = [name for name in manifest["files"] if (folder / name).is_file()]
    manifest["files"] = {name: file_sha256(folder / name) for name in files}
    manifest_path(folder, split).write_text(json.dumps(manifest))
