#!/usr/bin/env bash
# Fine-tune on a Cloud TPU VM: create it, copy the code, install, train under
# nohup, follow the log, and start again after a preemption.
#
#   export TPU_NAME=gpt2-ft ZONE=europe-west4-a PROJECT=my-project
#   export WORKDIR=gs://my-bucket/runs/big            # checkpoints live here
#   export CONFIG=configs/gpt2_1558m_tpuv3.py
#   export FLAGS="--config.init=gs://my-bucket/models/1558M --config.data=gs://my-bucket/data/big"
#   launch/tpu_vm.sh create     # a (preemptible) v3-8 TPU VM
#   launch/tpu_vm.sh setup      # copy this checkout, pip install .[tpu]
#   launch/tpu_vm.sh train      # python -m launch.finetune under nohup
#   launch/tpu_vm.sh logs       # follow train.log
#   launch/tpu_vm.sh watch      # loop: recreate + setup + train after preemption
#   launch/tpu_vm.sh delete
#
# The run resumes from the newest checkpoint in $WORKDIR every time it
# starts (and saves one on SIGTERM), so a preempted VM loses at most
# save_every steps. Keep WORKDIR and data on gs:// in the VM's region.
#
# A pod slice (ACCELERATOR=v3-32, v4-64, ...) has several hosts: every step
# runs on all of them (--worker=all), and `train` starts the same command on
# each with --config.distributed=true, so they join one run
# (jax.distributed finds the other hosts itself); each host reads its rows
# of every batch, and a preemption makes all of them save the same step.

set -euo pipefail

TPU_NAME="${TPU_NAME:?set TPU_NAME}"
ZONE="${ZONE:?set ZONE}"
PROJECT="${PROJECT:-$(gcloud config get-value project 2>/dev/null)}"
ACCELERATOR="${ACCELERATOR:-v3-8}"
RUNTIME="${RUNTIME:-tpu-ubuntu2204-base}"
PREEMPTIBLE="${PREEMPTIBLE:-1}"
CONFIG="${CONFIG:-configs/gpt2_1558m_tpuv3.py}"
WORKDIR="${WORKDIR:-}"
FLAGS="${FLAGS:-}"
REMOTE_DIR="${REMOTE_DIR:-gpt2}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

tpu() {
  gcloud compute tpus tpu-vm "$@" --zone="$ZONE" --project="$PROJECT"
}

on_vm() {
  tpu ssh "$TPU_NAME" --worker=all --command="$1"
}

state() {
  tpu describe "$TPU_NAME" --format='value(state)' 2>/dev/null || echo MISSING
}

create() {
  local extra=()
  if [[ "$PREEMPTIBLE" == 1 ]]; then extra+=(--preemptible); fi
  tpu create "$TPU_NAME" --accelerator-type="$ACCELERATOR" \
    --version="$RUNTIME" "${extra[@]}"
}

setup() {
  local archive
  archive="$(mktemp -d)/code.tar.gz"
  tar -C "$REPO_ROOT" --exclude=.git --exclude='*.egg-info' \
    --exclude=__pycache__ -czf "$archive" .
  tpu scp "$archive" "$TPU_NAME:code.tar.gz" --worker=all
  on_vm "mkdir -p $REMOTE_DIR && tar -xzf code.tar.gz -C $REMOTE_DIR && \
    cd $REMOTE_DIR && python3 -m pip install -q -U pip && \
    python3 -m pip install -q -e '.[tpu]'"
}

hosts() {
  tpu describe "$TPU_NAME" --format='value(networkEndpoints[].ipAddress)' |
    tr ';,' '\n\n' | grep -c .
}

train() {
  : "${WORKDIR:?set WORKDIR (a gs:// path, so checkpoints outlive the VM)}"
  # Every host runs the same command; on more than one (a pod slice) they
  # join one run.
  local distributed=""
  if (( $(hosts) > 1 )); then distributed="--config.distributed=true"; fi
  on_vm "cd $REMOTE_DIR && nohup python3 -m launch.finetune \
    --config=$CONFIG --workdir=$WORKDIR $distributed $FLAGS > train.log 2>&1 &"
  echo "started on $(hosts) host(s); follow with: $0 logs"
}

logs() {
  tpu ssh "$TPU_NAME" --worker=0 --command="tail -n 50 -F $REMOTE_DIR/train.log"
}

running() {
  tpu ssh "$TPU_NAME" --worker=0 \
    --command="pgrep -f launch.finetune > /dev/null" 2>/dev/null
}

finished() {
  tpu ssh "$TPU_NAME" --worker=0 \
    --command="grep -q '\"preempted\": false' $REMOTE_DIR/train.log" 2>/dev/null
}

watch() {
  while true; do
    case "$(state)" in
      READY)
        if finished; then echo "training finished"; return 0; fi
        if ! running; then echo "not running: starting"; train; fi ;;
      PREEMPTED|TERMINATED|STOPPED)
        echo "preempted: recreating"
        tpu delete "$TPU_NAME" --quiet || true
        create && setup && train ;;
      MISSING)
        echo "no VM: creating"
        create && setup && train ;;
      *) ;;  # CREATING, STARTING, ...: wait
    esac
    sleep "${WATCH_SECONDS:-120}"
  done
}

delete() {
  tpu delete "$TPU_NAME" --quiet
}

case "${1:-}" in
  create|setup|train|logs|watch|delete) "$1" ;;
  *) sed -n '2,26p' "$0"; exit 2 ;;
esac
