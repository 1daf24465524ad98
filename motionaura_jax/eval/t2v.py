"""Caption adherence of generated Moving Shapes videos, judged from the pixels alone (eval/judge.py), and FVD
against a reference folder. A folder holds MP4/GIF/... files and `captions.jsonl`, one
{"video": "<file name relative to the folder>", "caption": "a red circle moving left"} per line (the format
`motionaura sample --num` and the training loop's sample hook write).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np


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
