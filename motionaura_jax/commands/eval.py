"""`motionaura eval recon|t2v|inpaint ...`: metrics with their protocol (metrics.json + a markdown table).

motionaura eval t2v --ckpt=RUN --out=metrics.json [--seen=64] [--heldout=64] [--sheets=DIR] [--fvd]
        [--config.sample.key=value ...]
    Generates one clip per caption with RUN's own sampling settings (or those overridden, e.g.
    --config.sample.guidance_scale=3; the protocol records what was used), for --seen captions of trained
    colour x shape x direction combinations and --heldout of the 8 never-trained ones (two objects a
    caption when RUN trained on two), judges them as below (plus visible_all_frames: an object is found in
    every frame) and writes PNG contact sheets and GIFs. --fvd adds seen/fvd: the seen clips against as
    many clips of the test split (I3D, eval/fvd.py's pinned protocol).
motionaura eval t2v --videos=DIR --out=metrics.json [--captions=FILE] [--fvd_reference=DIR] [--limit=N]
    Caption adherence of generated Moving Shapes videos, judged from the pixels alone
    (motionaura_jax/eval/judge.py). DIR holds MP4/GIF/... files and `captions.jsonl`, one
    {"video": "<file name relative to DIR>", "caption": "a red circle moving left"} per line.
    Writes num_videos, all_correct (fraction of videos with every object right), colour, shape,
    direction (fractions of caption objects), count_correct, and per-video details; with
    --fvd_reference=DIR2 (another such folder, e.g. ground truth) also FVD under the pinned I3D protocol.
motionaura eval recon --ckpt=DIR [--out=metrics.json] [--num_clips=N] [--sheet=PNG] [--config.key=value ...]
    Tokenizer reconstruction (PSNR/SSIM, temporal error, codebook usage, judged colour kept) on held-out
    clips (motionaura_jax/eval/recon.py; `eval recon --help` for more).
motionaura eval inpaint --ckpt=RUN [--out=metrics.json] [--num_clips=N] [--split=heldout] [--steps=S]
        [--paste_pixels] [--drop_shape_word] [--sheet=PNG]
    Sketch-guided inpainting on Moving Shapes (motionaura_jax/eval/inpaint.py): the dilated object region
    of each clip is removed and regenerated from its sketch and caption by RUN (an inpaint run, or a t2v
    run: the no-fine-tune arm). The judge scores colour, shape and direction of the output; PSNR outside
    the region vs the input, beside the tokenizer's own reconstruction PSNR there. --drop_shape_word takes
    the shape out of the prompt (sketch adherence).
"""

from __future__ import annotations

import argparse
import sys

from motionaura_jax import config as config_lib

SUBCOMMANDS = ("recon", "t2v", "inpaint")


def _usage() -> str:
    return __doc__


def _t2v(argv: list[str]) -> int:
    argv, overrides = config_lib.split_overrides(argv)
    parser = argparse.ArgumentParser(
        prog="motionaura eval t2v", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--videos", help="folder of MP4/GIF files with captions.jsonl")
    source.add_argument("--ckpt", help="a text-to-video run: generate for seen and held-out captions, judge")
    parser.add_argument("--out", required=True, help="metrics .json (a .md table is written beside it)")
    parser.add_argument("--captions", default=None, help="captions file (default: VIDEOS/captions.jsonl)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N entries")
    parser.add_argument("--fvd_reference", default=None, help="folder of reference videos (+captions.jsonl)")
    parser.add_argument("--seen", type=int, default=64, help="--ckpt: captions of trained combinations")
    parser.add_argument("--heldout", type=int, default=64, help="--ckpt: captions of held-out combinations")
    parser.add_argument("--batch", type=int, default=64, help="--ckpt: clips sampled at once")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fvd", action="store_true", help="--ckpt: FVD of the seen clips vs the test split")
    parser.add_argument(
        "--sheets", default="", help="--ckpt: folder for PNG sheets and GIFs (default: OUT's)"
    )
    args = parser.parse_args(argv)
    from motionaura_jax import paths

    paths.check_output(args.out, "--out")  # before anything is generated or judged
    if args.sheets:
        paths.check_output(args.sheets, "--sheets", folder=True)
    if args.ckpt:
        return _t2v_generate(args, dict(overrides))
    if overrides:
        print(
            "motionaura eval t2v: --config.key=value needs --ckpt (the run whose config it changes)",
            file=sys.stderr,
        )
        return 2
    from motionaura_jax.eval.report import write_report
    from motionaura_jax.eval.t2v import EvalInputError, evaluate_t2v

    try:
        metrics, protocol, details = evaluate_t2v(args.videos, args.captions, args.limit, args.fvd_reference)
    except EvalInputError as e:
        print(f"motionaura eval t2v: {e}", file=sys.stderr)
        return 2
    json_path, md_path = write_report(
        args.out, metrics, protocol, title="Text-to-video: caption adherence", details=details
    )
    summary = ", ".join(f"{k}={metrics[k]:.4f}" for k in ("all_correct", "colour", "shape", "direction"))
    print(f"{metrics['num_videos']} videos: {summary}\nwrote {json_path} and {md_path}")
    return 0


def _t2v_generate(args: argparse.Namespace, overrides: dict[str, str]) -> int:
    """eval t2v --ckpt: sample one clip per caption with the run's own sampling settings (changed by
    `--config.sample.key=value` overrides) and judge them."""
    from motionaura_jax import paths, runs
    from motionaura_jax.eval import judge
    from motionaura_jax.eval import t2v as t2v_eval
    from motionaura_jax.eval.report import write_report
    from motionaura_jax.pipelines.t2v import T2VGenerator, sampling_kwargs

    if args.seen < 0 or args.heldout < 0 or args.seen + args.heldout == 0:
        print("motionaura eval t2v: --seen and --heldout must be >= 0, not both 0", file=sys.stderr)
        return 2
    try:
        run = runs.load_run(args.ckpt, task="t2v", overrides=overrides)
        generator = T2VGenerator.from_run(run)
    except (runs.RunError, config_lib.ConfigError) as error:
        print(f"motionaura eval t2v: {error}", file=sys.stderr)
        return 2
    settings = sampling_kwargs(generator.config.sample)
    settings.pop("seed")  # one seed per clip, from --seed
    data_cfg = generator.config.data
    if args.fvd and args.seen < 2:
        print(
            "motionaura eval t2v: --fvd needs --seen >= 2 (a covariance of the seen clips)", file=sys.stderr
        )
        return 2
    captions = t2v_eval.judge_captions(args.seen, args.heldout, num_objects=int(data_cfg.num_objects))
    captions = {split: caps for split, caps in captions.items() if caps}
    results, details, videos = t2v_eval.generate_and_judge(
        generator, captions, batch=args.batch, seed=args.seed, progress=True, **settings
    )
    metrics = {f"{split}/{k}": v for split, m in results.items() if isinstance(m, dict) for k, v in m.items()}
    metrics["generate_seconds"] = results["generate_seconds"]
    fvd_protocol = None
    if args.fvd:
        try:
            metrics["seen/fvd"], fvd_protocol = t2v_eval.fvd_against_split(
                data_cfg, videos["seen"], progress=True
            )
        except t2v_eval.EvalInputError as error:
            print(f"motionaura eval t2v: {error}", file=sys.stderr)
            return 2
    protocol = {
        "run": str(paths.absolute(args.ckpt)),
        "step": run.step,
        "captions": {split: len(caps) for split, caps in captions.items()},
        "caption_choice": "seen: evenly over the training combinations; heldout: cycling over the 8 held-out",
        "seed": args.seed,
        "sampling": settings,
        "judge": judge.judge_protocol(),
        **({"fvd": fvd_protocol} if fvd_protocol else {}),
    }
    json_path, md_path = write_report(
        args.out, metrics, protocol, title="Text-to-video: generated and judged", details=details
    )
    sheets = t2v_eval.write_judged_examples(
        args.sheets or paths.as_path(args.out).parent, videos, fps=settings["fps"]
    )
    print(t2v_eval.summary_line(results))
    if args.fvd:
        print(f"seen FVD against {args.seen} test clips: {metrics['seen/fvd']:.2f}")
    print(f"wrote {json_path} and {md_path}")
    for split, files in sheets.items():
        print(f"{split} examples: {files['png']} {files['gif']}")
    return 0


def _recon(argv: list[str]) -> int:
    """Tokenizer reconstruction on held-out clips (eval/recon.py)."""
    from motionaura_jax.eval import recon

    rest, overrides = config_lib.split_overrides(argv)
    parser = argparse.ArgumentParser(
        prog="motionaura eval recon",
        description=recon.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--ckpt", required=True, help="the tokenizer's training workdir")
    parser.add_argument("--out", default="", help="metrics JSON (default: CKPT/eval_recon.json)")
    parser.add_argument(
        "--num_clips", type=int, default=0, help="clips to evaluate (default: eval.num_clips)"
    )
    parser.add_argument("--sheet", default="", help="also write a contact sheet PNG here")
    args = parser.parse_args(rest)

    from motionaura_jax import paths, runs

    for flag, value in (("--out", args.out), ("--sheet", args.sheet)):
        if value:  # before the run is loaded and the clips reconstructed
            paths.check_output(value, flag)
    from motionaura_jax.eval.report import write_report
    from motionaura_jax.runs import RunError

    try:
        run = runs.load_run(args.ckpt, task="vae", overrides=dict(overrides))
    except (RunError, config_lib.ConfigError) as error:
        print(f"motionaura eval recon: {error}", file=sys.stderr)
        return 2
    config = run.config
    metrics, details = recon.evaluate(run.model, run.variables, config, args.num_clips or None)
    out = args.out or str(paths.as_path(args.ckpt) / "eval_recon.json")
    json_path, md_path = write_report(
        out, metrics, recon.protocol(config, details), title="Tokenizer reconstruction", details=details
    )
    if args.sheet:
        recon.write_contact_sheet(run.model, run.variables, config, args.sheet)
    print(", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
    print(f"wrote {json_path} and {md_path}")
    return 0


def _inpaint(argv: list[str]) -> int:
    """Inpainting quality (eval/inpaint.py)."""
    parser = argparse.ArgumentParser(
        prog="motionaura eval inpaint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--ckpt", required=True, help="an inpaint run (or a t2v run: no fine-tune)")
    parser.add_argument("--out", default="", help="metrics JSON (default: CKPT/eval_inpaint.json)")
    parser.add_argument("--num_clips", type=int, default=0, help="clips (default: eval.num_clips, or 16)")
    parser.add_argument(
        "--split", default="heldout", help="Moving Shapes split (heldout: unseen combinations)"
    )
    parser.add_argument("--steps", type=int, default=0, help="reverse steps (default: sample.num_steps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--paste_pixels", action="store_true", help="copy input pixels outside the mask")
    parser.add_argument("--drop_shape_word", action="store_true", help="prompt without the shape word")
    parser.add_argument(
        "--paste_every_step",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="start the chain from the known tokens (default: the run's sample.paste_every_step)",
    )
    parser.add_argument("--sheet", default="", help="also write a contact sheet PNG of a few clips here")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)

    from motionaura_jax import paths

    for flag, value in (("--out", args.out), ("--sheet", args.sheet)):
        if value:  # before the runs are loaded and the clips inpainted
            paths.check_output(value, flag)
    from motionaura_jax.eval import inpaint as inpaint_eval
    from motionaura_jax.eval.report import write_report
    from motionaura_jax.pipelines.inpaint import Inpainter, InpaintInputError, check_run
    from motionaura_jax.runs import RunError

    try:
        check_run(args.ckpt)
        inpainter = Inpainter.load(args.ckpt)
    except (InpaintInputError, RunError, ValueError) as error:
        print(f"motionaura eval inpaint: {error}", file=sys.stderr)
        return 2
    config = inpainter.config
    num_clips = args.num_clips or (int(config.eval.num_clips) if "num_clips" in config.eval else 16)
    settings = dict(split=args.split, num_steps=args.steps, seed=args.seed, paste_pixels=args.paste_pixels,
                    drop_shape_word=args.drop_shape_word, paste_every_step=args.paste_every_step)  # fmt: skip
    metrics, details = inpaint_eval.evaluate(inpainter, config, num_clips, **settings)
    out = args.out or str(paths.as_path(args.ckpt) / "eval_inpaint.json")
    protocol = inpaint_eval.protocol(config, inpainter, **settings)
    json_path, md_path = write_report(
        out, metrics, protocol, title="Sketch-guided inpainting", details={"clips": details}
    )
    if args.sheet:
        sheet = inpaint_eval.write_examples(
            inpainter, config, paths.as_path(args.sheet).parent, 4, args.split
        )
        from motionaura_jax.pipelines.inpaint import write_png

        write_png(args.sheet, sheet)
    keys = ("all_correct", "colour", "shape", "direction", "psnr_outside", "psnr_outside_recon")
    print(", ".join(f"{k}={metrics[k]:.4f}" for k in keys))
    print(f"wrote {json_path} and {md_path}")
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name == "t2v":
        return _t2v(rest)
    if name == "recon":
        return _recon(rest)
    if name == "inpaint":
        return _inpaint(rest)
    print(
        f"motionaura eval: unknown evaluation {name!r}; use one of {', '.join(SUBCOMMANDS)}\n\n{_usage()}",
        file=sys.stderr,
    )
    return 2
