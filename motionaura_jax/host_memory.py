"""The host allocator policy of a `motionaura` process: on CPU, freed memory is kept for reuse.

XLA:CPU allocates each step's temporaries as one block (1.6 GB for the denoiser step at 16k tokens) and frees
it when the step ends. glibc's malloc serves a block that large with a fresh `mmap` and returns it with
`munmap`, so every step faults its temporaries in again page by page, with the kernel zeroing each page:
~400k page faults and 0.7 s of system time a 3.3 s step, measured (docs/bench_denoiser.md). Told to keep
what is freed (one malloc arena, no `mmap` for large blocks, no trimming of the heap's top), malloc hands
the same pages back the next step. The price is that the process keeps its peak memory until it exits, as
a caching allocator does.

    from motionaura_jax import host_memory
    host_memory.apply_policy()   # first thing in a script, before jax starts its threads

`motionaura` does this itself before any sub-command runs. `MOTIONAURA_HOST_MALLOC` chooses: "auto" (the
default: reuse on a CPU-only host, i.e. `JAX_PLATFORMS=cpu`, or no TPU or GPU device files), "reuse", or
"system" (glibc's defaults, untouched). Only glibc is tuned; elsewhere the policy is "system".
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
from collections.abc import Mapping

ENV_VAR = "MOTIONAURA_HOST_MALLOC"
POLICIES = ("auto", "reuse", "system")

# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

# Device files of a TPU VM (/dev/accel* on v2-v5e, /dev/vfio/* on v5p and v6e) or of an NVIDIA GPU.
_ACCELERATOR_DEVICE_GLOBS = ("/dev/accel*", "/dev/vfio/[0-9]*", "/dev/nvidia[0-9]*")

_applied: str | None = None


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (musl and others lack it; their malloc is not glibc's)
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        return libc
    except (OSError, AttributeError):
        return None


def reuse_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory in the process for the next allocation: one arena (threads
    created later share the main heap), no `mmap` for large blocks (they come from the heap), and no trim
    of the heap's top (M_TRIM_THRESHOLD -1 is SIZE_MAX). Best called before other threads allocate: a
    thread that already has an arena of its own keeps it. False where the C library is not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    return all(
        libc.mallopt(param, value) == 1
        for param, value in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))
    )


def cpu_only_host(environ: Mapping[str, str] = os.environ) -> bool:
    """True when JAX will run on the CPU: `JAX_PLATFORMS` names only cpu, or, with it unset, this host has
    no TPU or GPU device files."""
    platforms = [p.strip() for p in environ.get("JAX_PLATFORMS", "").split(",") if p.strip()]
    if platforms:
        return platforms == ["cpu"]
    return not any(glob.glob(pattern) for pattern in _ACCELERATOR_DEVICE_GLOBS)


def apply_policy(environ: Mapping[str, str] = os.environ) -> str:
    """Apply `MOTIONAURA_HOST_MALLOC` (see the module docstring) once per process; returns the policy in
    force: "reuse" or "system"."""
    global _applied
    if _applied is not None:
        return _applied
    choice = environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if choice not in POLICIES:
        raise ValueError(f"{ENV_VAR}={choice!r}: use one of {', '.join(POLICIES)}")
    if choice == "auto":
        choice = "reuse" if cpu_only_host(environ) else "system"
    _applied = "reuse" if choice == "reuse" and reuse_freed_memory() else "system"
    return _applied


def policy_in_force() -> str:
    """The policy this process runs under: "reuse" once `apply_policy` set it, else "system"."""
    return _applied or "system"
