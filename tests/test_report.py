"""The HTML evaluation report (lrcn.report) and the pictures and TensorBoard hooks (lrcn.visualize)."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from eval_files import reseal
from PIL import Image

from lrcn.config import load_config, save_config
from lrcn.errors import LrcnError
from lrcn.io import write_json_atomic
from lrcn.report import write_report
from lrcn.visualize import (
    caption_grid,
    denormalise,
    frame_strip,
    log_hparams,
    log_validation_grid,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
IMG_TAG = re.compile(r'<img[^>]* src="data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+)"')


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def shapes_report(tiny_shapes_run: Path, tmp_path_factory) -> tuple[Path, Path, str]:
    """A copy of the tiny trained run (the shared one stays without eval/) and its report."""
    run = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(tiny_shapes_run, run, ignore=shutil.ignore_patterns("tensorboard"))
    assert not (run / "eval").exists()
    path = write_report(run)
    return run, path, path.read_text(encoding="utf-8")


def _fake_run(
    folder: Path, config: str, overrides: list[str], metrics: dict, results: list
) -> Path:
    """A run folder holding only what the report reads: config.yaml and the eval files."""
    cfg = load_config(REPO / "configs" / config, overrides)
    save_config(cfg, folder / "config.yaml")
    write_json_atomic(folder / "eval" / "test_metrics.json", metrics)
    name = "test_predictions.json" if cfg.task == "activity" else "test_captions.json"
    write_json_atomic(folder / "eval" / name, results)
    return folder


def _images(page: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(data))) for _, data in IMG_TAG.findall(page)]


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", "--hide-scrollbars", *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


# ----------------------------------------------------------------------------- report


def test_report_evaluates_first_then_lists_every_item(shapes_report):
    from lrcn.build import build_source_raw
    from lrcn.metrics import per_item_scores

    run, path, page = shapes_report
    assert path == run / "eval" / "test_report.html"
    metrics = json.loads((run / "eval" / "test_metrics.json").read_text())
    results = json.loads((run / "eval" / "test_captions.json").read_text())
    assert metrics["items"] == len(results) == 32

    images = _images(page)
    assert len(images) == 32 and all(max(im.size) <= 96 for im in images)
    assert 'class="strip"' not in page and "where the model looked" not in page  # no attention
    for result in results:
        assert html.escape(result["caption"]) in page
    source = build_source_raw(load_config(run / "config.yaml"), "test")
    for reference in source.captions(0):
        assert f"<li>{html.escape(reference)}</li>" in page

    for key in ("Bleu_1", "Bleu_4", "CIDEr", "reference_loo_Bleu_4", "baseline_CIDEr"):
        assert f"{metrics[key]:.4f}" in page, key

    first = str(results[0]["image_id"])
    scores = per_item_scores(
        {first: source.captions(0)}, {first: results[0]["caption"]}, tokenizer="python"
    )[first]
    row = page[page.index(html.escape(first)) :]
    assert f'data-sort="{scores["Bleu_4"]:.6f}"' in row[:2000]


def test_report_reads_per_item_scores_intervals_and_caption_statistics(shapes_report, tmp_path):
    run, _, page = shapes_report
    metrics = json.loads((run / "eval" / "test_metrics.json").read_text())
    low, high = metrics["CIDEr_ci95"]
    assert f'{metrics["CIDEr"]:.4f} <span class="ci">[{low:.4f}, {high:.4f}]</span>' in page
    assert "Captions: copies and diversity" in page and "distinct-2" in page
    # the per-item file, not a rescoring, gives each row's scores
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    per_item_path = copy / "eval" / "test_per_item.json"
    records = json.loads(per_item_path.read_text())
    records[0]["CIDEr"] = 123.456789
    per_item_path.write_text(json.dumps(records))
    reseal(copy / "eval")
    assert 'data-sort="123.456789"' in write_report(copy).read_text(encoding="utf-8")
    per_item_path.unlink()  # an older evaluation (no manifest either): scored again, as before
    (copy / "eval" / "test_manifest.json").unlink()
    again = write_report(copy).read_text(encoding="utf-8")
    assert 'data-sort="123.456789"' not in again and "python, scored again" in again


def test_report_is_self_contained(shapes_report):
    page = shapes_report[2]
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<link" not in page and "<script src" not in page
    assert page.count("<script>") == 1 and "<style>" in page


def test_report_escapes_captions_and_writes_where_asked(shapes_report, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(shapes_report[0], run)
    (run / "eval" / "test_report.html").unlink()
    results = json.loads((run / "eval" / "test_captions.json").read_text())
    results[0]["caption"] = '<script>alert("x")</script> & <b>bold</b>'
    write_json_atomic(run / "eval" / "test_captions.json", results)
    reseal(run / "eval")

    out = write_report(run, out=tmp_path / "pages" / "mine.html")

    assert out == tmp_path / "pages" / "mine.html"
    page = out.read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    assert "<script>alert" not in page and "<b>bold" not in page
    assert not (run / "eval" / "test_report.html").exists()


def test_report_errors_name_the_file(shapes_report, tmp_path: Path):
    with pytest.raises(LrcnError, match="not a run folder"):
        write_report(tmp_path / "missing")
    run = tmp_path / "run"
    shutil.copytree(shapes_report[0], run)
    (run / "eval" / "test_captions.json").write_text("[{broken", encoding="utf-8")
    with pytest.raises(LrcnError, match=r"test_captions\.json.*lrcn evaluate"):
        write_report(run)
    write_json_atomic(
        run / "eval" / "test_captions.json", [{"image_id": "elsewhere", "caption": "a"}]
    )
    reseal(run / "eval")
    with pytest.raises(LrcnError, match="elsewhere.*not in the test split"):
        write_report(run)


def test_video_report_shows_frame_strips_and_scores(tmp_path: Path):
    from lrcn.data.synthetic.moving_shapes import MovingShapesCaptions

    clips = MovingShapesCaptions("test", 4, seed=0, image_size=32, num_frames=6)
    results = [{"image_id": clips.item_id(i), "caption": "a shape moves"} for i in range(4)]
    results[0]["caption"] = clips.captions(0)[2]  # word for word one of the references
    run = _fake_run(
        tmp_path,
        "moving_shapes.yaml",
        ["data.test_size=4", "data.image_size=32", "data.num_frames=6"],
        {"Bleu_4": 0.25, "CIDEr": 1.5, "items": 4},
        results,
    )

    page = write_report(run).read_text(encoding="utf-8")

    strips = _images(page)
    assert len(strips) == 4
    assert all(im.size == (4 * 32 + 3 * 2, 32) for im in strips)  # four frames, 2-px gaps
    assert 'data-sort="1.000000"' in page  # the copied reference scores BLEU-4 1
    assert "moving_shapes" in page and "0.2500" in page


def test_activity_report_lists_labels_predictions_and_probabilities(tmp_path: Path):
    predictions = [
        {"label": "left_to_right", "predicted": "left_to_right", "probability": 0.97},
        {"label": "right_to_left", "predicted": "left_to_right", "probability": 0.61},
        {"label": "right_to_left", "predicted": "right_to_left", "probability": 0.88},
    ]
    run = _fake_run(
        tmp_path,
        "moving_line.yaml",
        ["data.test_size=3", "data.image_size=16", "data.num_frames=16"],
        {"accuracy": 2 / 3, "items": 3, "split": "test"},
        predictions,
    )

    page = write_report(run).read_text(encoding="utf-8")

    assert "0.6667" in page and "2 of 3 correct" in page
    assert 'data-sort="0.610000"' in page and "right_to_left" in page
    assert page.count("&#10003;") == 2 and page.count("&#10007;") == 1
    assert len(_images(page)) == 3  # frame strips of the moving line


def test_report_shows_where_each_word_looked(attention_run, tmp_path: Path, caplog):
    from lrcn.engine.evaluation import AttentionMaps

    run = tmp_path / "run"
    shutil.copytree(attention_run, run, ignore=shutil.ignore_patterns("tensorboard"))
    path = write_report(run)  # evaluates first: captions, and their maps
    page = path.read_text(encoding="utf-8")
    results = json.loads((run / "eval" / "test_captions.json").read_text())
    strips = re.findall(r'<img class="strip" src="data:image/(?:png|jpeg);base64,([^"]+)"', page)
    assert len(results) == len(strips) == 32 and len(_images(page)) == 64
    assert "Under 32 of the captions: where the model looked for each word" in page
    for result, data in zip(results, strips):  # in the captions file's order
        strip = Image.open(io.BytesIO(base64.b64decode(data)))
        words = len(result["caption"].split())
        # the 64-px picture, then each word's and <end>'s 64-px thumbnail, 3 px apart
        assert strip.size[0] == (words + 2) * 67 - 3 and 64 < strip.size[1] < 90
    assert path.stat().st_size < 1e6

    # maps that no longer fit their caption (a stale file) leave that row without a strip
    attention = AttentionMaps.load(run / "eval" / "test_attention.npz")
    first = str(results[0]["image_id"])
    attention.maps[first] = np.full((9, 16), 1 / 16, dtype=np.float16)
    attention.save(run / "eval" / "test_attention.npz")
    reseal(run / "eval")
    page = write_report(run).read_text(encoding="utf-8")
    assert page.count('<img class="strip"') == 31
    assert "1 captions have other words than their attention maps" in caplog.text


def test_video_report_shows_each_words_frame_weights(tmp_path: Path):
    from lrcn.data.synthetic.moving_shapes import MovingShapesCaptions
    from lrcn.engine.evaluation import AttentionMaps

    clips = MovingShapesCaptions("test", 3, seed=0, image_size=32, num_frames=6)
    results = [{"image_id": clips.item_id(i), "caption": "a shape moves"} for i in range(3)]
    run = _fake_run(
        tmp_path,
        "moving_shapes.yaml",
        ["data.test_size=3", "data.image_size=32", "data.num_frames=6"],
        {"Bleu_4": 0.25, "items": 3},
        results,
    )
    weights = np.full((4, 6), 1 / 6, dtype=np.float16)  # 3 words and <end> over 6 frames
    maps = {r["image_id"]: weights for r in results[:2]}  # the third item has none
    AttentionMaps("frames", (1, 6), maps).save(run / "eval" / "test_attention.npz")

    page = write_report(run).read_text(encoding="utf-8")

    strips = re.findall(r'<img class="strip" src="data:image/(?:png|jpeg);base64,([^"]+)"', page)
    assert len(strips) == 2
    strip = Image.open(io.BytesIO(base64.b64decode(strips[0])))
    assert strip.size[1] > 4 * 64 and strip.size[0] > 6 * 64  # a row of 6 frames per word


@pytest.mark.slow  # 500 thumbnails and per-item scores: about 1-3 s here
def test_report_of_500_items_is_fast_and_small(tmp_path: Path):
    from lrcn.data.synthetic.shapes import ShapesCaptions

    shapes = ShapesCaptions("test", 500, seed=0, image_size=64)
    results = [{"image_id": shapes.item_id(i), "caption": "a red circle."} for i in range(500)]
    run = _fake_run(
        tmp_path, "shapes.yaml", ["data.test_size=500"], {"Bleu_4": 0.1, "items": 500}, results
    )

    start = time.perf_counter()
    path = write_report(run)
    seconds = time.perf_counter() - start

    assert len(IMG_TAG.findall(path.read_text(encoding="utf-8"))) == 500
    assert seconds < 20, f"the report of 500 images took {seconds:.1f} s"
    assert path.stat().st_size < 5e6


def test_report_renders_in_headless_chromium_and_sorts(shapes_report, tmp_path: Path):
    if CHROMIUM is None:
        if os.environ.get("LRCN_REQUIRE_BROWSER"):  # CI installs it: never skip there
            pytest.fail("LRCN_REQUIRE_BROWSER is set but no chromium is on PATH")
        pytest.skip("chromium not installed (apt-get install chromium) to render the report")
    _, path, page = shapes_report
    shot = tmp_path / "shot.png"
    done = _chromium(
        f"--screenshot={shot}", "--window-size=1200,900", path.as_uri(), profile=tmp_path / "p1"
    )
    assert shot.is_file(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    assert pixels.shape[:2] == (900, 1200)
    assert pixels.std() > 10  # not blank
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100  # text, thumbnails, rules

    # The page's own script sorts on load when the address asks (#sort=-CIDEr: best first).
    done = _chromium("--dump-dom", path.as_uri() + "#sort=-CIDEr", profile=tmp_path / "p2")
    body = done.stdout[done.stdout.index('<table class="items') :]
    rows = re.findall(r"<tr>(.*?)</tr>", body, flags=re.S)[1:]  # [0] is the header
    cider = [float(re.findall(r'class="score" data-sort="([0-9.e-]+)"', row)[-1]) for row in rows]
    assert len(cider) == 32
    assert cider == sorted(cider, reverse=True)
    assert "sortable desc" in body  # the header shows the order


# ----------------------------------------------------------------------------- visualize


def test_denormalise_inverts_normalisation():
    pixels = torch.rand(2, 5, 3, 8, 8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    normalised = (pixels - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    assert torch.allclose(denormalise(normalised, mean, std), pixels, atol=1e-6)
    assert denormalise(torch.full((1, 4, 4), 9.0), (0.0,), (1.0,)).max() == 1.0  # clamped


def test_caption_grid_places_images_and_wraps_captions():
    red = torch.zeros(3, 20, 20)
    red[0] = 1.0
    short = caption_grid(red.expand(6, 3, 20, 20), ["a"] * 6, columns=4, cell_size=60)
    long = caption_grid(
        red.expand(6, 3, 20, 20),
        ["a red square on a black background"] * 6,
        columns=4,
        cell_size=60,
    )
    assert short.dtype == np.uint8 and short.ndim == 3 and short.shape[2] == 3
    assert short.shape[1] == long.shape[1] and long.shape[1] >= 4 * 60
    assert long.shape[0] > short.shape[0]  # wrapped onto more lines
    assert ((short == [255, 0, 0]).all(axis=2)).sum() == 6 * 60 * 60  # scaled up, not blurred

    grey = np.full((2, 1, 10, 10), 128, dtype=np.uint8)  # uint8, one channel
    with_text = caption_grid(grey, ["some words", ""], columns=2, cell_size=40)
    half = with_text.shape[1] // 2
    text_rows = with_text[45:]
    assert (text_rows[:, :half] < 100).any() and not (text_rows[:, half:] < 100).any()
    with pytest.raises(ValueError, match="2 images but 1 captions"):
        caption_grid(grey, ["one"])


def test_frame_strip_picks_evenly_spaced_frames():
    frames = np.stack(
        [np.full((6, 5, 3), 30 * t, dtype=np.uint8) for t in range(8)]
    )  # (T, H, W, 3)
    strip = frame_strip(frames, n=4, gap=1)
    assert strip.shape == (6, 4 * 5 + 3, 3)
    assert [int(strip[0, 6 * k, 0]) for k in range(4)] == [0, 60, 150, 210]  # frames 0, 2, 5, 7
    as_tensor = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255  # (T, 3, H, W)
    assert np.array_equal(frame_strip(as_tensor, n=4, gap=1), strip)
    assert frame_strip(frames[:2], n=4, gap=1).shape == (6, 11, 3)


def test_tensorboard_grid_and_hparams_read_back(tmp_path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    from torch.utils.tensorboard import SummaryWriter

    cfg = load_config(REPO / "configs" / "shapes.yaml")
    images = torch.rand(5, 3, 16, 16)
    writer = SummaryWriter(log_dir=str(tmp_path))
    log_validation_grid(writer, images, [f"caption {i}" for i in range(5)], step=3)
    log_validation_grid(writer, torch.rand(2, 6, 3, 12, 12), ["left", "right"], 3, tag="val/clips")
    log_hparams(writer, cfg.to_dict(), {"Bleu_4": 0.25, "CIDEr": 0.9, "items": 32, "split": "test"})
    writer.close()
    log_validation_grid(None, images, ["x"] * 5, 0)  # no writer: nothing to do
    log_hparams(None, {}, {})

    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    assert {"val/caption_grid", "val/clips"} <= set(events.Tags()["images"])
    grid = events.Images("val/caption_grid")[0]
    expected = caption_grid(images, [f"caption {i}" for i in range(5)])
    assert grid.step == 3 and (grid.height, grid.width) == expected.shape[:2]
    decoded = np.asarray(Image.open(io.BytesIO(grid.encoded_image_string)).convert("RGB"))
    assert np.array_equal(decoded, expected)

    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["train.lr"].number_value == pytest.approx(cfg.train.lr)
    assert hparams["encoder.name"].string_value == "small_cnn"
    assert hparams["eval.metrics"].string_value == ",".join(cfg.eval.metrics)
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    assert {m.name.tag for m in experiment.experiment.metric_infos} == {
        "hparam/Bleu_4",
        "hparam/CIDEr",
    }
    assert events.Scalars("hparam/Bleu_4")[0].value == pytest.approx(0.25)
