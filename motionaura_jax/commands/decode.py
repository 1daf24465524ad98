"""`motionaura decode tokens.npz --ckpt DIR --out video.mp4 [--chunk_latents 4] [--fps F]`

Code ids (from `motionaura encode` or a sampler) -> video file, decoded `--chunk_latents` latent frames at a
time with the causal state carried between chunks. The .npz needs `ids` (T', H', W') or (B, T', H', W') int;
`num_frames` and `fps`, when present, trim the padding and set the frame rate. With a batch, `--out` gets a
`_<i>` suffix per video.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from motionaura_jax import paths


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="motionaura decode", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("tokens", help=".npz with `ids`")
    parser.add_argument("--ckpt", required=True, help="the tokenizer's training workdir")
    parser.add_argument("--out", required=True, help="video file to write (.mp4, .gif, ...)")
    parser.add_argument("--chunk_latents", type=int, default=4, help="latent frames per chunk")
    parser.add_argument("--fps", type=float, default=0.0, help="frame rate (default: the .npz's, else 8)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    paths.check_output(args.out, "--out")  # before the tokenizer is loaded and the ids decoded
    try:
        with np.load(args.tokens, allow_pickle=False) as data:
            tokens = {k: data[k] for k in data.files}
    except (OSError, ValueError) as error:
        print(f"motionaura decode: cannot read {args.tokens}: {error}", file=sys.stderr)
        return 2
    if "ids" not in tokens:
        print(
            f"motionaura decode: {args.tokens} has no `ids` array (keys: {sorted(tokens)})", file=sys.stderr
        )
        return 2
    ids = np.asarray(tokens["ids"])
    if ids.ndim == 3:
        ids = ids[None]
    if ids.ndim != 4 or ids.dtype.kind not in "iu":
        print(
            f"motionaura decode: `ids` must be int (T', H', W') or (B, T', H', W'), got {ids.dtype} "
            f"{ids.shape}",
            file=sys.stderr,
        )
        return 2

    from motionaura_jax.data.video_io import to_uint8, write_video
    from motionaura_jax.pipelines.tokenizer import Tokenizer
    from motionaura_jax.runs import RunError

    try:
        tokenizer = Tokenizer.load(args.ckpt)
    except RunError as error:
        print(f"motionaura decode: {error}", file=sys.stderr)
        return 2
    k = tokenizer.num_codes
    if ids.min() < 0 or ids.max() >= k:
        print(
            f"motionaura decode: ids span [{ids.min()}, {ids.max()}] but the tokenizer has {k} codes "
            f"(a [MASK] id left by an unfinished sampler?)",
            file=sys.stderr,
        )
        return 2
    if args.chunk_latents <= 0:
        print("motionaura decode: --chunk_latents must be positive", file=sys.stderr)
        return 2
    video = np.stack([to_uint8(v) for v in tokenizer.decode_chunked(ids, args.chunk_latents)])
    if "num_frames" in tokens:
        video = video[:, : int(tokens["num_frames"])]
    fps = args.fps or float(tokens.get("fps", 0.0)) or 8.0
    out = paths.as_path(args.out)
    outputs = (
        [out]
        if len(video) == 1
        else [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(len(video))]
    )
    for path, v in zip(outputs, video, strict=True):
        write_video(path, v, fps=fps)
        print(f"wrote {path}: {v.shape[0]} frames {v.shape[1]}x{v.shape[2]} at {fps:g} fps")
    return 0
