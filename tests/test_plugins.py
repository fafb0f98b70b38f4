"""Plug-ins from the command line: ``--plugin MODULE`` (a .py file or a module on PYTHONPATH) and a
config's ``plugins``; the run records what it needs, and a later command on its checkpoint imports
it again, or says which module is missing (tests/test_plugin_package.py: an installed package)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from lrcn.cli import main
from lrcn.config import load_config
from lrcn.errors import LrcnError
from lrcn.models import Wiring, register_wiring
from lrcn.plugins import import_plugin, resolve_plugins
from lrcn.registry import importing_plugin

PLUGIN = '''
"""A decoder wiring from a file outside lrcn."""
from torch import nn

from lrcn.models import Wiring, register_wiring


@register_wiring("{name}")
class LocalGRU(Wiring):
    def __init__(self, embed_dim, hidden_dim, num_layers, dropout):
        super().__init__(embed_dim, hidden_dim, num_layers, dropout)
        self.gru = nn.GRU(embed_dim, hidden_dim, num_layers, batch_first=True)

    def init_state(self, visual):
        _, h = self.gru(visual.unsqueeze(1))
        return {{"h": h}}

    def step(self, word, state, dropout=lambda x: x):
        out, h = self.gru(word, state["h"])
        return out[:, 0], {{"h": h}}
'''
# a short captioning run on 16 shapes images (seconds on one CPU thread)
TINY = [
    "data.train_size=16", "data.val_size=8", "data.test_size=8", "data.image_size=32",
    "encoder.feature_dim=16", "decoder.embed_dim=8", "decoder.hidden_dim=16", "train.epochs=1",
    "train.batch_size=8", "train.progress=false", "eval.metrics=[bleu]", "eval.tokenizer=python",
    "eval.bootstrap=0", "eval.reference_points=false",
]  # fmt: skip


def _lrcn(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``lrcn ARGS`` in a fresh process (the console script is `lrcn.cli.main`)."""
    environ = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "lrcn.cli", *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=REPO,
        timeout=300,
    )


def _write_plugin(folder: Path, module: str, wiring: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{module}.py"
    path.write_text(PLUGIN.format(name=wiring), encoding="utf-8")
    return path


@pytest.mark.slow
def test_a_plugin_file_trains_and_its_checkpoint_evaluates_in_a_new_process(tmp_path: Path):
    plugin = _write_plugin(tmp_path / "src", "local_gru_plugin", "local_plugin_gru")
    run = tmp_path / "run"
    shapes = str(REPO / "configs" / "shapes.yaml")
    argv = ["train", "-c", shapes, "--run-dir", str(run), "--no-test", "--plugin", str(plugin)]
    assert main([*argv, "decoder.variant=local_plugin_gru", *TINY]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["plugins"] == [str(plugin.resolve())]  # recorded: the file its wiring came from

    done = _lrcn("evaluate", "--checkpoint", str(run))  # no --plugin: the checkpoint names it
    assert done.returncode == 0, done.stderr
    assert "Bleu_4" in done.stdout

    moved = _write_plugin(tmp_path / "elsewhere", "local_gru_plugin", "local_plugin_gru")
    plugin.unlink()
    refused = _lrcn("evaluate", "--checkpoint", str(run))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.count("\n") == 1 and f"plugin file {plugin.resolve()} does not" in (
        refused.stderr
    )
    assert "--plugin" in refused.stderr  # the fix
    again = _lrcn("evaluate", "--checkpoint", str(run), "--plugin", str(moved))
    assert again.returncode == 0, again.stderr
    on_path = _lrcn(
        "evaluate",
        "--checkpoint",
        str(run),
        "--plugin",
        "local_gru_plugin",
        env={"PYTHONPATH": str(moved.parent)},
    )
    assert on_path.returncode == 0, on_path.stderr


def test_a_missing_plugin_module_is_one_sentence(capsys: pytest.CaptureFixture) -> None:
    argv = ["score", "--annotations", "a.json", "--results", "b.json"]
    assert main([*argv, "--plugin", "no_such_plugin_module"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lrcn score: error: --plugin: plugin module 'no_such_plugin_module' is")
    assert "not installed; install the package that provides it, or pass --plugin" in err
    assert err.count("\n") == 1


def test_a_plugin_that_fails_to_import_is_one_sentence(tmp_path: Path) -> None:
    broken = tmp_path / "broken_plugin_module.py"
    broken.write_text("import no_such_dependency_of_the_plugin\n", encoding="utf-8")
    with pytest.raises(LrcnError, match="plugin '.*broken_plugin_module.py' failed to import "):
        import_plugin(str(broken))
    assert "broken_plugin_module" not in sys.modules  # a later fixed copy can be imported


def test_a_config_names_its_plugins_and_records_those_its_names_come_from(tmp_path: Path):
    listed = _write_plugin(tmp_path, "listed_plugin", "listed_plugin_gru")
    config = tmp_path / "config.yaml"
    config.write_text(f"plugins: [{listed}]\ndecoder:\n  variant: listed_plugin_gru\n")
    assert load_config(config).plugins == [str(listed)]  # imported before the check

    with importing_plugin("an_installed_plugin"):  # as `load_entry_points` imports one
        register_wiring("installed_plugin_gru")(type("InstalledGRU", (Wiring,), {}))
        register_wiring("unused_plugin_gru")(type("UnusedGRU", (Wiring,), {}))

    used = {"decoder": {"variant": "installed_plugin_gru"}, "eval": {"metrics": ["bleu"]}}
    assert resolve_plugins([], used, "test") == ["an_installed_plugin"]
    unused = {"decoder": {"variant": "show_tell"}}
    assert resolve_plugins([str(listed)], unused, "test") == [str(listed)]
    with pytest.raises(LrcnError, match=r"^x.yaml: plugin module 'absent_plugin' is not installed"):
        resolve_plugins(["absent_plugin"], {}, "x.yaml")
