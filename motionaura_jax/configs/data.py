"""Every `config.data` key of the video pipeline (data/pipeline.py) with its default.

Every stage selects its data the same way: `source` in {"synthetic", "folder", "tfds"}, `path`, `frames`,
`size`, `fps`, plus the extras of each source below.
"""

from __future__ import annotations

from typing import Any

import ml_collections

DEFAULTS: dict[str, Any] = {
    "source": "synthetic",
    "path": "",
    "frames": 17,
    "size": 64,
    "fps": 0.0,  # synthetic: 0 draws an FPS per clip; folder: 0 keeps each video's own; tfds: ignored
    "num_objects": 1,  # synthetic
    "caption_order": "drawn",  # synthetic, two objects: "drawn" or "left_to_right" (data/synthetic.py)
    "split_seed": 0,  # synthetic: the generator's seed (the shuffle uses the `seed` argument)
    "noise_std": 0.0,  # synthetic
    "num_clips": 0,  # synthetic: clips per epoch (0: the split's default)
    "random_crop": True,  # folder/tfds, train split only: random clip start and crop
    "flip": False,  # folder/tfds, train split only: random horizontal flip (wrong for left/right captions)
    "with_masks": False,  # also return "masks" (B,T,H,W) bool and "sketch" (B,H,W) uint8 (folder: sidecar files)
    "read_threads": 2,  # background decode threads per process (0: decode on next())
    "prefetch": 8,  # elements decoded ahead per process
    "worker_count": 0,  # grain worker processes (0: threads only; >0 needs an `if __name__ == "__main__"`)
}


def get_config(**overrides: Any) -> ml_collections.ConfigDict:
    """Every data key with its default, `overrides` replacing some; an unknown key is an error."""
    unknown = sorted(set(overrides) - set(DEFAULTS))
    if unknown:
        raise KeyError(f"unknown data keys {unknown}; known: {sorted(DEFAULTS)}")
    return ml_collections.ConfigDict({**DEFAULTS, **overrides})
