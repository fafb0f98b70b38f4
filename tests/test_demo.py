"""`lrcn demo` (`make demo`): the stages run in order, each in its own folder; a finished stage
is reused, a changed one redone (the old folder kept), an interrupted one finished."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lrcn.cli import main
from lrcn.demo import demo_stages, run_demo

REPO = Path(__file__).resolve().parents[1]
TINY = [
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
def first_demo(tmp_path_factory) -> tuple[Path, dict, list[str]]:
    root = tmp_path_factory.mktemp("demo")
    lines: list[str] = []
    summary = run_demo(root, TINY, echo=lines.append)
    return root, summary, lines


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns


def test_the_demo_runs_each_stage_into_its_own_folder_and_prints_the_results(first_demo) -> None:
    root, summary, lines = first_demo
    assert [s.name for s in demo_stages(root)] == ["pretrain", "features", "caption"]
    assert not any(record["reused"] for record in summary["stages"].values())
    assert (root / "1-pretrain" / "encoder.pt").is_file()
    assert {p.name for p in (root / "features").glob("*.npy")} == {
        f"{s}.npy" for s in ("train", "val", "test")
    }
    assert (root / "2-caption" / "eval" / "test_metrics.json").is_file()
    assert Path(summary["report"]).is_file() and summary["report"].endswith(".html")
    text = "\n".join(lines)
    for stage in ("pretrain", "features", "caption"):
        assert re.search(rf"^   {stage}: took \d+ s$", text, re.MULTILINE)
    assert "BLEU-1..4" in text and "leave-one-out" in text and "scene accuracy" in text
    assert text.count("reference: ") >= 6  # a few test captions, each beside two references
    assert lines[-1] == f"report: {summary['report']}"


def test_a_second_run_reuses_every_finished_stage(first_demo) -> None:
    root, summary, _ = first_demo
    watched = [root / "1-pretrain" / "checkpoints" / "best.pt", root / "features" / "train.npy",
               root / "2-caption" / "checkpoints" / "best.pt", Path(summary["report"])]  # fmt: skip
    before = [_mtime(p) for p in watched]
    lines: list[str] = []
    again = run_demo(root, TINY, echo=lines.append)
    assert all(record["reused"] for record in again["stages"].values())
    assert [_mtime(p) for p in watched] == before
    assert re.search(r"^   caption: reused, it took \d+ s$", "\n".join(lines), re.MULTILINE)
    assert again["seconds"] < 10


def test_a_changed_stage_is_redone_and_the_stages_before_it_are_reused(tmp_path: Path) -> None:
    run_demo(tmp_path, TINY, echo=lambda _: None)
    changed = run_demo(tmp_path, [*TINY, "decoder.hidden_dim=24"], echo=lambda _: None)
    reused = {name: record["reused"] for name, record in changed["stages"].items()}
    # the decoder's size is in every stage's config, but only the caption stage depends on it
    assert reused == {"pretrain": True, "features": True, "caption": False}
    kept = list(tmp_path.glob("2-caption-replaced-*"))
    assert len(kept) == 1 and (kept[0] / "checkpoints" / "best.pt").is_file()
    assert (tmp_path / "features" / "train.npy").is_file()


def test_an_interrupted_training_stage_is_finished_not_restarted(tmp_path: Path) -> None:
    run_demo(tmp_path, TINY, echo=lambda _: None)
    caption = tmp_path / "2-caption"
    (caption / "stage.json").unlink()  # as if killed after training, before the stage finished
    best = _mtime(caption / "checkpoints" / "best.pt")
    again = run_demo(tmp_path, TINY, echo=lambda _: None)
    assert not again["stages"]["caption"]["reused"]
    assert _mtime(caption / "checkpoints" / "best.pt") == best  # resumed: no epoch trained again
    assert not list(tmp_path.glob("2-caption-replaced-*"))
    assert (caption / "stage.json").is_file()


def test_the_command_line_and_the_makefile_run_the_demo(first_demo, capsys) -> None:
    root, _, _ = first_demo
    assert main(["demo", "--root", str(root), *TINY]) == 0
    out = capsys.readouterr().out
    assert "pretrain: reused" in out and "report: " in out
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^demo: setup\n\t\$\(BIN\)/lrcn demo$", makefile, re.MULTILINE)


def test_the_video_demo_pretrains_the_frame_encoder_and_captions_from_every_frames_features(
    tmp_path: Path,
) -> None:
    tiny = [*TINY, "data.num_frames=4", "encoder.temporal_hidden_dim=32", "data.train_size=64"]
    lines: list[str] = []
    summary = run_demo(tmp_path, tiny, echo=lines.append, data="moving_shapes")
    assert [s.config for s in demo_stages(tmp_path, "moving_shapes")] == [
        "moving_shapes_pretrain", "moving_shapes_two_stage", "moving_shapes_two_stage"
    ]  # fmt: skip
    index = json.loads((tmp_path / "features" / "train.json").read_text())
    assert index["shape"] == [64, 4, 32]  # clips x frames x features
    assert "motion_colour_accuracy" in summary["stages"]["caption"]["result"]
    assert any("every motion named right" in line for line in lines)


def test_the_demo_prints_where_its_metrics_lie_in_the_recorded_range(first_demo, tmp_path) -> None:
    """`make demo` ends with its test metrics beside the range docs/results/demo.json records over
    seeds and kernel sets, and says when its own overrides make that range another config's."""
    from lrcn.demo import recorded_range_lines
    from lrcn.results import summarize

    _, _, lines = first_demo
    text = "\n".join(lines)
    assert "recorded for this recipe (docs/results/demo.json" in text
    assert "(this run overrides data.train_size=96" in text
    runs = [{"scene_accuracy": 0.90, "Bleu_4": 0.75}, {"scene_accuracy": 0.92, "Bleu_4": 0.78}]
    record = {**summarize(runs), "machines": [{"capability": "AVX2"}], "each_run": runs}
    (tmp_path / "demo.json").write_text(json.dumps(record))
    caption = {"caption": {"result": {"scene_accuracy": 0.91, "Bleu_4": 0.70, "CIDEr": 3.0}}}
    got = recorded_range_lines("shapes", caption, [], tmp_path)
    assert got[0].startswith("recorded for this recipe (docs/results/demo.json: 2 runs")
    assert "scene_accuracy 0.910: inside the recorded range 0.900-0.920 (mean 0.910 over 2 runs)" in got[1]  # fmt: skip
    assert "Bleu_4 0.700: below the recorded range 0.750-0.780" in got[2]
    assert len(got) == 3  # CIDEr was not recorded: no line for it
    assert recorded_range_lines("shapes", caption, [], tmp_path / "none")[0].startswith(
        "(no recorded range"
    )
