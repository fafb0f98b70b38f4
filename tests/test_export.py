"""``lrcn export``: model folders (safetensors + JSON) load back as the run they came from, and
every bad folder, out dir or Hub id ends in one sentence."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO

from lrcn.cli import main
from lrcn.config import load_config
from lrcn.errors import LrcnError
from lrcn.export import export_model
from lrcn.predict import evaluate, load_model

TINY_VIDEO = [
    "data.train_size=48",
    "data.val_size=8",
    "data.test_size=8",
    "data.image_size=32",
    "data.num_frames=4",
    "train.epochs=1",
    "train.batch_size=16",
    "train.progress=false",
    "encoder.feature_dim=32",
    "encoder.temporal_hidden_dim=32",
    "decoder.embed_dim=16",
    "decoder.hidden_dim=32",
    "eval.metrics=bleu,cider",
    "eval.tokenizer=python",
]
TINY_DEMO = [  # tests/test_demo.py's: the two stages in seconds
    "data.train_size=96",
    "data.val_size=16",
    "data.test_size=16",
    "train.epochs=1",
    "train.batch_size=32",
    "train.progress=false",
    "encoder.feature_dim=32",
    "decoder.embed_dim=16",
    "decoder.hidden_dim=32",
    "eval.metrics=bleu,cider",
    "eval.tokenizer=python",
]


@pytest.fixture(scope="module")
def video_run(tmp_path_factory) -> Path:
    from lrcn.engine import fit

    run = tmp_path_factory.mktemp("video")
    fit(load_config(REPO / "configs" / "moving_shapes.yaml", TINY_VIDEO), run)
    return run


@pytest.fixture(scope="module")
def demo_caption_run(tmp_path_factory) -> Path:
    """The demo's Show and Tell stage (pretrained encoder + feature store), made small."""
    from lrcn.demo import run_demo

    root = tmp_path_factory.mktemp("demo")
    run_demo(root, TINY_DEMO, echo=lambda _: None)
    return root / "2-caption"


@pytest.fixture(scope="module")
def line_run(tmp_path_factory) -> Path:
    """A tiny activity classifier (tests/test_activity.py's data)."""
    from lrcn.engine import fit

    run = tmp_path_factory.mktemp("line")
    tiny = ["data.train_size=64", "data.val_size=16", "data.test_size=16", "data.image_size=16",
            "data.num_frames=8", "train.batch_size=16", "train.progress=false", "train.epochs=1"]  # fmt: skip
    fit(load_config(REPO / "configs" / "moving_line.yaml", tiny), run)
    return run


@pytest.fixture(scope="module")
def evaluated_run(tiny_shapes_run: Path, tmp_path_factory) -> Path:
    """A copy of the shared tiny run with its test evaluation (what `lrcn train` ends with)."""
    run = tmp_path_factory.mktemp("evaluated") / "run"
    shutil.copytree(tiny_shapes_run, run)
    evaluate(run)
    return run


@pytest.fixture(scope="module")
def shapes_folder(evaluated_run: Path, tmp_path_factory) -> Path:
    return export_model(evaluated_run, tmp_path_factory.mktemp("export") / "model")


def _captions(eval_dir: Path) -> dict:
    return json.loads((eval_dir / "test_captions.json").read_text())


@pytest.mark.parametrize("which", ["demo_caption_run", "attention_run", "video_run"])
def test_captions_from_the_folder_equal_the_runs(which: str, request, tmp_path: Path):
    """The run's own test evaluation (written at the end of training) against the folder's."""
    run = request.getfixturevalue(which)
    folder = export_model(run, tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "config.json", "model.safetensors", "vocab.json"]  # fmt: skip
    if not (run / "eval" / "test_captions.json").is_file():  # fit() alone does not evaluate
        evaluate(run, out_dir=tmp_path / "run-eval")
    run_eval = run / "eval" if (run / "eval").is_dir() else tmp_path / "run-eval"
    evaluate(folder, out_dir=tmp_path / "eval")
    ours, theirs = _captions(tmp_path / "eval"), _captions(run_eval)
    assert ours == theirs and len(ours) > 0
    # the weights are the checkpoint's tensors, bit for bit
    run_model, _, _ = load_model(run, device="cpu")
    folder_model, _, _ = load_model(folder, device="cpu")
    run_state, folder_state = run_model.state_dict(), folder_model.state_dict()
    assert run_state.keys() == folder_state.keys()
    assert all(torch.equal(run_state[k], folder_state[k]) for k in run_state)


def test_the_folder_loads_without_unpickling(shapes_folder: Path, monkeypatch):
    """safetensors + JSON only: load_model works with torch.load (pickle's door) forbidden."""

    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load called on a model folder")

    monkeypatch.setattr(torch, "load", no_pickle)
    model, cfg, payload = load_model(shapes_folder, device="cpu")
    assert cfg.task == "caption" and payload["vocab"]["itos"][:4] == [
        "<pad>", "<start>", "<end>", "<unk>"]  # fmt: skip


def test_cli_caption_from_the_folder_equals_the_run(
    evaluated_run: Path, shapes_folder: Path, tmp_path: Path, capsys
):
    from lrcn.data.synthetic.shapes import ShapesCaptions

    data = ShapesCaptions("test", 3, seed=0, image_size=64)
    images = []
    for i in range(3):
        data.item(i)[0].save(tmp_path / f"{i}.png")
        images.append(str(tmp_path / f"{i}.png"))
    outputs = []
    for checkpoint in (evaluated_run, shapes_folder):
        assert main(["caption", *images, "--checkpoint", str(checkpoint)]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and outputs[0].count("\n") == 3


def test_model_card_and_config(evaluated_run: Path, shapes_folder: Path):
    card = (shapes_folder / "README.md").read_text()
    metrics = json.loads((evaluated_run / "eval" / "test_metrics.json").read_text())
    low, high = metrics["Bleu_4_ci95"]
    assert f"| Bleu_4 | {metrics['Bleu_4']:.4f} | [{low:.4f}, {high:.4f}] |" in card
    assert "library_name: lrcn" in card and "## Recipe" in card and "## Data" in card
    config = json.loads((shapes_folder / "config.json").read_text())
    assert config["task"] == "caption" and config["wiring"] == "show_tell"
    itos = json.loads((shapes_folder / "vocab.json").read_text())["itos"]
    assert config["vocab_file"] == "vocab.json" and config["sizes"]["vocab_size"] == len(itos)
    assert config["preprocessing"]["image_size"] == 64


# ---- bad input: one sentence each ----------------------------------------------------------


def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.count("\n") == 0
    return err


def test_a_run_without_a_checkpoint(tiny_shapes_run: Path, tmp_path: Path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_shapes_run, run, ignore=shutil.ignore_patterns("checkpoints"))
    err = _error(["export", str(run), "--out", str(tmp_path / "m")], capsys)
    assert "no checkpoints/best.pt" in err and "no model to export" in err
    assert not (tmp_path / "m").exists()


def test_an_out_dir_holding_a_run_or_other_files(
    tiny_shapes_run: Path, attention_run: Path, tmp_path: Path, capsys
):
    before = sorted(p.name for p in attention_run.iterdir())
    err = _error(["export", str(tiny_shapes_run), "--out", str(attention_run)], capsys)
    assert "holds other files" in err and "checkpoints" in err
    assert sorted(p.name for p in attention_run.iterdir()) == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    err = _error(["export", str(tiny_shapes_run), "--out", str(other)], capsys)
    assert "notes.txt" in err and (other / "notes.txt").read_text() == "mine"


def test_a_model_folder_is_replaced_in_place(tiny_shapes_run: Path, tmp_path: Path):
    folder = export_model(tiny_shapes_run, tmp_path / "m")
    (folder / "onnx").mkdir()
    (folder / "onnx" / "onnx.json").write_text("{}")  # graphs of other weights
    export_model(tiny_shapes_run, folder)
    assert not (folder / "onnx" / "onnx.json").exists() and (folder / "config.json").is_file()


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda f: (f / "model.safetensors").unlink(), "model.safetensors: missing"),
        (
            lambda f: (f / "model.safetensors").write_bytes(
                (f / "model.safetensors").read_bytes()[:1000]
            ),
            "not a readable safetensors",
        ),  # fmt: skip
        (lambda f: (f / "config.json").write_text("{not json"), "config.json: not readable JSON"),
        (lambda f: (f / "config.json").write_text('{"format": "x"}'), "not an lrcn model folder"),
        (lambda f: (f / "vocab.json").unlink(), "vocab.json: missing"),
        (lambda f: (f / "vocab.json").write_text('{"words": []}'), "not an lrcn vocabulary"),
    ],
)
def test_a_damaged_model_folder(damage, expected, shapes_folder, tmp_path: Path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(shapes_folder, folder)
    damage(folder)
    err = _error(["evaluate", "--checkpoint", str(folder)], capsys)
    assert expected in err and str(folder) in err


def test_a_folder_of_another_task(shapes_folder: Path, line_run: Path, tmp_path: Path, capsys):
    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (64, 64)).save(image)
    err = _error(["classify", str(image), "--checkpoint", str(shapes_folder)], capsys)
    assert "task `caption`" in err
    line_folder = export_model(line_run, tmp_path / "line-model")
    assert not (line_folder / "vocab.json").exists()
    err = _error(["caption", str(image), "--checkpoint", str(line_folder)], capsys)
    assert "activity" in err


# ---- Hub ids --------------------------------------------------------------------------------


def test_a_hub_id_without_huggingface_hub(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails
    err = _error(["evaluate", "--checkpoint", "someone/lrcn-shapes"], capsys)
    assert "needs the huggingface_hub package" in err


@pytest.mark.parametrize(
    "env",
    [
        {"HF_HUB_OFFLINE": "1"},
        # a port nothing listens on: refused at once, and the short timeouts bound a slow network
        {
            "HF_ENDPOINT": "http://127.0.0.1:9",
            "HF_HUB_ETAG_TIMEOUT": "2",
            "HF_HUB_DOWNLOAD_TIMEOUT": "2",
        },  # fmt: skip
    ],
)
def test_a_hub_id_offline_is_one_sentence(env: dict, tmp_path: Path):
    pytest.importorskip("huggingface_hub", reason="huggingface_hub (the hub extra) not installed")
    done = subprocess.run(
        [sys.executable, "-m", "lrcn.cli", "evaluate", "--checkpoint", "someone/lrcn-shapes"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "HF_HOME": str(tmp_path / "hf"), **env},
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0
    assert "the Hub is not reachable" in done.stderr, done.stderr


def test_a_missing_path_is_not_taken_for_a_hub_id(tmp_path: Path, capsys):
    (tmp_path / "runs").mkdir()  # its first folder exists here: a typo, not a Hub id
    os.chdir(tmp_path)
    try:
        err = _error(["evaluate", "--checkpoint", "runs/nothing-here"], capsys)
    finally:
        os.chdir(REPO)
    assert "checkpoint not found" in err


def test_load_model_refuses_a_folder_of_another_task(shapes_folder: Path):
    with pytest.raises(LrcnError, match="for task `caption`, not `activity`"):
        load_model(shapes_folder, task="activity")


def test_a_hub_id_loads_the_folder_the_hub_client_gives(shapes_folder: Path, monkeypatch):
    """With huggingface_hub present, `user/name` is the folder snapshot_download returns (the
    local cache first): the same weights as the local folder. The network itself is not used."""
    hub = pytest.importorskip("huggingface_hub", reason="huggingface_hub (the hub extra) not installed")  # fmt: skip
    asked = []

    def snapshot_download(repo_id, allow_patterns=None, local_files_only=False):
        asked.append((repo_id, local_files_only, tuple(allow_patterns)))
        return str(shapes_folder)

    monkeypatch.setattr(hub, "snapshot_download", snapshot_download)
    model, cfg, _ = load_model("someone/lrcn-shapes", device="cpu")
    assert asked[0][:2] == ("someone/lrcn-shapes", True)  # the cache is asked first
    assert "model.safetensors" in asked[0][2] and cfg.task == "caption"
    local, _, _ = load_model(shapes_folder, device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                   local.state_dict().values()))  # fmt: skip


def test_an_older_key_layout_is_written_in_todays_keys(tiny_shapes_run: Path, tmp_path: Path):
    """A checkpoint from before lrcn 0.2 (biases into BatchNorms, folded by the loader): the
    folder holds the loaded model's state_dict, so it needs no remapping and equals that model."""
    from safetensors.torch import load_file

    from lrcn.checkpoint import save_checkpoint

    run = tmp_path / "old"
    shutil.copytree(tiny_shapes_run, run)
    for name in ("best.pt", "last.pt"):
        path = run / "checkpoints" / name
        payload = torch.load(path, weights_only=True)
        state = payload["model"]
        # a nonzero bias before the first BatchNorm: the loader folds it into the running mean
        state["encoder.trunk.features.0.bias"] = torch.full_like(
            state["encoder.trunk.features.1.running_mean"], 0.5
        )
        payload.pop("format")
        save_checkpoint(path, payload)
    folder = export_model(run, tmp_path / "model")
    saved = load_file(folder / "model.safetensors")
    assert "encoder.trunk.features.0.bias" not in saved
    loaded, _, _ = load_model(run, device="cpu")
    assert saved.keys() == loaded.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in loaded.state_dict().items())
