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

from motionaura_jax import paths


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
    try:
        text = paths.read_utf8(captions_path)
    except paths.InputFileError as error:
        raise EvalInputError(str(error)) from None
    for number, line in enumerate(text.splitlines(), start=1):
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


# --- generate and judge: a trained run on seen and never-trained Moving Shapes captions ------------------------


def judge_captions(num_seen: int, num_heldout: int, num_objects: int = 1) -> dict[str, list[str]]:
    """Captions of `num_seen` clips over the training combinations (the first object evenly spread over all 76)
    and `num_heldout` whose first object cycles over the 8 held-out colour x shape x direction combinations
    (data/synthetic.py). With `num_objects=2` each caption adds a second object of another colour from the
    training combinations ("... and a ..."), drawn deterministically from the caption's index."""
    from motionaura_jax.data import synthetic

    if num_objects not in (1, 2):
        raise ValueError(
            f"judge_captions: num_objects={num_objects}; Moving Shapes captions name 1 or 2 objects"
        )
    train, held = synthetic.TRAIN_COMBINATIONS, synthetic.HELD_OUT_COMBINATIONS
    firsts = {
        "seen": [train[(i * len(train)) // max(num_seen, 1) % len(train)] for i in range(num_seen)],
        "heldout": [held[i % len(held)] for i in range(num_heldout)],
    }
    captions = {}
    for split, objects in firsts.items():
        captions[split] = []
        for i, first in enumerate(objects):
            chosen = [first]
            if num_objects == 2:
                others = [c for c in train if c[0] != first[0]]
                chosen.append(others[(7 * i + 3) % len(others)])
            captions[split].append(" and ".join(synthetic.object_caption(*c) for c in chosen))
    return captions


def reference_clips(data_cfg: Any, num_clips: int, split: str = "test") -> np.ndarray:
    """The first `num_clips` Moving Shapes clips of `split` as the run's data config draws them (size, frames,
    objects per clip): (N, T, H, W, 3) uint8, the reference set of generated-video FVD."""
    from motionaura_jax.data.synthetic import MovingShapes

    shapes = MovingShapes.from_data_config(data_cfg, split, num_clips)
    return np.stack([shapes[i]["video"] for i in range(num_clips)])


def fvd_against_split(
    data_cfg: Any, generated: np.ndarray, split: str = "test", progress: bool = False
) -> tuple[float, dict[str, Any]]:
    """FVD (eval/fvd.py's pinned I3D protocol) of `generated` clips against as many clips of `split`."""
    from motionaura_jax.eval import fvd as fvd_lib

    if str(data_cfg.source) != "synthetic":
        raise EvalInputError(
            f"FVD against split {split!r} draws Moving Shapes clips; this run's data.source is "
            f"{data_cfg.source!r} (use --videos=DIR --fvd_reference=DIR2 with clips of your own)"
        )
    reference = reference_clips(data_cfg, len(generated), split)
    try:
        result = fvd_lib.fvd(reference, generated, progress=progress)
    except ValueError as e:  # too few frames for I3D, or fewer than 2 clips
        raise EvalInputError(f"FVD: {e}") from e
    protocol = dict(
        result["protocol"], reference=f"Moving Shapes split {split!r}, first {len(reference)} clips"
    )
    return result["fvd"], protocol


def visibility(video: np.ndarray) -> tuple[bool, bool]:
    """(an object is detected in every frame, one is detected in the first frame)."""
    from motionaura_jax.eval import judge

    present = [bool(judge.detect_frame(f)) for f in judge.to_unit_float(video)]
    return all(present), present[0]


def judge_videos(videos: np.ndarray, captions: list[str]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """The judge's aggregate over (video, caption) pairs plus `visible_all_frames` / `first_frame_visible`
    (shares of clips), and one record per video."""
    from motionaura_jax.eval import judge

    scores, per_video = [], []
    for video, caption in zip(videos, captions, strict=True):
        score = judge.judge_and_score(video, caption)
        score["visible_all_frames"], score["first_frame_visible"] = visibility(video)
        scores.append(score)
        per_video.append(
            {
                "caption": caption,
                "all_correct": score["all_correct"],
                "visible_all_frames": score["visible_all_frames"],
                "found": [f"{o['colour']} {o['shape']} {o['direction']}" for o in score["found"]],
            }
        )
    metrics = judge.aggregate(scores)
    for key in ("visible_all_frames", "first_frame_visible"):
        metrics[key] = float(np.mean([s[key] for s in scores]))
    return metrics, per_video


def generate_and_judge(
    generator: Any,
    captions: dict[str, list[str]],
    *,
    batch: int = 64,
    seed: int = 0,
    progress: bool = False,
    **sample_kwargs: Any,
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]], dict[str, np.ndarray]]:
    """Samples one clip per caption with `generator` (a `pipelines.T2VGenerator`; every clip its own seed) and
    judges each split: (metrics per split + generate_seconds, per-video records, uint8 videos per split).
    `sample_kwargs` go to `generator.videos` (`pipelines.sampling_kwargs(config.sample)` without its seed for
    a run's own)."""
    import time

    from tqdm import tqdm

    videos, start = {}, time.perf_counter()
    total = sum(len(c) for c in captions.values())
    with tqdm(total=total, desc="generate", unit="clip", disable=not progress) as bar:
        for split_index, (split, caps) in enumerate(captions.items()):
            chunks = []
            for b in range(0, len(caps), batch):
                chunk = caps[b : b + batch]
                chunks.append(generator.videos(chunk, seed=seed + 1000 * split_index + b, **sample_kwargs))
                bar.update(len(chunk))
            videos[split] = np.concatenate(chunks)
    results: dict[str, Any] = {"generate_seconds": time.perf_counter() - start}
    details = {}
    for split, caps in captions.items():
        results[split], details[split] = judge_videos(videos[split], caps)
    return results, details, videos


def summary_line(results: dict[str, Any]) -> str:
    """One line per judged run: fully correct, shape, colour, direction and visibility per split."""
    return " | ".join(
        f"{split}: fully correct {m['all_correct']:.1%} (colour {m['colour']:.1%}, shape {m['shape']:.1%}, "
        f"direction {m['direction']:.1%}; visible in every frame {m['visible_all_frames']:.1%})"
        for split, m in results.items()
        if isinstance(m, dict)
    )


def video_grid(videos: np.ndarray, cols: int = 4) -> np.ndarray:
    """(N, T, H, W, 3) uint8 clips -> one (T, rows·(H+2), cols·(W+2), 3) clip of them tiled (grey gutters)."""
    n, t, h, w, c = videos.shape
    rows = -(-n // cols)
    grid = np.full((t, rows * (h + 2), cols * (w + 2), c), 128, np.uint8)
    for i, clip in enumerate(videos):
        r, k = divmod(i, cols)
        grid[:, r * (h + 2) : r * (h + 2) + h, k * (w + 2) : k * (w + 2) + w] = clip
    return grid


def write_judged_examples(
    out_dir: Any, videos: dict[str, np.ndarray], fps: float = 8.0, num: int = 12, scale: int = 2
) -> dict[str, dict[str, Any]]:
    """Per split, a contact sheet PNG (one row of frames per clip) and a GIF of the first `num` clips tiled,
    upscaled `scale`x (nearest) so that 32x32 clips can be seen; returns the paths by split."""
    from PIL import Image

    from motionaura_jax import atomic, paths
    from motionaura_jax.data.video_io import write_video
    from motionaura_jax.eval.recon import contact_sheet

    out = paths.mkdir(out_dir)
    written = {}
    for split, clips in videos.items():
        clips = np.repeat(np.repeat(clips[:num], scale, axis=2), scale, axis=3)
        sheet = Image.fromarray(contact_sheet(list(clips), frames=9))
        png = atomic.write_bytes(out / f"t2v_{split}.png", _png_bytes(sheet))
        gif = write_video(out / f"t2v_{split}.gif", video_grid(clips, cols=4), fps)
        written[split] = {"png": png, "gif": gif}
    return written


def _png_bytes(image: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
