"""Metrics from process 0: JSON lines (`metrics.jsonl`) and TensorBoard (tensorboardX: scalars, and the sample hooks'
contact sheets and GIFs), local or at a URL."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping

import jax
import numpy as np
from tensorboardX import summary as tb_summary
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto.event_pb2 import Event
from tensorboardX.proto.summary_pb2 import Summary

from motionaura_jax import atomic, paths

log = logging.getLogger("motionaura")


def setup_logging(level: int = logging.INFO) -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
    log.setLevel(level)
    # Not propagated: libraries loaded by a run (one calls logging.basicConfig) put a handler on the root logger,
    # and every record would be printed a second time by it.
    log.propagate = False
    for name in ("motionaura_jax",):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.propagate = False
        if not logger.handlers:
            logger.addHandler(log.handlers[0])


class MetricWriter:
    """`{"step": s, **metrics}` lines in `WORKDIR/metrics.jsonl` and TensorBoard scalars; process 0 only.

    On a local folder each line is appended and flushed at once. An object store (gs://...) has no append, so
    the writer keeps the file's lines (those of earlier runs in the workdir included) and rewrites the whole
    object, at most every `upload_every_s` and on `flush()`/`close()`; the loop flushes before each checkpoint,
    so every checkpointed step's metrics are stored before the checkpoint is. Rewriting one object (rather than
    one object per flush) keeps readers simple: `metrics.jsonl` is always one complete file.

    TensorBoard events go straight to `WORKDIR/tensorboard` on a local folder. tensorboardX's own GCS writer
    needs credentials libraries it does not declare (and fails with an AttributeError without them), so for a
    URL the events are written to a local temporary folder and copied to `WORKDIR/tensorboard` on flush.
    Events are written synchronously (tensorboardX's record writer, not its SummaryWriter): the SummaryWriter
    hands events to a background thread whose queue its `flush()` does not drain, so a flush could copy up an
    event file that lacks the last images written.
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        tensorboard: bool = True,
        append: bool | None = None,
        upload_every_s: float = 30.0,
    ):
        self.enabled = jax.process_index() == 0
        self.workdir = paths.as_path(workdir)
        self.path = self.workdir / "metrics.jsonl"
        self._append = paths.is_local(self.workdir) if append is None else append
        self._upload_every_s = upload_every_s
        self._last_upload = time.monotonic()
        self._tb: EventsWriter | None = None
        self._tb_local: str | None = None  # temporary local event folder, for URL workdirs
        self._tb_seen: dict[str, tuple[int, int]] = {}
        if not self.enabled:
            return
        paths.mkdir(self.workdir)
        if self._append:
            _drop_torn_tail(self.path)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        else:
            self._lines = (
                self.path.read_text(encoding="utf-8").splitlines(keepends=True) if self.path.exists() else []
            )
            if self._lines and not self._lines[-1].endswith("\n"):
                self._lines[-1] += "\n"
            self._dirty = False
        if tensorboard:
            if paths.is_local(self.workdir):
                events_dir = str(self.workdir / "tensorboard")
                os.makedirs(events_dir, exist_ok=True)
            else:
                events_dir = self._tb_local = tempfile.mkdtemp(prefix="motionaura-tensorboard-")
            # A unique suffix: a resumed run's events file must not replace an earlier one of the same second.
            self._tb = EventsWriter(
                os.path.join(events_dir, "events"), filename_suffix=f".{uuid.uuid4().hex[:8]}"
            )

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if math.isfinite(float(v)) else str(float(v))) for k, v in metrics.items()}
        line = json.dumps({"step": int(step), "time": round(time.time(), 3), **clean}) + "\n"
        if self._tb is not None:
            self._add(step, [tb_summary.scalar(key, float(value)).value[0] for key, value in metrics.items()])
        if self._append:
            self._file.write(line)
            self._file.flush()
        else:
            self._lines.append(line)
            self._dirty = True
            if time.monotonic() - self._last_upload >= self._upload_every_s:
                self.flush()

    def write_images(self, step: int, images: Mapping[str, np.ndarray], fps: float = 8.0) -> None:
        """Samples in TensorBoard's Images tab, beside the scalars: an (H, W, 3) array as a PNG (contact sheets),
        a (T, H, W, 3) one as an animated GIF at `fps`. uint8, or float in [-1, 1]. Local or URL workdirs alike
        (URL events are synced on `flush`)."""
        if not self.enabled or self._tb is None:
            return
        values = []
        for tag, array in images.items():
            pixels = _to_uint8(np.asarray(array))
            if pixels.ndim == 3:
                values.append(tb_summary.image(tag, pixels, dataformats="HWC").value[0])
            elif pixels.ndim == 4:
                _, h, w, _ = pixels.shape
                image = Summary.Image(height=h, width=w, colorspace=3, encoded_image_string=_gif(pixels, fps))
                values.append(Summary.Value(tag=tag, image=image))
            else:
                raise ValueError(
                    f"write_images: {tag!r} has shape {pixels.shape}; want (H, W, 3) or (T, H, W, 3)"
                )
        self._add(step, values)

    def _add(self, step: int, values: list) -> None:
        self._tb.write_event(Event(wall_time=time.time(), step=int(step), summary=Summary(value=values)))

    def flush(self) -> None:
        """Makes everything written so far durable in the workdir (a no-op beyond a flush on a local folder)."""
        if not self.enabled:
            return
        if self._append:
            self._file.flush()
        elif self._dirty:
            atomic.write_text(self.path, "".join(self._lines))
            self._dirty = False
        if self._tb is not None:
            self._tb.flush()
            if self._tb_local is not None:
                paths.sync_dir(self._tb_local, self.workdir / "tensorboard", self._tb_seen)
        self._last_upload = time.monotonic()

    def close(self) -> None:
        if not self.enabled:
            return
        self.flush()
        if self._tb is not None:
            self._tb.close()
        if self._append:
            self._file.close()
        if self._tb_local is not None:
            shutil.rmtree(self._tb_local, ignore_errors=True)
        self._tb = None


def _drop_torn_tail(path: os.PathLike) -> None:
    """Cuts a last line without its newline off a local metrics file: what a process killed in the middle of a
    write leaves. Appending after it would glue the next run's first line to the fragment, and that line (one
    of a resumed step) would be lost to every reader."""
    try:
        with open(path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return
            f.seek(max(0, size - 65536))
            tail = f.read()
            if tail.endswith(b"\n"):
                return
            cut = tail.rfind(b"\n")
            keep = size - len(tail) + cut + 1 if cut >= 0 else (0 if size <= 65536 else size)
            log.warning("metrics file %s ends in a torn line (%d bytes); dropping it", path, size - keep)
            f.truncate(keep)
    except FileNotFoundError:
        return


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    return np.round((np.clip(pixels.astype(np.float32), -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def _gif(frames_thwc: np.ndarray, fps: float) -> bytes:
    """An animated GIF of uint8 frames (what TensorBoard's Images tab plays)."""
    from PIL import Image

    buffer = io.BytesIO()
    images = [Image.fromarray(frame) for frame in frames_thwc]
    duration = max(20, int(round(1000.0 / max(fps, 1e-3))))
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0)
    return buffer.getvalue()


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
    """All lines of `WORKDIR/metrics.jsonl` (for plots, tests and reports); `workdir` may be a URL."""
    path = paths.as_path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
