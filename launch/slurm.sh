#!/usr/bin/env bash
# Train on a multi-node GPU cluster under SLURM: one batch job, one process per GPU (default) or per node, all joined
# through jax.distributed with the coordinator taken from the SLURM environment.
#
#   launch/slurm.sh [--dry-run] --nodes=4 [--gpus-per-node=8] [--per=gpu|node] [--partition=P] [--account=A]
#                   [--time=24:00:00] [--job-name=motionaura] [--venv=.venv] [--port=PORT] -- \
#       --config=experiments/t2v.py:L --workdir=/shared/runs/t2v_L --config.mesh.fsdp=-1
#
# Writes a batch script and submits it with sbatch (--dry-run prints both instead). In the job, srun starts
# nodes x (gpus-per-node | 1) tasks; each runs `launch/slurm.sh --task CMD...`, which exports
#   JAX_COORDINATOR_ADDRESS = first host of $SLURM_JOB_NODELIST (scontrol show hostnames) : PORT
#                             (default 20000 + SLURM_JOB_ID % 20000, so two jobs on one node do not collide)
#   JAX_NUM_PROCESSES = $SLURM_NTASKS, JAX_PROCESS_ID = $SLURM_PROCID
#   CUDA_VISIBLE_DEVICES = this task's GPU (--per=gpu; the SLURM_LOCALID-th of the node's GPUs)
# and execs CMD; `motionaura train` hands those to jax.distributed.initialize (parallel/distributed.py).
# --workdir must be a folder every node sees (a shared filesystem) or gs://...; re-submitting the same line resumes.
# --venv: a virtual environment with requirements.txt and the GPU build of the same jax (jax[cuda12]==0.10.2).
set -euo pipefail

if [ "${1:-}" = "--task" ]; then  # inside the job, once per task (srun)
  shift
  : "${SLURM_JOB_NODELIST:?--task runs inside a SLURM job}" "${SLURM_NTASKS:?}" "${SLURM_PROCID:?}"
  # The whole list is read before the first line is taken: `| head -n 1` can close the pipe while scontrol still
  # writes, and under pipefail that SIGPIPE (exit 141) kills the task.
  hosts=$(scontrol show hostnames "$SLURM_JOB_NODELIST")
  head_node=${hosts%%$'\n'*}
  port=${MOTIONAURA_COORDINATOR_PORT:-$((20000 + ${SLURM_JOB_ID:-0} % 20000))}
  export JAX_COORDINATOR_ADDRESS="$head_node:$port" JAX_NUM_PROCESSES="$SLURM_NTASKS" JAX_PROCESS_ID="$SLURM_PROCID"
  if [ "${MOTIONAURA_PER:-gpu}" = gpu ]; then
    IFS=, read -r -a gpus <<< "${CUDA_VISIBLE_DEVICES:-}"
    if [ "${#gpus[@]}" -gt 1 ]; then export CUDA_VISIBLE_DEVICES="${gpus[${SLURM_LOCALID:-0}]}"
    elif [ "${#gpus[@]}" -eq 0 ]; then export CUDA_VISIBLE_DEVICES="${SLURM_LOCALID:-0}"; fi
  fi
  exec "$@"
fi

dry_run=0 nodes="" gpus=8 per=gpu partition="" account="" time_limit="24:00:00" job_name=motionaura venv=.venv port=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --nodes=*) nodes=${1#*=} ;;
    --gpus-per-node=*) gpus=${1#*=} ;;
    --per=*) per=${1#*=} ;;
    --partition=*) partition=${1#*=} ;;
    --account=*) account=${1#*=} ;;
    --time=*) time_limit=${1#*=} ;;
    --job-name=*) job_name=${1#*=} ;;
    --venv=*) venv=${1#*=} ;;
    --port=*) port=${1#*=} ;;
    --) shift; break ;;
    *) echo "launch/slurm.sh: unknown option $1 (train arguments go after --)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$nodes" ] || { echo "usage: launch/slurm.sh [--dry-run] --nodes=N [...] -- TRAIN_ARGS" >&2; exit 2; }
case "$per" in
  gpu) tasks_per_node=$gpus ;;
  node) tasks_per_node=1 ;;
  *) echo "launch/slurm.sh: --per must be gpu or node, got '$per'" >&2; exit 2 ;;
esac
repo=$(cd "$(dirname "$0")/.." && pwd)
train_args=$(printf ' %q' "$@")
script="#!/usr/bin/env bash
#SBATCH --job-name=$job_name
#SBATCH --nodes=$nodes
#SBATCH --ntasks-per-node=$tasks_per_node
#SBATCH --gpus-per-node=$gpus
#SBATCH --time=$time_limit
#SBATCH --output=%x-%j.out${partition:+
#SBATCH --partition=$partition}${account:+
#SBATCH --account=$account}
set -euo pipefail
cd $(printf '%q' "$repo")
export MOTIONAURA_PER=$per${port:+ MOTIONAURA_COORDINATOR_PORT=$port}
srun --kill-on-bad-exit=1 launch/slurm.sh --task $(printf '%q' "$venv")/bin/motionaura train${train_args}
"
batch_file="${TMPDIR:-/tmp}/$job_name.sbatch"
if [ "$dry_run" = 1 ]; then
  echo "# $batch_file ($nodes nodes x $tasks_per_node processes; coordinator: first host of the job, from SLURM):"
  printf '%s' "$script"
  echo "sbatch $(printf '%q' "$batch_file")"
  exit 0
fi
printf '%s' "$script" > "$batch_file"
sbatch "$batch_file"
