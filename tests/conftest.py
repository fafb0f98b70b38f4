"""Shared fixtures: hermetic caches, the real-data folder, a tiny trained shapes model."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Libraries write into $HOME (torch hub, keras, matplotlib, ipython): point them at a temporary folder
# before anything imports them.
_CACHE = Path(tempfile.mkdtemp(prefix="lrcn-test-home-"))
for var, sub in (
    ("TORCH_HOME", "torch"),
    ("KERAS_HOME", "keras"),
    ("MPLCONFIGDIR", "mpl"),
    ("IPYTHONDIR", "ipython"),
    ("XDG_CACHE_HOME", "cache"),
):
    os.environ.setdefault(var, str(_CACHE / sub))
os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see lrcn/cli.py

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real files in native formats); tests using it skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real reference data not found at {SHARED_DATA}")
    return SHARED_DATA


TINY_SHAPES = [
    "data.train_size=256",
    "data.val_size=32",
    "data.test_size=32",
    "train.epochs=2",
    "train.batch_size=32",
    "train.progress=false",
    "encoder.feature_dim=64",
    "decoder.embed_dim=32",
    "decoder.hidden_dim=64",
    "eval.metrics=bleu,cider",
    "eval.tokenizer=python",
]


@pytest.fixture(scope="session")
def tiny_shapes_run(tmp_path_factory) -> Path:
    """A shapes captioner trained for two tiny epochs (seconds), shared by several tests."""
    from lrcn.config import load_config
    from lrcn.engine import fit

    run_dir = tmp_path_factory.mktemp("tiny-shapes")
    fit(load_config(REPO / "configs" / "shapes.yaml", TINY_SHAPES), run_dir)
    return run_dir


@pytest.fixture(scope="session")
def attention_run(tmp_path_factory) -> Path:
    """A shapes show_attend_tell captioner trained two tiny epochs (seconds), shared by the
    attention-map and report tests; tests that evaluate write elsewhere or copy it first."""
    from lrcn.config import load_config
    from lrcn.engine import fit

    run_dir = tmp_path_factory.mktemp("attention-shapes")
    overrides = [*TINY_SHAPES, "decoder.variant=show_attend_tell"]
    fit(load_config(REPO / "configs" / "shapes.yaml", overrides), run_dir)
    return run_dir
