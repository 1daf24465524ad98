"""`motionaura data build|show|measure|export`: write and inspect TFDS array_record video datasets (no
TensorFlow), or export Moving Shapes as a folder of MP4s.

    motionaura data build --source synthetic --out data/shapes --frames 17 --size 64 --num-train 5000
    motionaura data build --source folder --path my_videos/ --out data/my_videos --fps 8
    motionaura data show data/shapes --split validation --examples runs/peek  # + MP4/GIF/PNG
    motionaura data measure --out /tmp/measure                                 # raw vs video storage
    motionaura data export --out data/shapes_mp4 --num 256 --size 64           # MP4s + captions.jsonl

Train on a built dataset with `--config.data.source=tfds --config.data.path=data/shapes`.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys


def _build(args: argparse.Namespace) -> int:
    from motionaura_jax.data import tfds_builder

    sizes = {
        "train": args.num_train,
        "validation": args.num_validation,
        "test": args.num_test,
        "heldout": args.num_heldout,
    }
    report: dict = {}
    try:
        path = tfds_builder.build_dataset(
            args.out,
            source=args.source,
            path=args.path,
            frames=args.frames,
            size=args.size,
            fps=args.fps or None,
            storage=args.storage,
            num_objects=args.num_objects,
            seed=args.seed,
            split_sizes=sizes,
            overwrite=args.overwrite,
            report=report,
        )
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        print(f"motionaura data build: {error}", file=sys.stderr)
        return 2
    summary = tfds_builder.dataset_summary(path)
    if "folder" in report:  # each skipped file was named with its reason in the log; here the counts
        summary["source_folder"] = {
            k.removeprefix("data/"): int(v) for k, v in report["folder"].metrics().items()
        }
    print(json.dumps(summary, indent=2))
    print(f"train on it with: --config.data.source=tfds --config.data.path={args.out}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from motionaura_jax.data import tfds_builder, video_io

    try:
        summary = tfds_builder.dataset_summary(args.dataset)
        source = tfds_builder.open_split(args.dataset, args.split)
    except (ValueError, FileNotFoundError) as error:
        print(f"motionaura data show: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    for i in range(min(args.count, len(source))):
        record = tfds_builder.decode_record(source[i])
        print(
            f"[{i}] {record['key']}: {record['caption']!r} fps={record['fps']:g} "
            f"video={record['video'].shape}"
        )
        if args.examples:
            video_io.write_examples(
                pathlib.Path(args.examples) / f"{args.split}_{i:03d}", record["video"], record["fps"]
            )
    return 0


def _export(args: argparse.Namespace) -> int:
    """Moving Shapes clips as MP4 files plus `captions.jsonl`: a video folder for `data.source=folder`."""
    from tqdm import tqdm

    from motionaura_jax import atomic
    from motionaura_jax.data import video_io
    from motionaura_jax.data.synthetic import MovingShapes

    out = pathlib.Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        print(f"motionaura data export: {out} is not empty (pass --overwrite)", file=sys.stderr)
        return 2
    shapes = MovingShapes(
        frames=args.frames,
        size=args.size,
        num_objects=args.num_objects,
        split=args.split,
        seed=args.seed,
        num_clips=args.num,
        fps=args.fps or None,
    )
    lines = []
    for i in tqdm(range(len(shapes)), desc="export", dynamic_ncols=True):
        clip = shapes[i]
        name = f"{args.split}_{i:05d}.mp4"
        video_io.write_video(out / name, clip["video"], fps=clip["fps"])
        lines.append(json.dumps({"video": name, "caption": clip["caption"]}))
    atomic.write_text(out / "captions.jsonl", "\n".join(lines) + "\n")
    print(f"wrote {len(lines)} MP4 clips and captions.jsonl to {out}")
    print(f"train on it with: --config.data.source=folder --config.data.path={out}")
    return 0


def _measure(args: argparse.Namespace) -> int:
    import numpy as np

    from motionaura_jax.data import tfds_builder
    from motionaura_jax.data.synthetic import MovingShapes

    shapes = MovingShapes(frames=args.frames, size=args.size, num_clips=args.count)
    clips = {"moving_shapes": [shapes[i]["video"] for i in range(args.count)]}
    # Camera-like clips: slow pans over the photos scikit-image ships, with mild sensor noise.
    import skimage.data

    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    rng = np.random.default_rng(0)
    pans = []
    for i in range(args.count):
        photo = photos[i % len(photos)]
        span = 2 * args.size
        y, x = (
            rng.integers(0, photo.shape[0] - span),
            rng.integers(0, photo.shape[1] - span - 3 * args.frames),
        )
        dx = int(rng.integers(1, 4))
        clip = np.stack(
            [photo[y : y + span : 2, x + t * dx : x + t * dx + span : 2] for t in range(args.frames)]
        )
        pans.append(np.clip(clip + rng.normal(0, args.noise, clip.shape), 0, 255).astype(np.uint8))
    clips["camera_pans"] = pans
    results = {}
    for name, videos in clips.items():
        results[name] = tfds_builder.measure_storage(videos, pathlib.Path(args.out) / name)
    print(json.dumps(results, indent=2))
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="motionaura data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="action", required=True)
    build = sub.add_parser("build", help="write a TFDS array_record dataset")
    build.add_argument("--source", required=True, choices=("synthetic", "folder"))
    build.add_argument("--path", default=None, help="folder of videos (--source folder)")
    build.add_argument(
        "--out", required=True, help="data dir; the dataset goes to OUT/motionaura_videos/1.0.0"
    )
    build.add_argument("--frames", type=int, default=17)
    build.add_argument("--size", type=int, default=64)
    build.add_argument(
        "--fps", type=float, default=0.0, help="target FPS (0: per-clip for synthetic, native for folders)"
    )
    build.add_argument(
        "--storage",
        choices=("raw", "video"),
        default="raw",
        help="raw uint8 (default, fast to decode) or lossless RGB H.264 bytes (smaller for real video)",
    )
    build.add_argument("--num-objects", type=int, default=1)
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--num-train", type=int, default=1000)
    build.add_argument("--num-validation", type=int, default=100)
    build.add_argument("--num-test", type=int, default=100)
    build.add_argument("--num-heldout", type=int, default=100)
    build.add_argument("--overwrite", action="store_true")
    show = sub.add_parser("show", help="summary and a few decoded clips of a built dataset")
    show.add_argument("dataset")
    show.add_argument("--split", default="train")
    show.add_argument("--count", type=int, default=4)
    show.add_argument("--examples", default=None, help="folder to write MP4/GIF/PNG of the clips shown")
    export = sub.add_parser("export", help="write Moving Shapes as a folder of MP4s + captions.jsonl")
    export.add_argument("--out", required=True)
    export.add_argument("--num", type=int, default=256, help="number of clips")
    export.add_argument("--split", default="train", choices=("train", "validation", "test", "heldout"))
    export.add_argument("--frames", type=int, default=17)
    export.add_argument("--size", type=int, default=64)
    export.add_argument("--fps", type=float, default=0.0, help="0 = the generator's per-clip FPS")
    export.add_argument("--num-objects", type=int, default=1)
    export.add_argument("--seed", type=int, default=0)
    export.add_argument("--overwrite", action="store_true")
    measure = sub.add_parser("measure", help="bytes per clip and decode ms per clip of each storage")
    measure.add_argument("--out", required=True)
    measure.add_argument("--count", type=int, default=100)
    measure.add_argument("--frames", type=int, default=17)
    measure.add_argument("--size", type=int, default=64)
    measure.add_argument("--noise", type=float, default=3.0, help="sensor noise std of the camera-like clips")
    args = parser.parse_args(argv)
    from motionaura_jax import paths

    for flag in ("num", "count"):
        if getattr(args, flag, 1) < 1:
            print(
                f"motionaura data {args.action}: --{flag} must be >= 1, got {getattr(args, flag)}",
                file=sys.stderr,
            )
            return 2
    # Before anything is generated or read: the folder it would be written to.
    out = getattr(args, "out", None) or getattr(args, "examples", None)
    if out:
        paths.check_output(out, "--out" if getattr(args, "out", None) else "--examples", folder=True)
    return {"build": _build, "show": _show, "measure": _measure, "export": _export}[args.action](args)
