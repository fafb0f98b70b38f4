"""Ensembles (lrcn.ensemble): one model, copies of a model, and what members must share."""

import copy
import json
import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from lrcn import decoding, predict
from lrcn.checkpoint import load_checkpoint, save_checkpoint
from lrcn.cli import main
from lrcn.decoding_controls import Controls, decode_with
from lrcn.ensemble import Ensemble, EnsembleDecoder, mean_log_probs
from lrcn.errors import LrcnError
from lrcn.models.decoder import LSTMDecoder

START, END = 1, 2


class _Captioner(torch.nn.Module):
    """encode + decoder, as lrcn's captioners have them."""

    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder

    def encode(self, batch):
        return batch["images"]


def _decodings(decoder, features):
    out = {"greedy": decoding.greedy(decoder, features, START, END, max_length=10)}
    for beam in (2, 4):
        out[beam] = decoding.beam_search(decoder, features, START, END, max_length=10,
                                         beam_size=beam, length_penalty=1.0)  # fmt: skip
    out["blocked"] = decode_with(decoder, features, START, END, max_length=10, beam_size=3,
                                 controls=Controls(no_repeat_ngram=2))  # fmt: skip
    return out


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), copies=st.integers(1, 3))
def test_an_ensemble_of_copies_of_one_model_is_that_model_bit_for_bit(seed, copies):
    torch.manual_seed(seed)
    decoder = LSTMDecoder(20, 6, 8, 12).eval()
    features = torch.randn(5, 6)
    ensemble = Ensemble([_Captioner(copy.deepcopy(decoder)) for _ in range(copies)]).eval()
    packed = ensemble.encode({"images": features})
    assert _decodings(ensemble.decoder, packed) == _decodings(decoder, features)
    # the step's log-probabilities themselves: equal members give exp(0) = 1 in every term of
    # the mean, so the average is exact (no rounding at all), not merely close
    state, alone = ensemble.decoder.init_state(packed), decoder.init_state(features)
    tokens = torch.full((5,), START)
    for _ in range(4):
        (mixed, state), (single, alone) = (
            ensemble.decoder.step(tokens, state),
            decoder.step(tokens, alone),
        )
        assert torch.equal(mixed, single)
        tokens = single.argmax(-1)


def test_an_ensemble_averages_probabilities_and_unpacks_members_of_other_shapes():
    torch.manual_seed(0)
    a, b = torch.log_softmax(torch.randn(3, 7), -1), torch.log_softmax(torch.randn(3, 7), -1)
    mixed = mean_log_probs([a, b])
    expected = torch.log((a.exp() + b.exp()) / 2)
    # log of a mean of two exps, computed two ways in float32: a few ulps of values below ~5
    torch.testing.assert_close(mixed, expected, rtol=0, atol=1e-5)
    assert torch.equal(mean_log_probs([a]), a)
    # all -inf stays -inf (a token every member forbids), never NaN
    minus = torch.full((1, 3), float("-inf"))
    assert torch.equal(mean_log_probs([minus, minus]), minus)
    decoder = EnsembleDecoder([])
    decoder.shapes = [torch.Size([4]), torch.Size([2, 3])]
    parts = decoder.unpack(torch.arange(20.0).view(2, 10))
    assert parts[0].shape == (2, 4) and parts[1].shape == (2, 2, 3)
    assert torch.equal(parts[1][1], torch.arange(14.0, 20.0).view(2, 3))


def _copy_with_swapped_words(run, path):
    payload = load_checkpoint(run / "checkpoints" / "best.pt")
    itos = payload["vocab"]["itos"]
    itos[-1], itos[-2] = itos[-2], itos[-1]
    save_checkpoint(path, payload)
    return path


def test_members_with_different_vocabularies_or_tasks_are_refused_naming_both(
    tiny_shapes_run, tmp_path, monkeypatch
):
    other = _copy_with_swapped_words(tiny_shapes_run, tmp_path / "other.pt")
    best = tiny_shapes_run / "checkpoints" / "best.pt"
    with pytest.raises(LrcnError, match="different vocabularies") as info:
        predict.load_models([best, other])
    assert str(best) in str(info.value) and str(other) in str(info.value)
    load = predict.load_model

    same = tmp_path / "same.pt"  # the same vocabulary: the inputs are what differs
    shutil.copy(best, same)

    def changed(key, value):
        def load_changed(path, **kwargs):
            model, cfg, payload = load(path, **kwargs)
            if str(path) in (str(other), str(same)):
                cfg = copy.deepcopy(cfg)
                section, name = key.split(".") if "." in key else (None, key)
                setattr(getattr(cfg, section) if section else cfg, name, value)
            return model, cfg, payload

        return load_changed

    for key, value, what in [
        ("task", "video_caption", r"different tasks \(caption, video_caption\)"),
        ("data.image_size", 32, r"different inputs \(data.image_size"),
        ("encoder.name", "resnet18", r"different inputs \(data.image_size"),
    ]:
        monkeypatch.setattr(predict, "load_model", changed(key, value))
        with pytest.raises(LrcnError, match=what):
            predict.load_models([best, other if key == "task" else same])


def test_caption_attention_with_an_ensemble_is_one_sentence(tiny_shapes_run, tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.new("RGB", (64, 64), (20, 200, 30)).save(image)
    code = main(["caption", str(image), "--checkpoint", str(tiny_shapes_run), "--checkpoint",
                 str(tiny_shapes_run), "--attention", str(tmp_path / "maps")])  # fmt: skip
    assert code == 2
    assert "--attention with 2 checkpoints" in capsys.readouterr().err
    assert main(["caption", str(image), "--checkpoint", str(tiny_shapes_run), "--checkpoint",
                 str(tiny_shapes_run)]) == 0  # fmt: skip


def test_lrcn_evaluate_of_two_copies_equals_the_model_and_records_both(tiny_shapes_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_shapes_run, run)
    copy_pt = tmp_path / "copy.pt"
    shutil.copy(run / "checkpoints" / "best.pt", copy_pt)
    common = ["eval.bootstrap=0", "eval.reference_points=false"]
    assert (
        main(["evaluate", "--checkpoint", str(run), "--out-dir", str(tmp_path / "one"), *common])
        == 0
    )
    args = ["evaluate", "--checkpoint", str(run), "--checkpoint", str(copy_pt)]
    assert main([*args, "--out-dir", str(tmp_path / "two"), *common]) == 0
    one = json.loads((tmp_path / "one" / "test_captions.json").read_text())
    two = json.loads((tmp_path / "two" / "test_captions.json").read_text())
    assert one == two and len(one) == 32
    manifest = json.loads((tmp_path / "two" / "test_manifest.json").read_text())
    assert [m["path"] for m in manifest["members"]] == [
        str((run / "checkpoints" / "best.pt").resolve()),
        str(copy_pt.resolve()),
    ]
    assert manifest["settings"]["ensemble"] == ["copy.pt"]  # from the folder's parent
    single = json.loads((tmp_path / "one" / "test_manifest.json").read_text())
    assert "members" not in single and "ensemble" not in single["settings"]
    assert "eval.no_repeat_ngram" not in single["settings"]  # controls off: not recorded


def test_lrcn_classify_refuses_two_checkpoints(tiny_shapes_run, tmp_path, capsys):
    code = main(["classify", str(tmp_path / "v.mp4"), "--checkpoint", str(tiny_shapes_run),
                 "--checkpoint", str(tiny_shapes_run)])  # fmt: skip
    assert code == 2
    assert "lrcn classify takes one --checkpoint, not 2" in capsys.readouterr().err
