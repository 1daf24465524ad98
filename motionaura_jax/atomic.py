"""Atomic file writes: a reader sees the old file or the new one, never half of one, and a write that fails
leaves whatever was there before. Every file the package writes (outside Orbax checkpoints, which commit
themselves) goes through `atomic_path`.

    with atomic_path("out/clip.mp4") as tmp:     # tmp: out/.clip.mp4.XXXX.mp4
        encode_to(tmp)                           # raise here and out/clip.mp4 is untouched

`path` may be a URL (`gs://bucket/run/clip.mp4`, see `motionaura_jax.paths`). Object stores have no rename, but
an object write is atomic there (the object appears whole when the upload finishes), so the writer fills a
local temporary file and it is uploaded in one write; a failed block uploads nothing.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterator

import numpy as np
from etils import epath

from motionaura_jax import paths


def _process_umask() -> int:
    # os.umask only reads by setting; done once at import, before any writer thread exists.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_process_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[pathlib.Path]:
    """Yields a fresh local temporary path beside `path`, with the same suffix (writers such as Pillow,
    matplotlib and ffmpeg choose the format by it). If the block ends normally the file gets the permissions an
    ordinary `open(path, "w")` would give (mkstemp makes it 0600) and is renamed over `path`; if not, it is
    removed and `path` is left as it was. Parent folders are created. For a URL `path` the temporary file is in
    the system's temp folder and is uploaded as one object write."""
    if not paths.is_local(path):
        with _upload_on_success(paths.as_path(path)) as tmp:
            yield tmp
        return
    path = pathlib.Path(paths.as_path(path))
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


@contextlib.contextmanager
def _upload_on_success(path: epath.Path) -> Iterator[pathlib.Path]:
    with tempfile.TemporaryDirectory(prefix="motionaura-upload-") as folder:
        tmp = pathlib.Path(folder) / f"upload{path.suffix}"
        yield tmp
        with open(tmp, "rb") as source, path.open("wb") as target:
            shutil.copyfileobj(source, target)


def write_bytes(path: str | os.PathLike, data: bytes) -> pathlib.Path | epath.Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return paths.native(path)


def write_text(path: str | os.PathLike, text: str) -> pathlib.Path | epath.Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return paths.native(path)


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> pathlib.Path | epath.Path:
    """`np.savez` to exactly `path` (np.savez given a file name would append `.npz` to one without it)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return paths.native(path)
