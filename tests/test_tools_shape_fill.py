"""tools/shape_fill.py's colour-blind fill ratio, on rendered Moving Shapes objects of known shape."""

import numpy as np
import pytest

from motionaura_jax.data.synthetic import ObjectSpec, render_clip
from tools.shape_fill import colour_blind_fill


@pytest.mark.parametrize(
    ("shape", "low", "high"), [("square", 0.85, 1.0), ("circle", 0.7, 0.85), ("triangle", 0.4, 0.6)]
)
def test_fill_separates_the_shapes(shape, low, high):
    spec = ObjectSpec("red", shape, "left", size_px=24.0, speed=1.0, start_xy=(40.0, 32.0))
    frame = render_clip([spec], frames=5, size=64)["video"][0].astype(np.float64) / 255.0
    assert low <= colour_blind_fill(frame) <= high


def test_empty_frame_has_no_fill():
    assert colour_blind_fill(np.zeros((16, 16, 3))) is None
