"""tools/refill_shapes.py's per-shape judging, on rendered Moving Shapes clips of known shape and caption."""

import numpy as np

from motionaura_jax.data.synthetic import ObjectSpec, object_caption, render_clip
from tools.refill_shapes import first_shape, judged, with_shape


def test_rendered_clips_are_judged_right_with_their_shapes_fill():
    rng = np.random.default_rng(3)
    wanted = [("red", "square", "left"), ("blue", "circle", "up"), ("green", "triangle", "right")] * 2
    videos = np.stack(
        [render_clip([ObjectSpec(*w, size_px=12.0)], frames=17, size=32, rng=rng)["video"] for w in wanted]
    )
    captions = [object_caption(*w) for w in wanted]
    shapes = np.array([first_shape(c) for c in captions])
    assert list(shapes[:3]) == ["square", "circle", "triangle"]
    result = judged(videos, captions, shapes)
    assert {s: r[0] for s, r in result.items()} == {"circle": 1.0, "square": 1.0, "triangle": 1.0}
    assert (
        result["square"][1] > 0.95 and 0.7 < result["circle"][1] < 0.85 and 0.4 < result["triangle"][1] < 0.6
    )
    # A square asked for where a circle was drawn: wrong, and the fill says why.
    wrong = judged(videos[1:2], ["a blue square moving up"], np.array(["square"]))
    assert wrong["square"][0] == 0.0 and wrong["square"][1] < 0.85


def test_with_shape_replaces_every_objects_shape_word():
    assert with_shape("a red square moving left", "circle") == "a red circle moving left"
    two = with_shape("a red square moving left and a blue triangle moving up", "circle")
    assert two == "a red circle moving left and a blue circle moving up"
