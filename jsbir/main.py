"""Command line: ``python -m jsbir.main --config configs/bda.py[:args] [--workdir DIR]``.

Trains and evaluates the configured method (resuming when ``--workdir`` holds a checkpoint). Without
``--workdir`` a fresh folder ``runs/<method>-<time>`` is made. ``--jax_distributed`` initialises multi-host
JAX first (TPU pods, multi-node GPU); launch the same command on every host.
"""

from __future__ import annotations

import logging as std_logging
import os
import signal
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Method config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Run folder; default: a new folder under runs/.")
flags.DEFINE_bool("jax_distributed", False, "Call jax.distributed.initialize() first.")
flags.mark_flags_as_required(["config"])


def _quiet_libraries(record: std_logging.LogRecord) -> bool:
    """Keeps Orbax's and tensorflow-datasets' per-call INFO lines out of the console; their warnings stay."""
    noisy = ("/orbax/", "/tensorflow_datasets/")
    return record.levelno >= std_logging.WARNING or not any(part in record.pathname for part in noisy)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_quiet_libraries)
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")  # TensorFlow only feeds data; JAX owns accelerators.
    if FLAGS.jax_distributed:
        jax.distributed.initialize()
    from jsbir import train

    config = FLAGS.config
    workdir = FLAGS.workdir or os.path.join(
        "runs", f"{config.method}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    if not FLAGS.workdir:
        os.makedirs("runs", exist_ok=True)
    logging.info("jax %s on %d devices; workdir %s", jax.__version__, jax.device_count(), workdir)
    report = train.train_and_evaluate(config, workdir)
    if "signal" in report:
        print(f"stopped by {report['signal']} at step {report['stopped_at']}; the same command resumes ({workdir})")
        sys.exit(128 + signal.Signals[report["signal"]].value)
    if "metrics" in report:
        print(f"report: {os.path.join(os.path.abspath(workdir), 'report.json')}")


if __name__ == "__main__":
    app.run(main)
