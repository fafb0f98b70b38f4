"""Caption tokenizer shared by training and scoring.

It mirrors coco-caption's PTB tokenizer (Stanford PTBTokenizer with ``-lowerCase``, punctuation
tokens dropped) in pure Python: nltk's ``TreebankWordTokenizer`` needs no downloaded data, and on
the coco-caption demo set it gives BLEU identical to the Java tokenizer (tests/test_tokenizer_coco.py).
"""

from __future__ import annotations

from functools import lru_cache

from nltk.tokenize import TreebankWordTokenizer

# coco-caption's pycocoevalcap/tokenizer/ptbtokenizer.py PUNCTUATIONS, plus the raw brackets that
# nltk leaves as they are where Java writes -LRB- and friends.
PUNCTUATION = frozenset(
    [
        "''",
        "'",
        "``",
        "`",
        "-LRB-",
        "-RRB-",
        "-LCB-",
        "-RCB-",
        ".",
        "?",
        "!",
        ",",
        ":",
        "-",
        "--",
        "...",
        ";",
        "(",
        ")",
        "{",
        "}",
        "[",
        "]",
        "-lrb-",
        "-rrb-",
        "-lcb-",
        "-rcb-",
        '"',
    ]
)


@lru_cache(maxsize=1)
def _treebank() -> TreebankWordTokenizer:
    return TreebankWordTokenizer()


def tokenize(caption: str) -> list[str]:
    """Split a caption into lowercase word tokens with punctuation removed.

    Args:
        caption: raw caption text, e.g. ``"A dog runs, fast!"``.

    Returns:
        Tokens, e.g. ``["a", "dog", "runs", "fast"]``.
    """
    text = " ".join(caption.lower().split())  # newlines and tabs end PTB lines; fold them
    return [tok for tok in _treebank().tokenize(text) if tok not in PUNCTUATION]


def detokenize(tokens: list[str]) -> str:
    """Join tokens back into a caption string (space separated, as scorers expect)."""
    return " ".join(tokens)
