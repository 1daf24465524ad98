"""Run paths that may be local folders or object-store URLs (`gs://bucket/run`), all as `etils.epath.Path`.

`pathlib.Path("gs://b/run")` is the local folder `gs:/b/run`; every path a run writes or reads goes through
`as_path` instead, so a TPU VM writes to the bucket exactly as this machine writes to a folder.

    workdir = as_path("gs://bucket/run")   # epath.Path, not mangled
    probe_workdir(workdir)                  # WorkdirError with one line naming the workdir and the cause
    is_local(workdir)                       # False: object stores have no append and no rename

`file:///abs/path` is accepted as the local folder `/abs/path` (handy for tests and for tools that pass URLs).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import shutil
import socket
import threading
import uuid
from collections.abc import Iterator

from etils import epath

PathLike = str | os.PathLike

# Schemes etils.epath (and Orbax, for gs://) understand; anything else would be guessed wrong, so it is refused.
_URL_SCHEMES = ("gs", "s3", "az", "hf")
PROBE_TIMEOUT_ENV = "MOTIONAURA_WORKDIR_TIMEOUT_S"
_DEFAULT_PROBE_TIMEOUT_S = 60.0


class WorkdirError(RuntimeError):
    """A workdir that cannot be written or read; the message is one line naming the workdir and the cause."""


def as_path(path: PathLike) -> epath.Path:
    """A local path or a URL -> `epath.Path`. `file:///x` becomes the local `/x`; unknown schemes are refused."""
    if isinstance(path, epath.Path):
        return path
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = text.decode()
    scheme, sep, rest = text.partition("://")
    if not sep:
        head = text.split(":/", 1)[0]
        if ":/" in text and head in ("file",) + _URL_SCHEMES:
            # pathlib folds "//": Path("gs://b/run") is "gs:/b/run", a local folder that loses the run.
            raise ValueError(
                f"{text!r} is a URL that went through pathlib.Path (which folds '//'); pass the string "
                f"{head}://{text.split(':/', 1)[1]} or motionaura_jax.paths.as_path(...) instead"
            )
        return epath.Path(text)
    if scheme == "file":
        if not rest.startswith("/"):
            raise ValueError(f"{text!r}: a file:// URL needs an absolute path (file:///abs/path)")
        return epath.Path(rest)
    if scheme not in _URL_SCHEMES:
        known = ", ".join(f"{s}://" for s in ("file",) + _URL_SCHEMES)
        raise ValueError(
            f"{text!r}: unsupported URL scheme {scheme}:// (supported: {known}, or a local path)"
        )
    return epath.Path(text)


def native(path: PathLike) -> pathlib.Path | epath.Path:
    """`pathlib.Path` for a local path, `epath.Path` for a URL: what writers return, so callers of a local file
    keep pathlib's full API (epath's `.stat()` has no `st_size`)."""
    path = as_path(path)
    return pathlib.Path(path) if is_local(path) else path


def is_local(path: PathLike) -> bool:
    """True for a folder on this machine's filesystem, False for an object store (gs://, s3://, ...)."""
    return "://" not in os.fspath(as_path(path))


def absolute(path: PathLike) -> epath.Path:
    """Local paths made absolute (Orbax needs that); URLs unchanged (`.absolute()` would prepend the cwd)."""
    path = as_path(path)
    return path.absolute() if is_local(path) else path


def mkdir(path: PathLike) -> epath.Path:
    """Creates a local folder with its parents; a no-op on object stores, which have no folders (and where
    gcsfs' makedirs would create a missing *bucket*, hiding a typo in its name)."""
    path = as_path(path)
    if is_local(path):
        path.mkdir(parents=True, exist_ok=True)
    return path


def sync_dir(local_dir: PathLike, dst: PathLike, seen: dict[str, tuple[int, int]] | None = None) -> int:
    """Copies the files under the local `local_dir` that are new or changed since `seen` to `dst` (same relative
    names, each object written whole); returns how many were copied. `seen` (name -> (size, mtime_ns)) is
    updated in place, so calling this again copies only what changed."""
    local_dir, dst = as_path(local_dir), as_path(dst)
    seen = {} if seen is None else seen
    copied = 0
    for root, _, files in os.walk(local_dir):
        for name in files:
            source = os.path.join(root, name)
            rel = os.path.relpath(source, local_dir)
            stat = os.stat(source)
            key = (stat.st_size, stat.st_mtime_ns)
            if seen.get(rel) == key:
                continue
            target = dst / rel
            mkdir(target.parent)
            with open(source, "rb") as fin, target.open("wb") as fout:
                shutil.copyfileobj(fin, fout)
            seen[rel] = key
            copied += 1
    return copied


_KEEP_SILENT = "\0keep-silent"


@contextlib.contextmanager
def _last_client_message(logger_names: tuple[str, ...]) -> Iterator[list[str]]:
    """Collects what storage clients log while retrying (gcsfs retries a DNS failure for ~90 s, logging each
    attempt), so a timed-out probe can still name the cause, and keeps their tracebacks off the terminal.
    Appending `_KEEP_SILENT` to the yielded list leaves the loggers silenced on exit: a probe thread that timed
    out is still retrying and would print its traceback while the process exits."""
    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage().splitlines()[0] if record.getMessage() else "")

    handler = _Collect(logging.DEBUG)
    saved = []
    for name in logger_names:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
    try:
        yield messages
    finally:
        for logger, level, propagate in saved if _KEEP_SILENT not in messages else ():
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate


_ERROR_WORDS = ("error", "retry", "retrying", "exception", "unavailable", "failed", "denied", "not found")


def _likely_cause(messages: list[str]) -> str:
    """The last logged message that reads like a failure (clients also log each request at debug level)."""
    for message in reversed(messages):
        if any(word in message.lower() for word in _ERROR_WORDS):
            return message.split(", sleeping ")[0]
    return next((m for m in reversed(messages) if m and m != _KEEP_SILENT), "")


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}"[:300] if text else type(error).__name__


def probe_workdir(workdir: PathLike, *, timeout_s: float | None = None) -> epath.Path:
    """Checks that `workdir` can be written and read back (a small marker object, removed again) before a run
    starts, within `timeout_s` (default $MOTIONAURA_WORKDIR_TIMEOUT_S or 60 s: a storage client without network
    retries for minutes). Raises `WorkdirError` naming the workdir and the cause; writes nothing locally for a
    URL. Returns the workdir as an `epath.Path` (local folders are created)."""
    text = os.fspath(workdir) if not isinstance(workdir, epath.Path) else str(workdir)
    try:
        workdir = as_path(workdir)
    except ValueError as error:
        raise WorkdirError(f"workdir {text}: {error}") from None
    if timeout_s is None:
        timeout_s = float(os.environ.get(PROBE_TIMEOUT_ENV, _DEFAULT_PROBE_TIMEOUT_S))
    marker = workdir / f".probe-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    token = uuid.uuid4().hex
    outcome: dict[str, BaseException | bool] = {}

    def attempt() -> None:
        try:
            mkdir(workdir)
            marker.write_text(token)
            if marker.read_text() != token:
                raise OSError(f"read back something else than was written to {marker}")
            marker.unlink()
            outcome["ok"] = True
        except BaseException as error:  # noqa: BLE001 - any failure is reported the same way
            outcome["error"] = error

    if is_local(workdir):
        attempt()  # a local filesystem answers at once; no thread needed
        messages: list[str] = []
    else:
        with _last_client_message(("gcsfs", "s3fs", "adlfs", "google")) as messages:
            thread = threading.Thread(target=attempt, name="probe-workdir", daemon=True)
            thread.start()
            thread.join(timeout_s)
            if thread.is_alive():
                last = _likely_cause(messages)
                messages.append(_KEEP_SILENT)
                cause = f"no answer within {timeout_s:g} s" + (f" (last error: {last[:300]})" if last else "")
                raise WorkdirError(
                    f"workdir {workdir} is unreachable: {cause}. Check the network and credentials "
                    f"(gcloud auth application-default login), or set {PROBE_TIMEOUT_ENV}."
                )
    if "error" in outcome:
        error = outcome["error"]
        hint = (
            " Check the bucket name, the network and credentials (gcloud auth application-default login)."
            if not is_local(workdir)
            else ""
        )
        raise WorkdirError(f"workdir {workdir} cannot be written and read back: {_one_line(error)}.{hint}")
    return workdir


class OutputPathError(WorkdirError):
    """An output file or folder that cannot be written where it was asked for; the message is one line naming
    the flag, the folder in the way and the fix. Raised before any work, so nothing is half-written."""


def _nearest_existing(path: pathlib.Path) -> pathlib.Path:
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _writable_folder(folder: pathlib.Path) -> OSError | None:
    """None when a file can be created in `folder`, else the error creating one raised. A real attempt, not
    `os.access`: a read-only mount, an immutable folder or an ACL refuses even a process that access() lets
    through (root, for one)."""
    import tempfile

    try:
        fd, name = tempfile.mkstemp(prefix=".motionaura-write-check-", dir=folder)
    except OSError as error:
        return error
    os.close(fd)
    os.unlink(name)
    return None


def check_output(path: PathLike, flag: str, *, folder: bool = False) -> epath.Path:
    """Checks, before any work, that the file `path` (or, with `folder=True`, the folder `path`) can be written:
    its folder exists and takes a new file, or the nearest existing parent does (the missing folders are created
    by the writer). Creates nothing. `flag` ("--out") names the argument in the error. URLs are not checked
    here (`probe_workdir` checks a bucket). Raises `OutputPathError`; returns `path` as an `epath.Path`.

        check_output("runs/x/sample.mp4", "--out")   # fine when runs/ is writable, even without runs/x
    """
    try:
        out = as_path(path)
    except ValueError as error:
        raise OutputPathError(f"{flag}={os.fspath(path)}: {error}") from None
    if not is_local(out):
        return out
    local = pathlib.Path(os.path.abspath(os.fspath(out)))
    if folder and local.exists() and not local.is_dir():
        raise OutputPathError(f"{flag}={path}: {local} is a file, not a folder; choose a folder path")
    if not folder and local.is_dir():
        raise OutputPathError(f"{flag}={path}: {local} is a folder; give a file name inside it")
    holder = local if folder else local.parent
    existing = _nearest_existing(holder)
    if not existing.is_dir():
        raise OutputPathError(
            f"{flag}={path}: {existing} is a file, so the folder {holder} cannot be created; choose another path"
        )
    error = _writable_folder(existing)
    if error is not None:
        where = (
            f"folder {existing}" if existing == holder else f"{holder} is missing and its parent {existing}"
        )
        raise OutputPathError(
            f"{flag}={path}: {where} cannot be written ({error.strerror or type(error).__name__}); "
            "choose a writable folder"
        )
    return out


class InputFileError(ValueError):
    """An input file (prompts, captions) that cannot be read as text; the message names the file, the line and
    the fix."""


def read_utf8(path: PathLike) -> str:
    """The text of a local or remote file that must be UTF-8; `InputFileError` names the first line that is not
    (a prompts file saved as Latin-1 otherwise fails as a UnicodeDecodeError traceback, or reads as mojibake)."""
    data = as_path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise InputFileError(
            f"{path} is not UTF-8 (line {line}, byte 0x{data[error.start]:02x}); save it as UTF-8"
        ) from None
