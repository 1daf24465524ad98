"""Metrics from process 0: JSON lines (`metrics.jsonl`) and TensorBoard (tensorboardX)."""

from __future__ import annotations

import json
import logging
import math
import pathlib
import sys
import time
from collections.abc import Mapping

import jax

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
    """Appends `{"step": s, **metrics}` lines to `WORKDIR/metrics.jsonl` and TensorBoard scalars; process 0 only."""

    def __init__(self, workdir: str | pathlib.Path, *, tensorboard: bool = True):
        self.enabled = jax.process_index() == 0
        self.path = pathlib.Path(workdir) / "metrics.jsonl"
        self._tb = None
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
            if tensorboard:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(str(pathlib.Path(workdir) / "tensorboard"))

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if math.isfinite(float(v)) else str(float(v))) for k, v in metrics.items()}
        self._file.write(json.dumps({"step": int(step), "time": round(time.time(), 3), **clean}) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in metrics.items():
                self._tb.add_scalar(key, float(value), int(step))

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            if self._tb is not None:
                self._tb.close()


def read_metrics(workdir: str | pathlib.Path) -> list[dict]:
    """All lines of `WORKDIR/metrics.jsonl` (for plots, tests and reports)."""
    path = pathlib.Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
