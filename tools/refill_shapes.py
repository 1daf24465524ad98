"""Does a text-to-video denoiser keep a shape when it redraws part of a real clip's codes? Per captioned shape.

    python tools/refill_shapes.py --ckpt=runs/quickstart/t2v --clips=96 --fraction=0.3

Takes `--clips` clips of the run's own token cache (real codes of real Moving Shapes clips with their
captions), masks a random `--fraction` of the codes of each, and lets the denoiser redraw them given the rest
and the caption, once by its most probable code (argmax) and once by a draw from its distribution
(temperature 1, no guidance). Each version is decoded by the run's tokenizer and judged (eval/judge.py).
Printed per captioned shape: the share of clips whose shape the judge reads right and the median fill ratio
of the largest object (area over box: square 1, circle pi/4, triangle 1/2), for the true codes (the
tokenizer's ceiling), the argmax refill and the drawn refill; and the denoiser's cross-entropy (nats) on the
masked codes that are not the background code. A denoiser whose conditional distribution is right keeps
the drawn refill near the true codes; one that rounds corners moves squares towards the circle's fill.

`--caption_shape=circle` (or square, triangle) gives the denoiser every caption with its shape word replaced
(judging still asks for the clip's real shape): how far the cross-entropy rises says how much the denoiser
reads the shape word rather than the visible codes.

    python tools/refill_shapes.py --ckpt=runs/quickstart/t2v --fraction=0.95 --caption_shape=circle
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from motionaura_jax.data.synthetic import SHAPES


def first_shape(caption: str) -> str:
    from motionaura_jax.data.synthetic import parse_caption

    return parse_caption(caption)[0][1]


def with_shape(caption: str, shape: str) -> str:
    """The caption with the shape of every object replaced by `shape`."""
    from motionaura_jax.data.synthetic import object_caption, parse_caption

    return " and ".join(
        object_caption(colour, shape, direction) for colour, _, direction in parse_caption(caption)
    )


def judged(videos: np.ndarray, captions: list[str], shapes: np.ndarray) -> dict[str, tuple[float, float]]:
    """{shape: (share with the shape judged right, median fill of the largest object)}."""
    from motionaura_jax.eval import judge

    out = {}
    for shape in SHAPES:
        rows = np.nonzero(shapes == shape)[0]
        if not len(rows):
            continue
        right = [judge.judge_and_score(videos[i], captions[i])["shape"] for i in rows]
        fills = [found[0].fill for found in (judge.judge_video(videos[i]) for i in rows) if found]
        out[shape] = (float(np.mean(right)), float(np.median(fills)) if fills else float("nan"))
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ckpt", required=True, help="the text-to-video training workdir")
    parser.add_argument("--cache", default="", help="token cache folder (default: the run's training cache)")
    parser.add_argument("--clips", type=int, default=96)
    parser.add_argument("--fraction", type=float, default=0.3, help="share of the codes redrawn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--caption_shape", default="", choices=("", *SHAPES), help="replace the shape words")
    args = parser.parse_args(argv)
    if not 0.0 < args.fraction < 1.0:
        raise SystemExit(f"refill_shapes: --fraction must be in (0, 1), got {args.fraction}")

    import jax
    import jax.numpy as jnp

    from motionaura_jax.data.token_cache import TokenCache
    from motionaura_jax.diffusion.sampler import timesteps_for_masked
    from motionaura_jax.pipelines import T2VGenerator
    from motionaura_jax.train.t2v import cache_dir

    generator = T2VGenerator.load(args.ckpt)
    cache = TokenCache(args.cache or cache_dir(generator.config))
    n = min(args.clips, len(cache))
    batch = cache.batch(np.arange(n))
    captions = [cache.caption(i) for i in range(n)]
    shapes = np.array([first_shape(c) for c in captions])
    ids = np.asarray(batch["ids"])
    num_codes = generator.schedule.num_codes
    rng = np.random.default_rng(args.seed)
    masked = rng.random(ids.shape) < args.fraction
    t = int(timesteps_for_masked(generator.schedule, np.array([args.fraction]))[0])

    text, text_mask = batch["text"], batch["text_mask"]
    if args.caption_shape:
        text, text_mask = generator.encode_prompts([with_shape(c, args.caption_shape) for c in captions])

    @jax.jit
    def log_probs(ids_in):
        logits = generator.model.apply(
            {"params": generator.params},
            ids_in,
            jnp.full((n,), t, jnp.int32),
            jnp.asarray(batch["fps"]),
            jnp.asarray(text),
            jnp.asarray(text_mask),
        )
        return jax.nn.log_softmax(logits, axis=-1)

    log_p = log_probs(jnp.where(jnp.asarray(masked), num_codes, jnp.asarray(ids)))
    argmax = np.where(masked, np.asarray(jnp.argmax(log_p, -1)), ids)
    drawn = np.where(masked, np.asarray(jax.random.categorical(jax.random.key(args.seed), log_p)), ids)
    ce = -np.asarray(jnp.take_along_axis(log_p, jnp.asarray(ids)[..., None], -1)[..., 0])
    background = np.bincount(ids.reshape(-1), minlength=num_codes).argmax()

    swapped = f", every caption's shape word -> {args.caption_shape!r}" if args.caption_shape else ""
    print(f"{n} clips of the token cache, {args.fraction:.0%} of the codes redrawn (timestep {t}){swapped}")
    results = {name: judged(generator.decode(codes), captions, shapes) for name, codes in
               (("true codes", ids), ("argmax refill", argmax), ("drawn refill", drawn))}  # fmt: skip
    for shape in SHAPES:
        rows = shapes == shape
        if not rows.any():
            continue
        on_object = masked[rows] & (ids[rows] != background)
        cells = "  ".join(
            f"{name}: {r[shape][0]:.0%} right, fill {r[shape][1]:.3f}" for name, r in results.items()
        )
        print(f"{shape:8s} ({rows.sum():3d}) CE {ce[rows][on_object].mean():.3f}  {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
