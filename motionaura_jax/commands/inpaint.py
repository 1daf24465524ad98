"""`motionaura inpaint --ckpt=RUN --video=IN.mp4 --mask=MASK --sketch=SKETCH.png --prompt=... --out=OUT.mp4`

Regenerates the masked region of a video from a sketch and a caption and keeps the rest (sketch-guided
inpainting, motionaura_jax/pipelines/inpaint.py). RUN is an inpaint run (experiments/inpaint.py) or a t2v run
(no fine-tune: the text-to-video model with token paste-back only). MASK is a mask video of the same size and
length, a PNG applied to every frame (white = the region to redo), or a box "x0,y0,x1,y1" in pixels. Writes
OUT and OUT's stem + ".png": a contact sheet of input / mask / sketch / output rows. Tokens outside the
region are pasted back from the input; --paste_pixels also copies the input's pixels outside the (dilated)
mask. Bad inputs are reported in one line naming the input and the fix (exit 2) and nothing is written.
"""

from __future__ import annotations

import argparse
import sys

from motionaura_jax import paths


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="motionaura inpaint", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ckpt", required=True, help="an inpaint run (or a t2v run: no fine-tune)")
    parser.add_argument("--video", required=True, help="input video (1 + 4k frames at the run's size)")
    parser.add_argument("--mask", required=True, help='mask video, PNG, or box "x0,y0,x1,y1"')
    parser.add_argument("--sketch", required=True, help="sketch image (PNG; lines on a plain background)")
    parser.add_argument("--prompt", required=True, help="caption of what the region should show")
    parser.add_argument("--out", required=True, help="video file to write (.mp4, .gif, ...)")
    parser.add_argument("--steps", type=int, default=0, help="reverse steps (default: sample.num_steps)")
    parser.add_argument("--guidance", type=float, default=None, help="CFG scale (default: config; -1: off)")
    parser.add_argument("--temperature", type=float, default=0.0, help="x0 temperature (default: config)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--paste_pixels", action="store_true", help="copy input pixels outside the mask")
    parser.add_argument(
        "--paste_every_step",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep the known tokens through the chain (absorbing; default: the run's sample.paste_every_step)",
    )
    parser.add_argument("--tokens", default="", help="also write the ids (and the token region) to this .npz")
    return parser.parse_args(argv)


def _fail(message: str) -> int:
    print(f"motionaura inpaint: {message}", file=sys.stderr)
    return 2


def main(argv: list[str]) -> int:
    args = parse(argv)
    from motionaura_jax.data.video_io import VIDEO_EXTENSIONS

    if not args.prompt.strip():
        return _fail("--prompt is empty; give a caption of what the region should show")
    out = paths.as_path(args.out)
    if out.suffix.lower() not in VIDEO_EXTENSIONS:
        return _fail(f"--out={args.out} needs a video suffix ({', '.join(VIDEO_EXTENSIONS)})")
    try:
        paths.check_output(args.out, "--out")
        if args.tokens:
            paths.check_output(args.tokens, "--tokens")
    except paths.OutputPathError as error:
        return _fail(str(error))

    from motionaura_jax.pipelines import inpaint as pipeline

    try:  # every input is checked before anything is loaded or written
        config = pipeline.check_run(args.ckpt)
        inputs = pipeline.load_inputs(args.video, args.mask, args.sketch)
        pipeline.check_video(inputs, config, pipeline.tokenizer_compression(config)[0])
    except pipeline.InpaintInputError as error:
        return _fail(str(error))

    import numpy as np

    from motionaura_jax import atomic
    from motionaura_jax.data.video_io import write_video
    from motionaura_jax.runs import RunError

    try:
        inpainter = pipeline.Inpainter.load(args.ckpt)
    except (RunError, ValueError) as error:
        return _fail(f"--ckpt={args.ckpt}: {error}")
    result = inpainter.inpaint(
        inputs.video[None],
        inputs.masks[None],
        inputs.sketch[None],
        [args.prompt],
        num_steps=args.steps,
        guidance_scale=args.guidance,
        temperature=args.temperature,
        fps=inputs.fps,
        seed=args.seed,
        paste_pixels=args.paste_pixels,
        paste_every_step=args.paste_every_step,
    )
    video = result["video"][0]
    write_video(out, video, inputs.fps)
    sheet = pipeline.inpaint_sheet(inputs.video, result["pixel_region"][0], inputs.sketch, video)
    pipeline.write_png(out.with_suffix(".png"), sheet)
    if args.tokens:
        atomic.write_npz(
            paths.as_path(args.tokens),
            ids=result["ids"].astype(np.int32),
            source_ids=result["source_ids"].astype(np.int32),
            region=result["region"],
        )
    t, h, w, _ = video.shape
    print(f"{args.prompt!r} -> {out} ({t} frames {w}x{h}), {out.with_suffix('.png').name}")
    return 0
