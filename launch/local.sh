#!/usr/bin/env bash
# One machine, all its local devices (CPU, one or more GPUs). Usage: launch/local.sh --config configs/bda.py [...]
set -euo pipefail
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
# JAX takes the GPU memory it needs on demand, leaving room for the tf.data host pipeline.
export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
exec python -m jsbir.main "$@"
