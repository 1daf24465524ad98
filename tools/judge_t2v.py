"""Generate and judge a trained text-to-video run on seen and held-out Moving Shapes prompts, per sampler variant.

    python tools/judge_t2v.py --ckpt=runs/t2v --out=runs/t2v/judge.json \
        --variant posterior_t1 "method=posterior" \
        --variant conf_t03 "method=confidence,temperature=0.3,num_steps=16"

Prompts (the same for every variant): `--seen` single-object captions of distinct training combinations
(evenly spread over the 76 of them) and `--heldout` captions cycling over the 8 held-out combinations
(data/synthetic.py), each sample with its own seed. Each video is judged in memory (uint8 frames, no codec)
by eval/judge.py. Per split: all_correct (colour, shape, direction and object count right), colour, shape,
direction, count_correct, visible_all_frames (share of clips with at least one detected object in every
frame) and first_frame_visible. Variant keys: method, num_steps, guidance_scale (-1: off), temperature,
temperature_end, mask_curve, choice_temperature, fps; missing keys come from the run's config.sample.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

KEYS = {
    "method": str,
    "num_steps": int,
    "guidance_scale": float,
    "temperature": float,
    "temperature_end": float,
    "mask_curve": str,
    "choice_temperature": float,
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


def prompts(num_seen: int, num_heldout: int) -> dict[str, list[str]]:
    from motionaura_jax.data import synthetic

    train = synthetic.TRAIN_COMBINATIONS
    seen = [train[(i * len(train)) // max(num_seen, 1) % len(train)] for i in range(num_seen)]
    held = synthetic.HELD_OUT_COMBINATIONS
    heldout = [held[i % len(held)] for i in range(num_heldout)]
    return {
        "seen": [synthetic.object_caption(*c) for c in seen],
        "heldout": [synthetic.object_caption(*c) for c in heldout],
    }


def visibility(video: np.ndarray) -> tuple[bool, bool]:
    """(an object is detected in every frame, one is detected in the first frame)."""
    from motionaura_jax.eval import judge

    frames = judge.to_unit_float(video)
    present = [bool(judge.detect_frame(f)) for f in frames]
    return all(present), present[0]


def judge_split(videos: np.ndarray, captions: list[str]) -> tuple[dict, list[dict]]:
    from motionaura_jax.eval import judge

    scores, per_video = [], []
    for video, caption in zip(videos, captions, strict=True):
        score = judge.judge_and_score(video, caption)
        every, first = visibility(video)
        score["visible_all_frames"], score["first_frame_visible"] = every, first
        scores.append(score)
        per_video.append(
            {
                "caption": caption,
                "all_correct": score["all_correct"],
                "visible_all_frames": every,
                "found": [f"{o['colour']} {o['shape']} {o['direction']}" for o in score["found"]],
            }
        )
    metrics = judge.aggregate(scores)
    metrics["visible_all_frames"] = float(np.mean([s["visible_all_frames"] for s in scores]))
    metrics["first_frame_visible"] = float(np.mean([s["first_frame_visible"] for s in scores]))
    return metrics, per_video


def run_variant(generator, settings: dict, captions: dict[str, list[str]], batch: int, seed: int):
    options = {k: settings[k] for k in ("method", "temperature_end", "mask_curve", "choice_temperature")}
    if options["method"] != "confidence":
        options.pop("mask_curve"), options.pop("choice_temperature")
    if not options["temperature_end"] or options["temperature_end"] <= 0:
        options["temperature_end"] = None
    guidance = settings["guidance_scale"]
    guidance = None if guidance is not None and guidance < 0 else guidance
    result, videos_out = {}, {}
    start = time.perf_counter()
    for split, caps in captions.items():
        videos = []
        for b in range(0, len(caps), batch):
            chunk = caps[b : b + batch]
            videos.append(
                generator.videos(
                    chunk,
                    num_steps=settings["num_steps"],
                    guidance_scale=guidance,
                    temperature=settings["temperature"],
                    fps=settings["fps"],
                    seed=seed + 1000 * (split == "heldout") + b,
                    **options,
                )
            )
        videos_out[split] = np.concatenate(videos)
    gen_seconds = time.perf_counter() - start
    details = {}
    for split, caps in captions.items():
        result[split], details[split] = judge_split(videos_out[split], caps)
    result["generate_seconds"] = gen_seconds
    return result, details, videos_out


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
        "fps": float(s.fps),
    }
    variants = args.variant or [["config", ""]]
    captions = prompts(args.seen, args.heldout)
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
