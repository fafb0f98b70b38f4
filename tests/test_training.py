"""End-to-end behaviour of the captioning pipeline on tiny shapes runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from conftest import REPO, TINY_SHAPES

from lrcn.config import load_config
from lrcn.data.synthetic.shapes import ShapeObject, render_scene


def test_loss_falls_on_a_tiny_batch():
    from lrcn.build import build_model, build_source
    from lrcn.data.datasets import CaptionTrainDataset, build_vocabulary, make_caption_collate

    torch.manual_seed(0)
    cfg = load_config(REPO / "configs" / "shapes.yaml", TINY_SHAPES)
    source = build_source(cfg, "train")
    vocab = build_vocabulary(source, 1, 24)
    data = CaptionTrainDataset(source, vocab, 24)
    batch = make_caption_collate(False)([data[i] for i in range(8)])
    assert batch["images"].shape == (8, 3, 64, 64) and batch["tokens"].shape[0] == 40
    model = build_model(cfg, vocab_size=len(vocab))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = model.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # A trajectory: 30 Adam steps land at 0.55-0.61 of the first loss over seeds 0-2 and the
    # default, AVX2 and AVX-512 kernels (0.6 failed seed 2), so 0.8 is a wide margin that a model
    # which does not learn (about 1.0) still fails.
    assert losses[-1] < 0.8 * losses[0]


def test_run_directory_contract(tiny_shapes_run: Path):
    run = tiny_shapes_run
    for name in ("config.yaml", "vocab.json", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


def test_evaluate_writes_metrics_and_coco_results(tiny_shapes_run: Path, tmp_path: Path):
    from lrcn.predict import evaluate

    metrics = evaluate(tiny_shapes_run, split="test", out_dir=tmp_path)
    saved = json.loads((tmp_path / "test_metrics.json").read_text())
    for key in (
        "Bleu_1",
        "Bleu_2",
        "Bleu_3",
        "Bleu_4",
        "CIDEr",
        "reference_loo_Bleu_4",
        "baseline_Bleu_4",
        "scene_accuracy",
    ):
        assert isinstance(saved[key], float), key
    assert saved["items"] == 32 and saved == json.loads(json.dumps(metrics))
    results = json.loads((tmp_path / "test_captions.json").read_text())
    assert len(results) == 32 and set(results[0]) == {"image_id", "caption"}


def test_checkpoint_round_trip_reproduces_captions(tiny_shapes_run: Path):
    from lrcn.predict import load_model

    model_a, cfg, _ = load_model(tiny_shapes_run / "checkpoints" / "last.pt")
    model_b, _, _ = load_model(tiny_shapes_run / "checkpoints" / "last.pt")
    images = torch.randn(4, 3, 64, 64)
    from lrcn.decoding import greedy

    a = greedy(model_a.decoder, model_a.encode({"images": images}), 1, 2, max_length=20)
    b = greedy(model_b.decoder, model_b.encode({"images": images}), 1, 2, max_length=20)
    assert a == b and any(a)


def test_resume_continues_exactly(tmp_path: Path):
    """Two epochs in one go == one epoch, stop, resume for the second (bitwise on CPU)."""
    from lrcn.engine import fit

    overrides = (
        [o for o in TINY_SHAPES if not o.startswith("train.epochs")]
        + [
            "data.train_size=96",
            "decoder.dropout=0.2",
            "train.scheduler=none",  # a schedule's length depends on train.epochs, which the resume extends
        ]
    )
    straight = fit(
        load_config(REPO / "configs" / "shapes.yaml", overrides + ["train.epochs=2"]),
        tmp_path / "a",
    )
    cfg = load_config(REPO / "configs" / "shapes.yaml", overrides + ["train.epochs=2"])
    cfg.train.epochs = 1
    fit(cfg, tmp_path / "b")
    resumed = fit(None, tmp_path / "b", resume=True, overrides=["train.epochs=2"])
    assert resumed["steps"] == straight["steps"]
    a = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def _lrcn(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lrcn.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def test_cli_caption_names_colours_and_shapes_and_rejects_bad_files(
    tiny_shapes_run: Path, tmp_path: Path
):
    image = render_scene([ShapeObject("circle", "red", "large", 32, 32, 11)], 64)
    image.save(tmp_path / "new.png")
    done = _lrcn("caption", str(tmp_path / "new.png"), "--checkpoint", str(tiny_shapes_run))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(str(tmp_path / "new.png") + "\t")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (tmp_path / "empty").mkdir()
    for bad in (tmp_path / "missing.png", tmp_path / "corrupt.png", tmp_path / "empty"):
        done = _lrcn("caption", str(bad), "--checkpoint", str(tiny_shapes_run))
        assert done.returncode == 2
        assert "Traceback" not in done.stderr and str(bad) in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr

    # a folder stands for its images; one bad file costs only its own caption, in input order
    render_scene([ShapeObject("square", "blue", "large", 32, 32, 11)], 64).save(
        tmp_path / "img10.png"
    )
    render_scene([ShapeObject("square", "green", "large", 32, 32, 11)], 64).save(
        tmp_path / "img2.png"
    )
    done = _lrcn(
        "caption", str(tmp_path), str(tmp_path / "missing.png"), "--checkpoint",
        str(tiny_shapes_run), "--set", "eval.batch_size=2",
    )  # fmt: skip
    assert done.returncode == 2
    assert [line.split("\t")[0] for line in done.stdout.splitlines()] == [
        str(tmp_path / name) for name in ("img2.png", "img10.png", "new.png")
    ]
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 2 and "corrupt.png" in errors[0] and "missing.png" in errors[1]


def test_cli_unknown_key_and_missing_checkpoint(tmp_path: Path):
    done = _lrcn("train", "-c", "configs/shapes.yaml", "no.such.key=1")
    assert done.returncode == 2 and "no.such.key" in done.stderr and "train.epochs" in done.stderr
    assert "Traceback" not in done.stderr
    done = _lrcn("evaluate", "--checkpoint", str(tmp_path / "nope.pt"))
    assert done.returncode == 2 and "nope.pt" in done.stderr and "Traceback" not in done.stderr
