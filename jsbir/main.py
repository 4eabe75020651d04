"""Command line: ``python -m jsbir.main --config configs/bda.py[:args] [--workdir DIR]``.

Trains and evaluates the configured method (resuming when ``--workdir`` holds a checkpoint). Without
``--workdir`` a fresh folder ``runs/<method>-<time>`` is made. ``--jax_distributed`` initialises multi-host
JAX first (TPU pods, multi-node GPU); launch the same command on every host.

``python -m jsbir.main serve --index DIR`` runs the draw-and-search page instead (``docs/serve.md``).
``python -m jsbir.main evaluate|index|search ...`` evaluates a run, indexes photos, searches an index
(``jsbir/retrieval/cli.py``, ``docs/retrieval.md``).
"""

from __future__ import annotations

import ast
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
flags.DEFINE_bool("verbose", False, "Show the full traceback of a refusal (bad input or state, divergence).")
# Clusters (SLURM, TPU pods, Open MPI) tell jax.distributed.initialize() these by themselves; a plain machine or a
# hand-made set of hosts names them (JAX_COORDINATOR_ADDRESS works too for the address).
flags.DEFINE_string("coordinator_address", None, "With --jax_distributed: host:port of process 0's coordinator.")
flags.DEFINE_integer("num_processes", None, "With --jax_distributed: the number of processes.")
flags.DEFINE_integer("process_id", None, "With --jax_distributed: this process's index, 0 to num_processes - 1.")
flags.mark_flags_as_required(["config"])


def _quiet_libraries(record: std_logging.LogRecord) -> bool:
    """Keeps Orbax's and tensorflow-datasets' per-call INFO lines out of the console; their warnings stay."""
    noisy = ("/orbax/", "/tensorflow_datasets/")
    return record.levelno >= std_logging.WARNING or not any(part in record.pathname for part in noisy)


def _config_error(error: BaseException) -> BaseException:
    """The exception that says what is wrong: the first in the chain that is not a flag-parsing wrapper."""
    chain = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    wrapper = [isinstance(e, flags.Error) or str(e).startswith("Error whilst parsing") for e in chain]
    return next((e for e, w in zip(chain, wrapper, strict=True) if not w), chain[-1])


def parse_flags(argv: list[str]) -> list[str]:
    """Parses the command line; a config error (an unknown argument or field, a bad value) is one line on stderr
    and exit status 2, not a traceback."""
    try:
        return FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        text = str(_config_error(e))
        if len(text) > 1 and text[0] == text[-1] == "'":  # a KeyError's repr of the message
            text = ast.literal_eval(text)
        text = " ".join(text.split())
        given = [a[2:].split("=", 1) for a in argv if a.startswith("--config.") and "=" in a]
        named = [key for key, value in given if f"'{key.rsplit('.', 1)[-1]}'" in text or f"'{value}'" in text]
        print(f"jsbir: config error: {named[0] + ': ' if named else ''}{text}", file=sys.stderr)
        sys.exit(2)


def refusal_status(error: BaseException) -> int | None:
    """The exit status of an expected refusal of a training start, printed as one line: 1 for divergence, 2 for
    bad input or state (a damaged or foreign checkpoint, a locked or unusable workdir, bad data or values, damaged
    weights); None for anything else, a bug, which keeps its traceback. ``docs/errors.md`` has the table."""
    import pickle

    from jsbir import checkpoint, runlock, train

    if isinstance(error, train.DivergenceError):
        return 1
    expected = (checkpoint.CheckpointError, runlock.FolderLockedError, FileNotFoundError, FileExistsError,
                PermissionError, ValueError, pickle.UnpicklingError)  # fmt: skip
    return 2 if isinstance(error, expected) else None


def initialize_distributed() -> None:
    """``jax.distributed.initialize`` with the flags given (None: the cluster's own values). CPU processes reduce
    through gloo (jax 0.10's default; set here for versions that have none)."""
    if jax.config.jax_cpu_collectives_implementation is None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=FLAGS.coordinator_address,
        num_processes=FLAGS.num_processes,
        process_id=FLAGS.process_id,
    )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_quiet_libraries)
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")  # TensorFlow only feeds data; JAX owns accelerators.
    if FLAGS.jax_distributed:
        initialize_distributed()
    from jsbir import checks, train, writers

    config = FLAGS.config
    try:
        checks.check_config(config)
    except ValueError as e:
        print(f"jsbir: config error: {e}", file=sys.stderr)
        sys.exit(2)
    workdir = FLAGS.workdir or os.path.join("runs", f"{config.method}-{time.strftime('%Y%m%d-%H%M%S')}")
    if not FLAGS.workdir:
        os.makedirs("runs", exist_ok=True)
    logging.info("jax %s on %d devices; workdir %s", jax.__version__, jax.device_count(), workdir)
    try:
        report = train.train_and_evaluate(config, workdir)
    except KeyboardInterrupt:  # a second Ctrl-C: the checkpoint being written was finished first
        print(f"jsbir: interrupted; the same command resumes from the last checkpoint ({workdir})", file=sys.stderr)
        sys.exit(128 + signal.SIGINT.value)
    except Exception as e:
        full = writers.no_space(e)
        if full is not None:
            where = full.filename or workdir
            print(f"jsbir: no space left on device while writing {where}; free space or choose another --workdir "
                  "(or config.data.data_dir) and run the same command again to resume", file=sys.stderr)  # fmt: skip
            sys.exit(1)
        status = refusal_status(e)
        if status is None or FLAGS.verbose:
            raise
        print(f"jsbir: error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(status)
    if "signal" in report:
        print(f"stopped by {report['signal']} at step {report['stopped_at']}; the same command resumes ({workdir})")
        sys.exit(128 + signal.Signals[report["signal"]].value)
    if "metrics" in report and jax.process_index() == 0:  # only process 0 writes the report
        print(f"report: {os.path.join(os.path.abspath(workdir), 'report.json')}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:  # the draw-and-search page parses its own arguments; training stays the default
        from jsbir.serve import cli

        sys.exit(cli.main(sys.argv[2:]))
    if sys.argv[1:2] in (["evaluate"], ["index"], ["search"]):  # retrieval subcommands parse their own arguments
        from jsbir.retrieval import cli as retrieval_cli

        sys.exit(retrieval_cli.main(sys.argv[1], sys.argv[2:]))
    app.run(main, flags_parser=parse_flags)
