"""Metrics from process 0: JSON lines (`metrics.jsonl`) and TensorBoard (tensorboardX), local or at a URL."""

from __future__ import annotations

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

from motionaura_jax import atomic, paths

log = logging.getLogger("motionaura")


def setup_logging(level: int = logging.INFO) -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False
    for name in ("motionaura_jax",):
        logging.getLogger(name).setLevel(level)
        if not logging.getLogger(name).handlers:
            logging.getLogger(name).addHandler(log.handlers[0])


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
        self._tb = None
        self._tb_local: str | None = None  # temporary local event folder, for URL workdirs
        self._tb_seen: dict[str, tuple[int, int]] = {}
        if not self.enabled:
            return
        paths.mkdir(self.workdir)
        if self._append:
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        else:
            self._lines = (
                self.path.read_text(encoding="utf-8").splitlines(keepends=True) if self.path.exists() else []
            )
            if self._lines and not self._lines[-1].endswith("\n"):
                self._lines[-1] += "\n"
            self._dirty = False
        if tensorboard:
            from tensorboardX import SummaryWriter

            if paths.is_local(self.workdir):
                self._tb = SummaryWriter(str(self.workdir / "tensorboard"))
            else:
                self._tb_local = tempfile.mkdtemp(prefix="motionaura-tensorboard-")
                # A unique suffix: a resumed run's events file must not replace an earlier one of the same second.
                self._tb = SummaryWriter(self._tb_local, filename_suffix=f".{uuid.uuid4().hex[:8]}")

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if math.isfinite(float(v)) else str(float(v))) for k, v in metrics.items()}
        line = json.dumps({"step": int(step), "time": round(time.time(), 3), **clean}) + "\n"
        if self._tb is not None:
            for key, value in metrics.items():
                self._tb.add_scalar(key, float(value), int(step))
        if self._append:
            self._file.write(line)
            self._file.flush()
        else:
            self._lines.append(line)
            self._dirty = True
            if time.monotonic() - self._last_upload >= self._upload_every_s:
                self.flush()

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
        if self._tb is not None:
            self._tb.close()
        self.flush()
        if self._append:
            self._file.close()
        if self._tb_local is not None:
            shutil.rmtree(self._tb_local, ignore_errors=True)
        self._tb = None


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
    """All lines of `WORKDIR/metrics.jsonl` (for plots, tests and reports); `workdir` may be a URL."""
    path = paths.as_path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
