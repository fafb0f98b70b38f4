"""Tokenization parity with coco-caption on random corpora: ``python scripts/coco_parity.py``.

Builds seeded random corpora of captions from words, punctuation, digits, brackets, quotes,
abbreviations, smileys and unicode spaces, tokenizes all their captions in one call of each
path (pycocoevalcap's own ``PTBTokenizer``, lrcn's ``ptb`` and ``python`` tokenizers), scores
every corpus with pycocoevalcap's BLEU-1..4, ROUGE_L and CIDEr-D on its own tokens and with
lrcn's on lrcn's, and prints how many corpora and scores differ: exactly for ``ptb``, beyond
1e-9 for ``python``. Needs Java and pycocoevalcap. tests/test_ptb_parity.py draws its captions
from `random_caption`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import random
import sys

PIECES = {
    "word": "a dog man the runs on grass red ball two of in is with at street play it".split(),
    "Word": (
        "A The He It In If But At As An She This There They We You What When Her One Our Dog"
        " Man Red Now No I Its His Mr. Ms. Mrs. Dr. THE Then Some Such However Here Yet"
    ).split(),
    "glue": (
        "can't cannot don't it's dog's 's n't 'll 're 've 'd 'm o'clock gonna wanna gotta lemme"
        " gimme y'all 'tis ma'am rock'n'roll cannot's cannot'se can not"
    ).split(),
    "abbrev": "S. x. A. a. U.S. Mr. etc. Jan. co. no. St. e.g. i.e. Inc. vs. a.m. A.B. Ark.".split(),
    "punct": list(".,;:!?/&%$#@*+=~_^|\\") + ["...", "..", "-", "--", "---", "—", "–", "…", "!!"],
    "digit": (
        "1 3 12 0 1/2 3.5 1,000 555-5555 (555) 555 5555 2014 '90s 90s ½ 3rd 5ft 12/25/2014 1-1/2"
    ).split(),
    "bracket": list("()[]{}<>"),
    "quote": ["'", '"', "`", "``", "''", "“", "”", "‘", "’", "«", "»", "&quot;", "&amp;"],
    "smiley": [":)", ":(", ";)", ":-)", ":D", ":P", "=)", ":-(", ":(5", ":)x", "<3"],
}
KINDS = list(PIECES)
WEIGHTS = [10, 4, 3, 3, 4, 3, 2, 2, 1]
SEPARATORS = [" "] * 24 + ["", "", "", "  ", "\xa0", "\u2002", "\u2009", "\u3000", "\t", "\u200b"]


def random_caption(rng: random.Random) -> str:
    """One random caption of 1-12 pieces, mostly space-separated, sometimes glued together."""
    parts = []
    for _ in range(rng.randint(1, 12)):
        kind = rng.choices(KINDS, WEIGHTS)[0]
        parts.append(rng.choice(PIECES[kind]))
        parts.append(rng.choice(SEPARATORS))
    return "".join(parts[:-1]) if rng.random() < 0.8 else "".join(parts)


def random_corpus(rng: random.Random) -> tuple[dict[int, list[str]], dict[int, str]]:
    """(references, hypotheses) of 4-16 items with 4-7 references each."""
    refs, hyps = {}, {}
    for key in range(rng.randint(4, 16)):
        refs[key] = [random_caption(rng) for _ in range(rng.randint(4, 7))]
        hyps[key] = random_caption(rng)
    return refs, hyps


def _coco_scores(gts: dict, res: dict) -> list[tuple[float, list[float]]]:
    """pycocoevalcap's (corpus, per-item) BLEU-1..4, ROUGE_L, CIDEr-D on its tokenized strings."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    with contextlib.redirect_stdout(io.StringIO()):  # its BLEU prints statistics
        bleu, bleu_items = Bleu(4).compute_score(gts, res)
    out = [(float(b), [float(x) for x in items]) for b, items in zip(bleu, bleu_items)]
    for scorer in (Rouge(), Cider()):
        score, items = scorer.compute_score(gts, res)
        out.append((float(score), [float(x) for x in items]))
    return out


def _lrcn_scores(gts: dict, res: dict) -> list[tuple[float, list[float]]]:
    """lrcn's (corpus, per-item) BLEU-1..4, ROUGE_L, CIDEr-D on token lists."""
    from lrcn.metrics.bleu import Bleu
    from lrcn.metrics.cider import Cider
    from lrcn.metrics.rouge import Rouge

    bleu, bleu_items = Bleu().compute_score(gts, res)
    out = [(float(b), [float(x) for x in items]) for b, items in zip(bleu, bleu_items)]
    for scorer in (Rouge(), Cider()):
        score, items = scorer.compute_score(gts, res)
        out.append((float(score), [float(x) for x in items]))
    return out


def _differences(ours: list, theirs: list) -> list[float]:
    """|ours - theirs| of every score (corpus and per-item, all metrics), in metric order."""
    out = []
    for (score, items), (ref_score, ref_items) in zip(ours, theirs):
        if len(items) != len(ref_items):
            return [float("inf")]
        out += [abs(a - b) for a, b in [(score, ref_score), *zip(items, ref_items)]]
    return out


def _coco_tokenize(flat: list[str]) -> list[str]:
    """pycocoevalcap's own PTBTokenizer on all captions in one call: its joined token strings."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        done = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(flat)})
    return [done[i][0] for i in range(len(flat))]


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print the counts; exit 1 when any score differs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=32)
    args = parser.parse_args(argv)
    from lrcn.metrics.tokenizer import tokenize_captions

    rng = random.Random(args.seed)
    corpora = [random_corpus(rng) for _ in range(args.corpora)]
    flat = [c for refs, hyps in corpora for k in hyps for c in [hyps[k], *refs[k]]]
    coco = iter(_coco_tokenize(flat))
    paths = {name: iter(tokenize_captions(flat, name)[0]) for name in ("ptb", "python")}
    keys = ("corpora", "scores", "inexact", "cider_inexact", "captions")
    differ = {name: dict.fromkeys(keys, 0) | {"max": 0.0} for name in paths}
    total_scores = 0
    for refs, hyps in corpora:
        gts, res = {}, {}
        tokens = {name: ({}, {}) for name in paths}
        for k in hyps:
            res[k] = [next(coco)]
            gts[k] = [next(coco) for _ in refs[k]]
            for name, it in paths.items():
                tokens[name][1][k] = [next(it)]
                tokens[name][0][k] = [next(it) for _ in refs[k]]
        theirs = _coco_scores(gts, res)
        total_scores += sum(1 + len(items) for _, items in theirs)
        for name, (t_gts, t_res) in tokens.items():
            diffs = _differences(_lrcn_scores(t_gts, t_res), theirs)
            pairs = [(t_res[k][0], res[k][0]) for k in res]
            pairs += [(t, c) for k in gts for t, c in zip(t_gts[k], gts[k])]
            counts = differ[name]
            counts["captions"] += sum(" ".join(t) != c for t, c in pairs)
            wrong = sum(d > 1e-9 for d in diffs)
            counts["scores"] += wrong
            counts["corpora"] += wrong > 0
            counts["inexact"] += sum(d > 0 for d in diffs)
            cider = diffs[-(len(res) + 1) :]  # CIDEr is the last metric
            counts["cider_inexact"] += sum(d > 0 for d in cider)
            counts["max"] = max(counts["max"], *diffs)
    print(f"{args.corpora} corpora (seed {args.seed}), {len(flat)} captions, {total_scores} scores")
    for name, c in differ.items():
        print(
            f"tokenizer={name}: {c['captions']} captions' tokens differ from pycocoevalcap's; "
            f"{c['corpora']} corpora ({c['scores']} scores) differ by more than 1e-9; "
            f"{c['inexact']} scores not bit-identical ({c['cider_inexact']} of them CIDEr), "
            f"largest difference {c['max']:.3g}"
        )
    return int(any(c["scores"] for c in differ.values()))


if __name__ == "__main__":
    sys.exit(main())
