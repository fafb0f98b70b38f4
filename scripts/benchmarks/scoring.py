"""Figure 4, ``scoring``: ``lrcn.metrics`` vs pycocoevalcap on the same tokens.

Seconds to score 5,000 captions (BLEU-1..4 + CIDEr) with ``lrcn.metrics`` vs pycocoevalcap's Bleu
and Cider scorers.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.common import SHARED_DATA
from lrcn.data.synthetic.shapes import ShapesCaptions
from lrcn.metrics import score
from lrcn.text.tokenize import tokenize


def caption_items(count: int) -> tuple[dict[str, list[str]], dict[str, str], str]:
    """(references, hypotheses, origin): Flickr8k's human captions when ../shared/data has them."""
    token_file = SHARED_DATA / "flickr8k" / "Flickr8k.token.txt"
    by_image: dict[str, list[str]] = {}
    if token_file.is_file():
        for line in token_file.read_text(encoding="utf-8").splitlines():
            if "\t" in line:
                key, caption = line.split("\t", 1)
                by_image.setdefault(key.split("#")[0], []).append(caption)
        origin = "Flickr8k captions: hypothesis = caption 0, references = captions 1-4"
    else:
        shapes = ShapesCaptions("test", count)
        by_image = {shapes.item_id(i): shapes.captions(i) for i in range(count)}
        origin = "shapes captions: hypothesis = caption 0, references = captions 1-4"
    keys = [k for k in by_image if len(by_image[k]) >= 5][:count]
    references = {k: by_image[k][1:5] for k in keys}
    hypotheses = {k: by_image[k][0] for k in keys}
    return references, hypotheses, origin


def scoring(size: dict[str, Any]) -> dict[str, Any]:
    """Figure 4: both sides score lrcn's tokens, joined and split again on whitespace."""
    from pycocoevalcap.bleu.bleu import Bleu  # optional: only this figure needs it
    from pycocoevalcap.cider.cider import Cider

    references, hypotheses, origin = caption_items(size["score_items"])
    # both sides score the same tokens: lrcn's tokenizer once, then whitespace splitting
    refs = {k: [" ".join(tokenize(c)) for c in v] for k, v in references.items()}
    hyps = {k: " ".join(tokenize(v)) for k, v in hypotheses.items()}
    start = time.perf_counter()
    ours = score(refs, hyps, metrics=["bleu", "cider"], tokenizer="none")
    ours_seconds = time.perf_counter() - start
    start = time.perf_counter()
    bleu, _ = Bleu(4).compute_score(refs, {k: [v] for k, v in hyps.items()}, verbose=0)
    cider, _ = Cider().compute_score(refs, {k: [v] for k, v in hyps.items()})
    theirs_seconds = time.perf_counter() - start
    theirs = {**{f"Bleu_{n + 1}": b for n, b in enumerate(bleu)}, "CIDEr": cider}
    difference = max(abs(ours[k] - theirs[k]) for k in theirs)
    line = (
        f"scoring {len(hyps)} captions (BLEU-1..4 + CIDEr): lrcn.metrics {ours_seconds:.2f} s; "
        f"pycocoevalcap {theirs_seconds:.2f} s; {theirs_seconds / ours_seconds:.1f}x faster; "
        f"largest score difference {difference:.1e}"
    )
    return {
        "lrcn_seconds": ours_seconds,
        "pycocoevalcap_seconds": theirs_seconds,
        "ratio": theirs_seconds / ours_seconds,
        "max_score_difference": difference,
        "items": len(hyps),
        "data": origin,
        "scores": {k: ours[k] for k in theirs},
        "line": line,
    }
