"""Attention maps as output (issue 18): `lrcn.decoding.attention_weights`, `attention_strip`,
`lrcn caption --attention`, the evaluation's ``<split>_attention.npz`` and TensorBoard's strips.

The wirings are the real ``show_attend_tell`` / ``temporal_attention``, untrained (tiny) or
trained two tiny epochs on shapes; only the state contract (``alpha`` (B, N) after each step)
is relied on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from PIL import Image

from lrcn import decoding
from lrcn.build import build_captioner
from lrcn.config import load_config
from lrcn.errors import LrcnError
from lrcn.visualize import attention_strip, log_validation_grid

V = 23
START, END = 1, 2
TINY = [
    "data.image_size=32",
    "data.num_frames=5",
    "encoder.feature_dim=16",
    "decoder.embed_dim=8",
    "decoder.hidden_dim=12",
]
INPUTS = {
    "image": ["task=caption", "data.dataset=shapes", "decoder.variant=show_attend_tell"],
    "video": [
        "task=video_caption",
        "data.dataset=moving_shapes",
        "decoder.variant=temporal_attention",
    ],
}


def _captioner(inputs: str, *extra: str):
    torch.manual_seed(0)
    return build_captioner(load_config(None, [*TINY, *INPUTS[inputs], *extra]), V).eval()


def _ending_captioner(inputs: str, features_seed: int = 0):
    """An untrained captioner whose greedy captions end (with <end>) at several lengths: its
    <end> logit made to swing with the LSTM state, offset until some captions end early."""
    for offset in np.arange(0.0, 4.0, 0.25):
        model = _captioner(inputs)
        with torch.no_grad():
            model.decoder.out.weight[END] *= 20
            model.decoder.out.bias[END] = float(offset)
        features = _features(model, inputs, seed=features_seed)
        lengths = [
            len(c) for c in decoding.greedy(model.decoder, features, START, END, max_length=8)
        ]
        if min(lengths) < 8 and max(lengths) > 0 and len(set(lengths)) > 1:
            return model, features
    raise AssertionError("no offset makes the untrained captions end at several lengths")


def _features(model, inputs: str, B: int = 6, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    shape = (B, 5, 3, 32, 32) if inputs == "video" else (B, 3, 32, 32)
    key = "frames" if inputs == "video" else "images"
    offsets = torch.linspace(-2, 2, B).view(B, *[1] * (len(shape) - 1))  # items far apart
    return model.encode({key: torch.randn(*shape, generator=gen) + offsets})  # (B, N, D)


def _greedy_with_alphas(decoder, features, max_length):
    """Greedy decoding written out step by step, keeping each step's alpha (the reference)."""
    state = decoder.init_state(features)
    tokens = torch.full((features.shape[0],), START, dtype=torch.long)
    words, alphas = [], []
    for _ in range(max_length):
        log_probs, state = decoder.step(tokens, state)
        alphas.append(state["alpha"].clone())
        log_probs[:, [0, START]] = float("-inf")
        tokens = log_probs.argmax(dim=-1)
        words.append(tokens)
    words, alphas = torch.stack(words, 1), torch.stack(alphas, 1)  # (B, T), (B, T, N)
    out = []
    for b in range(features.shape[0]):
        row = words[b].tolist()
        n = row.index(END) if END in row else len(row)
        out.append((row[:n], alphas[b, : n + 1]))
    return out


# ----------------------------------------------------------------------------- attention_weights


@pytest.mark.parametrize("inputs", ["image", "video"])
def test_attention_weights_are_the_alphas_greedy_decoding_used(inputs):
    model, features = _ending_captioner(inputs)
    expected = _greedy_with_alphas(model.decoder, features, 8)
    captions = decoding.greedy(model.decoder, features, START, END, max_length=8)
    assert captions == [words for words, _ in expected]
    maps = decoding.attention_weights(model.decoder, features, captions, START, END)
    cells = 5 if inputs == "video" else features.shape[1]
    for caption, weights, (_, alphas) in zip(captions, maps, expected):
        # one row per word and one for <end> (unless the caption was cut at max_length)
        assert weights.shape == (len(caption) + 1, cells)
        torch.testing.assert_close(weights.sum(dim=1), torch.ones(len(caption) + 1))
        assert bool((weights >= 0).all())
        rows = alphas.shape[0]
        # one forward two ways; weights lie in [0, 1], so 1e-6 is 8 ulps of the largest possible
        torch.testing.assert_close(weights[:rows], alphas, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("inputs", ["image", "video"])
def test_attention_weights_do_not_depend_on_the_batch(inputs):
    model = _captioner(inputs)
    features = _features(model, inputs, B=5, seed=1)
    gen = torch.Generator().manual_seed(3)
    captions = [torch.randint(4, V, (n,), generator=gen).tolist() for n in (0, 3, 7, 1, 5)]
    together = decoding.attention_weights(model.decoder, features, captions, START, END)
    alone = [
        decoding.attention_weights(model.decoder, features[i : i + 1], [c], START, END)[0]
        for i, c in enumerate(captions)
    ]
    order = [3, 0, 4, 2, 1]
    shuffled = decoding.attention_weights(
        model.decoder, features[order], [captions[i] for i in order], START, END
    )
    for i, caption in enumerate(captions):
        assert together[i].shape[0] == len(caption) + 1
        # other batch sizes, other kernels: weights in [0, 1], 1e-6 is 8 ulps of the largest possible
        torch.testing.assert_close(together[i], alone[i], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(together[i], shuffled[order.index(i)], atol=1e-6, rtol=1e-5)


def test_attention_weights_of_beam_and_sampled_captions():
    model = _captioner("image")
    features = _features(model, "image")
    beams = decoding.beam_search(model.decoder, features, START, END, max_length=8, beam_size=3)
    drawn, _ = decoding.sample(
        model.decoder,
        features,
        START,
        END,
        max_length=8,
        generator=torch.Generator().manual_seed(0),
    )
    for captions in (beams, [d[0] for d in drawn]):
        maps = decoding.attention_weights(model.decoder, features, captions, START, END)
        assert [m.shape[0] for m in maps] == [len(c) + 1 for c in captions]
        for m in maps:
            torch.testing.assert_close(m.sum(dim=1), torch.ones(m.shape[0]))


def test_attention_weights_refuse_a_decoder_that_does_not_attend():
    torch.manual_seed(0)
    cfg = load_config(None, [*TINY, "task=caption", "data.dataset=shapes"])
    model = build_captioner(cfg, V)
    features = model.encode({"images": torch.randn(2, 3, 32, 32)})
    with pytest.raises(LrcnError, match=r"decoder.variant show_tell does not attend.*show_attend"):
        decoding.attention_weights(model.decoder, features, [[5], [6]], START, END)


# ----------------------------------------------------------------------------- attention_strip


def test_attention_strip_lights_the_attended_cell():
    white = np.full((64, 64, 3), 255, dtype=np.uint8)
    maps = np.zeros((3, 4))  # 2 words + <end>, 2 x 2 grid
    maps[0, 1] = 1.0  # word 1 looks top right
    maps[1, 2] = 1.0  # word 2 looks bottom left
    maps[2] = 0.25
    strip = attention_strip(white, ["red", "circle"], maps, cell_size=64, gap=3)
    assert strip.dtype == np.uint8 and strip.shape[1] == 4 * 64 + 3 * 3
    assert 64 < strip.shape[0] < 100  # the pictures and one line of words
    first = strip[:64, 67:131].astype(float).mean(axis=2)  # word 1's thumbnail
    assert first[8, 56] > 240 and first[56, 8] < 80  # lit top right, dark bottom left
    second = strip[:64, 134:198].astype(float).mean(axis=2)
    assert second[56, 8] > 240 and second[8, 56] < 80
    last = strip[:64, 201:265].astype(float).mean(axis=2)
    assert last.min() > 240  # uniform weights: every cell at the maximum
    # the words are written under the thumbnails
    assert (strip[66:, 67:131] < 200).any() and not (strip[66:, :64] < 200).any()


def test_attention_strip_grid_shapes_and_refusals():
    image = torch.rand(3, 48, 48)
    wide = attention_strip(image, ["a", "b"], torch.softmax(torch.randn(2, 6), -1), (2, 3))
    assert wide.shape[1] == 3 * 72 + 2 * 3
    with pytest.raises(LrcnError, match="not a square grid; pass grid_shape"):
        attention_strip(image, ["a", "b"], torch.softmax(torch.randn(2, 6), -1))
    with pytest.raises(ValueError, match="3 maps for 1 words"):
        attention_strip(image, ["a"], torch.softmax(torch.randn(3, 4), -1))


def test_attention_strip_of_a_clip_has_a_row_per_word():
    frames = torch.rand(5, 3, 32, 32)
    maps = torch.tensor([[1.0, 0, 0, 0, 0], [0, 0, 0, 0, 1.0], [0.2] * 5])
    strip = attention_strip(frames, ["red", "moves"], maps, cell_size=32, gap=3)
    rows = strip.shape[0] // (32 + 5 + 3)
    assert rows == 3 and strip.shape[1] > 5 * 35
    # the bar under word 1's first frame is full, under its last frame empty
    right = strip.shape[1] - 3 - 32
    bar_y = 3 + 32 + 3
    assert tuple(strip[bar_y, right - 5 * 35 + 35 + 10]) == (47, 111, 222)
    assert tuple(strip[bar_y, right + 10]) == (225, 228, 234)


def test_tensorboard_grid_adds_the_strips_only_when_given():
    class Writer:
        def __init__(self):
            self.images = {}

        def add_image(self, tag, image, step, dataformats):
            self.images[tag] = image

    images = torch.rand(2, 3, 32, 32)
    plain, attending = Writer(), Writer()
    log_validation_grid(plain, images, ["a b", "c"], 1)
    strips = [attention_strip(images[0], ["a", "b"], torch.full((3, 4), 0.25))] * 2
    log_validation_grid(attending, images, ["a b", "c"], 1, attention=strips)
    assert set(plain.images) == {"val/caption_grid"}
    assert set(attending.images) == {"val/caption_grid", "val/attention"}
    np.testing.assert_array_equal(
        plain.images["val/caption_grid"], attending.images["val/caption_grid"]
    )
    assert attending.images["val/attention"].shape[0] > 2 * strips[0].shape[0]


# ----------------------------------------------------------------------------- trained run


def test_training_logs_the_attention_strips_to_tensorboard(attention_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(attention_run / "tensorboard"))
    events.Reload()
    assert {"val/caption_grid", "val/attention"} <= set(events.Tags()["images"])


def test_evaluation_writes_the_maps_of_every_test_caption(attention_run, tmp_path):
    import json

    from lrcn.engine.evaluation import AttentionMaps
    from lrcn.predict import evaluate

    metrics = evaluate(attention_run, out_dir=tmp_path)
    captions = json.loads((tmp_path / "test_captions.json").read_text())
    attention = AttentionMaps.load(tmp_path / "test_attention.npz")
    assert metrics["items"] == len(captions) == len(attention.maps) == 32
    assert attention.attends == "grid" and attention.grid == (4, 4)  # small_cnn at 64 px
    for result in captions:
        maps = attention.maps[result["image_id"]]
        assert maps.dtype == np.float16 and maps.shape == (len(result["caption"].split()) + 1, 16)
        # 16 float16 weights summing to 1: rounding moves the sum by under 2**-11 (4.9e-4)
        np.testing.assert_allclose(maps.astype(np.float32).sum(axis=1), 1.0, atol=2e-3)
    # a cap, and 0 writes none (and removes the earlier file: no stale maps)
    evaluate(attention_run, out_dir=tmp_path, overrides=["eval.attention_maps=5"])
    assert len(AttentionMaps.load(tmp_path / "test_attention.npz").maps) == 5
    evaluate(attention_run, out_dir=tmp_path, overrides=["eval.attention_maps=0"])
    assert not (tmp_path / "test_attention.npz").exists()


def test_caption_attention_writes_one_strip_per_input(attention_run, tmp_path, capsys):
    from lrcn.cli import main
    from lrcn.data.synthetic.shapes import ShapeObject, render_scene

    inputs = tmp_path / "in"
    (inputs / "b").mkdir(parents=True)
    render_scene([ShapeObject("circle", "red", "large", 20, 20, 10)], 64).save(inputs / "x.png")
    render_scene([ShapeObject("square", "blue", "large", 40, 40, 10)], 64).save(inputs / "y.png")
    render_scene([ShapeObject("square", "red", "large", 40, 20, 10)], 64).save(
        inputs / "b" / "x.png"
    )
    out = tmp_path / "maps" / "deeper"  # created, parents too
    paths = [inputs / "x.png", inputs / "y.png", inputs / "b" / "x.png"]
    argv = ["caption", *map(str, paths), "--checkpoint", str(attention_run), "--attention"]
    assert main([*argv, str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == list(map(str, paths))
    assert sorted(p.name for p in out.iterdir()) == ["x-2.png", "x.png", "y.png"]
    for line, name in zip(lines, ["x.png", "y.png", "x-2.png"]):
        words = line.split("\t")[1].split()
        with Image.open(out / name) as strip:
            # the 64-px picture and one thumbnail per word and <end>, 72 px each, 3 px apart
            assert strip.size[0] == (len(words) + 2) * 75 - 3
    # existing files are replaced, not appended to
    (out / "y.png").write_bytes(b"old")
    assert main([*argv, str(out), "--set", "eval.batch_size=1"]) == 0
    with Image.open(out / "y.png") as strip:
        assert strip.format == "PNG"


def test_caption_attention_refuses_a_model_without_attention(tiny_shapes_run, tmp_path, capsys):
    from lrcn.cli import main

    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    status = main(
        ["caption", str(tmp_path / "a.png"), "--checkpoint", str(tiny_shapes_run),
         "--attention", str(tmp_path / "maps")]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "decoder.variant show_tell does not attend" in err and "drop --attention" in err
    assert not (tmp_path / "maps").exists()


def test_a_corrupt_attention_file_is_one_sentence(tmp_path):
    from lrcn.engine.evaluation import AttentionMaps

    garbage, foreign = tmp_path / "test_attention.npz", tmp_path / "other.npz"
    garbage.write_bytes(b"PK\x03\x04 not really a zip")
    np.savez(foreign, weights=np.zeros(3))
    for path in (garbage, foreign):
        with pytest.raises(LrcnError, match=f"{path}: not an attention-map file.*re-run"):
            AttentionMaps.load(path)
    maps = AttentionMaps("grid", (2, 3), {"a/b.jpg": np.full((2, 6), 1 / 6, np.float16)})
    maps.save(tmp_path / "ok.npz")
    back = AttentionMaps.load(tmp_path / "ok.npz")  # item ids with slashes survive
    assert back.grid == (2, 3) and back.attends == "grid"
    np.testing.assert_array_equal(back.maps["a/b.jpg"], maps.maps["a/b.jpg"])


def test_video_attention_end_to_end_on_real_frame_folders(tmp_path, shared_data, capsys):
    """temporal_attention trained one tiny epoch on moving shapes: its TensorBoard strips, the
    evaluation's frame maps, and `caption --attention` on MSVD's real frame folders."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lrcn.cli import main
    from lrcn.data.readers.msvd import read_msvd
    from lrcn.engine import fit
    from lrcn.engine.evaluation import AttentionMaps
    from lrcn.predict import evaluate

    tiny_video = [
        "data.train_size=48", "data.val_size=8", "data.test_size=8", "data.image_size=32",
        "data.num_frames=4", "train.epochs=1", "train.batch_size=16", "train.progress=false",
        "encoder.feature_dim=32", "decoder.embed_dim=16", "decoder.hidden_dim=32",
        "eval.metrics=bleu,cider", "eval.tokenizer=python", "decoder.variant=temporal_attention",
    ]  # fmt: skip
    run = tmp_path / "run"
    fit(load_config(REPO / "configs" / "moving_shapes.yaml", tiny_video), run)
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert "val/attention" in events.Tags()["images"]

    evaluate(run, out_dir=tmp_path / "eval")
    attention = AttentionMaps.load(tmp_path / "eval" / "test_attention.npz")
    assert attention.attends == "frames" and attention.grid == (1, 4) and len(attention.maps) == 8
    assert all(m.shape[1] == 4 for m in attention.maps.values())

    folders = [r["path"] for r in read_msvd(shared_data / "msvd")]
    out = tmp_path / "maps"
    assert main(["caption", *folders, "--checkpoint", str(run), "--attention", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(folders) == len(list(out.iterdir()))
    for folder, line in zip(folders, lines):
        words = len(line.split("\t")[1].split())
        with Image.open(out / f"{Path(folder).stem}.png") as strip:
            # one row per word and <end>: 72-px frames, a 5-px bar, 3-px gaps
            assert strip.size[1] == (words + 1) * 80 + 3


def test_attention_on_object_script_scores_a_trained_run(attention_run, monkeypatch):
    """scripts/attention_on_object.py (the issue's >= 80% measure) on a run's test split. A two-epoch
    model's own captions may name no object, so greedy is replaced by each scene's first reference
    caption: every colour and shape word then names an object and is scored, through the run's
    real attention weights."""
    import importlib.util

    from lrcn.predict import load_model
    from lrcn.text.tokenize import tokenize
    from lrcn.text.vocab import Vocabulary

    spec = importlib.util.spec_from_file_location(
        "attention_on_object", REPO / "scripts" / "attention_on_object.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    _, cfg, payload = load_model(str(attention_run), device="cpu")
    vocab = Vocabulary.from_dict(payload["vocab"])
    source = script.build.build_source(cfg, "test")
    references = [vocab.encode(tokenize(source.captions(i)[0]), False) for i in range(8)]
    monkeypatch.setattr(script.decoding, "greedy", lambda _d, f, *_a, **_k: references[: len(f)])
    result = script.measure(str(attention_run), "test", limit=8)
    colours = set(script.COLOURS)
    named = sum(len(set(tokenize(source.captions(i)[0])) & colours) for i in range(8))
    assert result["items"] == 8 and result["words"] >= named > 0
    side = cfg.data.image_size // 16  # small_cnn's last block: four 2x2 pools
    assert result["grid"] == f"{side}x{side}"
    for name in ("all", "colour", "shape"):
        assert 0.0 <= result[f"on_object_{name}"] <= 1.0
    assert 0.0 < result["chance_all"] <= 1.0


def test_the_caption_code_draws_attention_pictures_without_the_training_engine():
    import json
    import subprocess
    import sys

    # lrcn caption's module and the pictures it draws: neither imports lrcn.engine (the
    # import-linter contract in pyproject.toml says the same of the code; this runs it)
    probe = (
        "import json, sys, lrcn.predict, lrcn.attention_pictures; print(json.dumps([*sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert "lrcn.attention_pictures" in loaded and "lrcn.predict" in loaded
    assert not [name for name in loaded if name.startswith(("lrcn.engine", "lrcn.split_eval"))]
