"""The host allocator policy (`motionaura_jax.host_memory`): large blocks without page faults."""

import json
import os
import sys

import pytest

from motionaura_jax import cli, host_memory

# Allocates, touches and frees 256 MiB twice through malloc; prints the page faults of the second round. Under
# glibc's defaults a block that large is a fresh mmap each time: 65536 faults of 4 KiB pages; mostly on 2 MiB
# pages, 640 here; handed back from the heap, none.
_PROBE = """
import ctypes, json, resource
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
size = 256 << 20
def touch_and_free():
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
touch_and_free()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touch_and_free()
print(json.dumps({"faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""

HUGE_PAGES_HERE = host_memory.choose({"MOTIONAURA_HOST_MALLOC": "hugepages"}) == "hugepages"


def _faults(subprocess_runner, policy: str, **env) -> int:
    env = host_memory.with_policy({"MOTIONAURA_HOST_MALLOC": policy, **env})
    proc = subprocess_runner(["-c", _PROBE], devices=1, timeout=60, env=env)
    return json.loads(proc.stdout.strip().splitlines()[-1])["faults"]


def test_each_policy_spares_the_page_faults_of_a_large_block(subprocess_runner):
    system = _faults(subprocess_runner, "system")
    assert system > 30_000  # 65536 pages of 4 KiB
    assert _faults(subprocess_runner, "reuse") < 100  # the same pages, back from the heap
    if HUGE_PAGES_HERE:  # glibc >= 2.35 and a kernel with transparent huge pages
        # 2 MiB pages, the block's unaligned ends in 4 KiB ones (640 faults here); 4 KiB where none is free.
        assert _faults(subprocess_runner, "hugepages") < system // 2


def test_auto_follows_the_host(monkeypatch):
    assert host_memory.cpu_only_host({"JAX_PLATFORMS": "cpu"})
    assert not host_memory.cpu_only_host({"JAX_PLATFORMS": "tpu"})
    assert not host_memory.cpu_only_host({"JAX_PLATFORMS": "cuda,cpu"})
    monkeypatch.setattr(
        host_memory.glob, "glob", lambda pattern: ["/dev/accel0"] if "accel" in pattern else []
    )
    assert not host_memory.cpu_only_host({})  # a TPU VM, JAX_PLATFORMS unset
    assert host_memory.choose({}) == "system" and "GLIBC_TUNABLES" not in host_memory.with_policy({})
    monkeypatch.setattr(host_memory, "usable_cpus", lambda: 1)
    assert host_memory.choose({"JAX_PLATFORMS": "cpu"}) == "reuse"  # one CPU: no thread waits on the arena
    monkeypatch.setattr(host_memory, "usable_cpus", lambda: 2)
    assert host_memory.choose({"JAX_PLATFORMS": "cpu"}) == ("hugepages" if HUGE_PAGES_HERE else "system")


def test_the_environment_names_the_policy_and_keeps_a_users_own_tunables():
    env = host_memory.with_policy(
        {"MOTIONAURA_HOST_MALLOC": "reuse", "GLIBC_TUNABLES": "glibc.rtld.optional=1"}
    )
    assert env["GLIBC_TUNABLES"] == "glibc.rtld.optional=1:" + host_memory.TUNABLES["reuse"]
    assert host_memory.policy_in_force(env) == "reuse" and host_memory.policy_in_force({}) == "system"
    mine = {"MOTIONAURA_HOST_MALLOC": "reuse", "GLIBC_TUNABLES": "glibc.malloc.arena_max=4"}
    assert host_memory.with_policy(mine)["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=4"


def test_the_command_restarts_itself_under_the_policy(monkeypatch):
    calls = []

    def fake_execve(path, args, env):
        calls.append((path, args, env))
        raise SystemExit(0)

    monkeypatch.setattr(os, "execve", fake_execve)
    monkeypatch.setattr(sys, "argv", ["motionaura", "plot", "--help"])
    monkeypatch.setenv("MOTIONAURA_HOST_MALLOC", "reuse")
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    with pytest.raises(SystemExit):
        cli.main()
    ((path, args, env),) = calls
    assert path == sys.executable and args == list(sys.orig_argv)
    assert env["GLIBC_TUNABLES"] == host_memory.TUNABLES["reuse"] and env["MOTIONAURA_HOST_MALLOC"] == "reuse"
    calls.clear()
    monkeypatch.setenv(
        "GLIBC_TUNABLES", host_memory.TUNABLES["reuse"]
    )  # the restarted process runs the command
    with pytest.raises(SystemExit):
        cli.main()
    assert calls == []
    monkeypatch.delenv("GLIBC_TUNABLES")
    monkeypatch.setattr(sys, "argv", ["ipykernel_launcher.py", "plot", "--help"])  # a program calling main()
    with pytest.raises(SystemExit):
        cli.main()
    assert calls == []


def test_a_misspelt_policy_names_the_variable_and_the_choices(subprocess_runner):
    proc = subprocess_runner(
        ["-m", "motionaura_jax.cli", "plot", "--help"],
        devices=1,
        timeout=60,
        env={"MOTIONAURA_HOST_MALLOC": "hugepage"},
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert (
        "MOTIONAURA_HOST_MALLOC='hugepage'" in proc.stderr and "auto, reuse, hugepages, system" in proc.stderr
    )
