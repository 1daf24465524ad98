#!/usr/bin/env bash
# Train on a Cloud TPU VM slice: copies this checkout to every worker, installs, runs the same command on all.
#
#   launch/tpu_vm.sh NAME ZONE -- --config=experiments/vae.py:S --workdir=gs://BUCKET/runs/vae_S
#
# Every worker runs `motionaura train ...` with MOTIONAURA_AUTO_DISTRIBUTED=1, so jax.distributed finds the pod.
# Re-running the same line resumes from the newest checkpoint in --workdir.
# --workdir=gs://... is written through etils.epath (gcsfs) and Orbax (TensorStore), never as a local folder; each
# worker first writes and reads back a small marker there, so a bucket the VM's service account cannot reach fails
# at once with one line naming it (exit 2; MOTIONAURA_WORKDIR_TIMEOUT_S bounds the wait, default 60 s).
set -euo pipefail
name=${1:?TPU VM name}; zone=${2:?zone}; shift 2
[ "${1:-}" = "--" ] && shift
repo=$(cd "$(dirname "$0")/.." && pwd)
tar -C "$repo" --exclude=.venv --exclude=runs --exclude=.git -czf /tmp/motionaura_jax.tgz .
gcloud compute tpus tpu-vm scp /tmp/motionaura_jax.tgz "$name":~/ --zone="$zone" --worker=all
gcloud compute tpus tpu-vm ssh "$name" --zone="$zone" --worker=all --command "
  set -e; mkdir -p ~/motionaura_jax && tar -C ~/motionaura_jax -xzf ~/motionaura_jax.tgz && cd ~/motionaura_jax
  python3.11 -m venv .venv && .venv/bin/pip install -q -r requirements-tpu.txt
  .venv/bin/pip install -q --no-deps -r requirements-nodeps.txt && .venv/bin/pip install -q --no-deps -e .
  MOTIONAURA_AUTO_DISTRIBUTED=1 JAX_COMPILATION_CACHE_DIR=~/.cache/jax .venv/bin/motionaura train $*"
