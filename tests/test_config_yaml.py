"""Config YAML is read by one loader (lrcn.config_yaml) with bounds: nested aliases, deep nesting
and duplicate keys are refused in one sentence naming the file and line, scalars follow YAML 1.2's
core schema, and error messages quote at most a short prefix of a user's value."""

from __future__ import annotations

import pytest
import yaml
from conftest import REPO
from hypothesis import given, settings
from hypothesis import strategies as st

from lrcn import cli
from lrcn.config import Config, load_config, save_config
from lrcn.config_yaml import MAX_NODES, ConfigLoader, Refused, check_expansion, parse_yaml
from lrcn.errors import LrcnError

SHAPES = str(REPO / "configs" / "shapes.yaml")

# The "billion laughs" shape: 9 levels of 9 aliases, 9**9 strings once expanded (safe_load grew
# it to 2.6 GB and a MemoryError traceback).
LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{new}: &{new} [{','.join([f'*{old}'] * 9)}]\n" for old, new in zip("abcdefgh", "bcdefghi")
)


def _write(tmp_path, text: str, name: str = "c.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _one_sentence(message: str) -> None:
    assert "\n" not in message and message.endswith("."), message


# --- alias expansion, recursion and nesting are bounded ------------------------------------


def test_billion_laughs_is_refused_by_the_bound_before_anything_is_built(tmp_path, monkeypatch):
    assert len(LAUGHS.encode()) < 500
    built = []
    original = ConfigLoader.construct_object

    def counting(self, node, deep=False):
        built.append(node)
        return original(self, node, deep)

    monkeypatch.setattr(ConfigLoader, "construct_object", counting)
    with pytest.raises(Refused) as info:
        parse_yaml(LAUGHS)
    assert info.traceback[-1].name == "check_expansion"  # refused by the bound, not by memory
    assert str(MAX_NODES) in info.value.reason
    assert built == []  # not one value was built

    path = _write(tmp_path, LAUGHS)
    with pytest.raises(LrcnError) as info:
        load_config(path)
    message = str(info.value)
    _one_sentence(message)
    assert message.startswith(f"{path} line ") and f"more than {MAX_NODES}" in message
    assert "write the values out" in message  # the fix


def test_the_expansion_count_is_exact_and_aliases_within_the_bound_still_load():
    shared = "a: &a [1, 2, 3]\nb: [*a, *a]\n"
    loader = ConfigLoader(shared)
    # root mapping, 2 keys, a: list of 3, b: list of two expanded copies of a
    assert check_expansion(loader.get_single_node()) == 1 + 2 + (1 + 3) + (1 + 2 * 4)
    assert parse_yaml(shared) == {"a": [1, 2, 3], "b": [[1, 2, 3], [1, 2, 3]]}
    # just under the bound loads; one node more is refused
    items = MAX_NODES - 3  # the mapping, its key and the list
    assert len(parse_yaml("x: [" + ", ".join(["0"] * items) + "]")["x"]) == items
    with pytest.raises(Refused, match=str(MAX_NODES)):
        parse_yaml("x: [" + ", ".join(["0"] * (items + 1)) + "]")


def test_recursive_alias_and_deep_nesting_are_refused_with_their_line(tmp_path):
    path = _write(tmp_path, "train:\n  epochs: 2\nloop: &l [1, *l]\n")
    with pytest.raises(LrcnError, match=r"c\.yaml line 3: an alias refers to a collection") as e:
        load_config(path)
    _one_sentence(str(e.value))
    path = _write(tmp_path, "a: " + "[" * 200 + "]" * 200 + "\n")
    with pytest.raises(LrcnError, match=r"c\.yaml line 1: values are nested more than 50") as e:
        load_config(path)
    _one_sentence(str(e.value))


def test_train_with_a_billion_laughs_config_exits_2_in_one_line(tmp_path, capsys):
    path = _write(tmp_path, LAUGHS)
    status = cli.main(["train", "-c", str(path), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert status == 2, err
    assert str(path) in err and "Traceback" not in err and len(err) < 400
    assert not (tmp_path / "run").exists()


# --- duplicate keys --------------------------------------------------------------------------


def test_a_duplicate_key_is_refused_naming_the_key_and_both_lines(tmp_path):
    path = _write(tmp_path, "train:\n  epochs: 3\n  lr: 0.01\n  epochs: 5\n")
    with pytest.raises(LrcnError) as info:
        load_config(path)
    message = str(info.value)
    _one_sentence(message)
    assert message.startswith(f"{path} line 4: the key 'epochs' appears twice")
    assert "first on line 2" in message and "keep one of them" in message
    path = _write(tmp_path, "train:\n  epochs: 3\neval:\n  beam_size: 2\ntrain:\n  lr: 0.1\n")
    with pytest.raises(LrcnError, match=r"line 5: the key 'train' appears twice.*line 1"):
        load_config(path)
    with pytest.raises(LrcnError, match=r"override `eval.metrics=\{a: 1, a: 2\}`: the key 'a'"):
        load_config(None, ["eval.metrics={a: 1, a: 2}"])


def test_a_merge_key_is_an_ordinary_key_not_a_hidden_override(tmp_path):
    path = _write(tmp_path, "base: &b {epochs: 2}\ntrain:\n  <<: *b\n")
    with pytest.raises(LrcnError, match="unknown config key `base`"):
        load_config(path)
    assert parse_yaml("t:\n  <<: {epochs: 2}\n  epochs: 3\n") == {
        "t": {"<<": {"epochs": 2}, "epochs": 3}
    }


# --- YAML 1.2 core schema --------------------------------------------------------------------

YAML11_SURPRISES = ["yes", "no", "on", "off", "y", "n", "Yes", "NO", "On", "OFF", "1_000", "1:30",
                    "190:20:30", "2024-01-01", "0b101", "+0x10", ".5.", "=", "<<"]  # fmt: skip


@pytest.mark.parametrize("text", YAML11_SURPRISES)
def test_yaml_1_1_surprises_stay_strings(text):
    assert parse_yaml(f"v: {text}\n") == {"v": text}


def test_core_schema_numbers_booleans_and_null():
    document = "[010, +5, -0, 1e-3, 2.5E+2, .5, .inf, -.Inf, true, FALSE, ~, null, '010', ]"
    values = parse_yaml(document)
    assert values[:7] == [10, 5, 0, 0.001, 250.0, 0.5, float("inf")]
    assert values[7:] == [float("-inf"), True, False, None, None, "010"]
    assert all(type(v) is int for v in values[:3])


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=-(10**30), max_value=10**30), st.integers(0, 5), st.booleans())
def test_any_integer_written_in_decimal_reads_back(number, zeros, plus):
    sign = "-" if number < 0 else ("+" if plus else "")
    text = sign + "0" * zeros + str(abs(number))
    value = parse_yaml(f"v: {text}\n")["v"]
    assert type(value) is int and value == number


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 10**6), st.integers(0, 59), st.sampled_from(["_", ":"]))
def test_underscored_and_sexagesimal_numbers_stay_strings(high, low, separator):
    text = f"{high}{separator}{low:02d}" if separator == ":" else f"{high}_{low:03d}"
    assert parse_yaml(f"v: {text}\n") == {"v": text}


@pytest.mark.parametrize("text,decimal", [("0x10", 16), ("0o10", 8), ("0xff", 255)])
def test_hex_and_octal_integers_are_refused_saying_the_decimal_number(tmp_path, text, decimal):
    path = _write(tmp_path, f"train:\n  epochs: {text}\n")
    with pytest.raises(LrcnError) as info:
        load_config(path)
    message = str(info.value)
    _one_sentence(message)
    assert message.startswith(f"{path} line 2: {text} is ")
    assert f"write the decimal number ({decimal})" in message
    with pytest.raises(LrcnError, match=f"override `train.epochs={text}`: .*\\({decimal}\\)"):
        load_config(None, [f"train.epochs={text}"])
    # quoted, it is text (a folder may be called 0x10)
    assert load_config(None, [f"data.manifest='{text}'"]).data.manifest == text


def test_yes_no_on_off_are_not_booleans_for_config_keys(tmp_path):
    path = _write(tmp_path, "train:\n  amp: yes\n")
    with pytest.raises(LrcnError, match="`train.amp` must be true or false, got 'yes'"):
        load_config(path)
    with pytest.raises(LrcnError, match="`train.progress` must be true or false, got 'off'"):
        load_config(None, ["train.progress=off"])
    assert load_config(None, ["train.amp=false", "data.manifest=no"]).data.manifest == "no"
    path = _write(tmp_path, "train:\n  epochs: 010\n  lr: 1e-3\n")
    cfg = load_config(path)
    assert cfg.train.epochs == 10 and cfg.train.lr == 0.001


def test_huge_integers_are_one_sentence_not_a_traceback(tmp_path):
    with pytest.raises(LrcnError, match="`train.epochs` is an integer of 400 digits") as info:
        load_config(None, ["train.epochs=" + "9" * 400])  # was OverflowError
    assert load_config(None, ["train.epochs=" + "9" * 18]).train.epochs == int("9" * 18)
    with pytest.raises(LrcnError, match=r"is 9{19}, which cannot work \(more than 64 bits\)"):
        load_config(None, ["train.epochs=" + "9" * 19])
    assert len(str(info.value)) < 300
    path = _write(tmp_path, "train:\n  epochs: " + "9" * 5000 + "\n")
    with pytest.raises(LrcnError, match=r"c\.yaml line 2: an integer of 5000 digits"):
        load_config(path)  # was ValueError (Python reads at most 4300 digits)


# --- messages quote a short prefix of a value ----------------------------------------------


def test_messages_cut_long_values_keys_and_overrides(tmp_path):
    from lrcn.build import check_config  # train.monitor is checked against the task's metrics

    with pytest.raises(LrcnError) as info:
        check_config(load_config(None, ["train.monitor=" + "x" * 5000]))
    message = str(info.value)
    assert "(5000 characters)" in message
    assert len(message) < 400 and "x" * 81 not in message
    with pytest.raises(LrcnError) as info:
        load_config(None, ["train.epochs=[" + ", ".join(["1"] * 3000) + "]"])
    assert len(str(info.value)) < 400 and "must be an integer" in str(info.value)
    path = _write(tmp_path, "train:\n  " + "k" * 1000 + ": 1\n")  # YAML keys: 1024 at most
    with pytest.raises(LrcnError) as info:
        load_config(path)
    assert "k" * 81 not in str(info.value) and "(1006 characters)" in str(info.value)
    with pytest.raises(LrcnError) as info:
        load_config(None, ["y" * 3000])
    assert "y" * 81 not in str(info.value) and "not of the form key=value" in str(info.value)
    path = _write(tmp_path, "task: " + "t" * 3000 + "\n")
    with pytest.raises(LrcnError) as info:
        check_config(load_config(path))  # the task names are the task registry's
    assert "t" * 81 not in str(info.value) and "choose one of" in str(info.value)


# --- a run's saved config.yaml reads back as written ---------------------------------------


def test_a_saved_config_reads_back_equal_even_with_strings_that_look_like_numbers(tmp_path):
    cfg = load_config(SHAPES, ["train.epochs=3", "train.lr=0.0005"])
    cfg.data.manifest = "1e5"  # a float for YAML 1.2, a string for YAML 1.1
    cfg.data.features = "yes"  # a bool for YAML 1.1
    cfg.train.init_from = "0x10"
    cfg.encoder.weights = "010"
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
    # and a YAML 1.1 reader (PyYAML's safe_load) reads the same strings
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text(encoding="utf-8"))
    assert Config().to_dict().keys() == saved.keys()
    assert (saved["data"]["manifest"], saved["data"]["features"]) == ("1e5", "yes")
    assert (saved["train"]["init_from"], saved["encoder"]["weights"]) == ("0x10", "010")


def test_check_config_cuts_long_names_too():
    from lrcn.build import build_attribute_dataset, check_config

    with pytest.raises(LrcnError) as info:
        check_config(load_config(None, ["encoder.name=" + "e" * 3000]))
    assert "e" * 81 not in str(info.value) and "(3000 characters)" in str(info.value)
    with pytest.raises(LrcnError) as info:
        build_attribute_dataset(load_config(None, ["data.dataset=" + "d" * 3000]), "train")
    assert "d" * 81 not in str(info.value) and "(3000 characters)" in str(info.value)
