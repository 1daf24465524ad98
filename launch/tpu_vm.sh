#!/usr/bin/env bash
# Train on a Cloud TPU VM slice: copies this checkout to every worker, installs, runs the same command on all.
#
#   launch/tpu_vm.sh [--dry-run] NAME ZONE -- --config=experiments/vae.py:S --workdir=gs://BUCKET/runs/vae_S
#
# Every worker (gcloud --worker=all) runs the identical `motionaura train ...` with MOTIONAURA_AUTO_DISTRIBUTED=1 and
# no --coordinator/--process_id: jax.distributed.initialize() reads the slice from the TPU VM's metadata (worker 0 is
# the coordinator), so one command line serves every worker. Re-running the same line resumes from the newest
# checkpoint in --workdir.
# --workdir must be gs://...: every worker writes the same run there (a local folder would be a different one on each
# VM). It is written through etils.epath (gcsfs) and Orbax (TensorStore); each worker first writes and reads back a
# small marker there, so a bucket the VM's service account cannot reach fails at once with one line naming it (exit 2;
# MOTIONAURA_WORKDIR_TIMEOUT_S bounds the wait, default 60 s).
# --dry-run prints the exact commands (tar, scp, ssh) instead of running them.
set -euo pipefail
dry_run=0
if [ "${1:-}" = "--dry-run" ]; then dry_run=1; shift; fi
name=${1:?usage: launch/tpu_vm.sh [--dry-run] NAME ZONE -- TRAIN_ARGS}; zone=${2:?zone}; shift 2
[ "${1:-}" = "--" ] && shift
workdir=""
for arg in "$@"; do case "$arg" in --workdir=*) workdir=${arg#--workdir=} ;; esac; done
case "$workdir" in
  gs://*) ;;
  *) echo "launch/tpu_vm.sh: --workdir must be gs://BUCKET/RUN (got '${workdir:-nothing}'): every worker writes the same run" >&2
     exit 2 ;;
esac
repo=$(cd "$(dirname "$0")/.." && pwd)
# The train arguments quoted once, so a value with spaces reaches every worker intact.
train_args=$(printf ' %q' "$@")
train="MOTIONAURA_AUTO_DISTRIBUTED=1 JAX_COMPILATION_CACHE_DIR=~/.cache/jax .venv/bin/motionaura train${train_args}"
remote="set -e; mkdir -p ~/motionaura_jax && tar -C ~/motionaura_jax -xzf ~/motionaura_jax.tgz && cd ~/motionaura_jax \
&& python3.11 -m venv .venv && .venv/bin/pip install -q -r requirements-tpu.txt \
&& .venv/bin/pip install -q --no-deps -r requirements-nodeps.txt && .venv/bin/pip install -q --no-deps -e . \
&& $train"

run() {
  if [ "$dry_run" = 1 ]; then printf '%q ' "$@" | sed 's/ $//'; echo; else "$@"; fi
}
run tar -C "$repo" --exclude=.venv --exclude=runs --exclude=.git -czf /tmp/motionaura_jax.tgz .
run gcloud compute tpus tpu-vm scp /tmp/motionaura_jax.tgz "$name":~/ --zone="$zone" --worker=all
run gcloud compute tpus tpu-vm ssh "$name" --zone="$zone" --worker=all --command "$remote"
if [ "$dry_run" = 1 ]; then
  echo "# every worker of $name runs the same line (jax.distributed finds the slice; workdir $workdir):"
  echo "$train"
fi
