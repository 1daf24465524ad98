"""Checkpoints: restore on another mesh and device count, SIGKILL + resume, SIGTERM, damaged latest."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from motionaura_jax import config as config_lib
from motionaura_jax.train import loop
from motionaura_jax.train.logging import read_metrics
from tests.conftest import REPO, run_subprocess


def tiny_config(**overrides):
    pairs = [("train.steps", "6"), ("train.log_every", "1"), ("train.ckpt_every", "3")]
    return config_lib.load_config("experiments/tiny.py", pairs + [(k, str(v)) for k, v in overrides.items()])


def flat_params(params) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def cli_args(workdir, *extra):
    return [
        sys.executable,
        "-m",
        "motionaura_jax.cli",
        "train",
        "--config=experiments/tiny.py",
        f"--workdir={workdir}",
        "--config.train.log_every=1",
        *extra,
    ]


def popen(args):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    return subprocess.Popen(
        args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for(predicate, proc, timeout=180.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"process exited early ({proc.returncode}): {proc.communicate()[1][-3000:]}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("timed out waiting")


def committed_steps(workdir):
    ckpt = workdir / "checkpoints"
    return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.exists() else []


RESTORE_SCRIPT = """
import sys, numpy as np, jax
from jax.sharding import PartitionSpec as P
from motionaura_jax.parallel.mesh import make_mesh
from motionaura_jax.train import loop
assert jax.device_count() == 4, jax.device_count()
mesh = make_mesh({"data": 1, "fsdp": 2, "tensor": 2})
config, state, setup = loop.restore_state(sys.argv[1], mesh=mesh)
ref = np.load(sys.argv[2])
leaves = jax.tree_util.tree_flatten_with_path(state.params)[0]
assert len(leaves) == len(ref.files)
for path, leaf in leaves:
    key = jax.tree_util.keystr(path)
    np.testing.assert_array_equal(np.asarray(leaf), ref[key])
    assert leaf.sharding.mesh.shape == mesh.shape
k = state.params["mlp_in"]["kernel"]
assert k.sharding.spec == P("fsdp", "tensor"), k.sharding.spec
assert k.sharding.shard_shape(k.shape) == (16, 32)
print("RESTORED", len(leaves))
"""


def test_restore_on_four_devices_and_another_mesh(tmp_path):
    config = tiny_config(**{"mesh.data": 2, "mesh.fsdp": 4})
    result = loop.train(config, tmp_path / "run")
    np.savez(tmp_path / "ref.npz", **flat_params(result.state.params))
    proc = run_subprocess(
        ["-c", RESTORE_SCRIPT, str(tmp_path / "run"), str(tmp_path / "ref.npz")], devices=4, timeout=300
    )
    assert "RESTORED 6" in proc.stdout


def test_sigkill_then_resume_equals_straight_run(tmp_path):
    straight = loop.train(tiny_config(), tmp_path / "straight")
    straight_fingerprints = [m["batch_fingerprint"] for m in read_metrics(tmp_path / "straight")]

    workdir = tmp_path / "killed"
    proc = popen(
        cli_args(
            workdir, "--config.train.steps=6", "--config.train.ckpt_every=3", "--config.data.delay_s=0.4"
        )
    )
    wait_for(lambda: 3 in committed_steps(workdir), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert 6 not in committed_steps(workdir), "the run must have been killed before finishing"

    resumed = loop.train(tiny_config(), workdir)
    assert resumed.step == 6
    jax.tree.map(
        np.testing.assert_array_equal, flat_params(resumed.state.params), flat_params(straight.state.params)
    )
    # Same data order: the last logged fingerprint of each step equals the straight run's.
    by_step = {m["step"]: m["batch_fingerprint"] for m in read_metrics(workdir)}
    assert [by_step[s] for s in range(1, 7)] == straight_fingerprints


def test_sigterm_saves_current_step_and_exits_zero(tmp_path):
    workdir = tmp_path / "run"
    proc = popen(
        cli_args(
            workdir, "--config.train.steps=1000", "--config.train.ckpt_every=0", "--config.data.delay_s=0.3"
        )
    )
    wait_for(lambda: len(read_metrics(workdir)) >= 2, proc)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-3000:]
    assert "SIGTERM received: saved checkpoint at step" in stdout
    saved_step = int(stdout.split("saved checkpoint at step ")[1].split()[0])
    assert committed_steps(workdir) == [saved_step]
    assert read_metrics(workdir)[-1]["step"] == saved_step


def test_damaged_latest_checkpoint_falls_back(tmp_path, caplog):
    workdir = tmp_path / "run"
    loop.train(tiny_config(), workdir)
    assert committed_steps(workdir) == [3, 6]
    # Damage every array file of step 6 (what a disk fault or a half-copied directory leaves).
    for path in (workdir / "checkpoints" / "6" / "state").rglob("*"):
        if path.is_file():
            path.write_bytes(b"\0garbage")
    with caplog.at_level("WARNING"):
        config, state, _ = loop.restore_state(workdir)
    assert "step 6" in caplog.text and "unreadable" in caplog.text
    assert committed_steps(workdir) == [3]
    assert any(p.name.startswith("damaged-6-") for p in (workdir / "checkpoints").iterdir())
    # Training again resumes from 3 and reaches 6.
    assert loop.train(tiny_config(), workdir).step == 6


@pytest.mark.parametrize("bad", ["{", ""])
def test_corrupt_metadata_is_not_silently_used(tmp_path, bad):
    workdir = tmp_path / "run"
    loop.train(tiny_config(**{"train.steps": 3}), workdir)
    (workdir / "config.json").write_text(bad)
    # json's own error (a ValueError), raised while reading config.json: never a restore from a broken
    # config, and not just any crash (an unrelated bug would pass `pytest.raises(Exception)`).
    with pytest.raises(json.JSONDecodeError):
        loop.restore_state(workdir)


def test_time_limit_saves_and_stops_then_resumes(tmp_path):
    """train.time_limit_min: the run stops itself once the invocation has run that long, saving the step it
    reached (resumable, not counted as preempted); without the limit the same command carries on to the end."""
    workdir = tmp_path / "run"
    limited = loop.train(
        tiny_config(
            **{"train.steps": 1000, "train.ckpt_every": 0, "data.delay_s": 0.2, "train.time_limit_min": 0.05}
        ),
        workdir,
    )
    assert limited.out_of_time and not limited.preempted and 0 < limited.step < 1000
    assert committed_steps(workdir) == [limited.step]
    assert read_metrics(workdir)[-1]["step"] == limited.step
    resumed = loop.train(tiny_config(**{"train.steps": limited.step + 2, "train.ckpt_every": 0}), workdir)
    assert resumed.step == limited.step + 2 and not resumed.out_of_time
