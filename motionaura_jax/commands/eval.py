"""`motionaura eval recon|t2v|inpaint ...`: metrics with their protocol (metrics.json + a markdown table).

motionaura eval t2v --videos=DIR --out=metrics.json [--captions=FILE] [--fvd_reference=DIR] [--limit=N]
    Caption adherence of generated Moving Shapes videos, judged from the pixels alone
    (motionaura_jax/eval/judge.py). DIR holds MP4/GIF/... files and `captions.jsonl`, one
    {"video": "<file name relative to DIR>", "caption": "a red circle moving left"} per line.
    Writes num_videos, all_correct (fraction of videos with every object right), colour, shape,
    direction (fractions of caption objects), count_correct, and per-video details; with
    --fvd_reference=DIR2 (another such folder, e.g. ground truth) also FVD under the pinned I3D protocol.
motionaura eval recon ...   tokenizer reconstruction (PSNR/SSIM/LPIPS/FVD, codebook usage):
    handled by motionaura_jax.eval.recon.
motionaura eval inpaint ... not available yet.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pathlib
import sys
from typing import Any

import numpy as np

SUBCOMMANDS = ("recon", "t2v", "inpaint")


def _usage() -> str:
    return __doc__


class EvalInputError(ValueError):
    """A folder, captions file or video that cannot be evaluated; the message names it and the fix."""


def read_captions(videos_dir: pathlib.Path, captions_path: pathlib.Path) -> list[tuple[pathlib.Path, str]]:
    """(video path, caption) pairs from a captions.jsonl; every problem names the file and line."""
    if not videos_dir.is_dir():
        raise EvalInputError(f"--videos={videos_dir}: not a folder")
    if not captions_path.is_file():
        raise EvalInputError(
            f"{captions_path}: no captions file; write one JSON object per line, "
            '{"video": "<file in the folder>", "caption": "<caption>"}, or pass --captions=FILE'
        )
    pairs = []
    for number, line in enumerate(captions_path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            raise EvalInputError(f"{captions_path}:{number}: not JSON ({e.msg})") from e
        if not isinstance(entry, dict) or "video" not in entry or "caption" not in entry:
            raise EvalInputError(
                f'{captions_path}:{number}: needs {{"video": ..., "caption": ...}}, got {line[:120]}'
            )
        path = videos_dir / entry["video"]
        if not path.is_file():
            raise EvalInputError(
                f"{captions_path}:{number}: video {entry['video']!r} not found in {videos_dir}"
            )
        pairs.append((path, str(entry["caption"])))
    if not pairs:
        raise EvalInputError(f"{captions_path}: no entries")
    return pairs


def _read(path: pathlib.Path) -> np.ndarray:
    from motionaura_jax.data.video_io import VideoReadError, read_video

    try:
        return read_video(path)[0]
    except VideoReadError as e:
        raise EvalInputError(str(e)) from e


def evaluate_t2v(
    videos_dir: str | pathlib.Path,
    captions: str | pathlib.Path | None = None,
    limit: int | None = None,
    fvd_reference: str | pathlib.Path | None = None,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(metrics, protocol, details) for a folder of generated videos and their captions."""
    from tqdm import tqdm

    from motionaura_jax.data import synthetic
    from motionaura_jax.eval import judge

    videos_dir = pathlib.Path(videos_dir)
    captions_path = pathlib.Path(captions) if captions else videos_dir / "captions.jsonl"
    pairs = read_captions(videos_dir, captions_path)[: limit or None]
    scores, per_video, clips, heldout = [], [], [], []
    sizes = set()
    for path, caption in tqdm(pairs, desc="judging videos", unit="video"):
        try:
            synthetic.parse_caption(caption)
        except ValueError as e:
            raise EvalInputError(f"{captions_path} ({path.name}): {e}") from e
        video = _read(path)
        sizes.add(tuple(video.shape[:3]))
        score = judge.judge_and_score(video, caption)
        scores.append(score)
        heldout.append(any(synthetic.is_held_out(*obj) for obj in synthetic.parse_caption(caption)))
        per_video.append(
            {
                "video": path.name,
                "caption": caption,
                "all_correct": score["all_correct"],
                "found": [f"{o['colour']} {o['shape']} {o['direction']}" for o in score["found"]],
            }
        )
        if fvd_reference is not None:
            clips.append(video)
    metrics = judge.aggregate(scores)
    if any(heldout):
        held = [s for s, h in zip(scores, heldout, strict=True) if h]
        metrics["heldout_num_videos"] = len(held)
        metrics["heldout_all_correct"] = float(np.mean([s["all_correct"] for s in held]))
    protocol = {
        "task": "t2v caption adherence on Moving Shapes",
        "videos": str(videos_dir.name),
        "captions": captions_path.name,
        "video_shapes_thw": sorted(list(s) for s in sizes),
        "judge": judge.judge_protocol(),
    }
    if fvd_reference is not None:
        metrics["fvd"], protocol["fvd"] = _fvd_against(clips, pathlib.Path(fvd_reference))
    return metrics, protocol, {"per_video": per_video}


def _fvd_against(clips: list[np.ndarray], reference_dir: pathlib.Path) -> tuple[float, dict[str, Any]]:
    from motionaura_jax.eval import fvd as fvd_lib

    ref_pairs = read_captions(reference_dir, reference_dir / "captions.jsonl")
    reference = [_read(p) for p, _ in ref_pairs]
    try:
        result = fvd_lib.fvd(np.stack(reference), np.stack(clips), progress=True)
    except ValueError as e:  # ragged sizes or too few frames
        raise EvalInputError(f"FVD: {e}") from e
    return result["fvd"], result["protocol"]


def _t2v(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="motionaura eval t2v", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--videos", required=True, help="folder of MP4/GIF files with captions.jsonl")
    parser.add_argument("--out", required=True, help="metrics .json (a .md table is written beside it)")
    parser.add_argument("--captions", default=None, help="captions file (default: VIDEOS/captions.jsonl)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N entries")
    parser.add_argument("--fvd_reference", default=None, help="folder of reference videos (+captions.jsonl)")
    args = parser.parse_args(argv)
    from motionaura_jax.eval.report import write_report

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


def _recon(argv: list[str]) -> int:
    try:
        module = importlib.import_module("motionaura_jax.eval.recon")
    except ModuleNotFoundError as e:
        if e.name != "motionaura_jax.eval.recon":
            raise
        print(
            "motionaura eval recon: not available yet (motionaura_jax/eval/recon.py, the tokenizer's "
            "reconstruction evaluation, has not landed)",
            file=sys.stderr,
        )
        return 2
    return int(module.main(argv) or 0)


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
        print(
            "motionaura eval inpaint: not available yet (inpainting metrics: preserved-region PSNR and "
            "sketch adherence come with the inpainting stage)",
            file=sys.stderr,
        )
        return 2
    print(
        f"motionaura eval: unknown evaluation {name!r}; use one of {', '.join(SUBCOMMANDS)}\n\n{_usage()}",
        file=sys.stderr,
    )
    return 2
