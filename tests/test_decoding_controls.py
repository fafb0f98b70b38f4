"""Decoding controls (lrcn.decoding_controls): n-gram blocking, repetition penalty, diverse beams."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lrcn import decoding
from lrcn.config import load_config
from lrcn.decoding_controls import (
    Controls,
    controlled_beam_search,
    controlled_greedy,
    decode_with,
)
from lrcn.errors import LrcnError
from lrcn.models.decoder import LSTMDecoder

START, END = 1, 2


class TableDecoder:
    """A tiny StepDecoder: the next token's logits are a table row of the last token plus a
    projection of the features, so it walks in cycles (the repeats the controls act on)."""

    def __init__(self, V: int, D: int, seed: int, sharpness: float) -> None:
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(V, V, generator=g) * sharpness
        self.proj = torch.randn(D, V, generator=g)

    def init_state(self, features):
        return {"bias": features @ self.proj}

    def step(self, tokens, state):
        return torch.log_softmax(self.table[tokens] + state["bias"], -1), state

    def reorder_state(self, state, index):
        return {"bias": state["bias"][index]}


def _ngrams(caption, n):
    return [tuple(caption[i : i + n]) for i in range(len(caption) - n + 1)]


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    V=st.integers(5, 12),
    n=st.integers(1, 3),
    beam=st.sampled_from([1, 2, 3, 4]),
    groups=st.sampled_from([1, 2]),
    penalty=st.sampled_from([1.0, 1.5]),
)
def test_no_repeat_ngram_leaves_no_caption_with_a_repeated_ngram(seed, V, n, beam, groups, penalty):
    if beam % groups:
        groups = 1
    decoder = TableDecoder(V, 3, seed, sharpness=3.0)
    features = torch.randn(4, 3, generator=torch.Generator().manual_seed(seed))
    controls = Controls(no_repeat_ngram=n, repetition_penalty=penalty, beam_groups=groups,
                        diversity_strength=0.5)  # fmt: skip
    captions = decode_with(decoder, features, START, END, max_length=14, beam_size=beam,
                           controls=controls)  # fmt: skip
    assert len(captions) == 4
    for caption in captions:
        grams = _ngrams(caption, n)
        assert len(grams) == len(set(grams)), caption
        assert START not in caption and decoding.PAD_ID not in caption and END not in caption


def test_the_table_decoder_repeats_without_blocking():
    """The property above is not vacuous: unblocked, these decoders do repeat bigrams."""
    repeated = 0
    for seed in range(20):
        decoder = TableDecoder(8, 3, seed, sharpness=3.0)
        features = torch.randn(4, 3, generator=torch.Generator().manual_seed(seed))
        for caption in decoding.greedy(decoder, features, START, END, max_length=14):
            repeated += len(_ngrams(caption, 2)) != len(set(_ngrams(caption, 2)))
    assert repeated > 10


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), beam=st.integers(1, 5), penalty=st.sampled_from([0.0, 1.0]))
def test_controls_off_is_todays_decoding_and_one_group_is_beam_search(seed, beam, penalty):
    torch.manual_seed(seed)
    decoder = LSTMDecoder(15, 6, 8, 12).eval()
    features = torch.randn(5, 6)
    kwargs = dict(max_length=9, beam_size=beam, length_penalty=penalty)
    today = decoding.decode(decoder, features, START, END, **kwargs)
    assert decode_with(decoder, features, START, END, **kwargs) == today
    assert decode_with(decoder, features, START, END, controls=Controls(), **kwargs) == today
    # the controlled search itself, one group and nothing reshaped: the same search bit for bit
    ran = controlled_beam_search(decoder, features, START, END, controls=Controls(), **kwargs)
    if beam > 1:  # beam_search hands beam 1 to greedy; the controlled search runs it as a beam
        assert ran == today
    # a diversity strength without groups is off too
    off = Controls(diversity_strength=3.0)
    assert decode_with(decoder, features, START, END, controls=off, **kwargs) == today


def test_controlled_greedy_with_nothing_reshaped_is_greedy():
    torch.manual_seed(3)
    decoder = LSTMDecoder(15, 6, 8, 12).eval()
    features = torch.randn(7, 6)
    greedy = decoding.greedy(decoder, features, START, END, max_length=10)
    ran = controlled_greedy(decoder, features, START, END, max_length=10, controls=Controls())
    assert ran == greedy


def test_repetition_penalty_is_ctrls_rule_on_log_probabilities():
    """Penalty 2 doubles an already generated token's log-probability, then renormalises: with
    a decoder that always prefers token 3 slightly over token 4, the second step picks 4."""
    from lrcn.decoding_controls import _reshaped

    log_probs = torch.log_softmax(torch.tensor([[0.0, 0.0, -5.0, 1.0, 0.9]]), -1)
    history = torch.tensor([[3]])
    out = _reshaped(log_probs, history, Controls(repetition_penalty=2.0), END)
    expected = log_probs.clone()
    expected[0, 3] *= 2.0
    # one log_softmax of the same row: equal up to float32 rounding of that one computation
    torch.testing.assert_close(out, torch.log_softmax(expected, -1), rtol=0, atol=1e-6)
    assert int(out.argmax()) == 4


def _first_words(decoder, features, controls):
    """Each beam's first word: the tokens fed to the decoder's second step, (B, k)."""
    fed = []
    step = decoder.step

    def spy(tokens, state):
        fed.append(tokens.clone())
        return step(tokens, state)

    decoder.step = spy
    controlled_beam_search(decoder, features, START, END, max_length=3, beam_size=2,
                           controls=controls)  # fmt: skip
    return fed[1].view(features.shape[0], 2)


def test_diverse_groups_choose_different_first_words():
    """Two groups of one beam: without diversity both are greedy and start alike; with a large
    strength the second group's first word is never the first group's."""
    features = torch.randn(6, 3, generator=torch.Generator().manual_seed(5))
    same = _first_words(TableDecoder(10, 3, 7, 1.0), features, Controls(beam_groups=2))
    assert bool((same[:, 0] == same[:, 1]).all())
    greedy = decoding.greedy(TableDecoder(10, 3, 7, 1.0), features, START, END, max_length=1)
    assert same[:, 0].tolist() == [c[0] for c in greedy]
    apart = _first_words(
        TableDecoder(10, 3, 7, 1.0), features, Controls(beam_groups=2, diversity_strength=100.0)
    )
    assert apart[:, 0].tolist() == same[:, 0].tolist()  # group 1 has no earlier group
    assert bool((apart[:, 0] != apart[:, 1]).all())


@pytest.mark.parametrize(
    ("controls", "beam", "key"),
    [
        (Controls(no_repeat_ngram=-1), 1, "eval.no_repeat_ngram"),
        (Controls(repetition_penalty=0.0), 1, "eval.repetition_penalty"),
        (Controls(repetition_penalty=-1.0), 1, "eval.repetition_penalty"),
        (Controls(beam_groups=2), 3, "eval.beam_groups"),
    ],
)
def test_bad_controls_are_one_sentence_naming_the_key(controls, beam, key):
    decoder = LSTMDecoder(15, 6, 8, 12).eval()
    with pytest.raises(LrcnError, match=key.replace(".", r"\.")) as info:
        decode_with(decoder, torch.randn(2, 6), START, END, max_length=5, beam_size=beam,
                    controls=controls)  # fmt: skip
    assert "\n" not in str(info.value) and str(info.value).endswith(").")


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("eval.no_repeat_ngram=-1", "eval.no_repeat_ngram"),
        ("eval.repetition_penalty=0", "eval.repetition_penalty"),
        ("eval.beam_groups=0", "eval.beam_groups"),
        ("eval.diversity_strength=-1", "eval.diversity_strength"),
    ],
)
def test_config_refuses_bad_controls_naming_the_key(override, key):
    with pytest.raises(LrcnError, match=f"`{key}`"):
        load_config(None, [override])


def test_config_refuses_groups_not_dividing_the_beam_and_takes_off_values():
    with pytest.raises(LrcnError, match="`eval.beam_groups` 2 does not divide `eval.beam_size` 3"):
        load_config(None, ["eval.beam_size=3", "eval.beam_groups=2"])
    cfg = load_config(None, ["eval.no_repeat_ngram=0", "eval.beam_size=4", "eval.beam_groups=2"])
    assert Controls.from_config(cfg.eval) == Controls(beam_groups=2)
    assert Controls.from_config(load_config(None, []).eval).off


def _run_with_controls(tiny_shapes_run, tmp_path):
    """A copy of the tiny run whose saved config decodes with n-gram blocking."""
    import shutil

    from lrcn.checkpoint import load_checkpoint, save_checkpoint

    run = tmp_path / "run"
    shutil.copytree(tiny_shapes_run, run)
    for name in ("best.pt", "last.pt"):
        path = run / "checkpoints" / name
        if path.exists():
            payload = load_checkpoint(path)
            payload["config"]["eval"]["no_repeat_ngram"] = 2
            save_checkpoint(path, payload)
    return run


def test_export_records_the_controls_and_onnx_refuses_them(tiny_shapes_run, tmp_path, capsys):
    import json

    from lrcn.cli import main

    run = _run_with_controls(tiny_shapes_run, tmp_path)
    assert main(["export", str(run), "--out", str(tmp_path / "onnx"), "--onnx"]) == 2
    err = capsys.readouterr().err
    assert "decoding controls" in err and "export without --onnx" in err
    assert not (tmp_path / "onnx" / "config.json").exists()  # refused before anything is written
    assert main(["export", str(run), "--out", str(tmp_path / "folder")]) == 0
    decoding_block = json.loads((tmp_path / "folder" / "config.json").read_text())["decoding"]
    assert decoding_block["no_repeat_ngram"] == 2 and decoding_block["beam_groups"] == 1


def test_lrcn_caption_takes_the_controls_and_refuses_bad_ones(tiny_shapes_run, tmp_path, capsys):
    from PIL import Image

    from lrcn.cli import main

    image = tmp_path / "a.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(image)
    base = ["caption", str(image), "--checkpoint", str(tiny_shapes_run)]
    assert main([*base, "--beam-size", "3", "--set", "eval.no_repeat_ngram=1"]) == 0
    words = capsys.readouterr().out.strip().split("\t")[1].split()
    assert len(words) == len(set(words))  # n = 1: no word twice
    assert main([*base, "--beam-size", "3", "--set", "eval.beam_groups=2"]) == 2
    assert "`eval.beam_groups` 2 does not divide `eval.beam_size` 3" in capsys.readouterr().err


@pytest.mark.parametrize("variant", ["show_tell", "transformer_vector"])
def test_controlled_decoding_of_a_batch_equals_one_image_at_a_time(variant):
    """Batched like lrcn.decoding: every row's controls see only that row's history, for an LSTM
    state and for a transformer's growing key/value cache (reordered on its own batch axis)."""
    torch.manual_seed(6)
    decoder = LSTMDecoder(20, 6, 8, 16, variant=variant).eval()
    features = torch.randn(6, 6)
    for beam, controls in [
        (1, Controls(no_repeat_ngram=2, repetition_penalty=1.3)),
        (4, Controls(no_repeat_ngram=2)),
        (4, Controls(beam_groups=2, diversity_strength=0.7, repetition_penalty=1.2)),
    ]:
        kwargs = dict(max_length=10, beam_size=beam, length_penalty=1.0, controls=controls)
        batched = decode_with(decoder, features, START, END, **kwargs)
        single = [
            decode_with(decoder, features[i : i + 1], START, END, **kwargs)[0] for i in range(6)
        ]
        assert batched == single, controls
