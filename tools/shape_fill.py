"""How round are a text-to-video run's generated objects of one shape? The judge's fill ratio beside a colour-blind one.

    python tools/shape_fill.py --ckpt=runs/quickstart/t2v --shape=square
    python tools/shape_fill.py --ckpt=runs/quickstart/t2v --shape=square --set refine_steps=0,temperature=0.5

Samples every colour x direction caption of `--shape` (`--repeats` times each) with the run's sampler settings
(overridden by `--set`), and prints the medians over clips of: the judge's fill ratio of the largest object
(area over box: square 1, circle pi/4, upright triangle 1/2), the binary fill of the largest foreground
component regardless of colour (if it is much higher, specks of other colours break the object; if the same,
the outline itself is off), and the share of frames where the judge split a component in two colours.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np


def colour_blind_fill(frame: np.ndarray, threshold: float = 0.3) -> float | None:
    """Foreground pixels of the largest 8-connected component over its bounding box; None if empty."""
    from scipy import ndimage

    labels, count = ndimage.label(frame.max(axis=-1) > threshold, structure=np.ones((3, 3)))
    if not count:
        return None
    sizes = ndimage.sum(labels > 0, labels, range(1, count + 1))
    ys, xs = np.nonzero(labels == 1 + int(np.argmax(sizes)))
    return len(ys) / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ckpt", required=True, help="the text-to-video training workdir")
    parser.add_argument("--shape", default="square", choices=("circle", "square", "triangle"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", default="", help="sampler overrides, e.g. refine_steps=0,temperature=0.5")
    args = parser.parse_args(argv)

    from motionaura_jax.data import synthetic
    from motionaura_jax.eval import judge
    from motionaura_jax.pipelines import T2VGenerator

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run as a script from anywhere
    from tools.judge_t2v import parse_variant

    generator = T2VGenerator.load(args.ckpt)
    s = generator.config.sample
    with s.unlocked():
        s.update(parse_variant(args.set))
    from motionaura_jax.diffusion.sampler import options_from_config

    captions = [
        synthetic.object_caption(colour, args.shape, direction)
        for colour in synthetic.COLOURS
        for direction in synthetic.DIRECTIONS
    ] * args.repeats
    videos = generator.videos(
        captions,
        seed=args.seed,
        num_steps=int(s.num_steps),
        guidance_scale=float(s.guidance_scale),
        temperature=float(s.temperature),
        fps=float(s.fps),
        **options_from_config(s),
    )
    judged, blind, split = [], [], []
    for video in videos:
        frames = judge.to_unit_float(video)
        per_frame = [judge.detect_frame(f) for f in frames]
        largest = [max(d, key=lambda x: x.mass) for d in per_frame if d]
        judged.append(np.median([d.fill for d in largest]) if largest else 0.0)
        fills = [f for f in map(colour_blind_fill, frames) if f is not None]
        blind.append(np.median(fills) if fills else 0.0)
        split.append(np.mean([any(x.touching for x in d) for d in per_frame]))
    print(
        f"{len(captions)} {args.shape} clips: judge fill {np.median(judged):.3f}, colour-blind fill "
        f"{np.median(blind):.3f}, frames split by colour {np.mean(split):.1%}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
