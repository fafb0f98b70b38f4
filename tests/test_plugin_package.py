"""An installed plug-in package, from the shell: tests/plugin_package (a decoder wiring and a metric,
declared in the entry-point group ``lrcn.plugins``) installed into a fresh virtual environment is
used by ``lrcn train`` and then by ``lrcn evaluate`` on its checkpoint; uninstalled, ``evaluate``
says which module is missing, exit status 2, no traceback."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml
from conftest import REPO

PACKAGE = REPO / "tests" / "plugin_package"
TINY = [
    "data.train_size=16", "data.val_size=8", "data.test_size=8", "data.image_size=32",
    "encoder.feature_dim=16", "decoder.embed_dim=8", "decoder.hidden_dim=16", "train.epochs=1",
    "train.batch_size=8", "train.progress=false", "eval.tokenizer=python", "eval.bootstrap=0",
    "eval.reference_points=false",
]  # fmt: skip


def _run(*argv: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)  # only what the environment itself holds
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


def _fresh_venv(root: Path) -> Path:
    """A venv made from this interpreter with --system-site-packages; this environment's
    site-packages (torch, lrcn installed editable) are added after its own by a .pth file, so
    nothing is reinstalled and a package installed into it shadows nothing here."""
    made = _run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", root)
    assert made.returncode == 0, made.stderr
    python = root / "bin" / "python"
    purelib = _run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
    parents = [p for p in site.getsitepackages() if p.startswith(sys.prefix)]
    parents = parents or [sysconfig.get_path("purelib")]
    lines = [f"import site; site.addsitedir({p!r})" for p in parents]
    Path(purelib.stdout.strip(), "parent_environment.pth").write_text("\n".join(lines) + "\n")
    return python


@pytest.mark.slow
def test_an_installed_plugin_package_is_used_by_train_then_evaluate(tmp_path: Path) -> None:
    python = _fresh_venv(tmp_path / "venv")
    source = (
        tmp_path / "plugin_package"
    )  # pip builds in the source folder: a copy keeps tests/ clean
    shutil.copytree(PACKAGE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    pip = [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    installed = _run(*pip, source)
    assert installed.returncode == 0, installed.stderr

    lrcn = [python, "-m", "lrcn.cli"]  # what the `lrcn` console script runs (lrcn.cli:main)
    run = tmp_path / "run"
    plugin = ["decoder.variant=demo_plugin_gru", "eval.metrics=[bleu,demo_first_word]"]
    shapes = REPO / "configs" / "shapes.yaml"
    trained = _run(*lrcn, "train", "-c", shapes, "--run-dir", run, "--no-test", *plugin, *TINY)
    assert trained.returncode == 0, trained.stderr
    assert yaml.safe_load((run / "config.yaml").read_text())["plugins"] == ["lrcn_demo_plugin"]

    evaluated = _run(*lrcn, "evaluate", "--checkpoint", run)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "DemoFirstWord" in evaluated.stdout and "Bleu_4" in evaluated.stdout

    removed = _run(python, "-m", "pip", "uninstall", "-q", "-y", "lrcn-demo-plugin")
    assert removed.returncode == 0, removed.stderr
    refused = _run(*lrcn, "evaluate", "--checkpoint", run)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert "plugin module 'lrcn_demo_plugin' is not installed; install the package" in (
        refused.stderr
    )
