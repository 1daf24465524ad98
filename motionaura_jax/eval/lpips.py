"""LPIPS as an evaluation metric: computed when `eval.lpips_weights` names a local file, otherwise every
report says "unavailable", never a number. The network and its weight loading live in `models/lpips.py`
(it also serves as the tokenizer's perceptual loss).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from motionaura_jax.models.lpips import LPIPS

UNAVAILABLE = "unavailable"


def load_lpips(weights_path: str | None, net: str = "alex") -> LPIPS | None:
    """The LPIPS metric when a weights file is configured, else None (report "unavailable")."""
    if not weights_path:
        return None
    return LPIPS.from_file(weights_path, net=net)


def lpips_or_unavailable(metric: LPIPS | None, x_bthwc: np.ndarray, y_bthwc: np.ndarray) -> float | str:
    """Mean LPIPS over the videos, or the string "unavailable" when no weights were given."""
    if metric is None:
        return UNAVAILABLE
    return float(np.mean(metric.video(x_bthwc, y_bthwc)))


def protocol(metric: LPIPS | None) -> dict[str, Any]:
    if metric is None:
        return {
            "lpips": UNAVAILABLE,
            "reason": "no local weights file (set eval.lpips_weights); none ship offline",
        }
    return {
        "net": metric.net,
        "version": "0.1",
        "weights": metric.source,
        "range": "[-1, 1]",
        "video": "per frame, averaged over frames",
    }
