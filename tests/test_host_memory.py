"""The host allocator policy (`motionaura_jax.host_memory`): freed memory is reused, page faults are gone."""

import json

from motionaura_jax import host_memory

# Allocates, touches and frees 256 MiB twice through malloc; prints the policy and the page faults of the second
# round. Under glibc's defaults a block that large is a fresh mmap each time (65536 faults of 4 KiB pages);
# kept for reuse, the second round touches pages the process already has.
_PROBE = """
import ctypes, json, resource, sys
from motionaura_jax import host_memory
policy = host_memory.apply_policy()
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
print(json.dumps({"policy": policy, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _probe(subprocess_runner, **env) -> dict:
    proc = subprocess_runner(["-c", _PROBE], devices=1, timeout=60, env=env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_reuse_keeps_freed_memory_and_system_returns_it(subprocess_runner):
    reused = _probe(subprocess_runner, MOTIONAURA_HOST_MALLOC="reuse")
    system = _probe(subprocess_runner, MOTIONAURA_HOST_MALLOC="system")
    auto_on_cpu = _probe(subprocess_runner, MOTIONAURA_HOST_MALLOC="auto", JAX_PLATFORMS="cpu")
    assert reused["policy"] == "reuse" and auto_on_cpu["policy"] == "reuse"
    assert system["policy"] == "system"
    assert system["faults"] > 30_000, system  # 65536 pages of 4 KiB (fewer only with huge pages)
    assert reused["faults"] < 1_000 and auto_on_cpu["faults"] < 1_000, (reused, auto_on_cpu)


def test_auto_reuses_only_on_a_cpu_only_host(monkeypatch):
    assert host_memory.cpu_only_host({"JAX_PLATFORMS": "cpu"})
    assert not host_memory.cpu_only_host({"JAX_PLATFORMS": "tpu"})
    assert not host_memory.cpu_only_host({"JAX_PLATFORMS": "cuda,cpu"})
    monkeypatch.setattr(
        host_memory.glob, "glob", lambda pattern: ["/dev/accel0"] if "accel" in pattern else []
    )
    assert not host_memory.cpu_only_host({})  # a TPU VM, JAX_PLATFORMS unset
    monkeypatch.setattr(host_memory.glob, "glob", lambda pattern: [])
    assert host_memory.cpu_only_host({})


def test_a_misspelt_policy_names_the_variable_and_the_choices(subprocess_runner):
    proc = subprocess_runner(
        ["-m", "motionaura_jax.cli", "plot", "--help"],
        devices=1,
        timeout=60,
        env={"MOTIONAURA_HOST_MALLOC": "resue"},
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "MOTIONAURA_HOST_MALLOC='resue'" in proc.stderr and "auto, reuse, system" in proc.stderr
