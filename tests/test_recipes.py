"""Recipes by name: `-c shapes` anywhere, `lrcn recipes`, and the built wheel carrying them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import REPO

from lrcn.cli import main
from lrcn.config import load_config
from lrcn.errors import LrcnError
from lrcn.recipes import available_recipes, describe_recipe, resolve_config


def test_every_config_is_a_recipe_with_a_one_line_description() -> None:
    recipes = available_recipes()
    assert set(recipes) == {path.stem for path in (REPO / "configs").glob("*.yaml")}
    for name, path in recipes.items():
        assert path.resolve() == (REPO / "configs" / f"{name}.yaml").resolve()
        description = describe_recipe(path)
        assert 10 < len(description) <= 110 and "\n" not in description, (name, description)
    assert describe_recipe(recipes["shapes_lrcn1u"]).startswith("LRCN1u (Donahue et al. 2015)")


def test_lrcn_recipes_lists_each_with_its_description(capsys: pytest.CaptureFixture) -> None:
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name, path in available_recipes().items():
        assert any(line.split()[0] == name and describe_recipe(path) in line for line in lines)


def test_a_recipe_name_loads_the_same_config_as_its_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no configs/ folder here: the name must not depend on the cwd
    by_name = load_config("shapes", ["train.epochs=1"])
    by_path = load_config(REPO / "configs" / "shapes.yaml", ["train.epochs=1"])
    assert by_name == by_path
    # a file in the working folder still wins, as a path always did
    (tmp_path / "mine.yaml").write_text("task: caption\ntrain:\n  epochs: 3\n")
    assert load_config("mine.yaml").train.epochs == 3
    assert resolve_config("configs/shapes.yaml") == Path("configs/shapes.yaml")  # paths as given


def test_an_unknown_recipe_is_one_sentence_listing_the_recipes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        LrcnError, match="no such config file or recipe.*shapes, shapes_attention, shapes_lrcn1u"
    ):
        load_config("shapez")
    assert main(["train", "-c", "shapez"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "moving_line" in err and "lrcn recipes" in err
    assert main(["train", "-c", "nowhere/shapes.yaml"]) == 2  # a path: the old sentence
    assert "config file not found" in capsys.readouterr().err


def _fresh_venv(tmp_path: Path) -> Path:
    """A venv outside the repository that sees the test venv's third-party packages (torch, ...)
    through a .pth line, but neither the repository nor the test venv's own lrcn."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    shared = Path(sysconfig.get_paths()["purelib"])
    (site / "shared-packages.pth").write_text(f"{shared}\n")  # .pth files there are not run
    return venv


@pytest.mark.skipif(shutil.which("git") is None, reason="copies the tracked files with git")
def test_the_built_wheel_trains_from_a_recipe_name_outside_the_repository(tmp_path: Path) -> None:
    source = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
    for name in files.stdout.decode().split("\0"):
        if name and (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    wheels = tmp_path / "wheels"
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(source)], check=True)  # fmt: skip
    venv = _fresh_venv(tmp_path)
    python = venv / "bin" / "python"
    wheel = next(wheels.glob("lrcn-*.whl"))
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    # Away from the repository (whose lrcn.egg-info an editable install leaves in its root, where
    # pip would take it for lrcn already installed) and forced, for the same reason.
    subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", "-q", "install",
                    "--no-deps", "--no-index", "--force-reinstall", str(wheel)],
                   check=True, cwd=work, env=env)  # fmt: skip

    def run(*args: str) -> str:
        done = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    imported = run(str(python), "-c", "import lrcn, lrcn.recipes as r; print(lrcn.__file__); "
                   "print(r.recipes_dir())").split()  # fmt: skip
    assert imported[0].startswith(str(venv)) and imported[1].startswith(str(venv))
    assert "shapes " in run(str(venv / "bin" / "lrcn"), "recipes")
    tiny = ["data.train_size=64", "data.val_size=16", "data.test_size=16", "train.epochs=1",
            "train.batch_size=32", "train.progress=false", "encoder.feature_dim=32",
            "decoder.embed_dim=16", "decoder.hidden_dim=32", "eval.metrics=bleu",
            "eval.tokenizer=python"]  # fmt: skip
    run(str(venv / "bin" / "lrcn"), "train", "-c", "shapes", "--run-dir", "run", *tiny)
    run_dir = work / "run"
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert (run_dir / "eval" / "test_metrics.json").is_file()
    assert "small_cnn" in (run_dir / "config.yaml").read_text()
