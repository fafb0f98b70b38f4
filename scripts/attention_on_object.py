"""Does a trained shapes attention model look at the object each colour and shape word names?

    python scripts/attention_on_object.py RUN [--split test] [--limit N]

Decodes the split greedily, reads the weights every word was generated with
(`lrcn.decoding.attention_weights`), and scores every colour and shape word that names
an object of the scene with `lrcn.data.synthetic.shapes.attention_on_object`: is the argmax cell on
that object's pixels? Prints the share, the words scored, and what a uniformly random cell would
score (the share of cells the named object overlaps) for comparison.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from lrcn import build, decoding
from lrcn.data.synthetic.shapes import COLOURS, ShapesSource, attention_on_object
from lrcn.predict import load_model
from lrcn.text.vocab import Vocabulary


def measure(run: str, split: str, limit: int | None, batch_size: int = 100) -> dict[str, float]:
    """The share of named colour / shape words whose argmax cell lies on the named object."""
    model, cfg, payload = load_model(run, device="cpu")
    vocab = Vocabulary.from_dict(payload["vocab"])
    source = build.build_source(cfg, split)
    source = getattr(source, "raw", source)  # a feature store wraps the raw source
    if not isinstance(source, ShapesSource) or model.attends != "grid":
        sys.exit("needs a shapes run whose decoder attends over the image grid")
    size, count = cfg.data.image_size, min(len(source), limit or len(source))
    hits: dict[str, list[tuple[bool, float]]] = {"colour": [], "shape": []}
    for lo in range(0, count, batch_size):
        items = range(lo, min(lo + batch_size, count))
        pixels = torch.stack([source.example(i).pixels for i in items])
        h, w = model.encoder.grid_map(pixels[:1]).shape[-2:]
        features = model.encode({"images": pixels})
        captions = decoding.greedy(
            model.decoder, features, vocab.start_id, vocab.end_id, max_length=cfg.eval.max_length
        )
        maps = decoding.attention_weights(
            model.decoder, features, captions, vocab.start_id, vocab.end_id
        )
        for i, tokens, alphas in zip(items, captions, maps):
            words = vocab.decode(tokens)
            alphas = alphas[:-1].numpy()  # (L, N): one row per word, <end>'s row dropped
            objects = source.data.item(i)[2]
            for word, hit, chance in attention_on_object(
                words, alphas.reshape(-1, h, w), objects, size
            ):
                hits["colour" if word in COLOURS else "shape"].append((hit, chance))
    every = hits["colour"] + hits["shape"]
    result = {"items": count, "words": len(every), "grid": f"{h}x{w}"}
    for name, group in (("all", every), *hits.items()):
        result[f"on_object_{name}"] = float(np.mean([g[0] for g in group])) if group else 0.0
        result[f"chance_{name}"] = float(np.mean([g[1] for g in group])) if group else 0.0
    return result


def main() -> None:
    """Command line: RUN [--split test] [--limit N]; prints the result as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run directory or checkpoint of a shapes attention model")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=None, help="first N items only")
    args = parser.parse_args()
    print(json.dumps(measure(args.run, args.split, args.limit), indent=1))


if __name__ == "__main__":
    main()
