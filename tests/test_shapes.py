import numpy as np

from lrcn.data.synthetic.moving_shapes import MovingShapesCaptions
from lrcn.data.synthetic.shapes import (
    COLOURS,
    ShapeObject,
    ShapesCaptions,
    ShapesSource,
    attention_on_object,
    named_objects,
    relation_accuracy,
    relation_correct,
    sample_scene,
    scene_accuracy,
    stated_relations,
)


def test_shapes_are_deterministic_by_seed():
    a, b, c = (
        ShapesCaptions("train", 5, seed=1),
        ShapesCaptions("train", 5, seed=1),
        ShapesCaptions("train", 5, seed=2),
    )
    for i in range(5):
        ia, ca, _ = a.item(i)
        ib, cb, _ = b.item(i)
        assert ca == cb and np.array_equal(np.asarray(ia), np.asarray(ib))
        assert a.captions(i) == ca  # captions without drawing agree
    assert any(a.item(i)[1] != c.item(i)[1] for i in range(5))
    assert ShapesCaptions("train", 3).item(0)[1] != ShapesCaptions("test", 3).item(0)[1]


def test_captions_name_every_object_and_references_disagree():
    data = ShapesCaptions("train", 50, image_size=64)
    distinct = 0
    for i in range(50):
        image, captions, objects = data.item(i)
        assert image.size == (64, 64) and len(captions) == 5 and 1 <= len(objects) <= 3
        for caption in captions:
            for obj in objects:
                assert obj.colour in caption
        distinct += len(set(captions)) > 1
        # each object's colour is visible near its centre
        pixels = np.asarray(image).astype(int)
        for obj in objects:
            centre = pixels[int(obj.y), int(obj.x)]
            assert np.abs(centre - np.array(COLOURS[obj.colour])).max() < 40
    assert distinct >= 45


def test_moving_shapes_clips():
    data = MovingShapesCaptions("val", 4, image_size=32, num_frames=6)
    frames, captions, movers = data.item(0)
    assert frames.shape == (6, 32, 32, 3) and frames.dtype == np.uint8
    assert len(captions) == 5 and all(m.colour in c for m in movers for c in captions)
    assert data.captions(0) == captions
    assert not np.array_equal(frames[0], frames[-1])  # something moves


def test_motion_ground_truth_check():
    from lrcn.data.synthetic.moving_shapes import motion_accuracy, names_motions

    data = MovingShapesCaptions("test", 60)
    for i in range(60):
        _, captions, movers = data.item(i)
        assert all(names_motions(c, movers) for c in captions)
    wrong = {
        data.item_id(i): data.captions(i)[0].replace("left", "up").replace("right", "down")
        for i in range(60)
    }
    right = {data.item_id(i): data.captions(i)[0] for i in range(60)}
    assert motion_accuracy(right, data) == 1.0
    assert motion_accuracy(wrong, data) < 0.9


def test_named_objects_reads_synonyms_sizes_and_missing_colours():
    assert named_objects("A big red ball to the left of a blue box.") == {
        ("red", "circle"): 1,
        ("blue", "square"): 1,
    }
    assert named_objects("three shapes: a red triangle, a large square and a red triangle") == {
        ("red", "triangle"): 2,
        (None, "square"): 1,
    }
    assert named_objects("there is nothing here") == {}


def test_scene_accuracy_is_one_for_every_reference_and_counts_by_objects():
    data = ShapesCaptions("test", 60, seed=3)
    for k in range(data.captions_per_item):
        references = {data.item_id(i): data.captions(i)[k] for i in range(len(data))}
        assert scene_accuracy(references, data)["scene_accuracy"] == 1.0

    counts, recoloured = [], {}  # multi-object scenes: the first object gets a wrong colour
    for i in range(len(data)):
        objects = sample_scene(data.rng(i), data.image_size)
        counts.append(len(objects))
        colours = [o.colour for o in objects]
        if len(objects) > 1:
            colours[0] = next(c for c in COLOURS if c not in colours)
        recoloured[data.item_id(i)] = ", ".join(
            f"a {c} {o.shape}" for c, o in zip(colours, objects)
        )
    result = scene_accuracy(recoloured, data)

    assert result["scene_accuracy"] == counts.count(1) / len(counts)
    assert result["scene_accuracy_1"] == 1.0
    assert result["scene_accuracy_2"] == result["scene_accuracy_3"] == 0.0
    assert set(result) == {"scene_accuracy"} | {f"scene_accuracy_{n}" for n in set(counts)}


# a 64 px scene by hand: a red circle top left, a blue square bottom middle, a green triangle right
RED = ShapeObject("circle", "red", "small", x=8.0, y=8.0, radius=6.0)
BLUE = ShapeObject("square", "blue", "small", x=30.0, y=54.0, radius=6.0)
GREEN = ShapeObject("triangle", "green", "small", x=56.0, y=24.0, radius=6.0)
SCENE = [RED, BLUE, GREEN]


def test_stated_relations_reads_every_template_phrasing():
    assert stated_relations("a red circle to the left of a blue box.") == [
        ("left", [("red", "circle"), ("blue", "square")])
    ]
    assert stated_relations(
        "a red ball and a big blue square to the left of a green triangle."
    ) == [("left", [("red", "circle"), ("blue", "square"), ("green", "triangle")])]
    assert stated_relations("a green triangle, a blue box and a red ball from right to left.") == [
        ("right_to_left", [("green", "triangle"), ("blue", "square"), ("red", "circle")])
    ]
    assert stated_relations("a red circle next to a blue square.") == []  # no direction
    assert stated_relations("a red circle and a blue square.") == []


def test_relation_correct_on_hand_made_captions():
    assert relation_correct("a red circle to the left of a blue square.", SCENE) is True
    assert relation_correct("a blue square to the left of a red circle.", SCENE) is False
    assert relation_correct("a green triangle to the right of a blue box.", SCENE) is True
    assert relation_correct("a red ball above a blue square.", SCENE) is True
    assert relation_correct("a red ball below a blue square.", SCENE) is False
    assert relation_correct("a blue square below a green triangle.", SCENE) is True
    ordered = "a red circle, a blue square and a green triangle from left to right."
    assert relation_correct(ordered, SCENE) is True
    assert relation_correct(ordered.replace("left to right", "right to left"), SCENE) is False
    both = "a red circle and a blue square to the left of a green triangle."
    assert relation_correct(both, SCENE) is True
    assert relation_correct(both.replace("blue square", "green triangle", 1), SCENE) is False
    # an object the scene lacks (a yellow circle) makes the relation wrong; none stated: None
    assert relation_correct("a yellow circle to the left of a blue square.", SCENE) is False
    assert relation_correct("a red circle, a blue square and a green triangle.", SCENE) is None


def test_relation_accuracy_of_references_and_of_swapped_captions():
    data = ShapesCaptions("test", 120)
    references = {data.item_id(i): data.item(i)[1][0] for i in range(len(data))}
    result = relation_accuracy(references, data)
    assert result["relation_accuracy"] == 1.0 and 0.1 < result["relation_stated"] < 0.9
    swapped = {
        k: c.replace("left", "@")
        .replace("right", "left")
        .replace("@", "right")
        .replace("above", "@")
        .replace("below", "above")
        .replace("@", "below")
        for k, c in references.items()
    }
    assert relation_accuracy(swapped, data)["relation_accuracy"] == 0.0
    source = ShapesSource("test", 120, 0, 64, (0.5,) * 3, (0.5,) * 3)
    metrics = source.task_metrics(references)
    assert metrics["relation_accuracy"] == 1.0 and metrics["scene_accuracy_3"] == 1.0


def _one_hot(cells: list[tuple[int, int]], side: int = 4) -> np.ndarray:
    maps = np.full((len(cells), side, side), 0.01)
    for i, (r, c) in enumerate(cells):
        maps[i, r, c] = 1.0
    return maps


def test_attention_on_object_right_and_wrong_cells():
    words = "a red circle to the left of a blue square".split()
    # 4 x 4 grid of 16 px cells: RED lies in cell (0, 0), BLUE in (3, 1) and (3, 2)
    right = _one_hot(
        [(2, 2), (0, 0), (0, 0), (1, 1), (1, 1), (1, 1), (1, 1), (1, 1), (3, 1), (3, 2)]
    )
    result = attention_on_object(words, right, SCENE, 64)
    assert [(w, hit) for w, hit, _ in result] == [
        ("red", True),
        ("circle", True),
        ("blue", True),
        ("square", True),
    ]
    wrong = right.copy()
    wrong[1] = _one_hot([(3, 3)])[0]  # "red" looks at an empty corner
    wrong[9] = _one_hot([(0, 0)])[0]  # "square" looks at the red circle
    hits = [hit for _, hit, _ in attention_on_object(words, wrong, SCENE, 64)]
    assert hits == [False, True, True, False]
    chance = {w: share for w, _, share in result}
    assert chance["red"] == 1 / 16 and chance["blue"] == 2 / 16  # cells each object overlaps


def test_attention_on_object_skips_words_naming_no_object():
    # a two-object scene; "yellow circle" is not in it, "triangle" has no colour
    words = "a yellow circle and a triangle and a green triangle".split()
    maps = _one_hot([(0, 0)] * len(words))
    result = attention_on_object(words, maps, [RED, GREEN], 64)
    assert [(w, hit) for w, hit, _ in result] == [("green", False), ("triangle", False)]
    maps[8] = maps[9] = _one_hot([(1, 3)])[0]  # GREEN, centre (56, 24): cell row 1, column 3
    assert [hit for _, hit, _ in attention_on_object(words, maps, [RED, GREEN], 64)] == [True, True]
