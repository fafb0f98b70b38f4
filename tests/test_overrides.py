"""One override rule for every command (issue 27): what ``train`` accepts (a key, or part of a
section as a mapping: ``eval={beam_size: 3}``; as ``KEY=VALUE`` or ``--set KEY=VALUE``), evaluate,
caption, classify, extract-features, demo and ``train --resume`` accept, through
`lrcn.config.apply_overrides`; only what a command cannot change is refused, with one sentence
naming the key and why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import REPO, TINY_SHAPES
from hypothesis import given, settings
from hypothesis import strategies as st

from lrcn.cli import _parse, main
from lrcn.config import (
    WEIGHT_KEYS,
    Config,
    apply_overrides,
    load_config,
    load_config_over,
    overridden_keys,
)
from lrcn.data.synthetic.shapes import ShapeObject, render_scene
from lrcn.errors import LrcnError

SHAPES = str(REPO / "configs" / "shapes.yaml")


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line a refused command printed on stderr."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 512),
    beam=st.integers(1, 9),
    length=st.integers(1, 60),
    tokenizer=st.sampled_from(["auto", "python", "none"]),
)
def test_a_section_override_equals_its_keys_one_by_one(
    batch: int, beam: int, length: int, tokenizer: str
) -> None:
    section = f"eval={{batch_size: {batch}, beam_size: {beam}, max_length: {length}, tokenizer: {tokenizer}}}"
    keys = [f"eval.batch_size={batch}", f"eval.beam_size={beam}"]
    keys += [f"eval.max_length={length}", f"eval.tokenizer={tokenizer}"]
    assert load_config(None, [section]) == load_config(None, keys)
    saved = load_config(None, [])
    assert load_config_over(saved, [section]) == load_config_over(saved, keys)
    assert saved == Config()  # the saved config itself is left as it was
    assert overridden_keys([section]) == [
        "eval.batch_size",
        "eval.beam_size",
        "eval.max_length",
        "eval.tokenizer",
    ]


def test_the_rule_refuses_unknown_keys_types_and_non_mappings_naming_the_override() -> None:
    for bad, named in (
        ("eval={beam: 3}", "unknown config key `eval.beam`"),
        ("eval={beam_size: many}", "`eval.beam_size` must be an integer"),
        ("eval=3", "`eval` must be a mapping"),
        ("nothing.here=1", "unknown config key `nothing.here`"),
    ):
        for apply in (
            lambda text: apply_overrides(Config(), [text]),
            lambda text: overridden_keys([text]),
            lambda text: load_config_over(Config(), [text]),
        ):
            with pytest.raises(LrcnError, match=named.replace("{", r"\{")):
                apply(bad)


def test_a_trained_model_keeps_the_keys_its_weights_depend_on() -> None:
    saved = load_config(None, ["decoder.hidden_dim=64"])
    assert load_config_over(saved, ["decoder.hidden_dim=64"]).decoder.hidden_dim == 64  # same
    assert load_config_over(saved, ["decoder.packed=false"]).decoder.packed is False
    for override, key in (
        ("decoder.hidden_dim=32", "decoder.hidden_dim"),
        ("decoder={variant: lrcn1u}", "decoder.variant"),
        ("task=activity", "task"),
    ):
        assert key in WEIGHT_KEYS
        with pytest.raises(LrcnError, match=f"`{key}` cannot change from"):
            load_config_over(saved, [override])


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "-c", SHAPES, "a.b=1", "--set", "c.d=2", "e=3"],
        ["evaluate", "--checkpoint", "RUN", "--set", "c.d=2", "a.b=1", "e=3"],
        ["extract-features", "-c", SHAPES, "a.b=1", "e=3", "--set", "c.d=2"],
        ["demo", "--set", "c.d=2", "a.b=1", "e=3"],
    ],
)
def test_every_command_takes_positionals_and_set_as_one_list(argv: list[str]) -> None:
    """Positionals first, then --set (argparse's intermixed parsing loses their interleaving)."""
    assert _parse(argv).overrides == ["a.b=1", "e=3", "c.d=2"]


@pytest.mark.parametrize("command", ["caption", "classify"])
def test_predict_commands_take_set_beside_their_paths(command: str) -> None:
    args = _parse([command, "x.png", "--checkpoint", "RUN", "--set", "eval={batch_size: 2}"])
    assert args.paths == ["x.png"] and args.overrides == ["eval={batch_size: 2}"]


def test_train_and_resume_take_section_overrides(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    tiny = [o for o in TINY_SHAPES if not o.startswith(("train.epochs", "data."))]
    tiny += ["data.train_size=64", "data.val_size=16", "data.test_size=16"]
    argv = ["train", "-c", SHAPES, "--run-dir", str(run), "--no-test", *tiny]
    assert main([*argv, "--set", "train={epochs: 1, batch_size: 32}"]) == 0
    assert main(["train", "--resume", str(run), "--no-test", "--set", "train={epochs: 2}"]) == 0
    checkpoint = run / "checkpoints" / "last.pt"
    assert torch.load(checkpoint, weights_only=True)["train_state"]["epoch"] == 2
    capsys.readouterr()
    # a section is judged key by key: epochs may change on resume, the seed may not
    assert main(["train", "--resume", str(run), "train={epochs: 3, seed: 1}"]) == 2
    assert "`train.seed` cannot change when a run is continued with --resume" in _error(capsys)
    assert main(["train", "--resume", str(run), "--set", "decoder={hidden_dim: 8}"]) == 2
    assert "`decoder.hidden_dim` cannot change" in _error(capsys)


def test_checkpoint_commands_take_section_overrides(
    tiny_shapes_run: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "eval"
    section = "eval={batch_size: 4, bootstrap: 0, reference_points: false}"
    assert (
        main(["evaluate", "--checkpoint", str(tiny_shapes_run), "--out-dir", str(out), section])
        == 0
    )
    metrics = json.loads((out / "test_metrics.json").read_text(encoding="utf-8"))
    assert "Bleu_4" in metrics and "Bleu_4_ci95" not in metrics  # bootstrap 0 took effect
    assert "reference_loo_Bleu_4" not in metrics  # and so did reference_points: false

    image = tmp_path / "red.png"
    render_scene([ShapeObject("circle", "red", "large", 32, 32, 11)], 64).save(image)
    capsys.readouterr()
    caption = ["caption", str(image), "--checkpoint", str(tiny_shapes_run)]
    assert main([*caption, "--set", "eval={batch_size: 1, beam_size: 2}"]) == 0
    assert capsys.readouterr().out.startswith(f"{image}\t")

    # classify takes the section too: the refusal that follows is the checkpoint's task
    classify = ["classify", str(image), "--checkpoint", str(tiny_shapes_run)]
    assert main([*classify, "--set", "data={frame_sampling: clips}"]) == 2
    assert "does not label clips" in _error(capsys)

    for argv in (
        [
            "evaluate",
            "--checkpoint",
            str(tiny_shapes_run),
            "--out-dir",
            str(out),
            "decoder={hidden_dim: 8}",
        ],
        [*caption, "--set", "decoder={hidden_dim: 8}"],
        [*classify, "--set", "decoder.hidden_dim=8"],
    ):
        assert main(argv) == 2
        error = _error(capsys)
        assert "`decoder.hidden_dim` cannot change from 64 to 8" in error, error


def test_extract_features_takes_section_overrides(tmp_path: Path, capsys) -> None:
    """extract-features reads its config as train does (`load_config`): the section's store is
    the one filled, by the section's encoder."""
    store = tmp_path / "store"
    section = (
        f"data={{features: {store}, train_size: 12, val_size: 4, test_size: 4, image_size: 32}}"
    )
    argv = ["extract-features", "-c", SHAPES, "--split", "val", section]
    assert main([*argv, "--set", "encoder={freeze: true, feature_dim: 16}"]) == 0
    assert "val: 4 rows (4 new)" in capsys.readouterr().out
    assert (store / "val.npy").is_file()
