"""`motionaura sample --ckpt=T2V_WORKDIR --prompt "a red circle moving left" --out video.mp4 [options]`

Text → discrete diffusion sampler (all-[MASK] start, --steps reverse steps with exact skip transitions,
classifier-free guidance --guidance, --temperature) → the frozen tokenizer's decoder → a video file and a PNG
contact sheet next to it (same stem). Several --prompt flags, or --num > 1, write one video per sample with a
`_<i>` suffix, plus captions.jsonl (the format `motionaura eval t2v` reads). --tokens also saves the code ids.
--guidance=-1 turns guidance off (one conditional pass per step). --method=confidence decodes in MaskGIT's
confidence order instead of the posterior chain (absorbing diffusion only; --mask_curve, --choice_temperature,
--frame_order, --refine_steps, --refine_fraction, --refine_guidance);
--temperature_end ramps the temperature linearly over the steps.
"""

from __future__ import annotations

import argparse
import sys
import time

from motionaura_jax import paths


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="motionaura sample", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ckpt", required=True, help="the text-to-video training workdir")
    parser.add_argument("--prompt", action="append", required=True, help="caption (repeat for several)")
    parser.add_argument("--out", required=True, help="video file to write (.mp4, .gif, ...)")
    parser.add_argument("--num", type=int, default=1, help="samples per prompt")
    parser.add_argument(
        "--steps", type=int, default=0, help="reverse steps (default: the config's sample.num_steps)"
    )
    parser.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="CFG scale s (0: unconditional, 1: conditional; default: the config's; -1: off)",
    )
    parser.add_argument(
        "--temperature", type=float, default=0.0, help="x0 temperature (default: the config's)"
    )
    parser.add_argument(
        "--fps", type=float, default=0.0, help="FPS condition and output rate (default: config)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--method", choices=("posterior", "confidence"), default=None, help="sampler (default: the config's)"
    )
    parser.add_argument(
        "--temperature_end", type=float, default=None, help="last-step temperature of a linear ramp (0: none)"
    )
    parser.add_argument(
        "--mask_curve",
        choices=("cosine", "linear", "diffusion"),
        default=None,
        help="confidence: masked per step",
    )
    parser.add_argument(
        "--choice_temperature",
        type=float,
        default=None,
        help="confidence: Gumbel noise on the choice, annealed",
    )
    parser.add_argument(
        "--frame_order",
        type=float,
        default=None,
        help="confidence: > 0 reveals earlier latent frames first (large: frame by frame)",
    )
    parser.add_argument(
        "--refine_steps",
        type=int,
        default=None,
        help="confidence: Gibbs rounds after decoding, each redrawing --refine_fraction of the codes",
    )
    parser.add_argument("--refine_fraction", type=float, default=None, help="confidence: see --refine_steps")
    parser.add_argument(
        "--refine_guidance",
        type=float,
        default=None,
        help="confidence: guidance scale of the refinement rounds (default: --guidance's; 1: none)",
    )
    parser.add_argument(
        "--tokenizer", default="", help="tokenizer workdir (default: the one it was trained on)"
    )
    parser.add_argument("--tokens", default="", help="also write the code ids to this .npz")
    parser.add_argument(
        "--warmup",
        action="store_true",
        help="generate once untimed first (compiles), so the reported clips/s is the steady-state speed",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    if args.num < 1:
        print(f"motionaura sample: --num must be >= 1, got {args.num}", file=sys.stderr)
        return 2
    empty = [i for i, p in enumerate(args.prompt) if not p.strip()]
    if empty:
        print(
            f"motionaura sample: --prompt is empty (prompt {empty[0] + 1}); give a caption, or --guidance=0 "
            "with any caption for unconditional samples",
            file=sys.stderr,
        )
        return 2
    out = paths.as_path(args.out)  # a local path or a URL (gs://...)
    if not out.suffix:
        print(f"motionaura sample: --out={out} needs a video suffix such as .mp4 or .gif", file=sys.stderr)
        return 2
    # Before the run is loaded: an output that cannot be written is named now, not after sampling.
    paths.check_output(args.out, "--out")
    if args.tokens:
        paths.check_output(args.tokens, "--tokens")

    import numpy as np

    from motionaura_jax import atomic, runs
    from motionaura_jax.data.video_io import write_contact_sheet, write_video
    from motionaura_jax.pipelines.t2v import T2VGenerator
    from motionaura_jax.runs import RunError

    try:
        run = runs.load_run(args.ckpt, task="t2v")
    except RunError as error:
        print(f"motionaura sample: {error}", file=sys.stderr)
        return 2
    config = run.config
    try:
        generator = T2VGenerator.from_run(run, args.tokenizer or None)
    except (RunError, ValueError) as error:
        print(
            f"motionaura sample: tokenizer {args.tokenizer or config.tokens.tokenizer_workdir}: {error} "
            "(pass --tokenizer=VAE_WORKDIR if it moved)",
            file=sys.stderr,
        )
        return 2
    from motionaura_jax.diffusion.sampler import CONFIDENCE_OPTIONS, options_from_config

    s = config.sample
    with s.unlocked():
        for key in ("method", "temperature_end", *CONFIDENCE_OPTIONS):
            if getattr(args, key) is not None:
                s[key] = getattr(args, key)

    try:
        options = options_from_config(s)
    except ValueError as error:
        print(f"motionaura sample: {error}", file=sys.stderr)
        return 2
    guidance = s.guidance_scale if args.guidance is None else args.guidance
    guidance = None if guidance is not None and guidance < 0 else guidance
    fps = args.fps or float(s.fps)
    prompts = [p for p in args.prompt for _ in range(args.num)]
    num_steps = args.steps or int(s.num_steps)

    def generate():
        ids = generator.tokens(
            prompts,
            num_steps=num_steps,
            guidance_scale=guidance,
            temperature=args.temperature or float(s.temperature),
            fps=fps,
            seed=args.seed,
            **options,
        )
        ids = np.asarray(ids)  # waits for the device
        return ids, generator.decode(ids)

    if args.warmup:
        generate()
    start = time.perf_counter()
    ids, videos = generate()
    seconds = time.perf_counter() - start
    print(
        f"generated {len(prompts)} clips ({s.method}, {num_steps} steps) in {seconds:.2f} s: "
        f"{len(prompts) / seconds:.2f} clips/s{'' if args.warmup else ' (compilation included; --warmup excludes it)'}"
    )
    single = len(prompts) == 1
    outputs = [out if single else out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(len(prompts))]
    for path, video, prompt in zip(outputs, videos, prompts, strict=True):
        write_video(path, video, fps)
        write_contact_sheet(path.with_suffix(".png"), video)
        print(
            f"{prompt!r} -> {path} ({video.shape[0]} frames {video.shape[1]}x{video.shape[2]}), "
            f"{path.with_suffix('.png').name}"
        )
    if not single:
        import json

        atomic.write_text(
            out.parent / "captions.jsonl",
            "".join(
                json.dumps({"video": p.name, "caption": c}) + "\n"
                for p, c in zip(outputs, prompts, strict=True)
            ),
        )
    if args.tokens:
        atomic.write_npz(
            paths.as_path(args.tokens),
            ids=np.asarray(ids, np.int32),
            fps=np.float32(fps),
            prompts=np.asarray(prompts),
        )
    return 0
