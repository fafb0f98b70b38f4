"""Write tests/data/ptb_jar_outputs.json: coco-caption's PTBTokenizer jar on random captions.

``python scripts/ptb_jar_outputs.py`` (needs Java and pycocoevalcap) runs the real jar, once per
batch of lines as coco-caption runs it, on the constructs of issue 32 and on seeded random
captions from scripts/coco_parity.py, and stores each batch's captions with the jar's raw output
lines, so tests/test_ptb_parity.py compares the Python tokenizer with the jar without Java.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from coco_parity import random_caption

from lrcn.metrics.tokenizer import jar_lines

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "ptb_jar_outputs.json"
# the issue's repros and their family: fractions and phone numbers (no-break spaces), "cannot'"
# before a contraction, one-letter abbreviations before a sentence's first word, smileys
CONSTRUCTS = [
    "3 1/2", "3 dogs", "1 2/3 cups", "(555) 555-5555", "12 555 5555", "555-5555 2014",
    "cannot'se dog", "can not dog", "cannot's", "gonna'se", "cannot'x", "cannot’se",
    "x S. A dog", "x s. a dog", "x S. The", "x S. Now", "x S. Dog", "x S.", "The dog",
    "a dog S.", "", "He runs", ":(5", ":(", ":(x", ":( x", "no.", "5 dogs", "<< >>",
]  # fmt: skip
BATCHES, LINES = 40, 50


def main() -> int:
    """Run the jar on every batch and write the JSON file."""
    rng = random.Random(3201)
    batches = [CONSTRUCTS] + [[random_caption(rng) for _ in range(LINES)] for _ in range(BATCHES)]
    data = {
        "jar": "stanford-corenlp-3.4.1.jar -preserveLines -lowerCase (pycocoevalcap)",
        "made_by": "scripts/ptb_jar_outputs.py",
        "batches": [{"captions": b, "lines": jar_lines(b)} for b in batches],
    }
    OUT.write_text(json.dumps(data, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    print(f"wrote {sum(map(len, batches))} captions in {len(batches)} batches to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
