#!/usr/bin/env bash
# TPU pod slice: run the same command on every worker, for example
#   gcloud compute tpus tpu-vm ssh NAME --worker=all --command="cd jsbir && launch/tpu_pod.sh --config configs/bda.py --workdir gs://bucket/runs/bda"
# jax.distributed.initialize() discovers the pod's workers by itself; each host feeds its own batch shard.
set -euo pipefail
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
exec python -m jsbir.main --jax_distributed "$@"
