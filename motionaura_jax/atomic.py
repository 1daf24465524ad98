"""Atomic file writes: a reader sees the old file or the new one, never half of one, and a write that fails
leaves whatever was there before. Every file the package writes (outside Orbax checkpoints, which commit
themselves) goes through `atomic_path`.

    with atomic_path("out/clip.mp4") as tmp:     # tmp: out/.clip.mp4.XXXX.mp4
        encode_to(tmp)                           # raise here and out/clip.mp4 is untouched
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile
from collections.abc import Iterator

import numpy as np


def _process_umask() -> int:
    # os.umask only reads by setting; done once at import, before any writer thread exists.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_process_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[pathlib.Path]:
    """Yields a fresh temporary path beside `path`, with the same suffix (writers such as Pillow, matplotlib and
    ffmpeg choose the format by it). If the block ends normally the file gets the permissions an ordinary
    `open(path, "w")` would give (mkstemp makes it 0600) and is renamed over `path`; if not, it is removed and
    `path` is left as it was. Parent folders are created."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    tmp = pathlib.Path(name)
    try:
        yield tmp
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> pathlib.Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return pathlib.Path(path)


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> pathlib.Path:
    """`np.savez` to exactly `path` (np.savez given a file name would append `.npz` to one without it)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return pathlib.Path(path)
