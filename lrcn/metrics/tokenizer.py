"""Tokenizing captions before scoring, as coco-caption does.

``"ptb"`` is coco-caption's Java PTBTokenizer, ``"python"`` its pure-Python equivalent
`lrcn.metrics.ptb.ptb_tokenize` (the same tokens, brackets, periods and quotes included),
``"none"`` splits on whitespace, and ``"auto"`` picks ``"ptb"`` when Java and pycocoevalcap are
present. Training's tokenizer (`lrcn.text.tokenize`) is a separate function.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from lrcn.config import TOKENIZERS
from lrcn.errors import LrcnError
from lrcn.metrics import java
from lrcn.metrics.ptb import coco_tokens, ptb_tokenize_lines
from lrcn.metrics.registry import Tokens

# Characters the Java PTBTokenizer treats as line ends (checked with its jar); with
# -preserveLines a caption holding one would become two output lines and shift every caption
# after it. pycocoevalcap only replaces "\n".
_LINE_BREAKS = str.maketrans({ch: " " for ch in "\r\n\x0b\x0c\u2028\u2029"})


def lone_surrogate(text: str) -> str | None:
    """The first lone surrogate in ``text`` as its JSON escape (``"\\ud83d"``), or None.

    Such a string cannot be written as UTF-8 (for Java) and is no character at all; JSON's
    ``"\\ud83d"`` escape without its low half is the usual way one gets in.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"\\u{ord(text[err.start]):04x}"
    return None


def resolve_tokenizer(tokenizer: str) -> str:
    """Return the tokenizer that will run: ``"auto"`` becomes ``"ptb"`` or ``"python"``.

    Raises:
        LrcnError: unknown name, or ``"ptb"`` asked for without Java or pycocoevalcap.
    """
    if tokenizer not in TOKENIZERS:
        raise LrcnError(f"Unknown tokenizer {tokenizer!r}; choose one of {', '.join(TOKENIZERS)}.")
    ptb_ready = java.java_available() and java.pycocoevalcap_available()
    if tokenizer == "auto":
        return "ptb" if ptb_ready else "python"
    if tokenizer == "ptb" and not ptb_ready:
        raise LrcnError(
            "tokenizer='ptb' needs `java` on PATH and pycocoevalcap installed "
            "(pip install 'lrcn[coco]'); install them or use tokenizer='python'."
        )
    return tokenizer


def jar_lines(captions: Sequence[str]) -> list[str]:
    """coco-caption's PTBTokenizer jar run once on all captions: its output line per caption.

    We run the command ourselves, rather than through ``PTBTokenizer.tokenize``, to check its
    exit status, keep its progress line off the user's terminal and write the input file to
    a temporary folder instead of the installed package.
    """
    from pycocoevalcap.tokenizer import ptbtokenizer

    if not captions:
        return []
    text = "\n".join(c.translate(_LINE_BREAKS) for c in captions)
    with tempfile.TemporaryDirectory(prefix="lrcn-ptb-") as folder:
        source = Path(folder) / "captions.txt"
        try:
            source.write_bytes(text.encode())
        except UnicodeEncodeError as err:  # callers check first; this guards direct calls
            bad = lone_surrogate(text[err.start : err.end])
            raise LrcnError(
                f"Caption {text.count(chr(10), 0, err.start)} holds a lone surrogate ({bad}), "
                "which is not text; write the whole surrogate pair or the character itself."
            ) from err
        command = [
            "java", "-cp", ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR,
            "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase", str(source),
        ]  # fmt: skip
        try:
            done = subprocess.run(
                command, cwd=Path(ptbtokenizer.__file__).resolve().parent, capture_output=True
            )
        except OSError as err:
            raise LrcnError(
                f"coco-caption's Java PTBTokenizer could not start ({err}); "
                "check `java -version` or use tokenizer='python'."
            ) from err
    lines = done.stdout.decode().split("\n")
    if done.returncode != 0 or len(lines) < len(captions):
        reason = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise LrcnError(
            f"coco-caption's Java PTBTokenizer failed ({reason[0]}); "
            "check `java -version` or use tokenizer='python'."
        )
    return lines[: len(captions)]


def _ptb_tokenize(captions: Sequence[str]) -> list[Tokens]:
    """coco-caption's PTBTokenizer: the same jar, command and punctuation filter."""
    return [coco_tokens(line) for line in jar_lines(captions)]


def tokenize_captions(captions: Sequence[str], tokenizer: str = "auto") -> tuple[list[Tokens], str]:
    """Tokenize captions for scoring, all in one call (one JVM start for ``"ptb"``).

    Args:
        captions: raw caption strings.
        tokenizer: ``"auto"``, ``"ptb"``, ``"python"`` or ``"none"`` (whitespace split).

    Returns:
        (token lists in input order, the tokenizer that ran).
    """
    used = resolve_tokenizer(tokenizer)
    if used == "ptb":
        return _ptb_tokenize(captions), used
    if used == "python":
        return [list(tokens) for tokens in ptb_tokenize_lines(captions)], used
    return [c.split() for c in captions], used
