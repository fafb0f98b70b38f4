"""``lrcn export --onnx``: onnxruntime's greedy captions are lrcn's, for Show and Tell and attention.

Exactness argument (no tolerance typed by hand): both runtimes are fed lrcn's own greedy tokens
(teacher forcing) and the largest difference of their log-probabilities along those paths is
measured in the test: the two runtimes' float32 rounding, ``noise``. An item whose every step's
top-two margin (lrcn's) exceeds ``2 * noise`` has the same argmax in both at every step, so by
induction onnxruntime's greedy caption is lrcn's; such items must be equal. Near-ties (margin
within rounding) may go either way on any CPU and are only counted; most items must be clear.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO

from lrcn.cli import main
from lrcn.errors import LrcnError
from lrcn.export import export_model
from lrcn.predict import load_model
from lrcn.text.vocab import Vocabulary

pytest.importorskip("onnx", reason="onnx (the onnx extra) not installed: no ONNX export to test")
pytest.importorskip("onnxruntime", reason="onnxruntime (the onnx extra) not installed")

from lrcn.onnx_runtime import OnnxCaptioner  # noqa: E402


def _test_pixels(cfg, count: int) -> torch.Tensor:
    from lrcn import build

    source = build.build_source_raw(cfg, "test")
    return torch.stack([source.example(i).pixels for i in range(min(count, len(source)))])


def _margins_and_noise(model, ort: OnnxCaptioner, pixels: torch.Tensor, paths: list[list[int]]):
    """Per item the smallest top-two margin of lrcn's log-probs along its greedy path (through
    ``<end>``), and the largest |lrcn - onnxruntime| log-prob difference on those paths."""
    end = Vocabulary.end_id
    steps = max(len(p) for p in paths) + 1
    fed = torch.full((len(paths), steps), end, dtype=torch.long)
    fed[:, 0] = Vocabulary.start_id  # then the path's words
    for i, path in enumerate(paths):
        fed[i, 1 : len(path) + 1] = torch.tensor(path, dtype=torch.long)
    with torch.no_grad():
        state = model.decoder.init_state(model.encode({_key(pixels): pixels}))
    ort_state = ort.initial_state(pixels.numpy())
    margins = np.full(len(paths), np.inf)
    noise = 0.0
    for t in range(steps):
        with torch.no_grad():
            ours, state = model.decoder.step(fed[:, t], state)
        theirs, ort_state = ort.step(fed[:, t].numpy(), ort_state)
        ours = ours.numpy()
        live = np.array([t <= len(p) for p in paths])  # up to the step choosing <end>
        allowed = ours[:, 2:]  # <pad> (0) and <start> (1) are never chosen
        top2 = np.sort(allowed, axis=1)[:, -2:]
        margins = np.where(live, np.minimum(margins, top2[:, 1] - top2[:, 0]), margins)
        noise = max(noise, float(np.abs(ours - theirs)[live].max()))
    return margins, noise


def _key(pixels: torch.Tensor) -> str:
    return "frames" if pixels.dim() == 5 else "images"


@pytest.mark.parametrize("which", ["tiny_shapes_run", "attention_run"])
def test_onnxruntime_greedy_captions_equal_lrcns(which: str, request, tmp_path: Path):
    from lrcn.decoding import greedy

    run = request.getfixturevalue(which)
    folder = export_model(run, tmp_path / "model", onnx=True)
    model, cfg, _ = load_model(folder, device="cpu")
    ort = OnnxCaptioner(folder, threads=1)
    pixels = _test_pixels(cfg, 32)
    with torch.no_grad():
        ours = greedy(model.decoder, model.encode({_key(pixels): pixels}), 1, 2, max_length=24)
    theirs = ort.greedy(pixels.numpy(), 24)
    margins, noise = _margins_and_noise(model, ort, pixels, ours)
    clear = margins > 2 * noise
    assert clear.sum() >= len(ours) // 2, (margins, noise)  # the check is not vacuous
    assert [ours[i] for i in np.flatnonzero(clear)] == [theirs[i] for i in np.flatnonzero(clear)]
    assert ort.meta["wiring"] == cfg.decoder.variant


def test_beam_one_is_greedy_and_beams_decode(attention_run: Path, tmp_path: Path):
    """Beam bookkeeping outside torch: beam 1 is greedy exactly (the same code path's result),
    and beam 3 yields captions of valid word ids that never hold <pad> or <start>."""
    folder = export_model(attention_run, tmp_path / "model", onnx=True)
    _, cfg, _ = load_model(folder, device="cpu")
    ort = OnnxCaptioner(folder)
    pixels = _test_pixels(cfg, 8).numpy()
    assert ort.beam_search(pixels, 24, 1) == ort.greedy(pixels, 24)
    beams = ort.beam_search(pixels, 24, 3)
    assert len(beams) == 8 and all(0 < len(c) <= 24 for c in beams)
    assert all(i >= 3 and i < len(ort.itos) for c in beams for i in c)


@pytest.mark.parametrize(
    ("recipe", "variant"),
    [
        ("shapes", "show_tell"),
        ("shapes", "lrcn1u"),
        ("shapes", "lrcn2f"),
        ("shapes", "show_attend_tell"),
        ("moving_shapes", "temporal_attention"),
        ("moving_shapes", "lrcn2f"),
        ("shapes", "transformer"),
        ("shapes", "transformer_vector"),
        ("moving_shapes", "temporal_transformer"),
    ],
)
def test_every_built_in_wiring_exports(recipe: str, variant: str, tmp_path: Path):
    """Untrained tiny models: each wiring's graphs load in onnxruntime and step with the state
    shapes the exporter recorded."""
    from lrcn import build
    from lrcn.config import load_config
    from lrcn.onnx_export import export_onnx

    overrides = ["encoder.feature_dim=16", "decoder.embed_dim=8", "decoder.hidden_dim=16",
                 "data.image_size=32", "data.num_frames=2", f"decoder.variant={variant}"]  # fmt: skip
    if recipe == "moving_shapes" and variant == "temporal_attention":
        overrides.append("encoder.temporal=lstm")
    cfg = load_config(REPO / "configs" / f"{recipe}.yaml", overrides)
    build.check_config(cfg, "test")
    vocab = Vocabulary(["a", "red", "circle"])
    model = build.build_model(cfg, vocab_size=len(vocab)).eval()
    out = export_onnx(model, cfg, {"vocab": vocab.to_dict()}, tmp_path / "onnx")
    (tmp_path / "vocab.json").write_text(json.dumps(vocab.to_dict()))
    ort = OnnxCaptioner(out)
    frames = (2,) if recipe == "moving_shapes" else ()
    # the caller's model is left as it was (eval mode, so BatchNorm uses its running statistics)
    # and the encoder graph computes what it computes, on pixels that are not the tracer's zeros
    assert not [name for name, module in model.named_modules() if module.training]
    random = np.random.default_rng(0).random((3, *frames, 3, 32, 32), dtype=np.float32)
    with torch.no_grad():
        want = model.decoder.init_state(model.encode_features(model.cnn_features(torch.from_numpy(random))))  # fmt: skip
    got = ort.initial_state(random)
    for name, value in want.items():
        # the same float32 ops in another summation order: rounding of about 1e-7 relative on
        # values of order 1; 1e-4 is loose for that and far below a wrong computation's 1e-1
        assert np.allclose(got[name], value.numpy(), atol=1e-4), name
    pixels = np.zeros((3, *frames, 3, 32, 32), dtype=np.float32)
    state = ort.initial_state(pixels)
    log_probs, state = ort.step(np.ones(3, dtype=np.int64), state)
    assert log_probs.shape == (3, len(vocab))
    # a float32 softmax over 7 words sums to 1 within 7 roundings of 6e-8 each: 1e-5 is loose
    assert np.allclose(np.exp(log_probs).sum(axis=1), 1.0, atol=1e-5)
    assert len(ort.greedy(pixels, 4)) == 3


def test_an_activity_model_is_refused_in_one_sentence(tmp_path: Path, capsys):
    from lrcn.config import load_config
    from lrcn.engine import fit

    run = tmp_path / "line"
    tiny = ["data.train_size=16", "data.val_size=8", "data.test_size=8", "data.image_size=16",
            "data.num_frames=4", "train.batch_size=8", "train.progress=false", "train.epochs=1"]  # fmt: skip
    fit(load_config(REPO / "configs" / "moving_line.yaml", tiny), run)
    assert main(["export", str(run), "--out", str(tmp_path / "m"), "--onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert "task activity has no caption decoder" in err and err.count("\n") == 0
    assert not (tmp_path / "m" / "config.json").exists()  # not a finished folder


def test_without_onnx_installed_one_sentence(tiny_shapes_run: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(LrcnError, match=r"needs the onnx package: `pip install 'lrcn\[onnx\]'`"):
        export_model(tiny_shapes_run, tmp_path / "m", onnx=True)


def test_the_script_captions_image_files(tiny_shapes_run: Path, tmp_path: Path):
    from lrcn.data.synthetic.shapes import ShapesCaptions

    folder = export_model(tiny_shapes_run, tmp_path / "model", onnx=True)
    data = ShapesCaptions("test", 2, seed=0, image_size=64)
    images = []
    for i in range(2):
        data.item(i)[0].save(tmp_path / f"{i}.png")
        images.append(str(tmp_path / f"{i}.png"))
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "onnx_caption.py"), *images, "--model", str(folder)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == images
    assert all(len(line.split("\t")[1]) > 0 for line in lines)
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "onnx_caption.py"), images[0], "--model",
         str(tmp_path)], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr and "onnx.json" in done.stderr


def test_the_transformers_step_graph_grows_its_cache_as_torch_does(tmp_path: Path):
    """The key/value cache's length axis is dynamic: from the empty state the encoder graph
    gives, the step graph's log-probabilities equal torch's word after word."""
    from lrcn import build
    from lrcn.config import load_config
    from lrcn.onnx_export import export_onnx

    overrides = ["encoder.feature_dim=16", "decoder.embed_dim=8", "decoder.hidden_dim=16",
                 "data.image_size=32", "decoder.variant=transformer", "decoder.num_layers=2"]  # fmt: skip
    cfg = load_config(REPO / "configs" / "shapes.yaml", overrides)
    vocab = Vocabulary(["a", "red", "circle"])
    torch.manual_seed(0)
    model = build.build_model(cfg, vocab_size=len(vocab)).eval()
    out = export_onnx(model, cfg, {"vocab": vocab.to_dict()}, tmp_path / "onnx")
    (tmp_path / "vocab.json").write_text(json.dumps(vocab.to_dict()))
    ort = OnnxCaptioner(out)
    assert {e["name"]: e["batch_axis"] for e in ort.meta["state"]}["keys"] == 0
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        state = model.decoder.init_state(model.cnn_features(pixels))  # 2 x 2 cells at 32 px
        ours = {k: v.numpy() for k, v in state.items()}
        tokens = torch.full((3,), Vocabulary.start_id)
        for t in range(5):
            log_probs, ours = ort.step(tokens.numpy(), ours)
            expected, state = model.decoder.step(tokens, state)
            assert ours["keys"].shape == (3, 2, 4, t + 1, 4)  # one position longer each word
            # the same float32 graph in two runtimes: 2.4e-7 measured, a few ulps of values ~2
            assert np.abs(log_probs - expected.numpy()).max() < 1e-5
            tokens = expected.argmax(-1)
