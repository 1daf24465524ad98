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
import errno
import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterator

import numpy as np
from etils import epath

from motionaura_jax import paths


class DiskFullError(OSError):
    """No space left where a file or checkpoint was being written; the message is one line naming the path, the
    space it needed (when known) and what is free there. What was there before is left as it was."""


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes on the filesystem holding `path` (its nearest existing parent), None when unknown."""
    probe = pathlib.Path(os.fspath(path))
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def _mib(n: int | None) -> str:
    return "unknown" if n is None else f"{n / 2**20:.1f} MiB"


def disk_full(path: str | os.PathLike, need_bytes: int | None, what: str = "writing") -> DiskFullError:
    need = f" needs about {_mib(need_bytes)}," if need_bytes else ""
    return DiskFullError(
        errno.ENOSPC,
        f"no space left on device {what} {path}:{need} {_mib(free_bytes(path))} free there; free some space "
        "or choose another folder, then re-run (what was written before is intact)",
    )


def is_disk_full(error: BaseException) -> bool:
    """ENOSPC or EDQUOT, raised directly or somewhere in the chain of causes (Orbax and TensorStore wrap it)."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(error):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def _process_umask() -> int:
    # os.umask only reads by setting; done once at import, before any writer thread exists.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_process_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, need_bytes: int | None = None) -> Iterator[pathlib.Path]:
    """Yields a fresh local temporary path beside `path`, with the same suffix (writers such as Pillow,
    matplotlib and ffmpeg choose the format by it). If the block ends normally the file gets the permissions an
    ordinary `open(path, "w")` would give (mkstemp makes it 0600) and is renamed over `path`; if not, it is
    removed and `path` is left as it was. Parent folders are created. For a URL `path` the temporary file is in
    the system's temp folder and is uploaded as one object write. A full disk (ENOSPC) becomes a `DiskFullError`
    naming `path`, `need_bytes` (when the caller knows it) and the free space."""
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
    except DiskFullError:
        raise
    except OSError as error:
        if is_disk_full(error):
            raise disk_full(path, need_bytes) from error
        raise
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
    need = sum(np.asarray(a).nbytes for a in arrays.values())
    with atomic_path(path, need_bytes=need) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return paths.native(path)
