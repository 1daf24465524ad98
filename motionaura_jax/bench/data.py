"""`motionaura bench data`: clips/s of decode + augment of 17x64x64 MP4 clips, vs plain imageio, same run.

Writes a folder of MP4 clips (Moving Shapes, libx264), then times in one process:
  peer      imageio.v3.imread(path, plugin="FFMPEG") per file, serially (the usual way to read a video);
  ours/1    VideoFolder.get (our reader + clip sampling + random crop + flip), serially, with each decoding
            backend (PyAV in-process, the default; the ffmpeg binary per clip, the fallback);
  pipeline  make_host_iterator over the folder (grain, background decode threads, batches of float32),
            PyAV at each thread count, the ffmpeg backend at the largest;
and, for reference, Moving Shapes rendered on the fly and a built TFDS (raw) dataset through the pipeline.
Compare `pipeline` clips/s with the training step's clips/s (batch / step time) to see if data keeps up.

    motionaura bench data
    motionaura bench data --clips 64 --batch 8 --threads 1,2,4
"""

from __future__ import annotations

import json
import pathlib
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import ml_collections

from motionaura_jax.configs import data as data_configs


def measure_pipeline(
    data_cfg: ml_collections.ConfigDict,
    *,
    batch_size: int = 8,
    num_batches: int = 8,
    warmup: int = 1,
    split: str = "train",
    seed: int = 0,
) -> dict[str, float]:
    """Clips/s that `make_host_iterator(data_cfg)` delivers to a consumer that does nothing else."""
    from motionaura_jax.data.pipeline import make_host_iterator

    start = time.perf_counter()
    it = make_host_iterator(data_cfg, batch_size=batch_size, split=split, seed=seed)
    for _ in range(warmup):
        next(it)
    setup_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(num_batches):
        next(it)
    elapsed = time.perf_counter() - start
    return {
        "clips_per_s": num_batches * batch_size / elapsed,
        "s_per_batch": elapsed / num_batches,
        "setup_s": setup_s,
        "batch_size": batch_size,
    }


def _time_serial(fn, items) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)
    return len(items) / (time.perf_counter() - start)


def run(
    *,
    clips: int = 32,
    frames: int = 17,
    size: int = 64,
    batch: int = 8,
    threads: Sequence[int] = (1, 2, 4),
    workdir: str | None = None,
) -> dict[str, Any]:
    """Clips/s of the peer, our reader and the pipeline on `clips` MP4 clips of frames x size x size written
    to a temporary folder under `workdir` (the system's temporary folder when None), removed afterwards."""
    import imageio.v3 as iio

    from motionaura_jax.data import tfds_builder, video_io
    from motionaura_jax.data.synthetic import MovingShapes
    from motionaura_jax.data.video_folder import VideoFolder

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = pathlib.Path(tmp) / "videos"
        shapes = MovingShapes(frames=frames, size=size, num_clips=clips, fps=8.0)
        # As plain strings: write_video returns an epath.Path, which imageio does not take as a file name.
        paths = [
            str(video_io.write_video(root / f"clip_{i:04d}.mp4", shapes[i]["video"], fps=8.0))
            for i in range(clips)
        ]
        results: dict[str, Any] = {"clip": f"{frames}x{size}x{size} MP4 (libx264)", "clips": clips}
        results["peer_imageio_serial_clips_per_s"] = _time_serial(
            lambda p: iio.imread(p, plugin="FFMPEG"), paths
        )
        backend = video_io.read_backend()
        backends = ["av", "ffmpeg"] if backend == "av" else ["ffmpeg"]
        results["read_backend"] = backend
        folder = VideoFolder(root, frames=frames, size=size, random_crop=True, flip=True)
        try:
            for name in backends:
                video_io.set_read_backend(name)
                suffix = "" if name == backend else f"_{name}"
                results[f"ours_serial{suffix}_clips_per_s"] = _time_serial(folder.get, list(range(clips)))
        finally:
            video_io.set_read_backend(backend)
        results["ours_vs_peer_serial"] = (
            results["ours_serial_clips_per_s"] / results["peer_imageio_serial_clips_per_s"]
        )
        num_batches = max(2, clips // batch)
        runs = [(n, backend) for n in threads] + [(max(threads), b) for b in backends if b != backend]
        for n, name in runs:
            video_io.set_read_backend(name)
            cfg = data_configs.get_config(
                source="folder",
                path=str(root),
                frames=frames,
                size=size,
                fps=0.0,
                flip=True,
                read_threads=n,
                prefetch=2 * batch,
            )
            suffix = "" if name == backend else f"_{name}"
            try:
                results[f"pipeline_folder{suffix}_threads{n}"] = measure_pipeline(
                    cfg, batch_size=batch, num_batches=num_batches
                )
            finally:
                video_io.set_read_backend(backend)
        cfg = data_configs.get_config(
            source="synthetic", frames=frames, size=size, read_threads=2, prefetch=2 * batch
        )
        results["pipeline_synthetic_threads2"] = measure_pipeline(
            cfg, batch_size=batch, num_batches=num_batches
        )
        tfds_dir = pathlib.Path(tmp) / "tfds"
        tfds_builder.build_dataset(
            tfds_dir,
            source="synthetic",
            frames=frames,
            size=size,
            split_sizes={"train": clips, "validation": 0, "test": 0, "heldout": 0},
        )
        cfg = data_configs.get_config(
            source="tfds", path=str(tfds_dir), frames=frames, size=size, read_threads=2, prefetch=2 * batch
        )
        results["pipeline_tfds_raw_threads2"] = measure_pipeline(
            cfg, batch_size=batch, num_batches=num_batches
        )
    return results


def format_results(results: dict[str, Any]) -> str:
    """The results of `run` as indented JSON (what `motionaura bench data` prints and writes)."""
    return json.dumps(results, indent=2)
