"""Config values that cannot work are refused when the config loads, in one sentence naming the
key, the value and the fix (exit 2 through the CLI), instead of a traceback or a wasted epoch."""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest
from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lrcn import cli
from lrcn.config import Config, config_from_dict, load_config
from lrcn.errors import LrcnError

SHAPES = str(REPO / "configs" / "shapes.yaml")

# (override, a fragment the sentence must contain besides the key) for values that cannot work.
REFUSED = [
    ("data.train_size=-5", "-5"),
    ("data.train_size=0", "0"),  # "trained" zero steps per epoch
    ("data.val_size=0", "0"),  # fit validates every epoch (best.pt, early stopping)
    ("data.test_size=-1", "-1"),
    ("data.num_workers=-1", "-1"),
    ("data.image_size=0", "0"),
    ("data.max_caption_length=0", "0"),
    ("data.seed=-1", "-1"),
    ("encoder.feature_dim=0", "0"),
    ("encoder.temporal_hidden_dim=-3", "-3"),
    ("decoder.embed_dim=0", "0"),
    ("decoder.hidden_dim=-1", "-1"),
    ("decoder.num_layers=0", "0"),
    ("decoder.dropout=1.5", "1.5"),
    ("decoder.dropout=-0.1", "-0.1"),
    ("classifier.hidden_dim=0", "0"),
    ("classifier.dropout=nan", "nan"),
    ("classifier.num_outputs=-1", "-1"),
    ("classifier.num_outputs=7", "7"),
    ("classifier.clip_stride=0", "0"),
    ("train.lr=nan", "nan"),
    ("train.lr=-1", "-1"),
    ("train.lr=0", "0"),
    ("train.lr=1e38", "1e+38"),
    ("train.lr=inf", "inf"),
    ("train.encoder_lr=-1e-4", "-0.0001"),
    ("train.weight_decay=-0.1", "-0.1"),
    ("train.adam_eps=0", "0"),
    ("train.grad_clip=-1", "-1"),
    ("train.grad_clip=nan", "nan"),
    ("train.batch_size=0", "0"),
    ("train.epochs=0", "0"),
    ("train.warmup_steps=-1", "-1"),
    ("train.seed=-1", "-1"),
    ("train.grad_accum_steps=0", "0"),
    ("train.early_stopping_patience=-2", "-2"),
    ("train.checkpoint_every_steps=-1", "-1"),  # checkpointed every step
    ("train.log_every_steps=0", "0"),
    ("train.val_max_items=-1", "-1"),
    ("train.scheduled_sampling_max=1.5", "1.5"),
    ("train.scheduled_sampling_ramp_epochs=-1", "-1"),
    ("train.scst_samples=0", "0"),
    ("eval.batch_size=0", "0"),  # failed after a full training epoch
    ("eval.beam_size=0", "0"),
    ("eval.max_length=0", "0"),
    ("eval.length_penalty=nan", "nan"),
]


@pytest.mark.parametrize("override,value", REFUSED, ids=[o for o, _ in REFUSED])
def test_values_that_cannot_work_are_refused_at_load_with_key_value_and_fix(override, value):
    key = override.split("=")[0]
    with pytest.raises(LrcnError) as info:
        load_config(SHAPES, [override])
    message = str(info.value)
    assert f"`{key}`" in message and value in message, message
    assert "set it to" in message, message  # the fix
    assert message.count("\n") == 0


def test_train_with_an_impossible_value_exits_2_at_once(tmp_path, capsys):
    status = cli.main(
        ["train", "-c", SHAPES, "--run-dir", str(tmp_path / "run"), "data.val_size=0"]
    )
    assert status == 2
    assert "`data.val_size`" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize("command", ["evaluate", "caption"])
def test_beam_size_zero_is_refused_not_ignored(tiny_shapes_run, tmp_path, capsys, command):
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (64, 64)).save(image)
    target = (
        ["--checkpoint", str(tiny_shapes_run), "--out-dir", str(tmp_path / "eval")]
        if command == "evaluate"
        else [str(image), "--checkpoint", str(tiny_shapes_run / "checkpoints" / "best.pt")]
    )
    status = cli.main([command, *target, "--beam-size", "0"])
    err = capsys.readouterr().err
    assert status == 2, err
    assert "--beam-size" in err and "0" in err and "at least 1" in err
    assert not (tmp_path / "eval").exists()


def test_values_that_work_still_load():
    cfg = load_config(
        SHAPES,
        [
            "data.test_size=0",  # no test split: train with --no-test
            "train.lr=1",
            "train.lr=5e-4",
            "decoder.dropout=0",
            "train.scheduled_sampling_max=1",
            "train.checkpoint_every_steps=0",
            "train.early_stopping_patience=0",
            "eval.length_penalty=-0.5",
            "data.num_workers=0",
        ],
    )
    assert cfg.train.lr == 5e-4
    # Sizes of a manifest dataset come from its files: the synthetic sizes do not matter there.
    load_config(None, ["data.dataset=manifest", "data.manifest=x", "data.val_size=0"])


# --- property: any config dict loads or raises LrcnError, and what loads is in range ----------


def _numeric_keys() -> dict[str, type]:
    keys: dict[str, type] = {}

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind = hints[f.name]
            if dataclasses.is_dataclass(kind):
                walk(kind, prefix + f.name + ".")
            elif kind in (int, float):
                keys[prefix + f.name] = kind

    walk(Config, "")
    return keys


NUMERIC = _numeric_keys()
SCALARS = st.one_of(
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 0.5, 1.0, 2**32, "nan", "1e-3", "-inf", "x", "", True, None]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["a", "lr"]), st.integers(), max_size=1),
)
KEYS = st.sampled_from([*NUMERIC, "task", "data.dataset", "eval.metrics", "train", "nope.x"])


def _nest(flat: dict[str, object]) -> dict:
    data: dict = {}
    for key, value in flat.items():
        cursor = data
        *parents, last = key.split(".")
        for part in parents:
            nxt = cursor.setdefault(part, {})
            if not isinstance(nxt, dict):
                break
            cursor = nxt
        else:
            cursor[last] = value
    return data


def _get(cfg: Config, key: str) -> object:
    value: object = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _assert_in_range(cfg: Config) -> None:
    for key in NUMERIC:
        value = _get(cfg, key)
        assert isinstance(value, int | float) and math.isfinite(value), key
        assert value >= 0 or key == "eval.length_penalty", key
    for key in ("train.lr", "train.encoder_lr"):
        assert 0 < _get(cfg, key) <= 1, key
    for key in ("train.batch_size", "eval.batch_size", "eval.beam_size", "train.epochs",
                "train.log_every_steps", "train.grad_accum_steps", "train.scst_samples"):  # fmt: skip
        assert _get(cfg, key) >= 1, key
    for key in ("decoder.dropout", "classifier.dropout"):
        assert 0 <= _get(cfg, key) < 1, key
    assert 0 <= cfg.train.scheduled_sampling_max <= 1
    assert cfg.classifier.num_outputs in (0, 1)
    if cfg.data.dataset != "manifest":
        assert cfg.data.train_size >= 1 and cfg.data.val_size >= 1


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(KEYS, SCALARS, max_size=6))
def test_any_config_dict_loads_in_range_or_is_one_lrcn_error(flat):
    try:
        cfg = config_from_dict(_nest(flat))
    except LrcnError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    _assert_in_range(cfg)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(NUMERIC)), SCALARS)
def test_any_override_loads_in_range_or_is_one_lrcn_error(key, value):
    text = f"{key}={value}"
    try:
        cfg = load_config(None, [text])
    except LrcnError:
        return
    _assert_in_range(cfg)


def test_every_numeric_field_has_a_range():
    """A new numeric config key must get a range in lrcn.config (the table of valid values)."""
    from lrcn.config import RANGES

    assert set(NUMERIC) <= set(RANGES), sorted(set(NUMERIC) - set(RANGES))
