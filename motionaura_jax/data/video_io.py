"""Reading and writing video files: MP4/WebM/AVI/MKV decoded in-process by PyAV (libav*) or by the ffmpeg
binary in imageio-ffmpeg, GIF through Pillow; writes go through the ffmpeg binary (or Pillow for GIF).

Decoding backend (`set_read_backend` or MOTIONAURA_VIDEO_BACKEND=av|ffmpeg): "av" by default when PyAV is
installed. It decodes in this process with the GIL released, so a pipeline's reader threads decode in
parallel, and it starts no process per clip; spawning ffmpeg costs ~30 ms per read, more than decoding a
short 64x64 clip (numbers in `motionaura bench data`). "ffmpeg" is the fallback.

Frames are uint8 (T, H, W, 3) RGB. Every read failure becomes a `VideoReadError` that names the file and says
what ffmpeg or Pillow reported, so a data loader can skip the file and tell the user which one it was.
Writes are atomic: the file appears complete or not at all.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import tempfile
import threading
import warnings

import numpy as np
from etils import epath

from motionaura_jax import paths
from motionaura_jax.atomic import atomic_path

# ffmpeg runs through subprocess; with `_fork_safe_spawn` below its fork is followed at once by exec in C
# (no Python runs in the child), so JAX's "os.fork() ... may deadlock" warning does not apply to it.
warnings.filterwarnings(
    "ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning, module="subprocess"
)


def _fork_safe_spawn() -> None:
    """Makes imageio-ffmpeg start ffmpeg in its own process group from C (`process_group=0`) instead of through
    `preexec_fn=os.setpgrp`.

    A preexec_fn makes the forked child run Python, at-fork hooks included (JAX registers one); when another
    thread of a multi-threaded loader held a lock those need at fork time, the child hangs before exec. Seen
    here as ffmpeg readers stuck on a futex under threaded decoding.
    """
    try:
        from imageio_ffmpeg import _io
    except ImportError:
        return
    original = _io._popen_kwargs
    if getattr(original, "fork_safe", False) or os.name != "posix":
        return

    def popen_kwargs(prevent_sigint: bool = False) -> dict:
        kwargs = original(prevent_sigint=False)
        if prevent_sigint:  # what setpgrp was for: Ctrl-C in the terminal does not reach ffmpeg
            kwargs["process_group"] = 0
        return kwargs

    popen_kwargs.fork_safe = True
    _io._popen_kwargs = popen_kwargs


_fork_safe_spawn()

VIDEO_EXTENSIONS = (".mp4", ".webm", ".gif", ".avi", ".mkv", ".mov", ".m4v")
_FFMPEG_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v")
# Encoder per container when writing; libx264rgb + crf 0 is lossless RGB (used for exact storage).
_WRITE_CODECS = {
    ".mp4": "libx264",
    ".m4v": "libx264",
    ".mov": "libx264",
    ".webm": "libvpx-vp9",
    ".avi": "mpeg4",
    ".mkv": "libx264",
}


_BACKENDS = ("av", "ffmpeg")
_read_backend: str | None = None


def _default_backend() -> str:
    env = os.environ.get("MOTIONAURA_VIDEO_BACKEND", "").strip().lower()
    if env:
        if env not in _BACKENDS:
            raise ValueError(f"MOTIONAURA_VIDEO_BACKEND={env!r}: use one of {_BACKENDS}")
        return env
    try:
        import av  # noqa: F401
    except ImportError:
        return "ffmpeg"
    return "av"


def read_backend() -> str:
    """The decoder used for MP4/WebM/AVI/MKV reads: "av" (PyAV, in-process) or "ffmpeg" (a subprocess)."""
    global _read_backend
    if _read_backend is None:
        _read_backend = _default_backend()
    return _read_backend


def set_read_backend(name: str) -> None:
    if name not in _BACKENDS:
        raise ValueError(f"video read backend {name!r}: use one of {_BACKENDS}")
    if name == "av":
        import av  # noqa: F401  (fail here, not at the first read, when PyAV is missing)
    global _read_backend
    _read_backend = name


# Frames larger than this are refused before decoding: a header that declares 60000x60000 would otherwise make
# the decoder allocate gigabytes for one frame. 8K UHD (7680x4320) is 33.2M pixels.
MAX_FRAME_PIXELS = 1 << 26


def _check_frame_size(path, width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise VideoReadError(path, f"declared frame size {width}x{height} is empty")
    if width * height > MAX_FRAME_PIXELS:
        raise VideoReadError(
            path, f"declared frame size {width}x{height} is over the {MAX_FRAME_PIXELS} pixel limit"
        )


class VideoReadError(IOError):
    """A video file that cannot be decoded; `path` and `reason` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"cannot read video {self.path}: {reason}")


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    path: str
    fps: float
    num_frames: int  # from the container's duration x fps (an estimate for some formats)
    height: int
    width: int


def _ffmpeg_reason(exc: BaseException) -> str:
    """The informative lines of an imageio-ffmpeg error (the banner and build flags are dropped)."""
    lines = [re.sub(r"^\[[^\]]*\]\s*", "", ln.strip()) for ln in str(exc).splitlines() if ln.strip()]
    words = ("error", "invalid", "not found", "no such", "could not", "truncated", "moov", "corrupt")
    keep = [ln for ln in lines if any(w in ln.lower() for w in words) and not ln.startswith("configuration:")]
    return "; ".join(list(dict.fromkeys(keep))[:3]) or (lines[0] if lines else type(exc).__name__)


def _check_file(path: pathlib.Path) -> None:
    if not path.exists():
        raise VideoReadError(path, "no such file")
    if not path.is_file():
        raise VideoReadError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise VideoReadError(path, "empty file (0 bytes)")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:  # e.g. permission denied: said as such, not as a decoder's guess
        raise VideoReadError(path, exc.strerror or str(exc)) from None


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame rate, frame count and size without decoding the frames (GIFs are decoded: they are small)."""
    path = pathlib.Path(path)
    _check_file(path)
    if path.suffix.lower() == ".gif":
        frames, fps = read_video(path)
        return VideoInfo(str(path), fps, len(frames), frames.shape[1], frames.shape[2])
    if read_backend() == "av":
        return _probe_av(path)
    import imageio_ffmpeg

    try:
        gen = imageio_ffmpeg.read_frames(str(path))
        meta = next(gen)
        gen.close()
    except Exception as exc:  # ffmpeg raises OSError/RuntimeError/StopIteration with its log as text
        raise VideoReadError(path, _ffmpeg_reason(exc)) from exc
    fps = float(meta.get("fps") or 0.0)
    duration = float(meta.get("duration") or 0.0)
    width, height = meta["size"]
    if fps <= 0 or duration <= 0:
        raise VideoReadError(
            path, f"no usable frame rate/duration in the container (fps={fps}, duration={duration})"
        )
    _check_frame_size(path, int(width), int(height))
    return VideoInfo(str(path), fps, max(1, int(round(duration * fps))), int(height), int(width))


def read_video(
    path: str | os.PathLike, *, start_frame: int = 0, num_frames: int | None = None
) -> tuple[np.ndarray, float]:
    """Decodes frames [start_frame, start_frame + num_frames) (all when None) -> (uint8 (T,H,W,3), fps).

    Decoding stops after the last frame asked for, so reading the head of a long video is cheap.
    Raises VideoReadError when the file is unreadable or holds no frame in the requested range.
    """
    path = pathlib.Path(path)
    _check_file(path)
    stop = None if num_frames is None else start_frame + num_frames
    if path.suffix.lower() == ".gif":
        frames, fps = _read_gif(path)
        frames = frames[start_frame:stop]
    elif read_backend() == "av":
        frames, fps = _read_av(path, start_frame, stop)
    else:
        frames, fps = _read_ffmpeg(path, start_frame, stop)
    if len(frames) == 0:
        raise VideoReadError(path, f"no frames decoded from frame {start_frame} on")
    return frames, fps


def _read_ffmpeg(path: pathlib.Path, start: int, stop: int | None) -> tuple[np.ndarray, float]:
    import imageio_ffmpeg

    frames = []
    try:
        gen = imageio_ffmpeg.read_frames(str(path))
        meta = next(gen)
        width, height = meta["size"]
        fps = float(meta.get("fps") or 0.0)
        try:
            for i, buf in enumerate(gen):
                if stop is not None and i >= stop:
                    break
                if i >= start:
                    frames.append(np.frombuffer(buf, np.uint8).reshape(height, width, 3))
        finally:
            gen.close()
    except VideoReadError:
        raise
    except Exception as exc:
        raise VideoReadError(path, _ffmpeg_reason(exc)) from exc
    if fps <= 0:
        raise VideoReadError(path, "the container reports no frame rate")
    return (np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)), fps


def _av_reason(exc: BaseException) -> str:
    """libav's message without the errno and path PyAV adds (the error already names the file)."""
    text = getattr(exc, "strerror", None) or str(exc).split(": '")[0]
    return str(text).strip() or type(exc).__name__


def _open_av(source):
    import av

    container = av.open(source, mode="r")
    if not container.streams.video:
        container.close()
        raise ValueError("the container holds no video stream")
    stream = container.streams.video[0]
    # One decode thread per clip: parallelism comes from the reader threads, XLA needs the other cores, and
    # libav's frame threads cost more to start than a short clip takes to decode (0.9 vs 5.6 ms at 64x64x17).
    stream.thread_type = "NONE"
    return container, stream


def _av_fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def _probe_av(path: pathlib.Path) -> VideoInfo:
    try:
        container, stream = _open_av(str(path))
    except Exception as exc:
        raise VideoReadError(path, _av_reason(exc)) from exc
    with container:
        fps = _av_fps(stream)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000  # AV_TIME_BASE
        else:
            duration = 0.0
        num_frames = int(stream.frames) or int(round(duration * fps))
        width, height = stream.codec_context.width, stream.codec_context.height
    _check_frame_size(path, int(width), int(height))
    if fps <= 0 or num_frames <= 0:
        raise VideoReadError(
            path, f"no usable frame rate/duration in the container (fps={fps}, duration={duration})"
        )
    return VideoInfo(str(path), fps, num_frames, int(height), int(width))


_thread_local = threading.local()


def _reformatter():
    """One swscale context per thread: building one per frame (what `frame.to_ndarray(format=...)` does)
    costs more than decoding the frame; sharing one across reader threads is not safe."""
    if not hasattr(_thread_local, "reformatter"):
        from av.video.reformatter import VideoReformatter

        _thread_local.reformatter = VideoReformatter()
    return _thread_local.reformatter


def _read_av(source, start: int, stop: int | None) -> tuple[np.ndarray, float]:
    name = source if isinstance(source, (str, pathlib.Path)) else "<bytes>"
    frames = []
    try:
        container, stream = _open_av(str(source) if isinstance(source, pathlib.Path) else source)
        with container:
            fps = _av_fps(stream)
            _check_frame_size(name, stream.codec_context.width or 1, stream.codec_context.height or 1)
            to_rgb = _reformatter()
            for i, frame in enumerate(container.decode(stream)):
                if stop is not None and i >= stop:
                    break
                if i >= start:
                    frames.append(to_rgb.reformat(frame, format="rgb24").to_ndarray())
    except VideoReadError:
        raise
    except Exception as exc:  # av.FFmpegError subclasses, plus ValueError for a stream-less container
        raise VideoReadError(name, _av_reason(exc)) from exc
    if fps <= 0:
        raise VideoReadError(name, "the container reports no frame rate")
    return (np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)), fps


def _read_gif(path: pathlib.Path) -> tuple[np.ndarray, float]:
    from PIL import Image, ImageSequence

    try:
        with warnings.catch_warnings():
            # Pillow warns of a large image at open; the size is checked (and refused) right below instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
        with image:
            _check_frame_size(path, *image.size)  # before any frame is decoded
            frames, durations = [], []
            for frame in ImageSequence.Iterator(image):
                durations.append(frame.info.get("duration", 100) or 100)
                frames.append(np.asarray(frame.convert("RGB")))
    except VideoReadError:
        raise
    except Exception as exc:
        raise VideoReadError(path, f"{type(exc).__name__}: {exc}") from exc
    fps = 1000.0 / float(np.median(durations)) if durations else 10.0
    return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8), fps


def read_video_bytes(data: bytes, *, suffix: str = ".mkv") -> tuple[np.ndarray, float]:
    """Decodes an encoded video held in memory (e.g. from a dataset record)."""
    if suffix.lower() != ".gif" and read_backend() == "av":
        import io

        frames, fps = _read_av(io.BytesIO(data), 0, None)
        if len(frames) == 0:
            raise VideoReadError("<bytes>", "no frames decoded")
        return frames, fps
    with tempfile.NamedTemporaryFile(suffix=suffix) as f:
        f.write(data)
        f.flush()
        return read_video(f.name)


def to_uint8(video: np.ndarray) -> np.ndarray:
    """uint8 as is; float video taken to be in [-1, 1]; (T,H,W) or (T,H,W,1) greyscale becomes RGB."""
    video = np.asarray(video)
    if video.dtype != np.uint8:
        video = np.clip(np.round((video.astype(np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    if video.ndim == 3:
        video = video[..., None]
    if video.ndim != 4 or video.shape[-1] not in (1, 3):
        raise ValueError(f"expected a video (T,H,W,3), (T,H,W,1) or (T,H,W); got shape {video.shape}")
    if video.shape[-1] == 1:
        video = np.repeat(video, 3, axis=-1)
    return np.ascontiguousarray(video)


def write_video(
    path: str | os.PathLike,
    video: np.ndarray,
    fps: float = 8.0,
    *,
    lossless: bool = False,
    quality: float = 8.0,
) -> pathlib.Path | epath.Path:
    """Writes MP4/WebM/AVI/MKV (ffmpeg) or GIF (Pillow), chosen by the suffix, to a local path or a URL
    (gs://...). Atomic.

    lossless=True (MKV/MP4 only) encodes RGB exactly with libx264rgb at crf 0 (most players cannot show it;
    it is for storage). Odd frame sizes are padded by one pixel for yuv420p codecs.
    """
    path = paths.as_path(path)
    suffix = path.suffix.lower()
    frames = to_uint8(video)
    if fps <= 0:
        raise ValueError(f"write_video {path}: fps must be > 0, got {fps}")
    with atomic_path(path) as tmp:
        if suffix == ".gif":
            from PIL import Image

            images = [Image.fromarray(f) for f in frames]
            images[0].save(
                tmp,
                save_all=True,
                append_images=images[1:],
                duration=int(round(1000 / fps)),
                loop=0,
                optimize=False,
            )
        elif suffix in _FFMPEG_EXTENSIONS:
            _write_ffmpeg(tmp, frames, fps, suffix, lossless, quality)
        else:
            raise ValueError(f"write_video {path}: unknown suffix {suffix!r}; use one of {VIDEO_EXTENSIONS}")
    return paths.native(path)


def _write_ffmpeg(
    path: pathlib.Path, frames: np.ndarray, fps: float, suffix: str, lossless: bool, quality: float
):
    import imageio_ffmpeg

    if lossless:
        if suffix not in (".mkv", ".mp4"):
            raise ValueError(f"lossless video needs .mkv or .mp4, got {suffix}")
        codec, pix_fmt, params, quality_arg = (
            "libx264rgb",
            "rgb24",
            ["-crf", "0", "-preset", "ultrafast"],
            None,
        )
    else:
        codec, pix_fmt, params, quality_arg = _WRITE_CODECS[suffix], "yuv420p", None, quality
        # yuv420p needs even sizes: pad with edge pixels rather than let ffmpeg rescale.
        pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
        if pad_h or pad_w:
            frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    height, width = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(
        str(path),
        (width, height),
        fps=fps,
        codec=codec,
        pix_fmt_out=pix_fmt,
        quality=quality_arg,
        output_params=params,
        macro_block_size=1,
        ffmpeg_log_level="error",
    )
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()


def encode_video_bytes(
    video: np.ndarray, fps: float = 8.0, *, lossless: bool = True, suffix: str = ".mkv"
) -> bytes:
    """Encodes to an in-memory file (lossless RGB MKV by default)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = write_video(pathlib.Path(tmp) / f"clip{suffix}", video, fps, lossless=lossless)
        return path.read_bytes()


def contact_sheet(
    video: np.ndarray, *, columns: int | None = None, gap: int = 2, min_tile: int = 64
) -> np.ndarray:
    """Frames laid out in a grid (uint8 (H', W', 3)); small frames are upscaled (nearest) to `min_tile` px."""
    frames = to_uint8(video)
    t, h, w, _ = frames.shape
    scale = max(1, int(np.ceil(min_tile / max(1, min(h, w)))))
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
        h, w = h * scale, w * scale
    columns = columns or min(t, 8)
    rows = -(-t // columns)
    sheet = np.full((rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, 3), 32, np.uint8)
    for i, frame in enumerate(frames):
        r, c = divmod(i, columns)
        sheet[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = frame
    return sheet


def write_contact_sheet(path: str | os.PathLike, video: np.ndarray, **kwargs) -> pathlib.Path | epath.Path:
    """A PNG of the frames in a grid (see `contact_sheet`), to a local path or a URL. Atomic."""
    from PIL import Image

    path = paths.as_path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(contact_sheet(video, **kwargs)).save(tmp, format="PNG")
    return paths.native(path)


def write_examples(
    stem: str | os.PathLike, video: np.ndarray, fps: float = 8.0
) -> dict[str, pathlib.Path | epath.Path]:
    """STEM.mp4, STEM.gif and STEM.png (contact sheet) for one clip, local or at a URL; the paths by kind."""
    stem = paths.as_path(stem)
    return {
        "mp4": write_video(stem.with_name(stem.name + ".mp4"), video, fps),
        "gif": write_video(stem.with_name(stem.name + ".gif"), video, fps),
        "png": write_contact_sheet(stem.with_name(stem.name + ".png"), video),
    }
