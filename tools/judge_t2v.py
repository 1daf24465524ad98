"""Generate and judge a trained text-to-video run on seen and held-out Moving Shapes prompts, per sampler variant.

    python tools/judge_t2v.py --ckpt=runs/t2v --out=runs/t2v/judge.json \
        --variant posterior_t1 "method=posterior" \
        --variant conf_t03 "method=confidence,temperature=0.3,num_steps=16"

Prompts and judging are `motionaura eval t2v --ckpt`'s (eval/t2v.py: judge_captions, generate_and_judge), the
same for every variant; each video is judged in memory (uint8 frames, no codec). Per split: all_correct (colour, shape, direction and object count right), colour, shape,
direction, count_correct, visible_all_frames (share of clips with at least one detected object in every
frame) and first_frame_visible. Variant keys: method, num_steps, guidance_scale (-1: off), temperature,
temperature_end, mask_curve, choice_temperature, frame_order, refine_steps, refine_fraction,
refine_guidance, fps; missing keys come from the run's config.sample.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

KEYS = {
    "method": str,
    "num_steps": int,
    "guidance_scale": float,
    "temperature": float,
    "temperature_end": float,
    "mask_curve": str,
    "choice_temperature": float,
    "frame_order": float,
    "refine_steps": int,
    "refine_fraction": float,
    "refine_guidance": float,
    "fps": float,
}


def parse_variant(text: str) -> dict:
    out = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key not in KEYS:
            raise SystemExit(f"judge_t2v: unknown variant key {key!r}; use {sorted(KEYS)}")
        out[key] = KEYS[key](value)
    return out


def run_variant(generator, settings: dict, captions: dict[str, list[str]], batch: int, seed: int):
    from motionaura_jax.diffusion.sampler import CONFIDENCE_OPTIONS as confidence_only
    from motionaura_jax.eval.t2v import generate_and_judge

    options = {k: settings[k] for k in ("method", "temperature_end", *confidence_only)}
    if options["method"] != "confidence":
        for key in confidence_only:
            options.pop(key)
    if not options["temperature_end"] or options["temperature_end"] <= 0:
        options["temperature_end"] = None
    guidance = settings["guidance_scale"]
    guidance = None if guidance is not None and guidance < 0 else guidance
    return generate_and_judge(
        generator,
        captions,
        batch=batch,
        seed=seed,
        num_steps=settings["num_steps"],
        guidance_scale=guidance,
        temperature=settings["temperature"],
        fps=settings["fps"],
        **options,
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ckpt", required=True, help="the text-to-video training workdir")
    parser.add_argument("--out", required=True, help="results JSON")
    parser.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "KEY=V,..."), default=[])
    parser.add_argument("--seen", type=int, default=64)
    parser.add_argument("--heldout", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sheets", default="", help="folder for a contact sheet PNG per variant and split")
    args = parser.parse_args(argv)

    from motionaura_jax.eval.t2v import judge_captions
    from motionaura_jax.pipelines import T2VGenerator

    generator = T2VGenerator.load(args.ckpt)
    s = generator.config.sample
    defaults = {
        "method": s.method,
        "num_steps": int(s.num_steps),
        "guidance_scale": float(s.guidance_scale),
        "temperature": float(s.temperature),
        "temperature_end": float(s.temperature_end),
        "mask_curve": s.mask_curve,
        "choice_temperature": float(s.choice_temperature),
        "frame_order": float(s.frame_order),
        "refine_steps": int(s.refine_steps),
        "refine_fraction": float(s.refine_fraction),
        "refine_guidance": float(s.refine_guidance),
        "fps": float(s.fps),
    }
    variants = args.variant or [["config", ""]]
    all_captions = judge_captions(args.seen, args.heldout, num_objects=int(generator.config.data.num_objects))
    captions = {split: caps for split, caps in all_captions.items() if caps}
    out = pathlib.Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    for name, spec in variants:
        settings = dict(defaults, **parse_variant(spec))
        metrics, details, videos = run_variant(generator, settings, captions, args.batch, args.seed)
        results[name] = {"settings": settings, **metrics, "per_video": details}
        line = f"{name}: " + " | ".join(
            f"{split} all={metrics[split]['all_correct']:.3f} shape={metrics[split]['shape']:.3f} "
            f"colour={metrics[split]['colour']:.3f} dir={metrics[split]['direction']:.3f} "
            f"visible={metrics[split]['visible_all_frames']:.3f}"
            for split in captions
        )
        print(line + f" | gen {metrics['generate_seconds']:.1f}s", flush=True)
        if args.sheets:
            from PIL import Image

            from motionaura_jax.eval.recon import contact_sheet

            for split, v in videos.items():
                sheet = pathlib.Path(args.sheets) / f"{name}_{split}.png"
                sheet.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(contact_sheet(list(v[:12]), frames=9)).save(sheet)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
