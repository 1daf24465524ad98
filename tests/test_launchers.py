"""The launchers in launch/ print exactly what they would run (--dry-run), and the SLURM task wrapper derives the
jax.distributed coordinator, process count and id from the SLURM environment."""

from __future__ import annotations

import os
import shlex
import subprocess

from tests.conftest import REPO

TRAIN = [
    "--config=experiments/t2v.py:L",
    "--workdir=gs://bucket/runs/t2v_L",
    "--config.sample.prompts=('a b',)",
]


def _run(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(REPO / "launch" / script), *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_tpu_vm_dry_run_same_command_and_workdir_on_every_worker():
    proc = _run("tpu_vm.sh", "--dry-run", "my-v5p", "us-east5-a", "--", *TRAIN)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    scp, ssh = lines[1], lines[2]
    assert scp.startswith("gcloud compute tpus tpu-vm scp ") and "--worker=all" in scp
    assert ssh.startswith("gcloud compute tpus tpu-vm ssh my-v5p --zone=us-east5-a --worker=all --command ")
    remote = shlex.split(ssh)[-1]  # the one command every worker runs
    train_line = remote.split(" && ")[-1]
    assert "MOTIONAURA_AUTO_DISTRIBUTED=1" in train_line  # jax.distributed auto-detects the slice
    for flag in ("--coordinator", "--process_id", "--num_processes", "JAX_PROCESS_ID"):
        assert flag not in remote  # nothing per worker: the same line everywhere
    args = shlex.split(train_line.split("motionaura train", 1)[1])
    assert args == TRAIN  # the gs:// workdir and every argument arrive intact (quoting survives)
    assert lines[-1] == train_line  # the per-worker line the dry run spells out


def test_tpu_vm_refuses_a_local_workdir():
    proc = _run("tpu_vm.sh", "--dry-run", "n", "z", "--", "--config=experiments/tiny.py", "--workdir=runs/x")
    assert proc.returncode == 2
    assert "--workdir must be gs://" in proc.stderr and proc.stdout == ""


def test_xpk_dry_run():
    proc = _run(
        "xpk.sh", "--dry-run", "--cluster=c1", "--tpu-type=v5p-64", "--num-slices=2", "--workload=t2v-l",
        "--project=p", "--zone=us-east5", "--", *TRAIN,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    cmd = shlex.split(proc.stdout.splitlines()[0])
    assert cmd[:3] == ["xpk", "workload", "create"]
    for flag in ("--cluster=c1", "--tpu-type=v5p-64", "--num-slices=2", "--workload=t2v-l", "--project=p"):
        assert flag in cmd
    command = next(a for a in cmd if a.startswith("--command="))[len("--command=") :]
    assert "pip install -q -r requirements-tpu.txt" in command
    assert shlex.split(command.split("MOTIONAURA_AUTO_DISTRIBUTED=1 motionaura train", 1)[1]) == TRAIN
    assert "--coordinator" not in command
    bad = _run("xpk.sh", "--dry-run", "--cluster=c1", "--tpu-type=v5p-64", "--", "--workdir=/tmp/x")
    assert bad.returncode == 2 and "gs://" in bad.stderr


def test_slurm_dry_run_and_task_environment(tmp_path):
    proc = _run(
        "slurm.sh", "--dry-run", "--nodes=2", "--gpus-per-node=4", "--partition=gpu", "--job-name=t2v",
        "--", "--config=experiments/t2v.py:L", "--workdir=/shared/runs/t2v_L",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --partition=gpu", "export MOTIONAURA_PER=gpu"):  # fmt: skip
        assert line in out.splitlines(), line
    srun = next(line for line in out.splitlines() if line.startswith("srun "))
    assert srun.endswith(
        "launch/slurm.sh --task .venv/bin/motionaura train --config=experiments/t2v.py:L "
        "--workdir=/shared/runs/t2v_L"
    )
    assert out.splitlines()[-1] == "sbatch /tmp/t2v.sbatch" or out.splitlines()[-1].startswith("sbatch ")
    per_node = _run("slurm.sh", "--dry-run", "--nodes=3", "--per=node", "--", "--workdir=/shared/x").stdout
    assert "#SBATCH --ntasks-per-node=1" in per_node.splitlines()

    # The per-task wrapper: a fake `scontrol` expands the node list; `env` stands in for the train command.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "scontrol").write_text("#!/bin/sh\necho gpu-node-07\necho gpu-node-08\n")
    (fake / "scontrol").chmod(0o755)
    slurm = {
        "PATH": f"{fake}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "gpu-node-[07-08]", "SLURM_NTASKS": "8",
        "SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "4242", "CUDA_VISIBLE_DEVICES": "0,1,2,3",
    }  # fmt: skip
    task = _run("slurm.sh", "--task", "env", env=slurm)
    assert task.returncode == 0, task.stderr
    env = dict(line.split("=", 1) for line in task.stdout.splitlines() if "=" in line)
    assert env["JAX_COORDINATOR_ADDRESS"] == "gpu-node-07:24242"  # first host, port 20000 + job id % 20000
    assert env["JAX_NUM_PROCESSES"] == "8" and env["JAX_PROCESS_ID"] == "5"
    assert env["CUDA_VISIBLE_DEVICES"] == "1"  # one GPU per process
    node = _run("slurm.sh", "--task", "env", env={**slurm, "MOTIONAURA_PER": "node"})
    assert "CUDA_VISIBLE_DEVICES=0,1,2,3" in node.stdout.splitlines()  # one process sees the node's GPUs
