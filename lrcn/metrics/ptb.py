"""coco-caption's PTB tokenization in pure Python: Stanford PTBTokenizer 3.4.1 as the jar runs it.

coco-caption runs ``edu.stanford.nlp.process.PTBTokenizer -preserveLines -lowerCase`` and then
drops the tokens in its ``PUNCTUATIONS`` list. That list holds the upper-case bracket tokens
(``-LRB-``) which never match after lower-casing, so coco keeps ``-lrb- -rrb- -lsb- -rsb- -lcb-
-rcb-``; the tokenizer splits a word's final period off (``sits.`` -> ``sits .``) except after
abbreviations and before ``, ; :``; curly quotes become LaTeX quotes and dashes ``--``, both
dropped. This module reproduces those decisions, quirks included, so that the ``python``
tokenizer gives coco-caption's numbers without Java (tests/test_tokenizer_coco.py compares the
two on Flickr8k and on a list of constructs).

How it works: like the jar's lexer, at each position every rule is tried and the longest match
wins (a rule's trailing context counts toward its length), ties going to the earlier rule. Each
rule is our own regular expression of the behaviour measured with the jar; only the tokens that
survive coco's punctuation filter need to be right, so rules whose outputs are all filtered are
merged. Training tokenization (`lrcn.text.tokenize`) is a different, older function and is
unchanged.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from functools import lru_cache

# coco-caption's pycocoevalcap/tokenizer/ptbtokenizer.py PUNCTUATIONS, exactly
COCO_PUNCTUATION = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-"]
    + [".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

_L = r"[^\W\d_\u00B2\u00B3\u00B9\u00BC-\u00BE\u2150-\u218F\U00010000-\U0010FFFF]"  # letter
_LETTERS = rf"(?:{_L}|[\u00AD\u0300-\u036F])(?:{_L}|[\u00AD\u0300-\u036F]|\d)*"
_WORD = rf"{_LETTERS}(?:[.!?]{_LETTERS})*"  # "co.runs" is one word to the jar
_LD = rf"(?:{_L}|\d)"
_APOS = r"(?:['\u0092\u2019]|&apos;)"
_APOSX = r"(?:['\u0092\u2019\u0091\u2018\u201B]|&apos;)"  # also found inside words
_SPACE = r"[ \t\u00A0\u2000-\u200A\u3000]"
_ACRO = r"(?:[A-Za-z](?:\.[A-Za-z])+|(?i:canada|sino|korean|eu|japan|non)-U\.S|U\.S\.-(?:U\.K|U\.S\.S\.R))"
# Abbreviations that keep their period. Upper-case first letters in brackets are case-sensitive
# in the jar (``Ark.`` keeps it, ``ark.`` does not); the rest ignore case.
_ABBREV1 = (
    r"(?:(?i:jan|feb|mar|apr|jun|jul|aug|sept?|oct|nov|dec|mon|tues?|wed|thurs|thu|fri"
    r"|ala|ariz|calif|colo|conn|ct|dak|fla|ga|ind|kans?|ky|md|mich|minn|mo|mont|neb|nev|okla"
    r"|penn|tenn|va|vt|wisc?|wyo|inc|cos?|corp|pp?t[ye]s?|ltd|plc|bancorp|dept|bhd|assn|univ"
    r"|intl|sys|tel|est|ext|sq|ft|ph|prop|jr|sr|bros|(?:ed|ph)\.d|blvd|rd|esq|etc|al|seq)"
    r"|A(?i:z|rk)|D(?i:el)|I(?i:ll)|L(?i:a)|M(?i:ass|iss)|O(?i:re)|P(?i:a)|T(?i:ex)|W(?i:ash))\."
)
_ABBREV2 = (
    r"(?:(?i:mrs?|ms|drs?|profs?|sens?|reps?|attys?|lt|col|gen|messrs|govs?|adm|rev|maj|sgt"
    r"|cpl|pvt|mt|capt|ste?|ave|pres|lieut|hon|brig|co?mdr|pfc|spc|supts?|det|vs|alex|wm|jos"
    rf"|cie|a\.k\.a|cf|treas|invt|elec|natl|m[ft]g)|M(?i:iss)|{_ACRO}|[A-Za-z])\."
)
_HTHING = r"[A-Za-z0-9][A-Za-z0-9.,\u00AD]*(?:-(?:[A-Za-z0-9\u00AD]+|" + _ACRO + r"\.))+"
_THING = (
    rf"(?:[dDoOlL]{_APOSX}{_LD})?{_LD}+(?:[-_\u058A\u2010\u2011](?:[dDoOlL]{_APOSX}{_LD})?{_LD}+)*"
)
_THINGA = r"[A-Z]+(?:(?:[+&]|(?i:&amp;))[A-Z]+)+"
_INSENTP = r"[,;:]"
_SPACENL = r"[ \t\n\u00A0\u2000-\u200A\u3000]"
# Words that start a sentence after a one-letter abbreviation: "x S. The dog" is "x s . the dog"
# to the jar (its period a sentence end), "x S. Dog" keeps "s."; the first letter must be upper
# case, the rest may be either (measured with the jar on 13,000 caption words)
_SENTENCE_WORDS = (
    "About According Additionally After An As At A But Earlier He Her Here However If In It Last"
    " Many More Mr\\. Ms\\. Now Once One Other Our She Since So Some Such That Their Then There"
    " These They This The We What When While Yet You"
).split()
_SENTENCE_START = "(?:" + "|".join(f"{w[0]}(?i:{w[1:]})" for w in _SENTENCE_WORDS) + ")"
_REDAUX = rf"{_APOS}(?:[msdMSD]|(?i:re|ve|ll))"

# LaTeX quotes, as the jar writes them with -lowerCase (ptb3Escaping's latexQuotes)
_LATEX = str.maketrans(
    {
        "\u0092": "'",
        "\u2019": "'",
        "\u203a": "'",
        "\u0091": "`",
        "\u2018": "`",
        "\u201b": "`",
        "\u2039": "`",
        "\u0093": "``",
        "\u201c": "``",
        "\u00ab": "``",
        "\u0094": "''",
        "\u201d": "''",
        "\u00bb": "''",
    }
)
_FRACTIONS = {
    "\u00bc": "1/4",
    "\u00bd": "1/2",
    "\u00be": "3/4",
    "\u2153": "1/3",
    "\u2154": "2/3",
    "\u2155": "1/5",
    "\u2156": "2/5",
    "\u2157": "3/5",
    "\u2158": "4/5",
    "\u2159": "1/6",
    "\u215a": "5/6",
    "\u215b": "1/8",
    "\u215c": "3/8",
    "\u215d": "5/8",
    "\u215e": "7/8",
}
_CURRENCY = {"\u00a2": "cents", "\u00a3": "#", "\u0080": "$", "\u20a0": "$", "\u20ac": "$"}
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}


def _same(text: str) -> list[str]:
    return [text]


def _drop_soft_hyphens(text: str) -> list[str]:
    return [text.replace("\u00ad", "")]


def _quote(text: str) -> list[str]:
    return [text.replace("&apos;", "'").translate(_LATEX)]


def _hyphens(text: str) -> list[str]:
    return ["--" if 3 <= len(text) <= 4 else text]


def _smiley(text: str) -> list[str]:
    return [text.replace("(", "-lrb-").replace(")", "-rrb-")]


def _entity(text: str) -> list[str]:
    return [{"&lt;": "<", "&gt;": ">", "&amp;": "&"}.get(text.lower(), text)]


# (main pattern, trailing context or None, output); order breaks ties in length, as in the jar
_RULES_SPEC: list[tuple[str, str | None, Callable[[str], list[str]]]] = [
    (r"(?i:can)", r"(?i:not)", _same),
    (r"(?i:gon|wan)", rf"(?i:na)(?!{_L})", _same),
    (r"(?i:got)", rf"(?i:ta)(?!{_L})", _same),
    (r"(?i:lem|gim)", rf"(?i:me)(?!{_L})", _same),
    (  # SGML tags: a name, then names or name="value" separated by spaces
        r"<!?[A-Za-z][A-Za-z0-9_:.\-]*(?: +[A-Za-z0-9_:.\-]+(?:=\"[^\"\n]*\"|='[^'\n]*')?)* *>"
        r"|<\/[A-Za-z][A-Za-z0-9_:.\-]*>",
        None,
        _same,
    ),
    (r"(?i:&(?:md|mdash|ndash);)|[\u0096\u0097\u2013\u2014\u2015]", None, lambda _: ["--"]),
    (r"(?i:&amp;|&lt;|&gt;)", None, _entity),
    (r"(?i:&nbsp;)", None, lambda _: []),
    (r"&(?:HT|TL|UR|LR|QC|QL|QR|odq|cdq|#[0-9]+);", None, _same),
    # these abbreviations keep their period; they come before words and count the next
    # character, so "co.x" is "co." "x" but "co.runs" one word, as in the jar
    (_ABBREV1, ".|\n", _same),
    (r"(?i:nos?)\.", rf"{_SPACENL}?\d", _same),
    (_WORD, _REDAUX, _drop_soft_hyphens),  # "cannot's", "cannot'se": one word before the quote
    (r"[A-Za-z\u00AD]*[A-MO-Za-mo-z]\u00AD*", rf"n{_APOSX}t", _drop_soft_hyphens),
    (_WORD, None, _drop_soft_hyphens),
    (
        rf"{_APOS}n{_APOS}?|[lLdDjJ]{_APOS}|(?i:dunkin|somethin|ol){_APOS}|{_APOS}(?i:em)"
        rf"|[A-HJ-XZn]{_APOSX}{_L}{{2,}}|{_APOS}[2-9]0s|{_APOS}(?i:till?|cause)"
        rf"|{_L}+[aeiouyAEIOUY]{_APOSX}[aeiouA-Z]{_L}*"
        r"|(?i:nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l)",
        None,
        _same,
    ),
    (rf"{_APOS}[tT]", r"(?i:is|was)", _same),
    (r"@[a-zA-Z_][a-zA-Z_0-9]*|#" + _LETTERS, None, _same),  # Twitter names and hashtags
    (r"[<>]?[:;=][\-o\*']?[()DPdpO\\{@|\[\]]", "[^A-Za-z0-9]", _smiley),
    (rf"y{_APOS}", _L, _quote),
    (r"https?://[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},-]", None, _same),
    (
        r"(?:(?:www\.(?:[^ \t\n\f\r\"<>|.!?(){},]+\.)+[a-zA-Z]{2,4})"
        r"|(?:(?:[^ \t\n\f\r\"`'<>|.!?(){}$,-_]+\.)+(?:com|net|org|edu)))"  # ",-_" is a range
        r"(?:/[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},-])?",
        None,
        _same,
    ),
    (
        r"[a-zA-Z0-9][^ \t\n\f\r\"<>|()\u00A0{}]*@(?:[^ \t\n\f\r\"<>|(){}.\u00A0]+\.)*"
        r"[^ \t\n\f\r\"<>|(){}\[\].,;:\u00A0]+",
        None,
        _same,
    ),
    (_REDAUX, r"[^A-Za-z]", _quote),
    (rf"n{_APOSX}t", None, _quote),
    (r"\d{1,2}[\-/]\d{1,2}[\-/]\d{2,4}", None, _same),  # dates
    (r"[\-+]?(?:\d*(?:[.:,\u00AD\u066B\u066C]\d+)+|\d+)", None, _drop_soft_hyphens),
    (
        r"[\u207A\u207B\u208A\u208B]?(?:[\u2070\u00B9\u00B2\u00B3\u2074-\u2079]+|[\u2080-\u2089]+)",
        None,
        _same,
    ),
    (r"(?:\d{1,4}[- \u00A0])?\d{1,4}(?:\\?/|\u2044)\d{1,4}", None, _same),
    (r"[\u00BC\u00BD\u00BE\u2153-\u215E]", None, lambda t: [_FRACTIONS.get(t, t)]),
    (
        r"(?i:-(?:rrb|lrb|rcb|lcb|rsb|lsb)-|c\.d\.s|pro-|anti-|s(?:&|&amp;)p-500|s(?:&|&amp;)ls)"
        rf"|(?i:cap){_APOS}n|c{_APOS}est",
        None,
        _entity,
    ),
    (r"[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}", None, _same),
    (r"[A-Z]*\$|#", None, _same),
    (
        r"[\u00A2\u00A3\u00A4\u00A5\u0080\u20A0\u20AC\u060B\u0E3F\u20A4\uFFE0\uFFE1\uFFE5\uFFE6]",
        None,
        lambda t: [_CURRENCY.get(t, t)],
    ),  # fmt: skip
    (r"[cC]\+\+", None, _same),
    (r"[A-Za-z]\.", rf"{_SPACENL}+{_SENTENCE_START}{_SPACENL}", lambda t: [t[0]]),
    (_ABBREV2, None, _same),
    (rf"{_ACRO}\.", None, _same),
    (_ACRO, rf"{_SPACE}|\n", _same),
    (rf"{_APOS}[0-9][0-9]", rf"{_SPACE}|\n", _same),
    (rf"{_WORD}\.", _INSENTP, _drop_soft_hyphens),
    (
        r"(?:\([0-9]{2,3}\)[ \u00A0]?|(?:\+\+?)?(?:[0-9]{2,4}[\- \u00A0])?[0-9]{2,4}[\- \u00A0])"
        r"[0-9]{3,4}[\- \u00A0]?[0-9]{3,5}",
        None,
        lambda t: [t.replace("(", "-lrb-").replace(")", "-rrb-")],
    ),  # phone numbers, "12 555 5555" too; fmt: skip
    (r"\"|(?i:&quot;)", None, lambda _: ["''"]),
    (r"[+%&\u2030\u2031~^|\\=/]", None, _same),
    (r"[()\[\]{}]", None, lambda t: [_BRACKETS[t]]),
    (r"-+", None, _hyphens),
    (r"\.{3,5}|(?:\.[ \u00A0]){2,4}\.|[\u0085\u2026]", None, lambda _: ["..."]),
    (r"@+|#+|_+|\*+|(?:\\\*){1,3}|[,;:]|[?!]+|<<|>>", None, _same),
    (r"[.\u00A1\u00BF\u037E\u0589\u061F\u06D4\u0700-\u0702\u07FA]", None, _same),
    (rf"{_HTHING}\.", _INSENTP, _drop_soft_hyphens),
    (_HTHING, None, _drop_soft_hyphens),
    (rf"{_THING}\.", _INSENTP, _same),
    (_THING, None, _same),
    (rf"{_THINGA}\.", _INSENTP, _entity),
    (_THINGA, None, _entity),
    ("'", r"[A-Za-z][^ \t\n\r\u00A0]", lambda _: ["`"]),  # a quote opening a word
    (_REDAUX, None, _quote),
    (
        r"[`\u2018\u2019\u201A\u201B\u201C\u201D\u0091-\u0094\u201E\u201F\u2039\u203A"
        rf"\u00AB\u00BB]{{1,2}}|''|{_APOS}",
        None,
        _quote,
    ),
]
_RULES = [
    (re.compile(main if ctx is None else f"(?:{main})(?=({ctx}))"), emit)
    for main, ctx, emit in _RULES_SPEC
]
# Pure-letter words followed by a space are by far the most common token: no rule beats them
# except the split words (can|not, gon|na, ...), which the first rules catch.
_PLAIN = re.compile(r"[A-Za-z]+(?= )")
_SPLIT = re.compile(r"(?i:cannot|gonna|wanna|gotta|lemme|gimme)")
_MISC = re.compile(
    r"[\u00A6\u00A7\u00B6\u00B7\u0387\u2020-\u2023\u2030-\u2038\uFF01-\uFF0F\uFF1A-\uFF20"
    r"\uFF3B-\uFF40\uFF5B-\uFF65\u3012\u30FB]"
)
_SKIP = re.compile(r"[ \t\n\u00A0\u2000-\u200B\u200E\u200F\u3000\uFEFF\0]+")


def _symbol(char: str) -> bool:
    """Whether the jar keeps a character no rule matched (its MISCSYMBOL class), else drops it."""
    if ord(char) > 0xFFFF:  # the jar sees surrogate halves, which it deletes
        return False
    category = unicodedata.category(char)
    return category in ("So", "Sm", "Sk") or _MISC.match(char) is not None


def _next_token(text: str, pos: int) -> tuple[int, list[str]]:
    """The longest rule match at ``pos``: (its length without trailing context, tokens)."""
    best, best_total, best_emit = 0, 0, None
    for pattern, emit in _RULES:
        match = pattern.match(text, pos)
        if match is None:
            continue
        length = match.end() - pos
        total = length + (len(match.group(1)) if pattern.groups else 0)
        if total > best_total:
            best, best_total, best_emit = length, total, emit
    if best_emit is None or best == 0:
        char = text[pos]
        return 1, [char] if _symbol(char) else []
    return best, best_emit(text[pos : pos + best])


def coco_tokens(line: str) -> list[str]:
    """One line of the jar's output as coco-caption keeps it: split on ``" "``, punctuation dropped.

    A token the jar writes with a no-break space inside (``3 1/2``, a phone number) stays one
    token, as in pycocoevalcap's ROUGE_L; an empty line gives no tokens.
    """
    tokens = [w for w in line.rstrip().split(" ") if w not in COCO_PUNCTUATION]
    return [] if tokens == [""] else tokens


_LINE_END = re.compile(r"[\r\n\x0b\x0c\u2028\u2029\x85]")
_BLANK = re.compile(r"[ \t\u00A0\u2000-\u200A\u3000]*")


@lru_cache(maxsize=65536)
def ptb_tokenize(caption: str, following: str = "\n") -> tuple[str, ...]:
    """One caption as coco-caption's PTBTokenizer and punctuation filter leave it.

    Args:
        caption: raw caption text (one line; line breaks count as spaces).
        following: what the jar reads after the caption: ``"\n"`` and the next lines of its
            input (a few rules look past the line end), or ``""`` at the end of the input.

    Returns:
        Lower-case tokens, e.g. ``("a", "dog", "-lrb-", "brown", "-rrb-", "runs")`` for
        ``"A dog (brown) runs."``.
    """
    text = _LINE_END.sub(" ", caption)
    end = len(text)
    text += following
    tokens: list[str] = []
    pos = 0
    while pos < end:
        skip = _SKIP.match(text, pos, end)
        if skip is not None:
            pos = skip.end()
            continue
        plain = _PLAIN.match(text, pos)
        if plain is not None and not _SPLIT.match(text, pos):
            tokens.append(plain.group())
            pos = plain.end()
            continue
        length, found = _next_token(text, pos)
        tokens.extend(found)
        pos += length
    # the jar writes a space inside a token (a phone number, "3 1/2") as a no-break space
    return tuple(coco_tokens(" ".join(t.replace(" ", "\u00a0") for t in tokens).lower()))


def ptb_tokenize_lines(captions: Sequence[str]) -> list[tuple[str, ...]]:
    """Captions as one jar call over all of them (joined by line ends, as coco-caption runs it).

    The jar's rules look past a line's end into the next lines ("x S." before a line starting
    "The" loses its period) and behave differently at the end of the input, so each caption is
    tokenized with the lines that follow it, up to the one after the first that is not blank.
    """
    lines = [_LINE_END.sub(" ", c) for c in captions]
    out = []
    for i, line in enumerate(lines):
        j = i + 1
        while j < len(lines) and _BLANK.fullmatch(lines[j]):
            j += 1
        following = "".join("\n" + nxt for nxt in lines[i + 1 : j + 2])
        out.append(ptb_tokenize(line, following))
    return out
