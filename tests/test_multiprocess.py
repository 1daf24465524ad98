"""Two processes on 127.0.0.1 (gloo), each feeding half of the global batch, equal one process with all of it."""

import os
import random
import subprocess
import sys

import numpy as np

from motionaura_jax import config as config_lib
from motionaura_jax.train import loop
from motionaura_jax.train.logging import read_metrics
from tests.conftest import REPO


def test_two_processes_match_one(tmp_path):
    steps = 3
    single = tmp_path / "single"
    loop.train(
        config_lib.load_config(
            "experiments/tiny.py", [f"train.steps={steps}", "train.log_every=1", "train.ckpt_every=0"]
        ),
        single,
    )
    single_losses = [m["loss"] for m in read_metrics(single)]

    port = random.randint(20000, 40000)
    workdir = tmp_path / "multi"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "motionaura_jax.cli",
                "train",
                "--config=experiments/tiny.py",
                f"--workdir={workdir}",
                f"--config.train.steps={steps}",
                "--config.train.log_every=1",
                "--config.train.ckpt_every=0",
                f"--coordinator=127.0.0.1:{port}",
                "--num_processes=2",
                f"--process_id={i}",
                "--local_devices=4",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=240))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-4000:]
    assert "8 devices, 2 processes" in outputs[0][1]
    multi_losses = [m["loss"] for m in read_metrics(workdir)]
    np.testing.assert_allclose(multi_losses, single_losses, rtol=1e-5)
    # Both processes committed one checkpoint together.
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [str(steps)]
