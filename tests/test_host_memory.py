"""The host allocator policy (`motionaura_jax.host_memory`): malloc's large blocks on huge pages."""

import json
import os
import sys

import pytest

from motionaura_jax import cli, host_memory

# Allocates, touches and frees 256 MiB twice through malloc; prints the page faults of the second round. Under
# glibc's defaults a block that large is a fresh mmap each time: 65536 faults of 4 KiB pages; on 2 MiB pages, 128.
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

HUGE_PAGES_HERE = host_memory.wants_huge_pages({"MOTIONAURA_HOST_MALLOC": "hugepages"})


def _faults(subprocess_runner, **env) -> int:
    proc = subprocess_runner(["-c", _PROBE], devices=1, timeout=60, env=env)
    return json.loads(proc.stdout.strip().splitlines()[-1])["faults"]


def test_the_policy_puts_large_blocks_on_huge_pages(subprocess_runner):
    system_env = host_memory.with_policy({"MOTIONAURA_HOST_MALLOC": "system"})
    policy_env = host_memory.with_policy({"MOTIONAURA_HOST_MALLOC": "auto", "JAX_PLATFORMS": "cpu"})
    assert "GLIBC_TUNABLES" not in system_env
    system = _faults(subprocess_runner, **system_env)
    assert system > 30_000  # 65536 pages of 4 KiB
    if not HUGE_PAGES_HERE:  # no glibc >= 2.35 or no transparent huge pages: the policy changes nothing
        assert "GLIBC_TUNABLES" not in policy_env
        return
    assert policy_env["GLIBC_TUNABLES"] == host_memory.TUNABLE
    assert host_memory.policy_in_force(policy_env) == "hugepages"
    assert _faults(subprocess_runner, GLIBC_TUNABLES=policy_env["GLIBC_TUNABLES"]) < 2_000  # 128 of 2 MiB


def test_auto_applies_only_on_a_cpu_only_host(monkeypatch):
    assert host_memory.cpu_only_host({"JAX_PLATFORMS": "cpu"})
    assert not host_memory.cpu_only_host({"JAX_PLATFORMS": "tpu"})
    assert not host_memory.cpu_only_host({"JAX_PLATFORMS": "cuda,cpu"})
    monkeypatch.setattr(
        host_memory.glob, "glob", lambda pattern: ["/dev/accel0"] if "accel" in pattern else []
    )
    assert not host_memory.cpu_only_host({})  # a TPU VM, JAX_PLATFORMS unset
    assert "GLIBC_TUNABLES" not in host_memory.with_policy({})
    monkeypatch.setattr(host_memory.glob, "glob", lambda pattern: [])
    assert host_memory.cpu_only_host({})


def test_a_users_own_tunables_are_kept():
    env = host_memory.with_policy({"JAX_PLATFORMS": "cpu", "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    want = "glibc.malloc.arena_max=2" + (f":{host_memory.TUNABLE}" if HUGE_PAGES_HERE else "")
    assert env["GLIBC_TUNABLES"] == want
    mine = {"JAX_PLATFORMS": "cpu", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}
    assert host_memory.with_policy(mine)["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=0"


def test_the_command_restarts_itself_under_the_policy(monkeypatch):
    calls = []

    def fake_execve(path, args, env):
        calls.append((path, args, env))
        raise SystemExit(0)

    monkeypatch.setattr(os, "execve", fake_execve)
    monkeypatch.setattr(sys, "argv", ["motionaura", "plot", "--help"])
    monkeypatch.setenv("MOTIONAURA_HOST_MALLOC", "hugepages")
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    if not HUGE_PAGES_HERE:
        with pytest.raises(SystemExit):  # no restart: plot's --help runs in this process
            cli.main()
        assert calls == []
        return
    with pytest.raises(SystemExit):
        cli.main()
    ((path, args, env),) = calls
    assert path == sys.executable and args == list(sys.orig_argv)
    assert env["GLIBC_TUNABLES"] == host_memory.TUNABLE and env["MOTIONAURA_HOST_MALLOC"] == "hugepages"
    calls.clear()
    monkeypatch.setenv("GLIBC_TUNABLES", host_memory.TUNABLE)  # the restarted process: runs the command
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
    assert "MOTIONAURA_HOST_MALLOC='hugepage'" in proc.stderr and "auto, hugepages, system" in proc.stderr
