#!/usr/bin/env bash
# Train on TPU slices of a GKE cluster through XPK (https://github.com/AI-Hypercomputer/xpk, `pip install xpk`).
#
#   launch/xpk.sh [--dry-run] --cluster=NAME --tpu-type=v5p-64 [--num-slices=1] [--workload=NAME]
#                 [--project=P] [--zone=Z] [--base-image=python:3.11-slim] -- \
#       --config=experiments/t2v.py:L --workdir=gs://BUCKET/runs/t2v_L
#
# XPK builds an image from this checkout on --base-image (its --script-dir), installs requirements-tpu.txt in it and
# starts one pod per TPU VM host of each slice, every pod running the identical `motionaura train ...` with
# MOTIONAURA_AUTO_DISTRIBUTED=1: jax.distributed.initialize() finds the hosts from the environment GKE gives each TPU
# pod, no coordinator flag needed. --workdir must be gs://... (all pods write the same run; a pod's disk is gone when
# it ends). Re-running the same line after a preemption resumes from the newest checkpoint there.
# Check the fit first, without a TPU: motionaura compile --config=... --topology=v5p-64
# --dry-run prints the exact xpk command instead of running it.
set -euo pipefail
dry_run=0 cluster="" tpu_type="" num_slices=1 workload="" project="" zone="" base_image="python:3.11-slim"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --cluster=*) cluster=${1#*=} ;;
    --tpu-type=*) tpu_type=${1#*=} ;;
    --num-slices=*) num_slices=${1#*=} ;;
    --workload=*) workload=${1#*=} ;;
    --project=*) project=${1#*=} ;;
    --zone=*) zone=${1#*=} ;;
    --base-image=*) base_image=${1#*=} ;;
    --) shift; break ;;
    *) echo "launch/xpk.sh: unknown option $1 (train arguments go after --)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$cluster" ] && [ -n "$tpu_type" ] || {
  echo "usage: launch/xpk.sh [--dry-run] --cluster=NAME --tpu-type=v5p-64 [...] -- TRAIN_ARGS" >&2; exit 2; }
workdir=""
for arg in "$@"; do case "$arg" in --workdir=*) workdir=${arg#--workdir=} ;; esac; done
case "$workdir" in
  gs://*) ;;
  *) echo "launch/xpk.sh: --workdir must be gs://BUCKET/RUN (got '${workdir:-nothing}'): every pod writes the same run" >&2
     exit 2 ;;
esac
# Workload names are DNS labels: lowercase, digits and dashes, at most 40 characters here.
workload=${workload:-motionaura-$(date +%m%d-%H%M)}
repo=$(cd "$(dirname "$0")/.." && pwd)
train_args=$(printf ' %q' "$@")
command="pip install -q -r requirements-tpu.txt && pip install -q --no-deps -r requirements-nodeps.txt \
&& pip install -q --no-deps -e . && MOTIONAURA_AUTO_DISTRIBUTED=1 motionaura train${train_args}"

xpk_args=(workload create --cluster="$cluster" --workload="$workload" --tpu-type="$tpu_type"
  --num-slices="$num_slices" --base-docker-image="$base_image" --script-dir="$repo" --command="$command")
[ -n "$project" ] && xpk_args+=(--project="$project")
[ -n "$zone" ] && xpk_args+=(--zone="$zone")

if [ "$dry_run" = 1 ]; then
  printf '%q ' xpk "${xpk_args[@]}" | sed 's/ $//'; echo
  echo "# every pod of the $num_slices x $tpu_type slice(s) runs (jax.distributed finds the hosts; workdir $workdir):"
  echo "$command"
  exit 0
fi
xpk "${xpk_args[@]}"
