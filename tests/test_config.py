import pytest

from lrcn.build import check_config
from lrcn.config import load_config
from lrcn.errors import LrcnError


def test_defaults_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 3\n  lr: 1e-3\neval:\n  metrics: [bleu]\n")
    cfg = load_config(path, ["train.epochs=5", "data.image_size=32", "eval.metrics=bleu,cider"])
    assert cfg.train.epochs == 5 and cfg.train.lr == 1e-3 and cfg.data.image_size == 32
    assert cfg.eval.metrics == ["bleu", "cider"]


def test_unknown_key_lists_valid_keys(tmp_path):
    with pytest.raises(LrcnError) as info:
        load_config("configs/shapes.yaml", ["no.such.key=1"])
    assert "no.such.key" in str(info.value) and "train.epochs" in str(info.value)
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epoch: 3\n")
    with pytest.raises(LrcnError, match="unknown config key `train.epoch`.*train.epochs"):
        load_config(path)


def test_wrong_type_and_choice_and_bad_yaml(tmp_path):
    with pytest.raises(LrcnError, match="train.epochs` must be an integer"):
        load_config(None, ["train.epochs=many"])
    with pytest.raises(LrcnError, match="decoder.variant.*show_tell"):
        check_config(load_config(None, ["decoder.variant=mamba"]))
    with pytest.raises(LrcnError, match="data.dataset.*moving_line"):
        check_config(load_config(None, ["task=activity", "data.dataset=shapes"]))
    with pytest.raises(LrcnError, match="eval.metrics.*cider"):
        check_config(load_config(None, ["eval.metrics=bleu,cidr"]))
    path = tmp_path / "bad.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(LrcnError, match="bad.yaml line"):
        load_config(path)
    with pytest.raises(LrcnError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_every_shipped_config_loads():
    from pathlib import Path

    configs = sorted(Path("configs").glob("*.yaml"))
    assert configs, "configs/ is empty"
    for path in configs:
        load_config(path)
