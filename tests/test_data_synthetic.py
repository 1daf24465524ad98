"""Moving Shapes: captions agree with the pixels, the held-out split holds, generation is deterministic."""

import numpy as np
import pytest

from motionaura_jax.data import synthetic
from motionaura_jax.data.synthetic import (
    COLOURS,
    HELD_OUT_COMBINATIONS,
    MovingShapes,
    ObjectSpec,
    parse_caption,
    render_clip,
)

# The palette written out again here (not imported) so a wrong constant in the module fails the test.
PALETTE = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "magenta": (255, 0, 255),
    "cyan": (0, 255, 255),
    "white": (255, 255, 255),
}


def _exact_colour_pixels(frame_hw3: np.ndarray, rgb) -> np.ndarray:
    return np.all(frame_hw3 == np.asarray(rgb, np.uint8), axis=-1)


def _centroid(mask_hw: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask_hw)
    return np.array([xs.mean(), ys.mean()])


def _direction_from_pixels(video, rgb) -> tuple[str, float]:
    first = _exact_colour_pixels(video[0], rgb)
    last = _exact_colour_pixels(video[-1], rgb)
    assert first.sum() > 10 and last.sum() > 10, "object not visible at the clip's ends"
    dx, dy = _centroid(last) - _centroid(first)
    if abs(dx) > abs(dy):
        return ("right" if dx > 0 else "left"), abs(dx)
    return ("down" if dy > 0 else "up"), abs(dy)


def _palette_pixel_counts(video) -> dict[str, int]:
    return {name: int(_exact_colour_pixels(video, rgb).sum()) for name, rgb in PALETTE.items()}


@pytest.mark.parametrize("num_objects", [1, 2])
def test_captions_agree_with_pixels(num_objects):
    frames, size = 17, 64
    ds = MovingShapes(frames=frames, size=size, num_objects=num_objects, split="train", seed=3, num_clips=40)
    for i in range(len(ds)):
        clip = ds[i]
        video = clip["video"]
        assert video.shape == (frames, size, size, 3) and video.dtype == np.uint8
        described = parse_caption(clip["caption"])
        assert len(described) == num_objects
        counts = _palette_pixel_counts(video)
        named = {c for c, _, _ in described}
        # Only the named colours appear as exact palette pixels (AA edges are blends, not palette colours).
        for name, n in counts.items():
            if name in named:
                assert n > 0, (clip["caption"], counts)
            else:
                assert n == 0, (clip["caption"], counts)
        for colour, shape, direction in described:
            got, distance = _direction_from_pixels(video, PALETTE[colour])
            assert got == direction, (i, clip["caption"], got)
            # 0.5-2 px/frame over 16 steps (small slack for occlusion and the pixel grid).
            assert 0.5 * (frames - 1) - 1.5 <= distance <= 2.0 * (frames - 1) + 1.5, (
                clip["caption"],
                distance,
            )
            if num_objects == 1:
                # Shape from pixel fill ratio of its bounding box: square ~1, circle ~pi/4, triangle ~1/2.
                mask = _exact_colour_pixels(video[0], PALETTE[colour])
                ys, xs = np.nonzero(mask)
                fill = mask.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1))
                expected = {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5}[shape]
                assert abs(fill - expected) < 0.12, (clip["caption"], fill)
                extent = max(np.ptp(ys), np.ptp(xs)) + 1
                assert 0.2 * size - 2 <= extent <= 0.4 * size + 1, (clip["caption"], extent)
        # Masks cover the object pixels; the sketch is the outline (a thin subset of the first mask).
        masks = clip["masks"]
        assert masks.shape == (frames, size, size) and masks.dtype == bool
        lit = video.max(axis=-1) == 255
        assert np.all(masks[lit]), "an object pixel outside the masks"
        sketch = clip["sketch"]
        assert sketch.shape == (size, size) and set(np.unique(sketch)) <= {0, 255}
        assert np.all(masks[0][sketch > 0]) and 0 < (sketch > 0).sum() < masks[0].sum()
        assert clip["fps"] in synthetic.DEFAULT_FPS_CHOICES


def test_antialiased_edges_and_noise():
    clip = render_clip(
        [ObjectSpec("white", "circle", "right")], frames=5, size=32, rng=np.random.default_rng(0)
    )
    values = np.unique(clip["video"][0, ..., 0])
    assert len(values) > 3, "edges should take intermediate values (antialiasing)"
    noisy = MovingShapes(frames=5, size=32, noise_std=8.0, num_clips=2)[0]
    background = noisy["video"][:, ~noisy["masks"][0]]
    assert background.std() > 3  # black plus noise


def test_held_out_split_holds():
    held = set(HELD_OUT_COMBINATIONS)
    assert len(held) == 8 and all(c in COLOURS for c, _, _ in held)
    # Every colour, shape and direction still occurs in training: only the combinations are new.
    train_combos = set(synthetic.TRAIN_COMBINATIONS)
    assert {c for c, _, _ in train_combos} == set(PALETTE)
    assert {s for _, s, _ in train_combos} == {"circle", "square", "triangle"}
    assert {d for _, _, d in train_combos} == {"left", "right", "up", "down"}
    assert len(train_combos) + len(held) == 84 and not (train_combos & held)
    seen_train = set()
    for num_objects in (1, 2):
        ds = MovingShapes(frames=5, size=32, num_objects=num_objects, split="train", seed=0, num_clips=600)
        for i in range(len(ds)):
            for combo in parse_caption(ds[i]["caption"]):
                assert combo not in held, (i, combo)
                seen_train.add(combo)
    assert len(seen_train) > 60  # the draw covers the allowed combinations
    ds = MovingShapes(frames=5, size=32, split="heldout", seed=0, num_clips=200)
    seen_held = {parse_caption(ds[i]["caption"])[0] for i in range(len(ds))}
    assert seen_held == held
    for colour, shape, direction in HELD_OUT_COMBINATIONS[:3]:
        clip = MovingShapes(frames=9, size=32).compositional_clip(colour, shape, direction, index=1)
        assert clip["caption"] == f"a {colour} {shape} moving {direction}"
        assert _direction_from_pixels(clip["video"], PALETTE[colour])[0] == direction


def test_deterministic_random_access():
    a = MovingShapes(frames=9, size=32, num_objects=2, split="validation", seed=7, num_clips=10)
    b = MovingShapes(frames=9, size=32, num_objects=2, split="validation", seed=7, num_clips=10)
    order_a = [a[i] for i in range(10)]
    order_b = {i: b[i] for i in reversed(range(10))}
    for i in range(10):
        np.testing.assert_array_equal(order_a[i]["video"], order_b[i]["video"])
        np.testing.assert_array_equal(order_a[i]["masks"], order_b[i]["masks"])
        assert order_a[i]["caption"] == order_b[i]["caption"] and order_a[i]["fps"] == order_b[i]["fps"]
    other_seed = MovingShapes(frames=9, size=32, num_objects=2, split="validation", seed=8, num_clips=10)
    other_split = MovingShapes(frames=9, size=32, num_objects=2, split="test", seed=7, num_clips=10)
    assert not np.array_equal(other_seed[0]["video"], order_a[0]["video"])
    assert not np.array_equal(other_split[0]["video"], order_a[0]["video"])
    np.testing.assert_array_equal(a[-1]["video"], a[9]["video"])
    with pytest.raises(IndexError):
        a[10]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(frames=16), r"1 \+ 4k"),
        (dict(size=60), "multiple of 8"),
        (dict(split="dev"), "split"),
        (dict(num_objects=3), "num_objects"),
        (dict(caption_order="random"), "caption_order"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MovingShapes(**kwargs)


def test_left_to_right_captions_name_the_leftmost_object_first_from_the_pixels():
    kwargs = dict(frames=17, size=64, num_objects=2, split="train", seed=5, num_clips=24)
    drawn, reading = MovingShapes(**kwargs), MovingShapes(**kwargs, caption_order="left_to_right")
    reordered = 0
    for i in range(len(drawn)):
        a, b = drawn[i], reading[i]
        assert sorted(parse_caption(a["caption"])) == sorted(parse_caption(b["caption"]))
        reordered += a["caption"] != b["caption"]
        # The leftmost object at the first frame, found from its colour's pixels, is named first.
        (c1, _, _), (c2, _, _) = parse_caption(b["caption"])
        left = [np.nonzero(_exact_colour_pixels(b["video"][0], PALETTE[c]))[1].mean() for c in (c1, c2)]
        assert left[0] < left[1], (b["caption"], left)
        # The pixels differ only where the paths could not be kept apart (which object is drawn on top).
        geos = [{k: o[k] for k in ("size_px", "speed", "start_xy")} for o in a["objects"]]
        specs = [ObjectSpec(o["colour"], o["shape"], o["direction"]) for o in a["objects"]]
        if not synthetic._boxes_overlap(geos, specs, 17):
            np.testing.assert_array_equal(a["video"], b["video"])
    assert 0 < reordered < len(drawn)  # both orders occur among the drawn captions
