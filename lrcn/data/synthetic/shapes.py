"""Embedded **shapes** captioning data: images of one to three coloured shapes, five captions each.

Every image is drawn on the fly from ``(seed, split, index)``, so the dataset needs no download or
storage and is identical on every machine. Captions come from varied templates (synonyms, word
order, spatial relations, optional sizes) so that the five references disagree the way human ones
do, which keeps BLEU honest: a model must name the right colours and shapes, in a sensible order, to
score near the leave-one-out reference ceiling.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from lrcn.data.datasets import Example, Source
from lrcn.data.media import image_to_tensor
from lrcn.data.synthetic.registry import register_dataset
from lrcn.text.tokenize import tokenize

SPLITS = {"train": 0, "val": 1, "test": 2}

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
    "purple": (160, 60, 210),
    "white": (235, 235, 235),
}
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")

# (word, probability) choices a caption writer makes independently for every caption.
SHAPE_WORDS = {
    "circle": (("circle", 0.7), ("ball", 0.3)),
    "square": (("square", 0.7), ("box", 0.3)),
    "triangle": (("triangle", 1.0),),
}
SIZE_WORDS = {"small": (("small", 0.6), ("little", 0.4)), "large": (("large", 0.5), ("big", 0.5))}
SIZE_MENTION_PROB = 0.4


@dataclass(frozen=True)
class ShapeObject:
    """One drawn object: centre (x, y) and radius in pixels of the image it belongs to."""

    shape: str
    colour: str
    size: str
    x: float
    y: float
    radius: float


def draw_shape(draw: ImageDraw.ImageDraw, obj: ShapeObject, rgb: tuple[int, int, int]) -> None:
    """Draw one object onto a PIL canvas."""
    x, y, r = obj.x, obj.y, obj.radius
    if obj.shape == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=rgb)
    elif obj.shape == "square":
        s = r * 0.88  # same visual area as the circle, roughly
        draw.rectangle([x - s, y - s, x + s, y + s], fill=rgb)
    elif obj.shape == "triangle":
        draw.polygon([(x, y - r), (x - r, y + r * 0.8), (x + r, y + r * 0.8)], fill=rgb)
    else:
        raise ValueError(f"unknown shape {obj.shape!r}")


def render_scene(
    objects: list[ShapeObject],
    size: int,
    background: int = 0,
    rng: np.random.Generator | None = None,
) -> Image.Image:
    """Draw objects on a dark background; with ``rng``, colours jitter and pixel noise is added."""
    image = Image.new("RGB", (size, size), (background,) * 3)
    draw = ImageDraw.Draw(image)
    for obj in objects:
        rgb = COLOURS[obj.colour]
        if rng is not None:
            rgb = tuple(int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in rgb)
        draw_shape(draw, obj, rgb)
    if rng is not None:
        # the noise level varies too (clean images included): trained on one fixed level, a model
        # read clean PNGs wrongly (7 of 18 right vs 18 of 18 with the training noise)
        amplitude = int(rng.integers(0, 11))
        pixels = np.asarray(image, dtype=np.int16)
        pixels = pixels + rng.integers(-amplitude, amplitude + 1, size=pixels.shape, dtype=np.int16)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image


def sample_scene(rng: np.random.Generator, size: int, max_objects: int = 3) -> list[ShapeObject]:
    """One to ``max_objects`` non-overlapping objects with distinct (colour, shape) pairs."""
    count = int(rng.choice(np.arange(1, max_objects + 1), p=_count_probs(max_objects)))
    objects: list[ShapeObject] = []
    used: set[tuple[str, str]] = set()
    while len(objects) < count:
        shape = SHAPES[rng.integers(len(SHAPES))]
        colour = list(COLOURS)[rng.integers(len(COLOURS))]
        if (colour, shape) in used:
            continue
        size_name = SIZES[rng.integers(len(SIZES))]
        radius = size * (0.09 if size_name == "small" else 0.17) * rng.uniform(0.9, 1.1)
        for _ in range(100):
            x, y = rng.uniform(radius + 1, size - radius - 1, size=2)
            if all(np.hypot(x - o.x, y - o.y) > radius + o.radius + 2 for o in objects):
                objects.append(
                    ShapeObject(shape, colour, size_name, float(x), float(y), float(radius))
                )
                used.add((colour, shape))
                break
        else:  # no room left: keep the scene with fewer objects
            break
    return objects


def _count_probs(max_objects: int) -> np.ndarray:
    probs = np.array([0.4, 0.35, 0.25][:max_objects])
    return probs / probs.sum()


def _pick(rng: np.random.Generator, choices: tuple[tuple[str, float], ...]) -> str:
    words, probs = zip(*choices)
    return words[int(rng.choice(len(words), p=np.array(probs) / sum(probs)))]


def _phrase(obj: ShapeObject, rng: np.random.Generator) -> str:
    words = []
    if rng.random() < SIZE_MENTION_PROB:
        words.append(_pick(rng, SIZE_WORDS[obj.size]))
    words += [obj.colour, _pick(rng, SHAPE_WORDS[obj.shape])]
    return "a " + " ".join(words)


def _region(obj: ShapeObject, size: int) -> str:
    third = size / 3
    row = ("top", "middle", "bottom")[min(int(obj.y // third), 2)]
    col = ("left", "center", "right")[min(int(obj.x // third), 2)]
    if row == "middle" and col == "center":
        return "center"
    if row == "middle":
        return f"middle {col}"
    return f"{row} {col}" if col != "center" else row


def _templates(objects: list[ShapeObject], size: int) -> list:
    """Caption templates for a scene: functions of a phrase maker ``p(obj)``."""
    by_x = sorted(objects, key=lambda o: o.x)
    if len(objects) == 1:
        (a,) = objects
        region = _region(a, size)
        return [
            lambda p: f"{p(a)}.",
            lambda p: f"there is {p(a)}.",
            lambda p: f"a single {p(a)[2:]}.",
            lambda p: f"only {p(a)}.",
            lambda p: f"{p(a)} in the {region}.",
        ]
    if len(objects) == 2:
        a, b = by_x
        templates = [
            lambda p: f"{p(a)} and {p(b)}.",
            lambda p: f"{p(a)} next to {p(b)}.",
            lambda p: f"{p(a)} to the left of {p(b)}.",
            lambda p: f"{p(b)} to the right of {p(a)}.",
            lambda p: f"two shapes: {p(a)} and {p(b)}.",
        ]
        top, bottom = sorted(objects, key=lambda o: o.y)
        if bottom.y - top.y > size * 0.25:
            templates += [
                lambda p: f"{p(top)} above {p(bottom)}.",
                lambda p: f"{p(bottom)} below {p(top)}.",
            ]
        return templates
    a, b, c = by_x[:3]
    return [
        lambda p: f"{p(a)}, {p(b)} and {p(c)}.",
        lambda p: f"three shapes: {p(a)}, {p(b)} and {p(c)}.",
        lambda p: f"{p(a)}, {p(b)} and {p(c)} from left to right.",
        lambda p: f"there are three shapes: {p(a)}, {p(b)} and {p(c)}.",
        lambda p: f"{p(a)} and {p(b)} to the left of {p(c)}.",
        lambda p: f"{p(c)}, {p(b)} and {p(a)} from right to left.",
    ]


def describe(
    objects: list[ShapeObject], size: int, rng: np.random.Generator, count: int = 5
) -> list[str]:
    """``count`` captions of a scene, from distinct templates where there are enough."""
    templates = _templates(objects, size)
    replace = count > len(templates)
    order = rng.choice(len(templates), size=count, replace=replace)
    return [templates[i](lambda o: _phrase(o, rng)) for i in order]


class ShapesCaptions:
    """Deterministic shapes captioning split: ``item(i)`` -> (PIL image, five captions, objects).

    Args:
        split: ``train``, ``val`` or ``test`` (disjoint random streams).
        num_items: images in the split.
        seed: the dataset seed; the same seed gives the same images and captions everywhere.
        image_size: side of the square image in pixels.
    """

    captions_per_item = 5

    def __init__(self, split: str, num_items: int, seed: int = 0, image_size: int = 64) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {tuple(SPLITS)}, got {split!r}")
        self.split, self.num_items, self.seed, self.image_size = split, num_items, seed, image_size

    def __len__(self) -> int:
        return self.num_items

    def rng(self, index: int) -> np.random.Generator:
        """The random stream item ``index`` is drawn from."""
        return np.random.default_rng([self.seed, SPLITS[self.split], index])

    def item(self, index: int) -> tuple[Image.Image, list[str], list[ShapeObject]]:
        """Item ``index``: (PIL image, captions, objects)."""
        if not 0 <= index < self.num_items:
            raise IndexError(index)
        rng = self.rng(index)
        objects = sample_scene(rng, self.image_size)
        captions = describe(objects, self.image_size, rng, self.captions_per_item)
        image = render_scene(objects, self.image_size, rng=rng)
        return image, captions, objects

    def captions(self, index: int) -> list[str]:
        """The item's captions without drawing its image (vocabulary building)."""
        rng = self.rng(index)
        return describe(
            sample_scene(rng, self.image_size), self.image_size, rng, self.captions_per_item
        )

    def item_id(self, index: int) -> str:
        """Item ``index``'s id."""
        return f"shapes-{self.split}-{index:06d}"


# ---- content of a generated caption -----------------------------------------------------------
SHAPE_NOUNS = {word: shape for shape, words in SHAPE_WORDS.items() for word, _ in words}


def named_objects(caption: str) -> Counter[tuple[str | None, str]]:
    """The (colour, shape) pairs a caption names: every shape word (synonyms included) with the
    colour word right before it, or None where there is none ("a large ball")."""
    tokens = tokenize(caption)
    named: Counter[tuple[str | None, str]] = Counter()
    for i, token in enumerate(tokens):
        if token in SHAPE_NOUNS:
            colour = tokens[i - 1] if i > 0 and tokens[i - 1] in COLOURS else None
            named[(colour, SHAPE_NOUNS[token])] += 1
    return named


def scene_accuracy(captions: dict[str, str], data: ShapesCaptions) -> dict[str, float]:
    """How often a caption names exactly the scene's objects, each with its colour and shape (any
    order, none missing, none extra); ids as ``item_id``.

    Returns ``scene_accuracy`` over all images and ``scene_accuracy_1``.. ``_3`` over the images
    with that many objects (absent when the split has none). BLEU cannot tell a fluent caption
    with the wrong colours from a right one; this can.
    """
    index = {data.item_id(i): i for i in range(len(data))}
    hits: dict[int, list[bool]] = {}
    for item, caption in captions.items():
        objects = sample_scene(data.rng(index[item]), data.image_size)
        truth = Counter((o.colour, o.shape) for o in objects)
        hits.setdefault(len(objects), []).append(named_objects(caption) == truth)
    every = [hit for group in hits.values() for hit in group]
    result = {"scene_accuracy": sum(every) / max(len(every), 1)}
    for count in sorted(hits):
        result[f"scene_accuracy_{count}"] = sum(hits[count]) / len(hits[count])
    return result


# ---- spatial relations a generated caption states -------------------------------------------
# Token sequences of the relations the caption templates (`_templates`) use, after `tokenize`
# (punctuation dropped). "X to the left of Y", "X and Y to the left of Z", "Y to the right of X",
# "X above Y", "Y below X"; "X, Y and Z from left to right" (and "... from right to left") state
# the order of every object named before them. "next to" states no direction.
RELATION_PHRASES: dict[tuple[str, ...], str] = {
    ("to", "the", "left", "of"): "left",
    ("to", "the", "right", "of"): "right",
    ("above",): "above",
    ("below",): "below",
    ("from", "left", "to", "right"): "left_to_right",
    ("from", "right", "to", "left"): "right_to_left",
}


def _mentions(tokens: list[str]) -> list[tuple[int, tuple[str | None, str]]]:
    """(position of the shape word, (colour, shape)) of every object a token list names."""
    found = []
    for i, token in enumerate(tokens):
        if token in SHAPE_NOUNS:
            colour = tokens[i - 1] if i > 0 and tokens[i - 1] in COLOURS else None
            found.append((i, (colour, SHAPE_NOUNS[token])))
    return found


def stated_relations(caption: str) -> list[tuple[str, list[tuple[str | None, str]]]]:
    """The spatial relations a caption states: (kind, the (colour, shape) pairs it relates).

    ``left`` / ``right`` / ``above`` / ``below``: pairs (subject..., object): every object named
    before the phrase is its subject ("a red circle and a blue box to the left of a green
    triangle": two subjects), the first named after it the object. ``left_to_right`` /
    ``right_to_left``: the objects named before the phrase, in the order named.
    """
    tokens = tokenize(caption)
    mentions = _mentions(tokens)
    relations = []
    for i in range(len(tokens)):
        for phrase, kind in RELATION_PHRASES.items():
            if tuple(tokens[i : i + len(phrase)]) != phrase:
                continue
            before = [pair for pos, pair in mentions if pos < i]
            after = [pair for pos, pair in mentions if pos >= i + len(phrase)]
            if "_to_" in kind:  # an order of everything named before
                if len(before) >= 2:
                    relations.append((kind, before))
            elif before and after:
                relations.append((kind, [*before, after[0]]))
    return relations


def _holds(kind: str, objects: list[ShapeObject]) -> bool:
    """Whether a relation between the scene objects (in the caption's order) holds."""
    xs, last = [o.x for o in objects], objects[-1]
    if kind == "left":
        return all(o.x < last.x for o in objects[:-1])
    if kind == "right":
        return all(o.x > last.x for o in objects[:-1])
    if kind == "above":
        return all(o.y < last.y for o in objects[:-1])
    if kind == "below":
        return all(o.y > last.y for o in objects[:-1])
    if kind == "left_to_right":
        return xs == sorted(xs)
    return kind == "right_to_left" and xs == sorted(xs, reverse=True)


def relation_correct(caption: str, objects: list[ShapeObject]) -> bool | None:
    """Whether every spatial relation a caption states holds for the scene; None if it states none.

    A relation holds when every object it relates is one of the scene's (its colour and shape both
    named, and present) and the generator's positions agree: centre x for left/right and the
    orders, centre y (down the image) for above/below.
    """
    relations = stated_relations(caption)
    if not relations:
        return None
    by_pair = {(o.colour, o.shape): o for o in objects}
    for kind, pairs in relations:
        if any(pair not in by_pair for pair in pairs):
            return False
        if not _holds(kind, [by_pair[pair] for pair in pairs]):  # type: ignore[index]
            return False
    return True


def relation_accuracy(captions: dict[str, str], data: ShapesCaptions) -> dict[str, float]:
    """Among the generated captions (by ``item_id``) that state a left/right or above/below
    relation (`stated_relations`), the share whose every relation holds for the generator's
    objects they name (`relation_correct`): ``relation_accuracy``; and ``relation_stated``, the
    share of captions that state one. A caption naming an object the scene lacks in a relation
    counts as wrong. 0 when no caption states a relation.
    """
    index = {data.item_id(i): i for i in range(len(data))}
    verdicts = []
    for item, caption in captions.items():
        objects = sample_scene(data.rng(index[item]), data.image_size)
        verdicts.append(relation_correct(caption, objects))
    stated = [v for v in verdicts if v is not None]
    return {
        "relation_accuracy": sum(stated) / len(stated) if stated else 0.0,
        "relation_stated": len(stated) / max(len(verdicts), 1),
    }


# ---- where attention looks --------------------------------------------------------------------
def object_mask(obj: ShapeObject, size: int) -> np.ndarray:
    """The pixels (size, size) bool an object covers, drawn as `render_scene` draws it."""
    canvas = Image.new("L", (size, size), 0)
    draw_shape(ImageDraw.Draw(canvas), obj, 255)  # type: ignore[arg-type]
    return np.asarray(canvas) > 0


def _named_object(
    tokens: Sequence[str], i: int, by_pair: dict[tuple[str, str], ShapeObject]
) -> ShapeObject | None:
    """The scene object the colour or shape word ``tokens[i]`` names (with its neighbour)."""
    token = tokens[i]
    if token in COLOURS and i + 1 < len(tokens) and tokens[i + 1] in SHAPE_NOUNS:
        return by_pair.get((token, SHAPE_NOUNS[tokens[i + 1]]))
    if token in SHAPE_NOUNS and i > 0 and tokens[i - 1] in COLOURS:
        return by_pair.get((tokens[i - 1], SHAPE_NOUNS[token]))
    return None


def attention_on_object(
    words: Sequence[str], alphas: np.ndarray, objects: list[ShapeObject], size: int
) -> list[tuple[str, bool, float]]:
    """Whether attention points at the object each colour and shape word names.

    Args:
        words: a caption's words (``<end>`` excluded), one per alpha map.
        alphas: (L, h, w) the attention weights each word was generated with.
        objects: the scene's objects (the generator's ground truth).
        size: the image side in pixels; the grid's cells tile it (cell r, c covers rows
            r*size/h .. (r+1)*size/h and the columns likewise).

    Returns:
        For every colour word and shape word that names an object of the scene (a colour word
        followed by a shape word, or a shape word after a colour word, the pair present in the
        scene): (word, whether the argmax cell overlaps that object's pixels, the share of cells
        overlapping it: what a uniformly random cell would score). Words naming no object of the
        scene are left out.
    """
    by_pair = {(o.colour, o.shape): o for o in objects}
    _, h, w = alphas.shape
    results = []
    for i, word in enumerate(words[: len(alphas)]):
        obj = _named_object(words, i, by_pair)
        if obj is None:
            continue
        mask = object_mask(obj, size)
        rows = np.array_split(np.arange(size), h)
        cols = np.array_split(np.arange(size), w)
        cover = np.array([[mask[np.ix_(r, c)].any() for c in cols] for r in rows])  # (h, w)
        r, c = np.unravel_index(int(np.argmax(alphas[i])), (h, w))
        results.append((word, bool(cover[r, c]), float(cover.mean())))
    return results


class ShapesSource(Source):
    """The embedded shapes captioning split as a `Source` (see `ShapesCaptions`)."""

    def __init__(
        self,
        split: str,
        size: int,
        seed: int,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.data = ShapesCaptions(split, size, seed=seed, image_size=image_size)
        self.image_size, self.mean, self.std = image_size, mean, std

    def __len__(self) -> int:
        return len(self.data)

    def example(self, index: int) -> Example:
        """Item ``index``: its normalised image and five captions."""
        image, captions, _ = self.data.item(index)
        return Example(
            self.data.item_id(index),
            captions,
            pixels=image_to_tensor(image, self.image_size, self.mean, self.std),
        )

    def captions(self, index: int) -> list[str]:
        """Item ``index``'s captions, without drawing its image."""
        return self.data.captions(index)

    def item_id(self, index: int) -> str:
        """Item ``index``'s id."""
        return self.data.item_id(index)

    def task_metrics(self, captions: dict[str, str]) -> dict[str, float]:
        """`scene_accuracy` of generated captions (by item id): every object named right; and
        `relation_accuracy`: the left/right and above/below relations they state hold."""
        return {**scene_accuracy(captions, self.data), **relation_accuracy(captions, self.data)}


@register_dataset("shapes", task="caption")
def build_shapes(
    split: str, size: int, seed: int, data: Any, mean: Sequence[float], std: Sequence[float]
) -> ShapesSource:
    """The shapes split of ``size`` images of ``data.image_size`` pixels."""
    return ShapesSource(split, size, seed, data.image_size, mean, std)
