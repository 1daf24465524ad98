"""The host allocator policy of a `motionaura` process on a CPU-only host.

XLA:CPU allocates each step's temporaries as one block (1.6 GB for the denoiser step at 16k tokens) and frees
it when the step ends. glibc's malloc serves a block that large with a fresh `mmap` and returns it with
`munmap`, so every step faults its temporaries in again 4 KiB at a time, the kernel zeroing each page:
~400k page faults and 0.7 s of system time in a 3.3 s step, measured (docs/bench_denoiser.md). Two policies,
each a set of glibc tunables:

- "reuse" (one usable CPU): one malloc arena, no `mmap`, no trimming of the heap's top, so a freed block is
  handed back the next step with no fault at all (the 3.3 s step takes 2.5 s). The process keeps its peak
  memory until it exits. With several CPUs the one arena's lock makes threads queue (XLA compiles and runs
  ops on several), which costs more than it saves.
- "hugepages" (several CPUs): `glibc.malloc.hugetlb=1`, malloc asks for transparent huge pages on what it
  maps: 2 MiB faults, fewer TLB misses in every pass over a large array; the tokenizer's and text-to-video's
  training steps on two cores run 17-20% faster. Memory is still returned when freed.

glibc reads its tunables once, when a process starts, so `motionaura` re-executes itself with
`GLIBC_TUNABLES` extended before anything else runs (the same PID, the same arguments), and the benchmarks
start their workers with it. For a script of one's own, `with_policy()` gives the environment to start it in:

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python train_my_model.py

`MOTIONAURA_HOST_MALLOC` chooses: "auto" (the default: on a CPU-only host, i.e. `JAX_PLATFORMS=cpu` or no TPU
or GPU device files, "reuse" with one usable CPU and "hugepages" with more), "reuse", "hugepages" or "system"
(glibc's defaults). A `GLIBC_TUNABLES` that already sets one of these tunables is left as it is.
"""

from __future__ import annotations

import glob
import os
import platform
import sys
from collections.abc import Mapping

ENV_VAR = "MOTIONAURA_HOST_MALLOC"
POLICIES = ("auto", "reuse", "hugepages", "system")
TUNABLES = {
    "reuse": "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1099511627776",
    "hugepages": "glibc.malloc.hugetlb=1",
}
# The tunables' names ("glibc.malloc.arena_max=", ...): a GLIBC_TUNABLES that sets any of them is left alone.
_OURS = tuple(sorted({t.split("=")[0] + "=" for value in TUNABLES.values() for t in value.split(":")}))

_THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"
# Device files of a TPU VM (/dev/accel* on v2-v5e, /dev/vfio/* on v5p and v6e) or of an NVIDIA GPU.
_ACCELERATOR_DEVICE_GLOBS = ("/dev/accel*", "/dev/vfio/[0-9]*", "/dev/nvidia[0-9]*")


def transparent_huge_pages() -> str:
    """The kernel's transparent huge page mode ("always", "madvise" or "never"); "unavailable" without one."""
    try:
        with open(_THP_ENABLED) as f:
            text = f.read()
    except OSError:
        return "unavailable"
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else "unavailable"


def _glibc_has_hugetlb_tunable() -> bool:
    libc, version = platform.libc_ver()
    try:
        return libc == "glibc" and tuple(int(v) for v in version.split(".")[:2]) >= (2, 35)
    except ValueError:
        return False


def cpu_only_host(environ: Mapping[str, str] = os.environ) -> bool:
    """True when JAX will run on the CPU: `JAX_PLATFORMS` names only cpu, or, with it unset, this host has
    no TPU or GPU device files."""
    platforms = [p.strip() for p in environ.get("JAX_PLATFORMS", "").split(",") if p.strip()]
    if platforms:
        return platforms == ["cpu"]
    return not any(glob.glob(pattern) for pattern in _ACCELERATOR_DEVICE_GLOBS)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask: `taskset` narrows it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def choose(environ: Mapping[str, str] = os.environ) -> str:
    """The policy `MOTIONAURA_HOST_MALLOC` (see the module docstring) asks for here: "reuse", "hugepages" or
    "system"; a misspelt value is a ValueError naming the variable and the choices."""
    choice = environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if choice not in POLICIES:
        raise ValueError(f"{ENV_VAR}={choice!r}: use one of {', '.join(POLICIES)}")
    if choice == "system" or not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return "system"
    if choice == "auto":
        if not cpu_only_host(environ):
            return "system"
        choice = "reuse" if usable_cpus() == 1 else "hugepages"
    if choice == "hugepages" and not (
        _glibc_has_hugetlb_tunable() and transparent_huge_pages() in ("always", "madvise")
    ):
        return "system"
    return choice


def _tunables(environ: Mapping[str, str]) -> list[str]:
    return [t for t in environ.get("GLIBC_TUNABLES", "").split(":") if t]


def policy_in_force(environ: Mapping[str, str] = os.environ) -> str:
    """The policy this process was started under, read off its `GLIBC_TUNABLES`."""
    tunables = _tunables(environ)
    for name in ("reuse", "hugepages"):
        if all(t in tunables for t in TUNABLES[name].split(":")):
            return name
    return "system"


def with_policy(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """A copy of `environ` for a new process: `GLIBC_TUNABLES` extended by the chosen policy's tunables,
    unless it already sets one of them."""
    env = dict(environ)
    tunables = _tunables(env)
    policy = choose(env)
    if policy != "system" and not any(t.startswith(_OURS) for t in tunables):
        env["GLIBC_TUNABLES"] = ":".join([*tunables, TUNABLES[policy]])
    return env


def reexec_with_policy() -> None:
    """Re-execute this process (`sys.orig_argv`, same PID) under `with_policy`'s environment when it differs
    from the current one; returns only when nothing changes. Call it before anything else runs."""
    env = with_policy(os.environ)
    if env.get("GLIBC_TUNABLES") == os.environ.get("GLIBC_TUNABLES"):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, list(sys.orig_argv), env)
