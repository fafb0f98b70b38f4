import numpy as np

from lrcn.data.synthetic.moving_shapes import MovingShapesCaptions
from lrcn.data.synthetic.shapes import (
    COLOURS,
    ShapesCaptions,
    named_objects,
    sample_scene,
    scene_accuracy,
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
