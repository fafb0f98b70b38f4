from lrcn.text.tokenize import tokenize
from lrcn.text.vocab import Vocabulary


def test_tokenize_lowercases_and_drops_punctuation():
    assert tokenize("A red Circle, to the left of a BOX.") == [
        "a",
        "red",
        "circle",
        "to",
        "the",
        "left",
        "of",
        "a",
        "box",
    ]
    assert tokenize("two shapes: a dog's (big) ball!") == [
        "two",
        "shapes",
        "a",
        "dog",
        "'s",
        "big",
        "ball",
    ]
    assert tokenize("  \tspaces\nand tabs ") == ["spaces", "and", "tabs"]


def test_vocabulary_round_trip(tmp_path):
    captions = [tokenize(c) for c in ["a red circle.", "a blue square", "a red box", "rare word"]]
    vocab = Vocabulary.build(captions, min_count=2)
    assert vocab.itos[:4] == ["<pad>", "<start>", "<end>", "<unk>"]
    assert "a" in vocab and "red" in vocab and "rare" not in vocab
    ids = vocab.encode(["a", "red", "rare"])
    assert ids[0] == vocab.start_id and ids[-1] == vocab.end_id and ids[3] == vocab.unk_id
    assert vocab.decode(ids) == ["a", "red", "<unk>"]
    assert vocab.decode([vocab.start_id, vocab.stoi["a"], vocab.end_id, vocab.stoi["red"]]) == ["a"]
    vocab.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json") == vocab


def test_vocabulary_load_errors_are_one_sentence(tmp_path):
    import pytest

    from lrcn.errors import LrcnError

    with pytest.raises(LrcnError, match="not found"):
        Vocabulary.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(LrcnError, match="bad.json"):
        Vocabulary.load(tmp_path / "bad.json")
