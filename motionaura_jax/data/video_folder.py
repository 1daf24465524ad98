"""A folder of videos as a random-access clip dataset: captions, clip sampling at a target FPS, resize, crop.

Captions come from `captions.jsonl` in the folder (`{"video": "relative/path.mp4", "caption": "..."}` a line)
or from a `.txt` sidecar next to each video (`clip.mp4` + `clip.txt`); a video without either gets "".

Bad input never stops a run: a file that cannot be decoded (corrupt, truncated, not a video, a symlink loop,
a dangling symlink, a folder or a FIFO with a video's name, one whose probe takes longer than
`probe_timeout_s`) is skipped, named once in a warning with its reason, and counted in `bad_files`; a read that
fails later falls through to the next video. Only a folder with no readable video at all is an error.

A captions.jsonl entry is data from whoever made the folder: one that points outside the folder (`..`, an
absolute path) is refused, and one naming a file that is not there (or a dangling symlink) is named; both are
warned about once and counted (`captions_refused`, `captions_missing`).

Inpainting data (`with_masks=True`, the inpaint stage's `data.with_masks`): each video `clip.mp4` comes with
sidecars of its own size, `clip.mask.mp4` (any video extension: the region per frame, white = the object) or
`clip.mask.png` (one region for every frame), and `clip.sketch.png` (lines on a plain background, either way
round: the minority of pixels are the lines). They are cut, resized, cropped and flipped with the clip and
returned as "masks" bool (T, H, W) and "sketch" uint8 (H, W) in {0, 255}, 255 = line, as Moving Shapes gives
them. `*.mask.<video extension>` files are never clips themselves. A video without both sidecars, or with one
of another size, is skipped, named once with the reason and counted (`data/no_masks`).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import pathlib
import queue
import stat
import threading
import time
from typing import Any

import numpy as np

from motionaura_jax.data import video_io

log = logging.getLogger(__name__)
CAPTIONS_FILE = "captions.jsonl"
MASK_SUFFIX, SKETCH_SUFFIX = ".mask", ".sketch"
IMAGE_EXTENSIONS = (".png",)


@dataclasses.dataclass(frozen=True)
class FolderEntry:
    path: str
    caption: str
    info: video_io.VideoInfo
    mask: str | None = None  # with_masks: the mask sidecar (a video or a PNG)
    sketch: str | None = None  # with_masks: the sketch sidecar (PNG)


def _sidecar(video: pathlib.Path, suffix: str, extensions: tuple[str, ...]) -> pathlib.Path | None:
    for ext in extensions:
        candidate = video.with_name(video.stem + suffix + ext)
        if candidate.is_file():
            return candidate
    return None


def _read_plane(path: str) -> np.ndarray:
    """uint8 (H, W) grey levels of an image sidecar; VideoReadError (naming it) when it is not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L"))
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise video_io.VideoReadError(path, f"not an image ({type(error).__name__})") from error


def sketch_lines(grey_hw: np.ndarray) -> np.ndarray:
    """uint8 (H, W) in {0, 255}, 255 = line: pixels >= 128, inverted when they are the majority (a sketch drawn
    dark on light)."""
    lines = np.asarray(grey_hw) >= 128
    if lines.mean() > 0.5:
        lines = ~lines
    return lines.astype(np.uint8) * 255


def _resize_shorter_side(frames: np.ndarray, size: int) -> np.ndarray:
    """(T, H, W[, C]) uint8 with the shorter side resized to `size` (bilinear, antialiased when shrinking)."""
    h, w = frames.shape[1:3]
    scale = size / min(h, w)
    new_h, new_w = max(size, int(round(h * scale))), max(size, int(round(w * scale)))
    if (new_h, new_w) == (h, w):
        return frames
    from PIL import Image

    return np.stack(
        [np.asarray(Image.fromarray(f).resize((new_w, new_h), Image.Resampling.BILINEAR)) for f in frames]
    )


def _crop_origin(h: int, w: int, size: int, rng: np.random.Generator | None) -> tuple[int, int]:
    if rng is None:
        return (h - size) // 2, (w - size) // 2
    return int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))


def resize_and_crop(
    video: np.ndarray,
    size: int,
    *,
    rng: np.random.Generator | None = None,
    planes: tuple[np.ndarray, ...] = (),
) -> np.ndarray | tuple[np.ndarray, ...]:
    """Resizes the shorter side to `size` (bilinear, antialiased when shrinking), then crops `size`x`size`.

    The crop is centred, or at a random place when `rng` is given. uint8 in, uint8 out. `planes`: uint8
    (T', H, W) arrays of the video's height and width (object masks, a sketch) given the same resize and crop;
    with them the result is (video, *planes).
    """
    video = _resize_shorter_side(video, size)
    h, w = video.shape[1:3]
    top, left = _crop_origin(h, w, size, rng)
    video = video[:, top : top + size, left : left + size]
    if not planes:
        return video
    return (video, *(_resize_shorter_side(p, size)[:, top : top + size, left : left + size] for p in planes))


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


def _not_a_file(path: pathlib.Path) -> str | None:
    """Why `path` (named like a video) is not a regular file to read, or None when it is one."""
    try:
        info = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop"
        if path.is_symlink():
            return f"dangling symlink to {os.readlink(path)}"
        return f"cannot stat: {exc.strerror or exc}"
    if stat.S_ISDIR(info.st_mode):
        return "a folder, not a video file"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file (a FIFO, socket or device)"
    return None


@dataclasses.dataclass
class CaptionIssues:
    refused: dict[str, str] = dataclasses.field(default_factory=dict)  # entry -> why it was refused
    missing: dict[str, str] = dataclasses.field(default_factory=dict)  # entry -> what is wrong with its file


def _caption_key(root: pathlib.Path, key: str, issues: CaptionIssues, where: str) -> str | None:
    """The entry's path relative to `root`, or None (named in `issues`) when it leaves the folder or names
    nothing there."""
    entry = pathlib.PurePosixPath(key.replace("\\", "/"))
    if entry.is_absolute() or pathlib.PureWindowsPath(key).drive:
        issues.refused[key] = f"{where}: absolute path {key!r} refused (entries are relative to the folder)"
        return None
    if ".." in entry.parts:
        issues.refused[key] = f"{where}: {key!r} points outside the folder; refused"
        return None
    target = root / pathlib.Path(*entry.parts) if entry.parts else root
    try:
        resolved = target.resolve(strict=False)
        inside = resolved == root.resolve() or root.resolve() in resolved.parents
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop on older Pythons
        inside = True
    if not inside:
        issues.refused[key] = f"{where}: {key!r} is a symlink out of the folder; refused"
        return None
    if not target.is_file():
        problem = _not_a_file(target) if (target.exists() or target.is_symlink()) else "no such file"
        issues.missing[key] = f"{where}: {key!r}: {problem}"
        return None
    return str(pathlib.Path(*entry.parts))


def _read_captions(root: pathlib.Path, videos: list[pathlib.Path]) -> tuple[dict[str, str], CaptionIssues]:
    captions: dict[str, str] = {}
    issues = CaptionIssues()
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
                rel = _caption_key(root, str(key), issues, f"{jsonl.name}:{lineno}")
                if rel is not None:
                    captions[rel] = str(caption)
                elif "/" not in str(key) and "\\" not in str(key) and str(key) not in issues.refused:
                    # A bare file name may name a file in a sub-folder (matched below), so keep it for that.
                    captions[str(key)] = str(caption)
    for video in videos:
        rel = str(video.relative_to(root))
        if rel in captions:
            continue
        sidecar = video.with_suffix(".txt")
        if sidecar.exists():
            captions[rel] = sidecar.read_text(encoding="utf-8").strip()
        elif video.name in captions:  # captions.jsonl may name files without their sub-folder
            captions[rel] = captions[video.name]
            issues.missing.pop(video.name, None)
    return captions, issues


def probe_with_deadline(
    paths: list[pathlib.Path], probe, threads: int, timeout_s: float, progress=None
) -> list[object]:
    """`probe(path)` for every path on `threads` daemon threads; a path whose probe does not return within
    `timeout_s` gets a `TimeoutError` as its result. Daemon threads (not a ThreadPoolExecutor, whose threads
    the interpreter joins at exit): a decoder stuck on one hostile file must not hold the process."""
    results: list[object] = [None] * len(paths)
    started: list[float | None] = [None] * len(paths)
    done = [threading.Event() for _ in paths]
    todo: queue.Queue[int] = queue.Queue()
    for i in range(len(paths)):
        todo.put(i)

    def worker():
        while True:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            started[i] = time.monotonic()
            try:
                results[i] = probe(paths[i])
            except BaseException as exc:  # noqa: BLE001 - handed to the caller as this path's result
                results[i] = exc
            done[i].set()

    workers = [
        threading.Thread(target=worker, daemon=True, name="probe-video") for _ in range(max(1, threads))
    ]
    for w in workers:
        w.start()
    for i in range(len(paths)):
        while not done[i].wait(0.05):
            if started[i] is not None and time.monotonic() - started[i] > timeout_s:
                results[i] = TimeoutError(f"no answer within {timeout_s:g} s")
                # The stuck worker is abandoned; start another so the rest of the queue still drains.
                threading.Thread(target=worker, daemon=True, name="probe-video").start()
                break
        if progress is not None:
            progress.update(1)
    return results


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
        probe_timeout_s: float = 60.0,
        with_masks: bool = False,
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
        self.probe_timeout_s = float(probe_timeout_s)
        self.with_masks = bool(with_masks)
        pattern = "**/*" if recursive else "*"
        # Everything named like a video counts, regular file or not: a symlink loop or a folder called x.mp4
        # is named as bad below rather than silently passed over.
        candidates = sorted(
            p
            for p in self.root.glob(pattern)
            if p.suffix.lower() in video_io.VIDEO_EXTENSIONS
            and not p.stem.lower().endswith(MASK_SUFFIX)
            and not p.name.startswith(".")
            and not any(part.startswith(".") for part in p.relative_to(self.root).parts[:-1])
        )
        if not candidates:
            raise ValueError(
                f"video folder {self.root} holds no video files "
                f"(looked for {', '.join(video_io.VIDEO_EXTENSIONS)}{' recursively' if recursive else ''})"
            )
        self.bad_files: dict[str, str] = {}  # path -> reason, for files that could not be read
        self.too_short: dict[str, str] = {}
        self.no_masks: dict[str, str] = {}  # with_masks: videos skipped for a missing sidecar
        self._lock = threading.Lock()
        paths = []
        for path in candidates:
            problem = _not_a_file(path)
            if problem is None:
                paths.append(path)
            elif not any(parent in candidates for parent in path.parents):  # inside a folder named x.mp4
                self._mark_bad(str(path), problem)
        captions, issues = _read_captions(self.root, paths)
        self.captions_refused, self.captions_missing = issues.refused, issues.missing
        for reason in issues.refused.values():
            log.warning("captions entry refused: %s", reason)
        for reason in issues.missing.values():
            log.warning("captions entry names no readable file: %s", reason)
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
            entry = FolderEntry(str(path), captions.get(str(path.relative_to(self.root)), ""), info)
            if self.with_masks:
                entry = self._with_sidecars(entry)
                if entry is None:
                    continue
            self.entries.append(entry)
        if not self.entries:
            skipped = {**self.bad_files, **self.too_short, **self.no_masks}
            details = "; ".join(f"{p}: {r}" for p, r in list(skipped.items())[:5])
            raise ValueError(
                f"video folder {self.root}: none of its {len(paths)} video files is usable ({details}). "
                f"Check the files play (e.g. with ffmpeg), or lower data.frames / data.fps."
            )
        if self.bad_files or self.too_short:
            # Counts only: each file was named once, with its reason, when it was skipped.
            log.warning(
                "video folder %s: %d video(s) kept, %d unreadable and %d too short skipped (named above)",
                self.root,
                len(self.entries),
                len(self.bad_files),
                len(self.too_short),
            )

    def _with_sidecars(self, entry: FolderEntry) -> FolderEntry | None:
        video = pathlib.Path(entry.path)
        mask = _sidecar(video, MASK_SUFFIX, (*video_io.VIDEO_EXTENSIONS, *IMAGE_EXTENSIONS))
        sketch = _sidecar(video, SKETCH_SUFFIX, IMAGE_EXTENSIONS)
        missing = [
            f"{video.stem}{suffix}{ext}"
            for found, suffix, ext in ((mask, MASK_SUFFIX, ".mp4|.png"), (sketch, SKETCH_SUFFIX, ".png"))
            if found is None
        ]
        if missing:
            reason = (
                f"no {' or '.join(missing)} next to it (inpainting data need a mask and a sketch per video)"
            )
            self.no_masks[entry.path] = reason
            log.warning("skipping %s: %s", entry.path, reason)
            return None
        return dataclasses.replace(entry, mask=str(mask), sketch=str(sketch))

    def _read_sidecars(self, entry: FolderEntry, idx: np.ndarray, size_hw: tuple[int, int]):
        """(masks uint8 (T, H, W) in {0, 255} at the clip's frames, sketch uint8 (1, H, W)) at the source size."""
        assert entry.mask is not None and entry.sketch is not None
        if pathlib.Path(entry.mask).suffix.lower() in IMAGE_EXTENSIONS:
            masks = np.repeat(_read_plane(entry.mask)[None], len(idx), axis=0)
        else:
            frames, _ = video_io.read_video(
                entry.mask
            )  # masks are small: the whole file, then the clip's frames
            masks = frames.mean(axis=-1)[np.clip(idx, 0, len(frames) - 1)]
        masks = np.where(masks >= 128, 255, 0).astype(np.uint8)
        sketch = sketch_lines(_read_plane(entry.sketch))[None]
        for what, path, plane in (("mask", entry.mask, masks), ("sketch", entry.sketch, sketch)):
            if plane.shape[1:] != tuple(size_hw):
                raise video_io.VideoReadError(
                    entry.path,
                    f"its {what} {path} is {plane.shape[2]}x{plane.shape[1]}, the video {size_hw[1]}x{size_hw[0]}: "
                    "give sidecars of the video's size",
                )
        return masks, sketch

    def _source_frames_needed(self, source_fps: float) -> int:
        step = 1.0 if not self.fps else source_fps / self.fps
        return int(np.floor((self.frames - 1) * step + 1e-6)) + 1

    def _probe_all(self, paths: list[pathlib.Path], threads: int, show_progress: bool):
        from tqdm.auto import tqdm

        bar = None
        if show_progress and len(paths) > 50:
            bar = tqdm(total=len(paths), desc=f"probing {self.root.name}", unit="video")
        # libav runs with the GIL released, so threads overlap the probes well.
        results = probe_with_deadline(paths, video_io.probe_video, threads, self.probe_timeout_s, bar)
        if bar is not None:
            bar.close()
        infos = []
        for path, result in zip(paths, results, strict=True):
            if isinstance(result, video_io.VideoInfo):
                infos.append(result)
                continue
            if isinstance(result, video_io.VideoReadError):
                reason = result.reason
            elif isinstance(result, TimeoutError):
                reason = f"probe gave no answer within {self.probe_timeout_s:g} s"
            else:  # a decoder bug on a hostile file: named like any other bad file, never a crash
                reason = f"{type(result).__name__}: {str(result).splitlines()[0] if str(result) else ''}"
            self._mark_bad(str(path), reason)
            infos.append(None)
        return infos

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
            "data/captions_refused": float(len(self.captions_refused)),
            "data/captions_missing": float(len(self.captions_missing)),
            "data/no_masks": float(len(self.no_masks)),
        }

    def _load(self, entry: FolderEntry, rng: np.random.Generator | None) -> dict[str, Any]:
        info = entry.info
        idx = clip_frame_indices(info.num_frames, info.fps, self.frames, self.fps, rng)
        try:
            source, fps = video_io.read_video(
                entry.path, start_frame=int(idx[0]), num_frames=int(idx[-1] - idx[0] + 1)
            )
        except video_io.VideoReadError:
            if idx[0] == 0:
                raise
            # The container's frame count was too high (variable frame rate, a damaged tail): decode what is
            # there and place the clip within the frames that exist.
            source, fps = video_io.read_video(entry.path)
            idx = clip_frame_indices(len(source), info.fps, self.frames, self.fps, rng)
            source, idx = source[idx[0] : idx[-1] + 1], idx
        # The container's frame count is an estimate: clamp to what was actually decoded.
        video = source[np.clip(idx - idx[0], 0, len(source) - 1)]
        if self.with_masks:
            masks, sketch = self._read_sidecars(entry, idx, video.shape[1:3])
            video, masks, sketch = resize_and_crop(video, self.size, rng=rng, planes=(masks, sketch))
        else:
            video = resize_and_crop(video, self.size, rng=rng)
        flip = self.flip and rng is not None and rng.random() < 0.5
        clip = {
            "video": np.ascontiguousarray(video[:, :, ::-1] if flip else video),
            "caption": entry.caption,
            "fps": float(self.fps or fps),
            "path": entry.path,
        }
        if (
            self.with_masks
        ):  # bilinear-resized: a mask pixel is in at >= 128, a thin sketch line kept at >= 64
            if flip:
                masks, sketch = masks[:, :, ::-1], sketch[:, :, ::-1]
            clip["masks"] = np.ascontiguousarray(masks >= 128)
            clip["sketch"] = np.where(sketch[0] >= 64, 255, 0).astype(np.uint8)
        return clip

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
