"""A folder of videos as a random-access clip dataset: captions, clip sampling at a target FPS, resize, crop.

Captions come from `captions.jsonl` in the folder (`{"video": "relative/path.mp4", "caption": "..."}` a line)
or from a `.txt` sidecar next to each video (`clip.mp4` + `clip.txt`); a video without either gets "".

Bad input never stops a run: a file that cannot be decoded (corrupt, truncated, not a video) is skipped,
named in a warning, and counted in `bad_files`; a read that fails later falls through to the next video.
Only a folder with no readable video at all is an error.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import os
import pathlib
import threading
from typing import Any

import numpy as np

from motionaura_jax.data import video_io

log = logging.getLogger(__name__)
CAPTIONS_FILE = "captions.jsonl"


@dataclasses.dataclass(frozen=True)
class FolderEntry:
    path: str
    caption: str
    info: video_io.VideoInfo


def resize_and_crop(video: np.ndarray, size: int, *, rng: np.random.Generator | None = None) -> np.ndarray:
    """Resizes the shorter side to `size` (bilinear, antialiased when shrinking), then crops `size`x`size`.

    The crop is centred, or at a random place when `rng` is given. uint8 in, uint8 out.
    """
    t, h, w, _ = video.shape
    if (h, w) != (size, size):
        scale = size / min(h, w)
        new_h, new_w = max(size, int(round(h * scale))), max(size, int(round(w * scale)))
        if (new_h, new_w) != (h, w):
            from PIL import Image

            video = np.stack(
                [
                    np.asarray(Image.fromarray(f).resize((new_w, new_h), Image.Resampling.BILINEAR))
                    for f in video
                ]
            )
        h, w = new_h, new_w
    if rng is None:
        top, left = (h - size) // 2, (w - size) // 2
    else:
        top, left = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
    return video[:, top : top + size, left : left + size]


def clip_frame_indices(
    num_source_frames: int,
    source_fps: float,
    frames: int,
    target_fps: float | None,
    rng: np.random.Generator | None,
) -> np.ndarray:
    """Source frame indices of a `frames`-long clip resampled from `source_fps` to `target_fps`.

    Steps of source_fps / target_fps source frames (nearest frame), so 30 -> 10 FPS takes every third frame
    and 8 -> 16 FPS repeats each frame. The start is random with `rng`, else the clip is centred.
    Indices past the end (a video shorter than the clip) are clamped to the last frame.
    """
    step = 1.0 if not target_fps else source_fps / float(target_fps)
    span = (frames - 1) * step
    slack = max(0.0, num_source_frames - 1 - span)
    start = float(rng.uniform(0, slack)) if rng is not None else slack / 2
    idx = np.floor(start + np.arange(frames) * step + 1e-6).astype(np.int64)
    return np.clip(idx, 0, max(0, num_source_frames - 1))


def _read_captions(root: pathlib.Path, videos: list[pathlib.Path]) -> dict[str, str]:
    captions: dict[str, str] = {}
    jsonl = root / CAPTIONS_FILE
    if jsonl.exists():
        with open(jsonl, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    key, caption = record["video"], record["caption"]
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise ValueError(
                        f"{jsonl}:{lineno}: expected a JSON object with 'video' and 'caption' keys ({exc})"
                    ) from None
                captions[str(pathlib.Path(key))] = str(caption)
    for video in videos:
        rel = str(video.relative_to(root))
        if rel in captions:
            continue
        sidecar = video.with_suffix(".txt")
        if sidecar.exists():
            captions[rel] = sidecar.read_text(encoding="utf-8").strip()
        elif video.name in captions:  # captions.jsonl may name files without their sub-folder
            captions[rel] = captions[video.name]
    return captions


class VideoFolder:
    """Clips from a folder of videos; `get(i, key)` is deterministic in (seed, i, key).

    frames/size: clip length and square side. fps: target FPS (None keeps each video's own).
    random_crop: random clip start and crop position (else centred). flip: random horizontal flips
    (leave off when captions say left/right). min_frames: videos with fewer source frames than this many
    clip frames' worth are skipped as too short (default: the clip must fit).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        frames: int = 17,
        size: int = 64,
        fps: float | None = None,
        random_crop: bool = True,
        flip: bool = False,
        seed: int = 0,
        recursive: bool = True,
        probe_threads: int = 4,
        show_progress: bool = True,
    ):
        self.root = pathlib.Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"video folder {self.root} does not exist or is not a folder "
                f"(set data.path to a folder of {', '.join(video_io.VIDEO_EXTENSIONS)} files)"
            )
        self.frames, self.size = int(frames), int(size)
        self.fps = float(fps) if fps else None
        self.random_crop, self.flip, self.seed = random_crop, flip, int(seed)
        pattern = "**/*" if recursive else "*"
        paths = sorted(
            p
            for p in self.root.glob(pattern)
            if p.is_file() and p.suffix.lower() in video_io.VIDEO_EXTENSIONS and not p.name.startswith(".")
        )
        if not paths:
            raise ValueError(
                f"video folder {self.root} holds no video files "
                f"(looked for {', '.join(video_io.VIDEO_EXTENSIONS)}{' recursively' if recursive else ''})"
            )
        captions = _read_captions(self.root, paths)
        self.bad_files: dict[str, str] = {}  # path -> reason, for files that could not be read
        self.too_short: dict[str, str] = {}
        self._lock = threading.Lock()
        infos = self._probe_all(paths, probe_threads, show_progress)
        self.entries: list[FolderEntry] = []
        for path, info in zip(paths, infos, strict=True):
            if info is None:
                continue
            need = self._source_frames_needed(info.fps)
            if info.num_frames < need:
                reason = (
                    f"{info.num_frames} frames at {info.fps:g} FPS; a clip of {self.frames} frames at "
                    f"{self.fps or info.fps:g} FPS needs {need}"
                )
                self.too_short[str(path)] = reason
                log.warning("skipping short video %s: %s", path, reason)
                continue
            self.entries.append(
                FolderEntry(str(path), captions.get(str(path.relative_to(self.root)), ""), info)
            )
        if not self.entries:
            details = "; ".join(
                f"{p}: {r}" for p, r in list({**self.bad_files, **self.too_short}.items())[:5]
            )
            raise ValueError(
                f"video folder {self.root}: none of its {len(paths)} video files is usable ({details}). "
                f"Check the files play (e.g. with ffmpeg), or lower data.frames / data.fps."
            )
        if self.bad_files:
            log.warning(
                "video folder %s: skipped %d unreadable file(s): %s",
                self.root,
                len(self.bad_files),
                ", ".join(self.bad_files),
            )

    def _source_frames_needed(self, source_fps: float) -> int:
        step = 1.0 if not self.fps else source_fps / self.fps
        return int(np.floor((self.frames - 1) * step + 1e-6)) + 1

    def _probe_all(self, paths: list[pathlib.Path], threads: int, show_progress: bool):
        def probe(path):
            try:
                return video_io.probe_video(path)
            except video_io.VideoReadError as exc:
                self._mark_bad(str(path), exc.reason)
                return None

        from tqdm.auto import tqdm

        # ffmpeg runs as a subprocess, so threads overlap the probes well.
        with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
            it = pool.map(probe, paths)
            if show_progress and len(paths) > 50:
                it = tqdm(it, total=len(paths), desc=f"probing {self.root.name}", unit="video")
            return list(it)

    def _mark_bad(self, path: str, reason: str) -> None:
        with self._lock:
            first = path not in self.bad_files
            self.bad_files[path] = reason
        if first:
            log.warning("skipping unreadable video %s: %s", path, reason)

    def __getstate__(self) -> dict:
        # Picklable for grain worker processes (a lock is not).
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return (
            f"VideoFolder({str(self.root)!r}, videos={len(self.entries)}, bad={len(self.bad_files)}, "
            f"frames={self.frames}, size={self.size}, fps={self.fps})"
        )

    def metrics(self) -> dict[str, float]:
        return {
            "data/bad_files": float(len(self.bad_files)),
            "data/short_files": float(len(self.too_short)),
            "data/videos": float(len(self.entries)),
        }

    def _load(self, entry: FolderEntry, rng: np.random.Generator | None) -> dict[str, Any]:
        info = entry.info
        idx = clip_frame_indices(info.num_frames, info.fps, self.frames, self.fps, rng)
        source, fps = video_io.read_video(
            entry.path, start_frame=int(idx[0]), num_frames=int(idx[-1] - idx[0] + 1)
        )
        # The container's frame count is an estimate: clamp to what was actually decoded.
        video = source[np.clip(idx - idx[0], 0, len(source) - 1)]
        video = resize_and_crop(video, self.size, rng=rng)
        if self.flip and rng is not None and rng.random() < 0.5:
            video = video[:, :, ::-1]
        return {
            "video": np.ascontiguousarray(video),
            "caption": entry.caption,
            "fps": float(self.fps or fps),
            "path": entry.path,
        }

    def get(self, index: int, key: int | None = None) -> dict[str, Any]:
        """Clip of video `index % len(self)`; random choices seeded by (seed, index, key) when random_crop.

        A video that fails to decode now is marked bad (warned once) and the next one is used instead.
        """
        n = len(self.entries)
        key = index if key is None else key
        for attempt in range(n):
            entry = self.entries[(index + attempt) % n]
            if entry.path in self.bad_files:
                continue
            rng = np.random.default_rng([self.seed, int(index) % n, int(key)]) if self.random_crop else None
            try:
                clip = self._load(entry, rng)
            except video_io.VideoReadError as exc:
                self._mark_bad(entry.path, exc.reason)
                continue
            clip["index"] = int(index) % n
            return clip
        raise RuntimeError(
            f"video folder {self.root}: every video failed to decode; bad files: {', '.join(self.bad_files)}"
        )

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.get(int(index))
