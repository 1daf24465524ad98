"""`motionaura encode VIDEO --ckpt DIR --out tokens.npz [--chunk_frames 16] [--max_frames N]`

Video file -> code ids of a trained tokenizer. The video is resized and centre-cropped to the tokenizer's
training size, cut (or padded by repeating its last frame) to 1 + 4k frames, and encoded in temporal chunks of
`--chunk_frames` frames with the causal state carried between chunks, so any length fits in memory and the ids
equal whole-clip encoding. The .npz holds `ids` int32 (T', H', W'), `num_frames`, `fps`, `size`, `num_codes`.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from motionaura_jax import atomic, paths


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="motionaura encode", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("video", help="a video file (mp4, webm, gif, ...)")
    parser.add_argument("--ckpt", required=True, help="the tokenizer's training workdir")
    parser.add_argument("--out", required=True, help="tokens .npz to write")
    parser.add_argument("--chunk_frames", type=int, default=16, help="frames per chunk (a multiple of 4)")
    parser.add_argument("--max_frames", type=int, default=0, help="use at most this many frames (0: all)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    paths.check_output(args.out, "--out")  # before the tokenizer is loaded and the video encoded
    from motionaura_jax.data.video_folder import resize_and_crop
    from motionaura_jax.data.video_io import VideoReadError, read_video

    try:
        frames, fps = read_video(args.video, num_frames=args.max_frames or None)
    except (VideoReadError, FileNotFoundError, OSError) as error:
        print(f"motionaura encode: cannot read {args.video}: {error}", file=sys.stderr)
        return 2

    from motionaura_jax.pipelines.tokenizer import Tokenizer, pad_to_causal_length
    from motionaura_jax.runs import RunError

    try:
        tokenizer = Tokenizer.load(args.ckpt)
    except RunError as error:
        print(f"motionaura encode: {error}", file=sys.stderr)
        return 2
    temporal, _ = tokenizer.compression
    if args.chunk_frames <= 0 or args.chunk_frames % temporal:
        print(
            f"motionaura encode: --chunk_frames={args.chunk_frames} must be a positive multiple of "
            f"{temporal}",
            file=sys.stderr,
        )
        return 2
    config = tokenizer.config
    size = int(config.data.size)
    video = resize_and_crop(frames, size)
    num_frames = len(video)
    video = pad_to_causal_length(video, temporal)  # 1 + 4k frames, the last one repeated
    x = video[None].astype(np.float32) / 127.5 - 1.0
    ids = tokenizer.encode_chunked(x, args.chunk_frames)
    out = paths.as_path(args.out)
    atomic.write_npz(
        out,
        ids=np.asarray(ids[0], np.int32),
        num_frames=np.int32(num_frames),
        fps=np.float32(fps),
        size=np.int32(size),
        num_codes=np.int32(config.model.quantizer.num_codes),
    )
    print(f"{args.video}: {num_frames} frames at {size}x{size} -> ids {tuple(ids.shape[1:])} in {out}")
    return 0
